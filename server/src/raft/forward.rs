//! The requests a member hands to the leader over the peer port, and their replies.
//!
//! A follower that receives a write (or a membership change) forwards it to the leader it
//! knows, once; the leader runs it locally or answers `NoLeader`, so a request never bounces
//! between members. A follower serving a linearizable read asks the leader for a read index.

use serde::{Deserialize, Serialize};

use super::leases::LeaseView;
use super::ConsensusError;
use crate::fsm::{Command, FsmError, Output, Revision, SessionId};

/// Work only the leader may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(Command),
    AddLearner { id: u64, peer_address: String },
    Promote { id: u64 },
    Remove { id: u64 },
    KeepAlive { session: SessionId },
    ListSessions,
}

/// The leader's answer to a `ForwardRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    Written {
        revision: Revision,
        outcome: Result<Output, FsmError>,
    },
    MembershipChanged,
    /// The TTL granted in milliseconds; 0 when the session is gone.
    KeptAlive {
        ttl_ms: u64,
    },
    Sessions(Vec<LeaseView>),
}

/// What crosses the peer port for a forwarded request.
pub type ForwardResult = Result<ForwardReply, ConsensusError>;

/// The leader's answer to a read-index request: the log index a linearizable read must see.
pub type ReadIndexResult = Result<u64, ConsensusError>;

/// Identities exchanged by `Peer.Hello`, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub member_id: u64,
    pub client_address: String,
}
