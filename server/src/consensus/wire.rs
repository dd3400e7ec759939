//! Versioned encodings of everything consensus writes to disk or sends to another member:
//! log entries, the snapshot file and peer messages.
//!
//! Each carries a format version in front of (or beside) a bincode body. A reader refuses a
//! version it does not read with `FormatError::Version`, naming both versions; it never guesses.
//! Bodies are bincode with fixed-width integers, so the encoding of an enum depends on the
//! order of its variants: the golden tests in `golden_tests.rs` pin every variant's bytes, and
//! a change to them is a new format version (see "Formats and compatibility" in
//! ARCHITECTURE.md). Decoding is bounded by the input's length (no allocation beyond it) and
//! the types decoded have no recursion, so a forged message cannot exhaust memory or the stack.

use bincode::Options;
use coord_proto::v1::peer::PeerMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use super::types::{Entry, LogId, TypeConfig, Vote};

/// Format of peer message payloads written by this build.
pub const PEER_FORMAT: u32 = 1;
/// Format of stored log entries written by this build.
pub const LOG_ENTRY_FORMAT: u32 = 1;
/// Format of the snapshot file written by this build.
pub const SNAPSHOT_FILE_FORMAT: u32 = 1;

/// What a peer message carries; a reply carries the kind of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ReadIndex,
    Hello,
    /// Raft's pre-vote: would the receiver vote for the sender now?
    PreVote,
    /// From a leader handing over leadership: start an election at once.
    TimeoutNow,
    /// Which log commands a member applies (`PeerFeatures`).
    Features,
    /// A vote request from a hand-off's candidate (`handoff::Standing`): a `VoteCall` that
    /// voters take with openraft's `leadership_transfer` set.
    TransferVote,
    /// AppendEntries in a pipelined stream (`AppendStream`); a reply carries openraft's
    /// `StreamAppendResult`, or a fatal error's text.
    AppendStream,
    /// A client write forwarded to the leader.
    Write,
    /// A membership change forwarded to the leader.
    Membership,
    /// A session keep-alive forwarded to the leader.
    KeepAlive,
    /// A session listing forwarded to the leader.
    ListSessions,
    /// A leadership move (`member move-leader`) forwarded to the leader.
    MoveLeader,
    /// A member's own membership change (`--join-via`), relayed to the leader.
    Join,
    /// Client writes forwarded to the leader together (`WriteBatchCall`), to a leader that
    /// said it takes them (`COMMAND_SET_FORWARD_BATCHES`).
    WriteBatch,
    /// A batch of forwarded client writes on a `ForwardStream`, tagged (`StreamedBatch`); its
    /// reply is a `StreamedReply` with the same tag.
    ForwardStream,
}

impl MessageKind {
    /// The number on the wire: fixed per kind, never reused.
    pub fn code(self) -> u32 {
        match self {
            MessageKind::AppendEntries => 1,
            MessageKind::Vote => 2,
            MessageKind::InstallSnapshot => 3,
            MessageKind::ReadIndex => 4,
            MessageKind::Hello => 5,
            MessageKind::PreVote => 6,
            MessageKind::TimeoutNow => 7,
            MessageKind::Features => 8,
            MessageKind::AppendStream => 9,
            MessageKind::TransferVote => 10,
            MessageKind::Write => 16,
            MessageKind::Membership => 17,
            MessageKind::KeepAlive => 18,
            MessageKind::ListSessions => 19,
            MessageKind::MoveLeader => 20,
            MessageKind::Join => 21,
            MessageKind::WriteBatch => 22,
            MessageKind::ForwardStream => 23,
        }
    }

