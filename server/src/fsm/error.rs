//! `FsmError`: every way a command can be refused by the namespace. These are API errors:
//! expected, stable and shown to clients; none of them stops the member.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ids::{FencingToken, Revision, SessionId};
use super::path::{NodePath, PathRule};

#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum FsmError {
    #[error("invalid path: {rule}: {path:?}")]
    InvalidPath { path: String, rule: PathRule },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    #[error("node {path} already exists")]
    NodeExists { path: NodePath },
    #[error("node {path} does not exist")]
    NoNode { path: NodePath },
    #[error("node {path} has version {actual}, expected {expected}")]
    BadVersion {
        path: NodePath,
        expected: u64,
        actual: u64,
    },
    #[error("node {path} has children")]
    NotEmpty { path: NodePath },
    #[error("parent node {parent} does not exist")]
    NoParent { parent: NodePath },
    #[error("parent node {parent} is ephemeral and cannot have children")]
    EphemeralParent { parent: NodePath },
    #[error("session {session} has expired or does not exist")]
    SessionExpired { session: SessionId },
    #[error("fence rejected: {path} has token {current}, the request held {token}")]
    FenceRejected {
        path: NodePath,
        token: FencingToken,
        current: FencingToken,
    },
    #[error("data for {path} is {size} bytes, over the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{what} is {size}, over the limit of {limit}")]
    LimitExceeded { what: String, size: u64, limit: u64 },
    #[error("the root node cannot be deleted")]
    RootReadOnly,
    #[error(
        "write {sequence} of client {client:?} is older than what the client said it has \
         answers for (sequences from {answered_below}); it is not applied"
    )]
    StaleWriteId {
        client: String,
        sequence: u64,
        answered_below: u64,
    },
    /// A repeated write id whose first outcome was a txn with reads too large to remember:
    /// it was applied at `revision` (and ran its `succeeded` branch); read again for the data.
    #[error(
        "this write was already applied at revision {revision} (txn succeeded: {succeeded}); \
         its read results were too large to remember, read them again"
    )]
    ResultNotRetained { succeeded: bool, revision: Revision },
    /// The tree is at its quota (`--quota-bytes`): writes that can grow it are refused until
    /// deletes make room; reads and deletes still work.
    #[error(
        "the cluster's data is {used} bytes, at its quota of {quota} bytes: delete data, or raise \
         --quota-bytes"
    )]
    NoSpace { used: u64, quota: u64 },
    /// Never stored or sent as such: `OutcomeRecord` carries the operation's index beside its
    /// error, so that decoding stored or received bytes cannot recurse without bound.
    #[error("txn operation {op_index} failed: {source}")]
    #[serde(skip)]
    TxnOpFailed {
        op_index: usize,
        source: Box<FsmError>,
    },
}

impl FsmError {
    /// Builds an `InvalidPath` for `text`, which broke `rule`.
    pub fn invalid_path(text: &str, rule: PathRule) -> FsmError {
        FsmError::InvalidPath {
            path: text.to_owned(),
            rule,
        }
    }
}
