//! `Error`: what a Coord call can fail with, in three families a caller acts on differently:
//! rejected (nothing happened, retrying the same request fails again), unavailable (nothing
//! happened, retry later), and outcome unknown (a write may or may not have been applied).

use coord_proto::v1::{ErrorCode, ErrorDetail};
use prost::Message;
use thiserror::Error;

/// An error from a Coord call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A path broke a syntax rule, which `message` names.
    #[error("{message}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// The rule it broke.
        message: String,
    },
    /// The request was malformed in another way (a bad txn, a zero TTL, a stale write id).
    #[error("{message}")]
    InvalidArgument {
        /// What was wrong.
        message: String,
    },
    /// A create found a node already at the path.
    #[error("node {path} already exists")]
    NodeExists {
        /// The path that is taken.
        path: String,
    },
    /// The node does not exist.
    #[error("node {path} does not exist")]
    NoNode {
        /// The missing node's path.
        path: String,
    },
    /// A conditional write found the node at another version than it expected.
    #[error("node {path} has version {actual}, expected {expected}")]
    BadVersion {
        /// The node's path.
        path: String,
        /// The version the request required.
        expected: u64,
        /// The version the node has.
        actual: u64,
    },
    /// A non-recursive delete found the node still has children.
    #[error("node {path} has children")]
    NotEmpty {
        /// The node's path.
        path: String,
    },
    /// A create found no node at the parent path (and was not asked to make parents).
    #[error("parent node {parent} does not exist")]
    NoParent {
        /// The missing parent's path.
        parent: String,
    },
    /// A create would put a child under an ephemeral node.
    #[error("parent node {parent} is ephemeral and cannot have children")]
    EphemeralParent {
        /// The ephemeral parent's path.
        parent: String,
    },
    /// The session has expired, was closed, or is unknown to the cluster; everything it held
    /// is gone.
    #[error("session {session} has expired or was closed")]
    SessionExpired {
        /// The session id.
        session: u64,
    },
    /// The cluster's data is at its quota: writes that could grow it are refused until deletes
    /// make room; reads and deletes work.
    #[error("the cluster's data is {used} bytes, at its quota of {quota} bytes")]
    NoSpace {
        /// The data's size in bytes.
        used: u64,
        /// The quota in bytes.
        quota: u64,
    },
    /// A retried write had already been applied (at `revision`), but it was a txn whose read
    /// results were too large for the cluster to remember: the write is done; read the data
    /// again.
    #[error(
        "the write was already applied at revision {revision} (txn succeeded: {succeeded}); \
         its read results were not kept, read them again"
    )]
    ResultNotRetained {
        /// The revision the write was applied at.
        revision: u64,
        /// Whether the txn ran its success branch.
        succeeded: bool,
    },
    /// A fenced write was refused: the token's holder is no longer current.
    #[error("fence rejected on {path}: held token {token}, current token {current}")]
    FenceRejected {
        /// The fence's node (a lock, permit or candidacy node).
        path: String,
        /// The token the request held: the create revision it expected the node to have.
        token: u64,
        /// The create revision of the node now at `path`; 0 if there is none.
        current: u64,
    },
    /// A node's data is over the server's size limit.
    #[error("data for {path} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The node's path.
        path: String,
        /// The size of the data sent, in bytes.
        size: u64,
        /// The most the server accepts, in bytes.
        limit: u64,
    },
    /// A limit other than data size was exceeded (too many ops in a txn, a page too large).
    #[error("limit exceeded: {message}")]
    LimitExceeded {
        /// Which limit was exceeded.
        message: String,
    },
    /// The request would delete the root node.
    #[error("the root node cannot be deleted")]
    RootReadOnly,
    /// A watch asked for history older than the server retains.
    #[error("revision compacted; the oldest available is {oldest_revision}")]
    Compacted {
        /// The oldest revision the server can still deliver.
        oldest_revision: u64,
    },
    /// A membership change was refused (an unknown member, or a change already in progress).
    #[error("membership change refused: {message}")]
    Membership {
        /// Why it was refused.
        message: String,
    },
    /// One operation of a txn failed; the txn changed nothing.
    #[error("txn operation {op_index} failed: {source}")]
    TxnOpFailed {
        /// The operation's index (from 0) in the branch that ran.
        op_index: u32,
        /// Why that operation failed.
        source: Box<Error>,
    },
    /// Not applied; the cluster cannot serve it now (no leader, shutting down). Retry later.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What the member said.
        message: String,
        /// The member id of the leader the answering member knew, if any.
        leader_hint: Option<u64>,
    },
    /// The member asked is not a member of the cluster (it was removed, or is going away) and
    /// serves no client request. Not applied; the client moves to another endpoint at once.
    #[error("{endpoint} is not a member of the cluster: {message}")]
    NotAMember {
        /// The endpoint that answered.
        endpoint: String,
        /// What the member said.
        message: String,
    },
    /// The call timed out; a write may or may not have been applied.
    #[error("timed out: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// The member stopped while the write was in flight; it may or may not have been applied.
    #[error("interrupted: {message}")]
    Interrupted {
        /// What the member said.
        message: String,
    },
    /// The connection failed during the call; a write may or may not have been applied.
    #[error("connection to {endpoint} lost: {message}")]
    ConnectionLost {
        /// The endpoint the call went to.
        endpoint: String,
        /// The transport's description of the failure.
        message: String,
    },
    /// Auth is enabled and this client's user lacks a permission; `message` names it (for
    /// example `user "alice" lacks write on /app/x`). Nothing was applied.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The path (or `session N`) the permission was needed on.
        path: String,
        /// What is missing.
        message: String,
    },
    /// Auth is enabled and the request carried no identity (no client certificate, no
    /// token) or a token that is unknown or revoked. Nothing was applied.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// What the member said.
        message: String,
    },
    /// A TLS connection could not be made, or the member needs TLS and got none: a
    /// configuration mistake (wrong CA, expired or missing certificate, a name the certificate
    /// does not hold, TLS on one side only) that retrying does not fix. Nothing was sent.
    #[error("TLS with {endpoint} failed: {message}")]
    Tls {
        /// The endpoint the connection was to.
        endpoint: String,
        /// What went wrong and what to change.
        message: String,
    },
    /// None of the endpoints could be reached.
    #[error("cannot reach any endpoint of {endpoints:?}: {message}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// The last connection failure.
        message: String,
    },
    /// The member failed internally, or answered with a status the client does not know; a
    /// write may or may not have been applied.
    #[error("server error: {message}")]
    Internal {
        /// What the member said.
        message: String,
    },
    /// A recipe could not confirm its session alive: no keep-alive was acknowledged before the
    /// session's `safe_until`, so the server may already have expired it and handed whatever
    /// it held to someone else. Nothing was acquired; the session may recover.
    #[error("session {session} is not confirmed alive (suspended past its safe-until deadline)")]
    SessionUnsafe {
        /// The session id.
        session: u64,
    },
    /// A recipe's node (a lock, permit, candidacy or barrier entry) is gone or was replaced,
    /// so whatever it stood for is no longer held.
    #[error("recipe node {path} with token {token} is gone; what it held is lost")]
    LockLost {
        /// The recipe node's path.
        path: String,
        /// Its fencing token (the node's create revision).
        token: u64,
    },
    /// Participants of one semaphore disagree on its number of permits.
    #[error("semaphore {name} records {recorded} permits; this participant asked for {requested}")]
    PermitsMismatch {
        /// The semaphore's name (its directory).
        name: String,
        /// The number of permits recorded in the directory.
        recorded: u64,
        /// The number of permits this participant asked for.
        requested: u64,
    },
    /// A node that a recipe reads holds data it does not understand (it was written by
    /// something else, or by an incompatible version).
    #[error("recipe data of {path} is not understood: {message}")]
    BadRecipeData {
        /// The node's path.
        path: String,
        /// What could not be understood.
        message: String,
    },
}

