//! `MemberDirectory`: what this member knows of the others beyond the Raft membership: their
//! client addresses (learned through `Peer.Hello`, since `--initial-cluster` names only peer
//! addresses) and when each last answered.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::consensus::MemberId;

/// A peer that has not answered for this long is reported unreachable.
pub const PEER_SILENCE_MAX: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct PeerEntry {
    client_address: String,
    last_heard: Instant,
}

#[derive(Default)]
pub struct MemberDirectory {
    peers: RwLock<BTreeMap<MemberId, PeerEntry>>,
}

impl MemberDirectory {
    /// Records that `member_id` answered (or called) just now.
    pub fn heard_from(&self, member_id: MemberId, client_address: String) {
        let entry = PeerEntry {
            client_address,
            last_heard: Instant::now(),
        };
        self.peers
            .write()
            .expect("no panic while holding the directory lock")
            .insert(member_id, entry);
    }

    pub fn client_address(&self, member_id: MemberId) -> Option<String> {
        let peers = self
            .peers
            .read()
            .expect("no panic while holding the directory lock");
        peers
            .get(&member_id)
            .map(|entry| entry.client_address.clone())
    }

    /// Whether `member_id` answered within `PEER_SILENCE_MAX`.
    pub fn is_reachable(&self, member_id: MemberId) -> bool {
        let peers = self
            .peers
            .read()
            .expect("no panic while holding the directory lock");
        peers
            .get(&member_id)
            .is_some_and(|entry| entry.last_heard.elapsed() < PEER_SILENCE_MAX)
    }
}
