//! One log line per change worth knowing: a new leader or term, a membership change, and (on
//! the leader) a member that stopped or started answering again. openraft's own lines repeat
//! on every retry (a down peer made several WARN and ERROR lines every half second), so they
//! are off by default and this is the cluster's story instead.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{Membership, ServerState};
use tokio::time::Instant;

use super::election::AckClock;
use super::ids::MemberId;
use super::state_machine::CoordRaft;
use super::types::LogId;

/// What was last reported.
struct Reported {
    leader: Option<(u64, Option<u64>)>,
    /// Counts every change to a known leader (the `coord_server_leader_changes_seen_total`
    /// metric, as etcd counts them).
    leader_changes: Arc<AtomicU64>,
    /// The (term, leader) last noted, for those that wait for a change of leader only (a
    /// forward to the leader): unlike openraft's metrics, it changes only when they do.
    leader_seen: tokio::sync::watch::Sender<(u64, Option<u64>)>,
    members: Option<String>,
    /// The log id of the membership last described (`Some(None)`: the initial one).
    members_at: Option<Option<LogId>>,
    /// The other members of that membership.
    others: Vec<u64>,
    silent: BTreeSet<u64>,
    leading_since: Option<Instant>,
}

/// Logs changes until Raft stops. `silence` is how long a peer may not answer the leader
/// before it counts as lost (one election timeout).
pub async fn log_changes(
    raft: CoordRaft,
    acks: Arc<AckClock>,
    me: MemberId,
    silence: Duration,
    leader_changes: Arc<AtomicU64>,
    leader_seen: tokio::sync::watch::Sender<(u64, Option<u64>)>,
) {
    // The server metrics change with the vote, role, leader and membership only; the full
    // metrics change several times per write, and each change woke this task.
    let mut metrics = raft.server_metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut reported = Reported {
        leader_changes,
        leader_seen,
        leader: None,
        members: None,
        members_at: None,
        others: Vec::new(),
        silent: BTreeSet::new(),
        leading_since: None,
    };
    loop {
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let (term, leader, leading) = {
            let metrics = metrics.borrow_watched();
            // The membership is formatted only when it changed.
            let membership_at = metrics.membership_config.log_id();
            if reported.members_at != Some(*membership_at) {
                reported.members_at = Some(*membership_at);
                let membership = metrics.membership_config.membership();
                reported.note_members(describe(membership));
                reported.others = membership
                    .nodes()
                    .map(|(id, _)| *id)
                    .filter(|id| *id != me.0)
                    .collect();
            }
            (
                metrics.vote.leader_id.term,
                metrics.current_leader,
                metrics.state == ServerState::Leader,
            )
        };
        reported.note_leader(term, leader);
        reported.note_peers(leading, &acks, silence);
    }
}

/// `1 (voter), 4 (learner)`, in id order.
fn describe(membership: &Membership<u64, super::types::Member>) -> String {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, _)| {
            let kind = if voters.contains(id) {
                "voter"
            } else {
                "learner"
            };
            format!("{id} ({kind})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Reported {
    fn note_leader(&mut self, term: u64, leader: Option<u64>) {
        if self.leader == Some((term, leader)) {
            return;
        }
        match leader {
            Some(leader) => {
                self.leader_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(term, leader, "leader")
            }
            None => tracing::info!(term, "no leader known"),
        }
        self.leader = Some((term, leader));
        self.leader_seen.send_replace((term, leader));
    }

    fn note_members(&mut self, members: String) {
        if self.members.as_deref() == Some(members.as_str()) || members.is_empty() {
            return;
        }
        tracing::info!(%members, "membership");
        self.members = Some(members);
    }

    /// On the leader: a line when a peer stops answering for `silence`, and when it answers
    /// again. A new leader gives every peer `silence` to answer first.
    fn note_peers(&mut self, leading: bool, acks: &AckClock, silence: Duration) {
        if !leading {
            self.silent.clear();
            self.leading_since = None;
            return;
        }
        let since = *self.leading_since.get_or_insert_with(Instant::now);
        if since.elapsed() < silence {
            return;
        }
        for peer in &self.others {
            let answering = acks.answered_within(*peer, silence);
            if !answering && self.silent.insert(*peer) {
                tracing::warn!(peer, after = ?silence, "member stopped answering the leader");
            } else if answering && self.silent.remove(peer) {
                tracing::info!(peer, "member answers the leader again");
            }
        }
    }
}