    pub fn from_code(code: u32) -> Option<MessageKind> {
        [
            MessageKind::AppendEntries,
            MessageKind::Vote,
            MessageKind::InstallSnapshot,
            MessageKind::ReadIndex,
            MessageKind::Hello,
            MessageKind::PreVote,
            MessageKind::TimeoutNow,
            MessageKind::Features,
            MessageKind::AppendStream,
            MessageKind::TransferVote,
            MessageKind::Write,
            MessageKind::Membership,
            MessageKind::KeepAlive,
            MessageKind::ListSessions,
            MessageKind::MoveLeader,
            MessageKind::Join,
            MessageKind::WriteBatch,
            MessageKind::ForwardStream,
        ]
        .into_iter()
        .find(|kind| kind.code() == code)
    }
}

/// A vote request as members exchange it, in openraft 0.9's layout: the candidate's vote and
/// last log id, so members of either release read each other's requests. openraft 0.10 added
/// `leadership_transfer`; Coord sends it as the message's kind (`TransferVote`) instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VoteCall {
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
}

impl From<openraft::raft::VoteRequest<TypeConfig>> for VoteCall {
    fn from(request: openraft::raft::VoteRequest<TypeConfig>) -> VoteCall {
        VoteCall {
            vote: request.vote,
            last_log_id: request.last_log_id,
        }
    }
}

impl From<VoteCall> for openraft::raft::VoteRequest<TypeConfig> {
    fn from(call: VoteCall) -> openraft::raft::VoteRequest<TypeConfig> {
        openraft::raft::VoteRequest::new(call.vote, call.last_log_id)
    }
}

/// Why bytes from a disk or a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("{what} has format {found}, but this member reads format {supported}")]
    Version {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("expected a {expected:?} message, got message kind {found}")]
    Kind { expected: MessageKind, found: u32 },
    #[error("{what} cannot be decoded: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// bincode with fixed-width integers, decoding at most `limit` bytes and refusing trailing ones.
fn codec(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
        .reject_trailing_bytes()
}

/// How many bytes `value`'s body takes, without encoding it.
pub fn encoded_len<T: Serialize>(value: &T) -> u64 {
    codec(u64::MAX)
        .serialized_size(value)
        .expect("sizing a value in memory cannot fail")
}

fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    codec(u64::MAX)
        .serialize(value)
        .expect("encoding into memory cannot fail")
}

fn decode_body<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, FormatError> {
    codec(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|error| FormatError::Malformed {
            what,
            reason: error.to_string(),
        })
}

/// `body` behind a 4-byte little-endian format version.
fn versioned(format: u32, body: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + body.len());
    bytes.extend_from_slice(&format.to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// The body behind the format version, if the version is `supported`.
fn unversioned<'a>(
    what: &'static str,
    supported: u32,
    bytes: &'a [u8],
) -> Result<&'a [u8], FormatError> {
    let Some((version, body)) = bytes.split_first_chunk::<4>() else {
        return Err(FormatError::Malformed {
            what,
            reason: format!("{} bytes, too short for a format version", bytes.len()),
        });
    };
    let found = u32::from_le_bytes(*version);
    if found != supported {
        return Err(FormatError::Version {
            what,
            found,
            supported,
        });
    }
    Ok(body)
}

/// A peer message of `kind` carrying `value`.
pub fn encode_peer<T: Serialize>(kind: MessageKind, value: &T) -> PeerMessage {
    PeerMessage {
        payload: encode_body(value),
        format: PEER_FORMAT,
        kind: kind.code(),
    }
}

/// The kind of a peer message, once its format is known to be one this member reads.
pub fn peer_kind(message: &PeerMessage) -> Result<MessageKind, FormatError> {
    if message.format != PEER_FORMAT {
        return Err(FormatError::Version {
            what: "peer message",
            found: message.format,
            supported: PEER_FORMAT,
        });
    }
    MessageKind::from_code(message.kind).ok_or(FormatError::Malformed {
        what: "peer message",
        reason: format!("unknown message kind {}", message.kind),
    })
}

/// Decodes a peer message that must be of `expected` kind.
pub fn decode_peer<T: DeserializeOwned>(
    message: &PeerMessage,
    expected: MessageKind,
) -> Result<T, FormatError> {
    let kind = peer_kind(message)?;
    if kind != expected {
        return Err(FormatError::Kind {
            expected,
            found: message.kind,
        });
    }
    decode_body("peer message", &message.payload)
}

