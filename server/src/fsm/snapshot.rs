//! Snapshot encoding of a `Namespace`: nodes in path order, then sessions, so equal states give
//! byte-equal snapshots. Child sets and owner lists are derived data and are rebuilt on decode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bincode::Options;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ids::{Revision, SessionId};
use super::namespace::{node_bytes, Namespace, SessionRecord, WriterRecord};
use super::node::{Node, NodeStat};
use super::path::NodePath;

/// Bumped whenever the encoding changes.
const SNAPSHOT_FORMAT: u32 = 5;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot cannot be decoded: {reason}")]
    Malformed { reason: String },
    #[error("snapshot has format {found}, this build reads {expected}")]
    Format { found: u32, expected: u32 },
    #[error("snapshot decodes to an invalid tree: {reason}")]
    Invalid { reason: String },
}

#[derive(Serialize)]
struct ImageRef<'a> {
    format: u32,
    revision: Revision,
    nodes: Vec<NodeImageRef<'a>>,
    sessions: Vec<SessionImage>,
    writers: &'a BTreeMap<String, WriterRecord>,
    clock_ms: u64,
}

#[derive(Serialize)]
struct NodeImageRef<'a> {
    path: &'a NodePath,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
    stat: NodeStat,
    next_sequence: u64,
}

#[derive(Deserialize)]
struct Image {
    format: u32,
    revision: Revision,
    nodes: Vec<NodeImage>,
    sessions: Vec<SessionImage>,
    writers: BTreeMap<String, WriterRecord>,
    clock_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct SessionImage {
    id: SessionId,
    ttl_ms: u64,
    remaining_ms: u64,
    owner: String,
}

#[derive(Deserialize)]
struct NodeImage {
    path: NodePath,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    stat: NodeStat,
    next_sequence: u64,
}

impl Namespace {
    /// Encodes the whole state deterministically.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let image = ImageRef {
            format: SNAPSHOT_FORMAT,
            revision: self.revision,
            nodes: self
                .nodes
                .iter()
                .map(|(path, node)| NodeImageRef {
                    path,
                    data: &node.data,
                    stat: node.stat,
                    next_sequence: node.next_sequence,
                })
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(id, record)| SessionImage {
                    id: *id,
                    ttl_ms: record.ttl_ms,
                    remaining_ms: record.remaining_ms,
                    owner: record.owner.clone(),
                })
                .collect(),
            writers: &self.writers,
            clock_ms: self.clock_ms,
        };
        bincode::serialize(&image).expect("encoding into memory cannot fail")
    }

    /// Decodes and validates a snapshot made by `to_snapshot`.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Namespace, SnapshotError> {
        // Bounded by the input's length: a forged length prefix cannot allocate beyond it.
        let image: Image = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|error| SnapshotError::Malformed {
                reason: error.to_string(),
            })?;
        if image.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format {
                found: image.format,
                expected: SNAPSHOT_FORMAT,
            });
        }
        let mut namespace = Namespace::new();
        namespace.nodes.clear();
        namespace.revision = image.revision;
        namespace.writers_bytes = image.writers.values().map(WriterRecord::bytes).sum();
        namespace.writers = image.writers;
        namespace.clock_ms = image.clock_ms;
        for session in image.sessions {
            namespace.sessions.insert(
                session.id,
                SessionRecord {
                    ttl_ms: session.ttl_ms,
                    remaining_ms: session.remaining_ms,
                    ephemerals: BTreeSet::new(),
                    owner: session.owner,
                },
            );
        }
        for node_image in image.nodes {
            let node = Node {
                data: node_image.data,
                stat: node_image.stat,
                children: BTreeSet::new(),
                next_sequence: node_image.next_sequence,
            };
            if let Some(parent) = node_image.path.parent() {
                // Parents sort before children, so the parent is already in place.
                let parent_node =
                    namespace
                        .nodes
                        .get_mut(&parent)
                        .ok_or_else(|| SnapshotError::Invalid {
                            reason: format!("{} has no parent", node_image.path),
                        })?;
                Arc::make_mut(parent_node)
                    .children
                    .insert(node_image.path.name().to_owned());
            }
            if node.stat.ephemeral_owner != SessionId(0) {
                let record = namespace
                    .sessions
                    .get_mut(&node.stat.ephemeral_owner)
                    .ok_or_else(|| SnapshotError::Invalid {
                        reason: format!("{} is owned by an unknown session", node_image.path),
                    })?;
                record.ephemerals.insert(node_image.path.clone());
            }
            namespace.nodes.insert(node_image.path, Arc::new(node));
        }
        namespace.data_bytes = namespace
            .nodes
            .iter()
            .map(|(path, node)| node_bytes(path, node.data.len()))
            .sum();
        namespace
            .validate()
            .map_err(|reason| SnapshotError::Invalid { reason })?;
        Ok(namespace)
    }
}
