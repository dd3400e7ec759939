//! The one mapping from Coord's errors to `tonic::Status`. Each status carries a stable gRPC
//! code, an encoded `ErrorDetail` in its details, and `coord-error: <CODE>` in its metadata.
//!
//! | error | gRPC code | retryable |
//! | --- | --- | --- |
//! | InvalidPath, InvalidArgument, TooLarge, LimitExceeded, RootReadOnly | INVALID_ARGUMENT | no |
//! | NodeExists | ALREADY_EXISTS | no |
//! | NoNode | NOT_FOUND | no |
//! | BadVersion, FenceRejected | ABORTED | no |
//! | NotEmpty, NoParent, EphemeralParent, SessionExpired | FAILED_PRECONDITION | no |
//! | ResultNotRetained (the write was applied) | FAILED_PRECONDITION | no |
//! | NoSpace (the tree is at `--quota-bytes`) | RESOURCE_EXHAUSTED | no (until deletes) |
//! | NoLeader, ShuttingDown | UNAVAILABLE | yes |
//! | NotAMember (removed, or not added yet) | UNAVAILABLE (code NOT_A_MEMBER) | yes, elsewhere |
//! | Timeout | DEADLINE_EXCEEDED | yes (outcome unknown for writes) |
//! | LeaderUnreachable | UNAVAILABLE (code TIMEOUT) | yes (outcome unknown for writes) |
//! | Membership | FAILED_PRECONDITION | no |
//! | Interrupted | UNAVAILABLE | no: the write's outcome is unknown |
//! | Fatal | INTERNAL | no |
//! | Denied (auth: a permission missing) | PERMISSION_DENIED | no |
//! | no identity, or an unknown token (auth enabled) | UNAUTHENTICATED | no |

use coord_proto::v1::{ErrorCode, ErrorDetail};
use coord_proto::ERROR_CODE_METADATA_KEY;
use prost::Message;
use tonic::{Code, Status};

use crate::consensus::ConsensusError;
use crate::fsm::FsmError;

/// Longest path and message carried in a status: both travel in HTTP/2 headers, whose size
/// is limited, and a 4 KiB path quoted twice must not turn a clean error into a protocol error.
const STATUS_PATH_BYTES_MAX: usize = 256;
const STATUS_MESSAGE_BYTES_MAX: usize = 1024;

/// `text` cut to at most `limit` bytes on a character boundary, marked when cut.
fn abbreviate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…({} bytes)", &text[..cut], text.len())
}

/// Builds the status for `detail`.
pub fn status(code: Code, mut detail: ErrorDetail) -> Status {
    detail.path = abbreviate(&detail.path, STATUS_PATH_BYTES_MAX);
    detail.message = abbreviate(&detail.message, STATUS_MESSAGE_BYTES_MAX);
    let name = detail.code().as_str_name();
    let mut status =
        Status::with_details(code, detail.message.clone(), detail.encode_to_vec().into());
    if let Ok(value) = name.parse() {
        status.metadata_mut().insert(ERROR_CODE_METADATA_KEY, value);
    }
    status
}

fn detail(code: ErrorCode, message: String) -> ErrorDetail {
    ErrorDetail {
        code: code as i32,
        message,
        ..ErrorDetail::default()
    }
}

/// An access the auth policy refused, naming the permission and the path.
pub fn denied_status(denied: &crate::auth::Denied) -> Status {
    if denied.user.is_none() {
        return unauthenticated_status(&denied.to_string());
    }
    permission_denied_status(&denied.path, denied.to_string())
}

/// PERMISSION_DENIED about `path`.
pub fn permission_denied_status(path: &str, message: String) -> Status {
    status(
        Code::PermissionDenied,
        ErrorDetail {
            path: path.to_owned(),
            ..detail(ErrorCode::PermissionDenied, message)
        },
    )
}

/// UNAUTHENTICATED: auth is enabled and the request has no (valid) identity.
pub fn unauthenticated_status(message: &str) -> Status {
    status(
        Code::Unauthenticated,
        detail(ErrorCode::Unauthenticated, message.to_owned()),
    )
}

