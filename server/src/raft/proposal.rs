//! `Proposal` and `ProposalResult`: what a Raft log entry carries and what applying it returns.

use serde::{Deserialize, Serialize};

use crate::fsm::{Command, FsmError, Output, Revision};

/// The application payload of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
}

/// The outcome of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    /// The revision (log index) the entry was applied at.
    pub revision: Revision,
    /// `None` for entries that carry no command (blank and membership entries).
    pub outcome: Option<Result<Output, FsmError>>,
}
