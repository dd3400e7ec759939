//! Leader-only work, and the one way to run it: `Consensus::on_leader` routes a `LeaderCall`
//! once, either running it here (this member leads) or forwarding it to the leader over the
//! peer port, and never further: the leader runs a forwarded call itself or answers `NoLeader`.
//!
//! Each call type has exactly one reply type and its own `MessageKind`; a reply of another
//! kind, or in a format this member does not read, is a typed error (`PeerCallError`), never a
//! panic, so a member of another version cannot stop this one.
//!
//! ```text
//!  caller ──on_leader(call, here)──► route ─┬─ Local ────► here(call) ─────────────► reply
//!                                           ├─ Leader ───► Peer.Forward ──► leader's here(call)
//!                                           └─ Nowhere ──► NoLeader (nothing was applied)
//! ```
//!
//! A `Forwarder` does the forward: `PeerClients` sends each call as a `Peer.Forward` call of
//! its own; a follower's client writes go through `WriteForwarder` (`forward_batch.rs`), which
//! sends them several to a call when the leader takes that (`WriteBatchCall`).

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ConsensusError;
use super::ids::MemberId;
use super::wire::MessageKind;
use crate::fsm::{OutcomeRecord, Proposal, Revision};

/// Work only the leader may do. Implementations are the messages forwarded to the leader.
pub trait LeaderCall: Serialize + DeserializeOwned + Send + Sync {
    /// The kind both the request and its reply carry on the wire.
    const KIND: MessageKind;
    /// What the leader answers.
    type Reply: Serialize + DeserializeOwned + Send;
    /// Whether a forward of this call is given up (outcome unknown) once another member leads
    /// (`Consensus::forward_while_leading`): true for work only the leader it went to can
    /// finish; false for calls whose success itself moves leadership (a move, a removal of
    /// the leader, a membership change that may remove it).
    const GIVEN_UP_WITH_ITS_LEADER: bool = true;

    /// Whether this call, given up with its leader, may go to the next leader as well without
    /// being applied twice (`Consensus::on_leader`): false unless the leader applies it at
    /// most once whatever the number of copies it gets.
    fn repeatable(&self) -> bool {
        false
    }
}

/// Where leader-only work goes right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This member is the leader.
    Local,
    /// Forward to this member, at this peer address.
    Leader { id: MemberId, address: String },
    /// No leader is known.
    Nowhere { leader_hint: Option<MemberId> },
}

/// A client write (or a session write the leader itself proposes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCall {
    pub proposal: Proposal,
}

/// The revision a write was applied at and the namespace's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub revision: Revision,
    pub outcome: OutcomeRecord,
}

impl LeaderCall for WriteCall {
    const KIND: MessageKind = MessageKind::Write;
    type Reply = Written;

    /// A client's write with its write id: the state machine applies an id once and answers a
    /// copy with the first outcome (a write without one, a session write, is not repeated).
    fn repeatable(&self) -> bool {
        self.proposal.write_id.is_some()
    }
}

/// Client writes a follower forwards together, in the order they reached it; the leader runs
/// them at once, each as a `WriteCall` of its own, and answers each in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBatchCall {
    pub writes: Vec<WriteCall>,
}

impl LeaderCall for WriteBatchCall {
    const KIND: MessageKind = MessageKind::WriteBatch;
    type Reply = Vec<Result<Written, ConsensusError>>;
}

/// A `WriteBatchCall` on a `Peer.ForwardStream`, with the tag its reply carries: the follower
/// numbers the batches it sends on one stream, and the leader answers each as it finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamedBatch {
    pub tag: u64,
    pub batch: WriteBatchCall,
}

/// The leader's reply to the `StreamedBatch` with the same tag: as a `Peer.Forward` call's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamedReply {
    pub tag: u64,
    pub reply: Result<Vec<Result<Written, ConsensusError>>, ConsensusError>,
}

/// Sends a call of type `C` to the leader `leader` at peer address `address`, once, and
/// returns its reply; a failure to reach it is `NoLeader` when the call was certainly not
/// sent, `LeaderUnreachable` (outcome unknown) otherwise.
pub trait Forwarder<C: LeaderCall> {
    fn forward(
        &self,
        leader: MemberId,
        address: &str,
        call: &C,
        timeout: Duration,
    ) -> impl Future<Output = Result<C::Reply, ConsensusError>> + Send;
}

/// A change of the voting configuration, run on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a learner: it receives the log but does not vote.
    AddLearner { id: MemberId, peer_address: String },
    /// Make a learner a voter.
    Promote { id: MemberId },
    /// Remove a voter or a learner.
    Remove { id: MemberId },
}

impl LeaderCall for MembershipChange {
    const KIND: MessageKind = MessageKind::Membership;
    type Reply = ();
    const GIVEN_UP_WITH_ITS_LEADER: bool = false;
}