/// What a member answers while it starts (loading its data): retryable, so clients move on.
pub fn starting_status(member: u64) -> Status {
    go_elsewhere(format!(
        "member {member} is starting (loading its data); retry or use another member"
    ))
}

/// A retryable UNAVAILABLE that sends the client to another member.
fn go_elsewhere(message: String) -> Status {
    status(
        Code::Unavailable,
        ErrorDetail {
            retryable: true,
            ..detail(ErrorCode::Unavailable, message)
        },
    )
}

/// The status for a namespace error.
pub fn fsm_status(error: &FsmError) -> Status {
    let (code, detail) = fsm_detail(error);
    status(code, detail)
}

// tidy: long function: one arm per error variant, so the whole mapping reads in one place.
fn fsm_detail(error: &FsmError) -> (Code, ErrorDetail) {
    let message = error.to_string();
    match error {
        FsmError::InvalidPath { path, .. } => (
            Code::InvalidArgument,
            ErrorDetail {
                path: path.clone(),
                ..detail(ErrorCode::InvalidPath, message)
            },
        ),
        FsmError::InvalidArgument { .. } => (
            Code::InvalidArgument,
            detail(ErrorCode::InvalidArgument, message),
        ),
        FsmError::NodeExists { path } => (
            Code::AlreadyExists,
            ErrorDetail {
                path: path.to_string(),
                ..detail(ErrorCode::NodeExists, message)
            },
        ),
        FsmError::NoNode { path } => (
            Code::NotFound,
            ErrorDetail {
                path: path.to_string(),
                ..detail(ErrorCode::NoNode, message)
            },
        ),
        FsmError::BadVersion {
            path,
            expected,
            actual,
        } => (
            Code::Aborted,
            ErrorDetail {
                path: path.to_string(),
                expected: *expected,
                actual: *actual,
                ..detail(ErrorCode::BadVersion, message)
            },
        ),
        FsmError::NotEmpty { path } => (
            Code::FailedPrecondition,
            ErrorDetail {
                path: path.to_string(),
                ..detail(ErrorCode::NotEmpty, message)
            },
        ),
        FsmError::NoParent { parent } => (
            Code::FailedPrecondition,
            ErrorDetail {
                path: parent.to_string(),
                ..detail(ErrorCode::NoParent, message)
            },
        ),
        FsmError::EphemeralParent { parent } => (
            Code::FailedPrecondition,
            ErrorDetail {
                path: parent.to_string(),
                ..detail(ErrorCode::EphemeralParent, message)
            },
        ),
        FsmError::SessionExpired { session } => (
            Code::FailedPrecondition,
            ErrorDetail {
                actual: session.0,
                ..detail(ErrorCode::SessionExpired, message)
            },
        ),
        FsmError::FenceRejected {
            path,
            token,
            current,
        } => (
            Code::Aborted,
            ErrorDetail {
                path: path.to_string(),
                expected: token.0,
                actual: current.0,
                ..detail(ErrorCode::FenceRejected, message)
            },
        ),
        FsmError::TooLarge { path, size, limit } => (
            Code::InvalidArgument,
            ErrorDetail {
                path: path.clone(),
                expected: *limit,
                actual: *size,
                ..detail(ErrorCode::TooLarge, message)
            },
        ),
        FsmError::LimitExceeded { size, limit, .. } => (
            Code::InvalidArgument,
            ErrorDetail {
                expected: *limit,
                actual: *size,
                ..detail(ErrorCode::LimitExceeded, message)
            },
        ),
        FsmError::StaleWriteId {
            sequence,
            answered_below,
            ..
        } => (
            Code::FailedPrecondition,
            ErrorDetail {
                expected: *answered_below,
                actual: *sequence,
                ..detail(ErrorCode::StaleWriteId, message)
            },
        ),
        FsmError::RootReadOnly => (
            Code::InvalidArgument,
            detail(ErrorCode::RootReadOnly, message),
        ),
        FsmError::NoSpace { used, quota } => (
            Code::ResourceExhausted,
            ErrorDetail {
                expected: *quota,
                actual: *used,
                ..detail(ErrorCode::NoSpace, message)
            },
        ),
        FsmError::ResultNotRetained {
            succeeded,
            revision,
        } => (
            Code::FailedPrecondition,
            ErrorDetail {
                expected: u64::from(*succeeded),
                actual: revision.0,
                ..detail(ErrorCode::ResultNotRetained, message)
            },
        ),
        FsmError::TxnOpFailed { op_index, source } => {
            let (code, inner) = fsm_detail(source);
            (
                code,
                ErrorDetail {
                    op_index: Some(*op_index as u32),
                    message,
                    ..inner
                },
            )
        }
    }
}

