//! `ProposalResult`: what applying one log entry returns to the proposer (the entry's payload
//! is `fsm::Proposal`, perhaps a batch of writes).

use serde::{Deserialize, Serialize};

use crate::fsm::{FsmError, Output, Revision};

/// One write's revision and what the namespace made of it.
pub type WriteOutcome = (Revision, Result<Output, FsmError>);

/// The outcome of applying one log entry. It stays on the member that applied it (openraft
/// hands it to the waiting proposer); forwarded replies carry an `OutcomeRecord` instead.
/// openraft requires the serde traits of it but never encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    /// Each write's revision and outcome, in order: one for a plain proposal, one per item of
    /// a batch, none for entries that carry no command (blank and membership entries).
    pub writes: Vec<WriteOutcome>,
}
