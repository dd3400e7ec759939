//! `WatchEvent`: what one applied command changed, for watch fan-out.

use serde::{Deserialize, Serialize};

use super::ids::Revision;
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