impl Error {
    /// Whether the same request may succeed if sent again later, knowing it was not applied.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Unreachable { .. } | Error::NotAMember { .. }
        )
    }

    /// Whether a write that failed this way may nevertheless have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Interrupted { .. }
                | Error::ConnectionLost { .. }
                | Error::Internal { .. }
        )
    }

    /// Builds the error for a failed call to `endpoint`.
    pub(crate) fn from_status(status: &tonic::Status, endpoint: &str) -> Error {
        match ErrorDetail::decode(status.details()) {
            Ok(detail) if detail.code != 0 => from_detail(detail, endpoint),
            _ => from_transport(status, endpoint),
        }
    }
}

// tidy: long function: one arm per error code, so the whole mapping reads in one place.
fn from_detail(detail: ErrorDetail, endpoint: &str) -> Error {
    let error = match detail.code() {
        ErrorCode::InvalidPath => Error::InvalidPath {
            path: detail.path.clone(),
            message: detail.message.clone(),
        },
        ErrorCode::InvalidArgument | ErrorCode::Unspecified | ErrorCode::StaleWriteId => {
            Error::InvalidArgument {
                message: detail.message.clone(),
            }
        }
        ErrorCode::NodeExists => Error::NodeExists {
            path: detail.path.clone(),
        },
        ErrorCode::NoNode => Error::NoNode {
            path: detail.path.clone(),
        },
        ErrorCode::BadVersion => Error::BadVersion {
            path: detail.path.clone(),
            expected: detail.expected,
            actual: detail.actual,
        },
        ErrorCode::NotEmpty => Error::NotEmpty {
            path: detail.path.clone(),
        },
        ErrorCode::NoParent => Error::NoParent {
            parent: detail.path.clone(),
        },
        ErrorCode::EphemeralParent => Error::EphemeralParent {
            parent: detail.path.clone(),
        },
        ErrorCode::SessionExpired => Error::SessionExpired {
            session: detail.actual,
        },
        ErrorCode::FenceRejected => Error::FenceRejected {
            path: detail.path.clone(),
            token: detail.expected,
            current: detail.actual,
        },
        ErrorCode::TooLarge => Error::TooLarge {
            path: detail.path.clone(),
            size: detail.actual,
            limit: detail.expected,
        },
        ErrorCode::LimitExceeded => Error::LimitExceeded {
            message: detail.message.clone(),
        },
        ErrorCode::RootReadOnly => Error::RootReadOnly,
        ErrorCode::Compacted => Error::Compacted {
            oldest_revision: detail.actual,
        },
        ErrorCode::Membership => Error::Membership {
            message: detail.message.clone(),
        },
        ErrorCode::NoLeader | ErrorCode::Unavailable => Error::Unavailable {
            message: detail.message.clone(),
            leader_hint: (detail.leader_id != 0).then_some(detail.leader_id),
        },
        ErrorCode::PermissionDenied => Error::PermissionDenied {
            path: detail.path.clone(),
            message: detail.message.clone(),
        },
        ErrorCode::Unauthenticated => Error::Unauthenticated {
            message: detail.message.clone(),
        },
        ErrorCode::NotAMember => Error::NotAMember {
            endpoint: endpoint.to_owned(),
            message: detail.message.clone(),
        },
        ErrorCode::Timeout => Error::Timeout {
            message: detail.message.clone(),
        },
        ErrorCode::Interrupted => Error::Interrupted {
            message: detail.message.clone(),
        },
        ErrorCode::Internal => Error::Internal {
            message: detail.message.clone(),
        },
        ErrorCode::NoSpace => Error::NoSpace {
            used: detail.actual,
            quota: detail.expected,
        },
        ErrorCode::ResultNotRetained => Error::ResultNotRetained {
            revision: detail.actual,
            succeeded: detail.expected == 1,
        },
    };
    match detail.op_index {
        Some(op_index) => Error::TxnOpFailed {
            op_index,
            source: Box::new(error),
        },
        None => error,
    }
}

