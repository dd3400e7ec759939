//! `propose`: a client write from the checks before proposing to the namespace's verdict, as
//! the API sees it (errors as statuses).

use super::status::{consensus_status, fsm_status};

/// Checks `proposal` against `limits`, proposes it, and returns its revision and output, or
/// the error as a status.
pub async fn propose(
    consensus: &crate::consensus::Consensus,
    limits: &crate::fsm::Limits,
    proposal: crate::fsm::Proposal,
) -> Result<(crate::fsm::Revision, crate::fsm::Output), tonic::Status> {
    proposal
        .check_limits(limits)
        .map_err(|error| fsm_status(&error))?;
    if limits.quota_bytes > 0 {
        let used = consensus.replica().read(|namespace| {
            let used = namespace.data_bytes();
            (used >= limits.quota_bytes && namespace.grows(&proposal.command)).then_some(used)
        });
        if let Some(used) = used {
            return Err(fsm_status(&crate::fsm::FsmError::NoSpace {
                used,
                quota: limits.quota_bytes,
            }));
        }
    }
    let (revision, outcome) = consensus
        .write(proposal)
        .await
        .map_err(|error| consensus_status(&error))?;
    let output = outcome.map_err(|error| fsm_status(&error))?;
    Ok((revision, output))
}