/// A log entry as stored.
pub fn encode_log_entry(entry: &Entry) -> Vec<u8> {
    versioned(LOG_ENTRY_FORMAT, encode_body(entry))
}

/// A stored log entry.
pub fn decode_log_entry(bytes: &[u8]) -> Result<Entry, FormatError> {
    decode_body(
        "log entry",
        unversioned("log entry", LOG_ENTRY_FORMAT, bytes)?,
    )
}

/// A small record stored beside the log (vote, committed and purged log ids).
pub fn encode_log_meta<T: Serialize>(value: &T) -> Vec<u8> {
    versioned(LOG_ENTRY_FORMAT, encode_body(value))
}

pub fn decode_log_meta<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    decode_body(what, unversioned(what, LOG_ENTRY_FORMAT, bytes)?)
}

/// The snapshot file's contents.
pub fn encode_snapshot_file<T: Serialize>(value: &T) -> Vec<u8> {
    versioned(SNAPSHOT_FILE_FORMAT, encode_body(value))
}

pub fn decode_snapshot_file<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    decode_body(
        "snapshot file",
        unversioned("snapshot file", SNAPSHOT_FILE_FORMAT, bytes)?,
    )
}

#[cfg(test)]
mod tests {
    use crate::consensus::types::{CommittedLeaderId, LogId};
    use openraft::EntryPayload;

    use super::*;

    #[test]
    fn a_peer_message_of_another_format_or_kind_is_refused_by_name() {
        let mut message = encode_peer(MessageKind::KeepAlive, &7u64);
        assert_eq!(
            decode_peer::<u64>(&message, MessageKind::Write),
            Err(FormatError::Kind {
                expected: MessageKind::Write,
                found: MessageKind::KeepAlive.code()
            })
        );
        message.format = 2;
        let error = decode_peer::<u64>(&message, MessageKind::KeepAlive).unwrap_err();
        assert_eq!(
            error,
            FormatError::Version {
                what: "peer message",
                found: 2,
                supported: PEER_FORMAT
            }
        );
        assert_eq!(
            error.to_string(),
            "peer message has format 2, but this member reads format 1"
        );
        message.format = PEER_FORMAT;
        message.kind = 999;
        assert!(matches!(
            peer_kind(&message),
            Err(FormatError::Malformed { .. })
        ));
    }

    #[test]
    fn a_log_entry_of_an_unknown_format_or_truncated_is_a_typed_error() {
        let entry = Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 1,
                    node_id: 1,
                },
                3,
            ),
            payload: EntryPayload::Blank,
        };
        let mut bytes = encode_log_entry(&entry);
        assert_eq!(decode_log_entry(&bytes).unwrap().log_id, entry.log_id);
        bytes[0] = 9;
        assert_eq!(
            decode_log_entry(&bytes).unwrap_err(),
            FormatError::Version {
                what: "log entry",
                found: 9,
                supported: LOG_ENTRY_FORMAT
            }
        );
        assert!(matches!(
            decode_log_entry(&bytes[..2]),
            Err(FormatError::Malformed { .. })
        ));
        let mut truncated = encode_log_entry(&entry);
        truncated.pop();
        assert!(matches!(
            decode_log_entry(&truncated),
            Err(FormatError::Malformed { .. })
        ));
    }

    #[test]
    fn a_length_prefix_beyond_the_message_allocates_nothing_and_fails() {
        // A byte vector claiming 2^60 bytes in a 12-byte message.
        let mut payload = (1u64 << 60).to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 4]);
        let message = PeerMessage {
            payload,
            format: PEER_FORMAT,
            kind: MessageKind::Write.code(),
        };
        assert!(matches!(
            decode_peer::<Vec<u8>>(&message, MessageKind::Write),
            Err(FormatError::Malformed { .. })
        ));
    }
}
