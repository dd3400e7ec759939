//! `WatchEvent` and `SessionChange`: what one applied command changed, for watch fan-out and
//! for the member's session deadlines.

use serde::{Deserialize, Serialize};

use super::ids::{Revision, SessionId};
use super::node::NodeStat;
use super::path::NodePath;

/// Why a node went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReason {
    Deleted,
    SessionClosed,
    SessionExpired,
    ContainerEmpty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Created,
    DataChanged,
    Deleted(DeleteReason),
    ChildrenChanged,
}

/// One change to one node at one revision.
/// `stat` is the node's stat after the change, or its last stat for a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub revision: Revision,
    pub path: NodePath,
    pub kind: EventKind,
    pub stat: NodeStat,
    pub data: Vec<u8>,
}

/// How one applied command changed the session table. A member turns these into local
/// deadlines (apply time plus the time recorded), which a new leader starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// A session was opened with `ttl_ms`.
    Opened { session: SessionId, ttl_ms: u64 },
    /// A checkpoint recorded that the session had `remaining_ms` left (at most its TTL).
    Renewed {
        session: SessionId,
        remaining_ms: u64,
    },
    /// The session was closed or expired.
    Closed { session: SessionId },
}
