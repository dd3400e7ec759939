//! `ProposalResult`: what applying one log entry returns to the proposer (the entry's payload
//! is `fsm::Proposal`).

use serde::{Deserialize, Serialize};

use crate::fsm::{FsmError, Output, Revision};

/// The outcome of applying one log entry. It stays on the member that applied it (openraft
/// hands it to the waiting proposer); forwarded replies carry an `OutcomeRecord` instead.
/// openraft requires the serde traits of it but never encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    /// The revision (log index) the entry was applied at.
    pub revision: Revision,
    /// `None` for entries that carry no command (blank and membership entries).
    pub outcome: Option<Result<Output, FsmError>>,
}
