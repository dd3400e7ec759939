//! `Proposal`: what one Raft log entry asks the namespace to do: a command, and for a client
//! write the id that makes it apply at most once.
//!
//! The write id sits beside the command rather than wrapping it, so the stored type has no
//! recursion: decoding a log entry or a forwarded write is bounded by its size.

use serde::{Deserialize, Serialize};

use super::command::{Command, Limits, WriteId, WRITE_CLIENT_ID_BYTES_MAX};
use super::error::FsmError;

/// The payload of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Set for client writes: a repeat of the same id gets the first outcome again.
    pub write_id: Option<WriteId>,
    pub command: Command,
}

/// A one-line summary for logs: the command's kind and, for a batch, its length (never the
/// paths or data, which may be large or private).
impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.command {
            Command::Create(_) => "create",
            Command::Set(_) => "set",
            Command::Delete(_) => "delete",
            Command::Txn(_) => "txn",
            Command::OpenSession(_) => "open-session",
            Command::CloseSession(_) => "close-session",
            Command::CheckpointSessions(_) => "checkpoint-sessions",
            Command::Batch(items) => return write!(f, "batch of {}", items.len()),
        };
        f.write_str(kind)
    }
}

impl From<Command> for Proposal {
    fn from(command: Command) -> Proposal {
        Proposal {
            write_id: None,
            command,
        }
    }
}

impl Proposal {
    /// `command`, applied at most once per `write_id`.
    pub fn once(write_id: WriteId, command: Command) -> Proposal {
        Proposal {
            write_id: Some(write_id),
            command,
        }
    }

    /// Checks a write proposed by a client or forwarded by a member: the configurable limits
    /// and the write id, and that it is not a batch (only the leader's batcher makes those).
    /// Called before proposing, never during apply.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), FsmError> {
        if let Command::Batch(_) = self.command {
            return Err(FsmError::InvalidArgument {
                reason: "a batch is made by the leader, never proposed as one write".into(),
            });
        }
        self.check_entry(limits)
    }

    /// Checks a log entry's proposal as a leader may write it (a batch's items each within
    /// `limits`): what a follower admits from its leader.
    pub fn check_entry(&self, limits: &Limits) -> Result<(), FsmError> {
        if let Some(id) = &self.write_id {
            if id.client.is_empty() || id.client.len() > WRITE_CLIENT_ID_BYTES_MAX {
                return Err(FsmError::InvalidArgument {
                    reason: format!(
                        "write_id.client_id must be 1 to {WRITE_CLIENT_ID_BYTES_MAX} bytes, got {}",
                        id.client.len()
                    ),
                });
            }
        }
        self.command.check_limits(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{BatchItem, DeleteCommand, BATCH_ITEMS_MAX};
    use super::*;

    #[test]
    fn a_batch_is_refused_as_a_proposal_and_its_items_are_checked_as_entries() {
        let small = Command::Delete(DeleteCommand {
            path: "/a".into(),
            expected_version: None,
            recursive: false,
        });
        let item = BatchItem {
            write_id: None,
            command: small,
        };
        let batch = Command::Batch(vec![item.clone(); 3]);
        // As a proposal from a client or a member it is refused; as the leader's entry it is
        // admitted, its items checked.
        let limits = Limits::default();
        assert!(matches!(
            Proposal::from(batch.clone()).check_limits(&limits),
            Err(FsmError::InvalidArgument { .. })
        ));
        assert_eq!(batch.check_limits(&limits), Ok(()));
        assert_eq!(Proposal::from(batch).check_entry(&limits), Ok(()));
        let oversize = Command::Batch(vec![item; BATCH_ITEMS_MAX + 1]);
        assert!(matches!(
            oversize.check_limits(&limits),
            Err(FsmError::LimitExceeded { .. })
        ));
    }
}
