//! `Node`: one entry of the tree, its kind and its stat.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ids::{Revision, SessionId};

/// What happens to a node beyond explicit deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Persistent,
    /// Removed when its owning session ends; cannot have children.
    Ephemeral,
    /// Removed once its last child is gone.
    Container,
}

/// The metadata every node carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStat {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Data changes since creation (0 at creation).
    pub version: u64,
    /// Child creations and deletions since creation.
    pub cversion: u64,
    pub num_children: u64,
    pub ephemeral_owner: SessionId,
    pub data_length: u64,
    pub kind: NodeKind,
    /// Revision of the last change to the set of children.
    pub children_revision: Revision,
}

/// A tree entry. Children are kept by name so listings are ordered and pageable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub data: Vec<u8>,
    pub stat: NodeStat,
    pub children: BTreeSet<String>,
    /// Suffix for the next sequential child.
    pub next_sequence: u64,
}

impl Node {
    pub fn new(data: Vec<u8>, kind: NodeKind, owner: SessionId, revision: Revision) -> Node {
        let data_length = data.len() as u64;
        Node {
            data,
            stat: NodeStat {
                create_revision: revision,
                mod_revision: revision,
                version: 0,
                cversion: 0,
                num_children: 0,
                ephemeral_owner: owner,
                data_length,
                kind,
                children_revision: revision,
            },
            children: BTreeSet::new(),
            next_sequence: 0,
        }
    }
}
