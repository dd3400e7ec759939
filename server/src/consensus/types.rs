//! The types consensus is configured with: openraft's type configuration (`TypeConfig`, whose
//! log entries carry `fsm::Proposal`), a member's Raft record, read consistency levels and
//! `ConsensusConfig`.

use std::io::Cursor;
use std::time::Duration;

use openraft::BasicNode;

use super::ids::MemberId;
use super::proposal::ProposalResult;
use crate::fsm::{Proposal, Revision};

/// A member as the Raft membership records it: its peer address.
pub type Member = BasicNode;

openraft::declare_raft_types!(
    /// Coord's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        Node = Member,
);

/// The types below name openraft's generic types as this configuration instantiates them, so
/// the rest of `consensus/` reads `LogId` rather than `openraft::alias::LogIdOf<TypeConfig>`.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// The position of an entry: the leader that proposed it (term, member) and its index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A member's vote: the leader id it voted for and whether a quorum granted it.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// The leader id as a log id records it.
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
#[cfg(test)]
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: its metadata and the encoded namespace.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
    MinRevision(Revision),
}

/// Identity, timing and snapshot settings for consensus.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub member_id: MemberId,
    pub cluster_id: String,
    pub heartbeat_interval: Duration,
    /// How long without a leader before a member stands for election (randomized up to 1.5
    /// times this); see `election.rs`.
    pub election_timeout: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub snapshot_keep_entries: u64,
    /// Also build a snapshot once this many bytes of log were appended since the last one.
    pub snapshot_bytes: u64,
    /// Longest wait for a write to commit or a read barrier to pass.
    pub request_timeout: Duration,
    /// The local address outgoing peer connections are made from (`None`: the OS chooses).
    pub peer_source_address: Option<std::net::IpAddr>,
    /// This member's peer certificate and the peer CA, for mutual TLS with the other members
    /// (`None`: plaintext).
    pub peer_tls: Option<std::sync::Arc<coord_tls::ClientTls>>,
    /// `--peer-cert-allowed-cn`: the names other members' certificates must hold (empty: any).
    pub peer_allowed_names: Vec<String>,
}

/// openraft's metrics channel closed: Raft stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsClosed;

/// Waits until `holds` is true of the value on one of openraft's metrics channels and returns
/// that value: tokio's `watch::Receiver::wait_for`, which openraft's receiver type lacks.
pub async fn wait_for_metrics<T: Clone + Send + Sync>(
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, T>,
    mut holds: impl FnMut(&T) -> bool,
) -> Result<T, MetricsClosed> {
    use openraft::async_runtime::WatchReceiver;
    loop {
        {
            let now = metrics.borrow_and_update();
            if holds(&now) {
                return Ok(now.clone());
            }
        }
        metrics.changed().await.map_err(|_| MetricsClosed)?;
    }
}