fn from_transport(status: &tonic::Status, endpoint: &str) -> Error {
    let message = status.message().to_owned();
    if let Some(explanation) = tls_failure(status) {
        return Error::Tls {
            endpoint: endpoint.to_owned(),
            message: explanation,
        };
    }
    // No connection was made, so the request was never sent: safe to send elsewhere.
    if message.contains("tcp connect error") || message.contains("Connection refused") {
        return Error::Unreachable {
            endpoints: vec![endpoint.to_owned()],
            message,
        };
    }
    match status.code() {
        tonic::Code::DeadlineExceeded => Error::Timeout { message },
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            Error::ConnectionLost {
                endpoint: endpoint.to_owned(),
                message,
            }
        }
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
            Error::InvalidArgument { message }
        }
        tonic::Code::ResourceExhausted => Error::LimitExceeded { message },
        _ => Error::Internal {
            message: format!("{:?}: {message}", status.code()),
        },
    }
}

/// The explanation of a failed TLS handshake, or of a member that refused a plaintext client,
/// if that is what `status` reports.
fn tls_failure(status: &tonic::Status) -> Option<String> {
    let message = status.message();
    if status.code() == tonic::Code::FailedPrecondition && message.contains("requires TLS") {
        return Some(message.to_owned());
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(connect) = error.downcast_ref::<coord_tls::ConnectError>() {
            if matches!(connect, coord_tls::ConnectError::Handshake { .. }) {
                return Some(connect.to_string());
            }
        }
        // With TLS 1.3 a server checks the client's certificate after the client finished its
        // handshake: a refusal arrives as an alert on the first read.
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<coord_tls::rustls::Error>())
            {
                return Some(coord_tls::explain_client_error(io));
            }
        }
        // h2's errors hide their cause but name the alert in their text.
        if let Some(explanation) = coord_tls::explain_alert_text(&error.to_string()) {
            return Some(explanation);
        }
        source = error.source();
    }
    message
        .find(coord_tls::HANDSHAKE_FAILED)
        .map(|start| message[start..].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_decode_into_typed_errors() {
        let detail = ErrorDetail {
            code: ErrorCode::BadVersion as i32,
            message: "node /a has version 2, expected 1".into(),
            path: "/a".into(),
            expected: 1,
            actual: 2,
            ..ErrorDetail::default()
        };
        let status =
            tonic::Status::with_details(tonic::Code::Aborted, "x", detail.encode_to_vec().into());
        assert_eq!(
            Error::from_status(&status, "e"),
            Error::BadVersion {
                path: "/a".into(),
                expected: 1,
                actual: 2
            }
        );
    }

    #[test]
    fn a_removed_member_is_not_applied_and_retryable_elsewhere() {
        let detail = ErrorDetail {
            code: ErrorCode::NotAMember as i32,
            message: "member 3 was removed".into(),
            retryable: true,
            ..ErrorDetail::default()
        };
        let status = tonic::Status::with_details(
            tonic::Code::Unavailable,
            "x",
            detail.encode_to_vec().into(),
        );
        let error = Error::from_status(&status, "10.0.0.3:7400");
        assert_eq!(
            error,
            Error::NotAMember {
                endpoint: "10.0.0.3:7400".into(),
                message: "member 3 was removed".into(),
            }
        );
        assert!(error.is_retryable());
        assert!(!error.is_outcome_unknown());
    }

    #[test]
    fn transport_failures_are_outcome_unknown_unless_nothing_was_sent() {
        let lost = Error::from_status(
            &tonic::Status::unavailable("connection reset"),
            "127.0.0.1:1",
        );
        assert!(lost.is_outcome_unknown());
        assert!(!lost.is_retryable());
        let refused = Error::from_status(
            &tonic::Status::unavailable("tcp connect error"),
            "127.0.0.1:1",
        );
        assert!(refused.is_retryable());
        assert!(!refused.is_outcome_unknown());
    }
}
