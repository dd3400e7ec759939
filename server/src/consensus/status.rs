//! What consensus reports about this member's view of the cluster, in Coord's own types:
//! `ClusterView` for response headers and `ConsensusStatus` for `coordctl cluster status`.

use super::ids::{MemberId, Term};

/// What a response header reports about this member's view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterView {
    pub term: Term,
    pub leader: Option<MemberId>,
    pub member_id: MemberId,
}

/// This member's role in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
    Learner,
    /// Raft has stopped (shutting down, or a fatal storage error).
    Stopped,
}

/// A snapshot of this member's Raft state.
#[derive(Debug, Clone)]
pub struct ConsensusStatus {
    pub member_id: MemberId,
    pub leader: Option<MemberId>,
    pub term: Term,
    pub role: Role,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberState>,
}

/// One member as this member's Raft state knows it.
#[derive(Debug, Clone)]
pub struct MemberState {
    pub id: MemberId,
    pub peer_address: String,
    pub voter: bool,
    /// The last log index known to be on that member; known on the leader only.
    pub matched_index: Option<u64>,
}