/// The status for a consensus error.
pub fn consensus_status(error: &ConsensusError) -> Status {
    let message = error.to_string();
    match error {
        ConsensusError::NoLeader { leader_hint } => status(
            Code::Unavailable,
            ErrorDetail {
                retryable: true,
                leader_id: leader_hint.map_or(0, |leader| leader.0),
                ..detail(ErrorCode::NoLeader, message)
            },
        ),
        // The forwarded request may have reached the leader: outcome unknown, like a timeout.
        ConsensusError::LeaderUnreachable { leader, .. } => status(
            Code::Unavailable,
            ErrorDetail {
                retryable: true,
                leader_id: leader.0,
                ..detail(ErrorCode::Timeout, message)
            },
        ),
        ConsensusError::Timeout { .. } => status(
            Code::DeadlineExceeded,
            ErrorDetail {
                retryable: true,
                ..detail(ErrorCode::Timeout, message)
            },
        ),
        ConsensusError::ShuttingDown => status(
            Code::Unavailable,
            ErrorDetail {
                retryable: true,
                ..detail(ErrorCode::Unavailable, message)
            },
        ),
        ConsensusError::Interrupted { .. } => status(
            Code::Unavailable,
            ErrorDetail {
                retryable: false,
                ..detail(ErrorCode::Interrupted, message)
            },
        ),
        ConsensusError::Membership { .. } => status(
            Code::FailedPrecondition,
            detail(ErrorCode::Membership, message),
        ),
        ConsensusError::Fatal { .. } => {
            status(Code::Internal, detail(ErrorCode::Internal, message))
        }
        ConsensusError::NotAMember { .. } => status(
            Code::Unavailable,
            ErrorDetail {
                retryable: true,
                ..detail(ErrorCode::NotAMember, message)
            },
        ),
    }
}

/// Resolves once the member stops (`stopping` turned true, or its sender is gone).
pub async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// What a stopping member ends its open streams (watches, keep-alives) with: retryable, so
/// clients reconnect to another member at once.
pub fn going_away_status(member: u64) -> Status {
    go_elsewhere(format!(
        "member {member} is shutting down; reconnect to another member"
    ))
}

/// The status for a malformed request that never reached the namespace.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        detail(ErrorCode::InvalidArgument, message.into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::NodePath;

    #[test]
    fn long_paths_are_abbreviated_in_statuses() {
        let long = format!("/{}", "é".repeat(3000));
        let status = fsm_status(&FsmError::invalid_path(
            &long,
            crate::fsm::PathRule::TooLong,
        ));
        let detail = ErrorDetail::decode(status.details()).unwrap();
        assert!(detail.path.len() < 300, "{}", detail.path.len());
        assert!(detail.path.ends_with("(6001 bytes)"));
        assert!(status.message().len() < 1100);
    }

    #[test]
    fn txn_failures_keep_the_inner_code_and_name_the_operation() {
        let error = FsmError::TxnOpFailed {
            op_index: 2,
            source: Box::new(FsmError::NoNode {
                path: NodePath::parse("/a").unwrap(),
            }),
        };
        let status = fsm_status(&error);
        assert_eq!(status.code(), Code::NotFound);
        let detail = ErrorDetail::decode(status.details()).unwrap();
        assert_eq!(detail.code(), ErrorCode::NoNode);
        assert_eq!(detail.op_index, Some(2));
        assert_eq!(detail.path, "/a");
        assert_eq!(
            status.metadata().get(ERROR_CODE_METADATA_KEY).unwrap(),
            "ERROR_CODE_NO_NODE"
        );
    }
}
