//! `Admission`: checks on every Raft message from another member before it reaches openraft,
//! so that no message, forged or broken, can make this member abort or persist an impossible
//! state (openraft trusts its peers: a term of `u64::MAX` overflows at the next election, a
//! gap in the indexes of appended entries is stored as if filled, a snapshot chunk at a huge
//! offset allocates that much memory).
//!
//! The checks are on values alone; authenticating the sender is the peer port's TLS.
//! Invariant: a refused message changes nothing: openraft never sees it.

use std::sync::{Mutex, PoisonError};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::EntryPayload;
use openraft_legacy::network_v1::InstallSnapshotRequest;
use thiserror::Error;

use super::types::TypeConfig;
use super::types::{LogId, Vote};
use crate::fsm::{Limits, COMMAND_BYTES_MAX, TXN_CONDITIONS_MAX, TXN_OPS_MAX};

/// No cluster reaches this term (a million elections a second for eight years).
pub const TERM_MAX: u64 = 1 << 48;
/// No log reaches this index.
pub const LOG_INDEX_MAX: u64 = 1 << 62;
/// Largest snapshot a member accepts from a leader, in bytes.
pub const SNAPSHOT_BYTES_MAX: u64 = 8 << 30;

/// The largest entries any member may propose, whatever its configuration: commands are
/// checked against these on arrival (a member's `--max-data-bytes` is at most the command
/// limit).
const HARD_LIMITS: Limits = Limits {
    node_data_bytes_max: COMMAND_BYTES_MAX,
    txn_ops_max: TXN_OPS_MAX,
    txn_conditions_max: TXN_CONDITIONS_MAX,
    quota_bytes: 0,
};

/// Why a peer message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("term {term} is beyond any term a cluster reaches (limit {TERM_MAX})")]
    ImpossibleTerm { term: u64 },
    #[error("member id 0 is not a member")]
    NoMember,
    #[error("candidate {member} is not in this member's configuration")]
    UnknownCandidate { member: u64 },
    #[error("impossible log: {reason}")]
    ImpossibleLog { reason: String },
    #[error("entry {index} holds a command this cluster never accepts: {reason}")]
    Oversize { index: u64, reason: String },
    #[error("snapshot chunk refused: {reason}")]
    SnapshotChunk { reason: String },
}

/// Where the snapshot being received stands: its id and the next offset expected.
#[derive(Debug, Default)]
struct Receiving {
    snapshot_id: String,
    next_offset: u64,
}

#[derive(Debug, Default)]
pub struct Admission {
    receiving: Mutex<Receiving>,
}

fn check_vote(vote: &Vote) -> Result<(), Refusal> {
    let term = vote.leader_id().term;
    if term >= TERM_MAX {
        return Err(Refusal::ImpossibleTerm { term });
    }
    if vote.leader_id.node_id == 0 {
        return Err(Refusal::NoMember);
    }
    Ok(())
}

/// A log id a leader or candidate of `term` may hold.
fn check_log_id(what: &str, log_id: &LogId, term: u64) -> Result<(), Refusal> {
    if log_id.leader_id.term > term {
        return Err(Refusal::ImpossibleLog {
            reason: format!(
                "{what} {log_id} is of term {}, after the sender's term {term}",
                log_id.leader_id.term
            ),
        });
    }
    if log_id.index >= LOG_INDEX_MAX {
        return Err(Refusal::ImpossibleLog {
            reason: format!("{what} index {} is beyond {LOG_INDEX_MAX}", log_id.index),
        });
    }
    Ok(())
}

impl Admission {
    /// An AppendEntries: a possible vote, entries that follow `prev_log_id` without a gap in
    /// non-decreasing terms no later than the leader's, and commands within the hard limits.
    pub fn append(&self, request: &AppendEntriesRequest<TypeConfig>) -> Result<(), Refusal> {
        check_vote(&request.vote)?;
        let term = request.vote.leader_id().term;
        if let Some(prev) = &request.prev_log_id {
            check_log_id("prev_log_id", prev, term)?;
        }
        if let Some(committed) = &request.leader_commit {
            check_log_id("leader_commit", committed, term)?;
        }
        // Below LOG_INDEX_MAX (checked above), so the next index cannot overflow.
        let first_index = request.prev_log_id.map_or(0, |prev| prev.index + 1);
        let mut last_term = request.prev_log_id.map_or(0, |prev| prev.leader_id.term);
        for (expected_index, entry) in (first_index..).zip(&request.entries) {
            check_log_id("entry", &entry.log_id, term)?;
            if entry.log_id.index != expected_index {
                return Err(Refusal::ImpossibleLog {
                    reason: format!(
                        "entry {} where entry {expected_index} must come",
                        entry.log_id.index
                    ),
                });
            }
            if entry.log_id.leader_id.term < last_term {
                return Err(Refusal::ImpossibleLog {
                    reason: format!("entry {} goes back to an older term", entry.log_id.index),
                });
            }
            if let EntryPayload::Normal(proposal) = &entry.payload {
                proposal
                    .check_entry(&HARD_LIMITS)
                    .map_err(|error| Refusal::Oversize {
                        index: entry.log_id.index,
                        reason: error.to_string(),
                    })?;
            }
            last_term = entry.log_id.leader_id.term;
        }
        Ok(())
    }

    /// A VoteRequest: a possible term and log, from a candidate in `is_member`'s configuration
    /// (refusing a vote is always safe).
    pub fn vote(
        &self,
        request: &VoteRequest<TypeConfig>,
        is_member: impl Fn(u64) -> bool,
    ) -> Result<(), Refusal> {
        check_vote(&request.vote)?;
        let term = request.vote.leader_id().term;
        if let Some(last) = &request.last_log_id {
            check_log_id("last_log_id", last, term)?;
        }
        if let Some(candidate) = Some(request.vote.leader_id.node_id) {
            if !is_member(candidate) {
                return Err(Refusal::UnknownCandidate { member: candidate });
            }
        }
        Ok(())
    }

    /// An InstallSnapshot chunk: chunks of one snapshot arrive in order from offset 0, and the
    /// whole stays within `SNAPSHOT_BYTES_MAX`.
    pub fn snapshot(&self, request: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Refusal> {
        check_vote(&request.vote)?;
        let term = request.vote.leader_id().term;
        if let Some(last) = &request.meta.last_log_id {
            check_log_id("snapshot last_log_id", last, term)?;
        }
        let mut receiving = self
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let expected = if request.offset == 0 {
            0
        } else if receiving.snapshot_id == request.meta.snapshot_id {
            receiving.next_offset
        } else {
            return Err(Refusal::SnapshotChunk {
                reason: format!(
                    "chunk at offset {} of snapshot {} that has not started",
                    request.offset, request.meta.snapshot_id
                ),
            });
        };
        if request.offset != expected {
            return Err(Refusal::SnapshotChunk {
                reason: format!(
                    "chunk at offset {} where offset {expected} must come",
                    request.offset
                ),
            });
        }
        let end = request.offset.saturating_add(request.data.len() as u64);
        if end > SNAPSHOT_BYTES_MAX {
            return Err(Refusal::SnapshotChunk {
                reason: format!("snapshot would exceed {SNAPSHOT_BYTES_MAX} bytes"),
            });
        }
        *receiving = Receiving {
            snapshot_id: request.meta.snapshot_id.clone(),
            next_offset: end,
        };
        Ok(())
    }
}
