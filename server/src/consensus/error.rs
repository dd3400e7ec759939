//! The errors of consensus: `ConsensusError` (why a request could not be served; it crosses the
//! peer port inside forwarded replies) and `StartError` (why a member could not start Raft).

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ids::MemberId;
use super::types::TypeConfig;
use crate::storage::StorageFault;

/// Why consensus could not serve a request. Crosses the peer port, hence serializable.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ConsensusError {
    /// No leader is known (election in progress, or no quorum). Nothing was applied.
    #[error("no leader is known right now{}", hint(*.leader_hint))]
    NoLeader { leader_hint: Option<MemberId> },
    /// The request did not finish in time; for a write its outcome is unknown.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Forwarding to the leader failed in transit; for a write its outcome is unknown.
    #[error("the leader (member {leader}) could not be reached: {reason}")]
    LeaderUnreachable { leader: MemberId, reason: String },
    #[error("the member is shutting down")]
    ShuttingDown,
    /// The member stopped after the write was proposed; it may or may not have been applied.
    #[error("the write was interrupted ({reason}); it may or may not have been applied")]
    Interrupted { reason: String },
    #[error("membership change refused: {reason}")]
    Membership { reason: String },
    #[error("consensus failed: {reason}")]
    Fatal { reason: String },
    /// This member is not in the cluster's membership (removed, or not added yet): it serves
    /// no client request. Nothing was applied.
    #[error("member {member} is not a member of the cluster (removed, or not added yet); use another member")]
    NotAMember { member: MemberId },
}

fn hint(leader: Option<MemberId>) -> String {
    match leader {
        Some(leader) => format!(" (last known leader: member {leader})"),
        None => String::new(),
    }
}

/// Why Raft could not start on this member.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageFault),
    /// The timing settings are inconsistent (openraft checks them again).
    #[error("invalid raft timing: {source}")]
    Timing {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The member's measurements could not be set up.
    #[error("metrics: {reason}")]
    Metrics { reason: String },
    /// openraft refused to start or to found the cluster.
    #[error("raft failed to start: {source}")]
    Raft {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    pub fn metrics(error: prometheus::Error) -> StartError {
        StartError::Metrics {
            reason: error.to_string(),
        }
    }
}

/// What a failed `client_write` means for the writer.
pub(super) fn client_write_error(
    error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> ConsensusError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ConsensusError::NoLeader {
                leader_hint: forward.leader_id.map(MemberId),
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            ConsensusError::Membership {
                reason: error.to_string(),
            }
        }
        // The entry may already be in the log and commit later: the outcome is unknown.
        RaftError::Fatal(fatal) => ConsensusError::Interrupted {
            reason: fatal.to_string(),
        },
        // A discarded entry was replaced by a new leader's and will not apply, and Coord sets
        // no preconditions; both are still reported as of unknown outcome, the answer that is
        // safe whatever happened (a retry with the same write id applies at most once).
        error @ RaftError::APIError(
            ClientWriteError::LogEntryDiscarded(_) | ClientWriteError::PreconditionFailed(_),
        ) => ConsensusError::Interrupted {
            reason: error.to_string(),
        },
    }
}
