//! `OutcomeRecord`: a command's outcome as it is stored (remembered write outcomes in the
//! snapshot) and sent (forwarded replies), without recursion.
//!
//! In memory a txn's outcome nests (`Output::Txn` holds `Output`s, `FsmError::TxnOpFailed`
//! holds an `FsmError`); those two variants are never encoded. Here the nesting is flattened
//! to one level, so that decoding bytes from a disk or a peer can never recurse deeper than
//! the types themselves: a forged message cannot exhaust the stack.

use serde::{Deserialize, Serialize};

use super::command::Output;
use super::error::FsmError;
use super::ids::Revision;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeRecord {
    /// A successful command other than a txn.
    Done(Output),
    /// A txn that ran its `succeeded` branch (or the other one), with each operation's output.
    Txn {
        succeeded: bool,
        results: Vec<Output>,
    },
    /// A refused command other than a failed txn operation.
    Refused(FsmError),
    /// Operation `op_index` of a txn failed with `error`; nothing was applied.
    TxnOpFailed { op_index: usize, error: FsmError },
    /// A txn applied at `revision` whose reads were too large to remember: a repeat learns that
    /// it was applied, and must read again (`FsmError::ResultNotRetained`).
    TxnReadsNotRetained { succeeded: bool, revision: Revision },
}

/// Most bytes of read data an outcome keeps when it is remembered for a repeat; a txn that
/// read more is remembered without its reads (`OutcomeRecord::TxnReadsNotRetained`).
pub const REMEMBERED_READ_BYTES_MAX: u64 = 4 * 1024;

/// What remembering one outcome costs, in bytes: its data and paths plus a fixed allowance.
fn output_bytes(output: &Output) -> u64 {
    let data = match output {
        Output::Created { path, .. } => path.as_str().len(),
        Output::Got { data, .. } => data.len(),
        _ => 0,
    };
    96 + data as u64
}

impl OutcomeRecord {
    /// The record of `outcome`.
    pub fn of(outcome: &Result<Output, FsmError>) -> OutcomeRecord {
        match outcome {
            Ok(Output::Txn { succeeded, results }) => OutcomeRecord::Txn {
                succeeded: *succeeded,
                results: results.clone(),
            },
            Ok(output) => OutcomeRecord::Done(output.clone()),
            Err(FsmError::TxnOpFailed { op_index, source }) => OutcomeRecord::TxnOpFailed {
                op_index: *op_index,
                error: (**source).clone(),
            },
            Err(error) => OutcomeRecord::Refused(error.clone()),
        }
    }

    /// The record of `outcome`, applied at `revision`, to remember for repeats: without its
    /// reads when they hold more than `REMEMBERED_READ_BYTES_MAX` bytes.
    pub fn remembered(outcome: &Result<Output, FsmError>, revision: Revision) -> OutcomeRecord {
        if let Ok(Output::Txn { succeeded, results }) = outcome {
            let read: u64 = results
                .iter()
                .map(|output| match output {
                    Output::Got { data, .. } => data.len() as u64,
                    _ => 0,
                })
                .sum();
            if read > REMEMBERED_READ_BYTES_MAX {
                return OutcomeRecord::TxnReadsNotRetained {
                    succeeded: *succeeded,
                    revision,
                };
            }
        }
        OutcomeRecord::of(outcome)
    }

    /// About how many bytes this record holds in memory and in the snapshot.
    pub fn bytes(&self) -> u64 {
        match self {
            OutcomeRecord::Done(output) => output_bytes(output),
            OutcomeRecord::Txn { results, .. } => {
                32 + results.iter().map(output_bytes).sum::<u64>()
            }
            OutcomeRecord::Refused(error) | OutcomeRecord::TxnOpFailed { error, .. } => {
                96 + error.to_string().len() as u64
            }
            OutcomeRecord::TxnReadsNotRetained { .. } => 32,
        }
    }

    /// The outcome this record stands for.
    pub fn to_outcome(&self) -> Result<Output, FsmError> {
        match self {
            OutcomeRecord::Done(output) => Ok(output.clone()),
            OutcomeRecord::Txn { succeeded, results } => Ok(Output::Txn {
                succeeded: *succeeded,
                results: results.clone(),
            }),
            OutcomeRecord::Refused(error) => Err(error.clone()),
            OutcomeRecord::TxnOpFailed { op_index, error } => Err(FsmError::TxnOpFailed {
                op_index: *op_index,
                source: Box::new(error.clone()),
            }),
            OutcomeRecord::TxnReadsNotRetained {
                succeeded,
                revision,
            } => Err(FsmError::ResultNotRetained {
                succeeded: *succeeded,
                revision: *revision,
            }),
        }
    }
}
