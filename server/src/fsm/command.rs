//! `Command`: the replicated write operations, as they are stored in the Raft log, and their
//! outputs; `BatchItem`, one write of the leader's `Command::Batch`. Paths are carried as the client sent them and checked again by `Namespace::apply`,
//! so that an entry in the log can never put the tree into a state that breaks a path rule.

use std::fmt;

use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::error::FsmError;
use super::ids::{FencingToken, Revision, SessionId};
use super::node::{NodeKind, NodeStat};
use super::path::NodePath;

/// Default largest node data, in bytes (1 MiB).
pub const NODE_DATA_BYTES_MAX: u64 = 1024 * 1024;
/// Most operations in one branch of a txn.
pub const TXN_OPS_MAX: usize = 128;
/// Most compares plus fences in one txn.
pub const TXN_CONDITIONS_MAX: usize = 128;
/// Largest total payload of one command (data of every operation), in bytes.
pub const COMMAND_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Most bytes of node data one txn may read (its `Get` operations): bounds a response.
pub const TXN_READ_BYTES_MAX: u64 = COMMAND_BYTES_MAX;

const _: () = assert!(NODE_DATA_BYTES_MAX <= COMMAND_BYTES_MAX);

/// Limits checked before a command is proposed. They are configuration, so they are checked by
/// the member that accepts the request and never inside `apply`: members with different limits
/// still apply the same log to the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub node_data_bytes_max: u64,
    pub txn_ops_max: usize,
    pub txn_conditions_max: usize,
    /// Past this tree size (`Namespace::data_bytes`), writes that can grow it are refused;
    /// 0: no quota.
    pub quota_bytes: u64,
}

/// The default `--quota-bytes`: 2 GiB, as etcd's default backend quota.
pub const QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            node_data_bytes_max: NODE_DATA_BYTES_MAX,
            txn_ops_max: TXN_OPS_MAX,
            txn_conditions_max: TXN_CONDITIONS_MAX,
            quota_bytes: QUOTA_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCommand {
    /// With `sequential`, a prefix that may end in `/` (then the name is the suffix alone).
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub kind: NodeKind,
    pub sequential: bool,
    pub make_parents: bool,
    pub session: SessionId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCommand {
    pub path: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub expected_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteCommand {
    pub path: String,
    pub expected_version: Option<u64>,
    pub recursive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Exists(bool),
    Version(u64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A txn condition. Against a missing node every target but `Exists` compares false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub path: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// A fencing precondition: the node at `path` must exist with `create_revision == token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub path: String,
    pub token: FencingToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Create(CreateCommand),
    Set(SetCommand),
    Delete(DeleteCommand),
    Get { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommand {
    pub compares: Vec<Compare>,
    pub fences: Vec<Fence>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Create(CreateCommand),
    Set(SetCommand),
    Delete(DeleteCommand),
    Txn(TxnCommand),
    /// Opens a session; its id is the revision of this entry.
    OpenSession(OpenSessionCommand),
    /// Ends a session and deletes its ephemeral nodes, all at this entry's revision.
    CloseSession(CloseSessionCommand),
    /// The leader's record of how long each session has left, which a new leader starts from.
    CheckpointSessions(CheckpointCommand),
    /// Writes the leader gathered into one log entry, applied in order, each as if it were an
    /// entry of its own at its own revision (`Namespace::apply_entry`). Never nested: an item
    /// that is itself a batch does not decode (`BatchItem`), so decoding stays bounded.
    /// Invariant: `BatchItem`'s decoder reads an item's variant first and refuses `Batch`
    /// before reading further, so a forged entry recurses at most one level.
    Batch(Vec<BatchItem>),
}

/// Identifies one write of one client, for exactly-once retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    pub client: String,
    pub sequence: u64,
    /// The client has the outcome of every sequence below this one, so the state machine may
    /// forget them (and refuses them as stale).
    pub answered_below: u64,
}

/// Longest client id of a `WriteId`, in bytes.
pub const WRITE_CLIENT_ID_BYTES_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSessionCommand {
    /// Already clamped to the configured bounds by the member that accepted the request.
    pub ttl_ms: u64,
    /// Who opened it (the client id of its write id, else the client's address): sessions are
    /// counted per owner against `--max-sessions-per-client`.
    pub owner: String,
}

/// Why a session ends; its ephemeral nodes' deletion events carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEnd {
    /// The client (or an administrator) closed it.
    Closed,
    /// The leader heard no keep-alive within its TTL.
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSessionCommand {
    pub session: SessionId,
    pub end: SessionEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCommand {
    /// Milliseconds each session had left when the leader wrote the checkpoint. Sessions
    /// that are gone by the time it applies are skipped.
    pub remaining: Vec<(SessionId, u64)>,
    /// Leader time, in milliseconds, since its previous full checkpoint (0 for a renewal
    /// checkpoint): it advances the replicated clock that ages remembered write outcomes.
    /// Time between two leaders is never counted, so the clock only runs slow.
    pub elapsed_ms: u64,
    /// A client that wrote nothing for this long on the replicated clock is forgotten
    /// (`--write-id-retention`), carried here so every replica forgets at the same revision.
    pub write_id_retention_ms: u64,
}

/// The result of a successful command (or of one txn operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Created {
        path: NodePath,
        stat: NodeStat,
    },
    Set {
        stat: NodeStat,
    },
    Deleted {
        count: u64,
    },
    Got {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        stat: NodeStat,
    },
    SessionOpened {
        session: SessionId,
        ttl_ms: u64,
    },
    SessionClosed {
        /// Ephemeral nodes deleted with the session.
        deleted: u64,
    },
    Checkpointed,
    /// Never stored or sent as such: `OutcomeRecord` carries a txn's results without nesting,
    /// so that decoding stored or received bytes cannot recurse without bound.
    #[serde(skip)]
    Txn {
        succeeded: bool,
        results: Vec<Output>,
    },
}

impl Command {
    /// Checks the configurable limits; called before proposing, never during apply.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), FsmError> {
        match self {
            Command::Create(create) => check_data(&create.path, &create.data, limits),
            Command::Set(set) => check_data(&set.path, &set.data, limits),
            Command::Delete(_)
            | Command::OpenSession(_)
            | Command::CloseSession(_)
            | Command::CheckpointSessions(_) => Ok(()),
            Command::Batch(items) => {
                if items.len() > BATCH_ITEMS_MAX {
                    return Err(FsmError::LimitExceeded {
                        what: "number of writes in a batch".into(),
                        size: items.len() as u64,
                        limit: BATCH_ITEMS_MAX as u64,
                    });
                }
                items
                    .iter()
                    .try_for_each(|item| item.command.check_limits(limits))
            }
            Command::Txn(txn) => {
                let conditions = txn.compares.len() + txn.fences.len();
                if conditions > limits.txn_conditions_max {
                    return Err(FsmError::LimitExceeded {
                        what: "number of txn compares and fences".into(),
                        size: conditions as u64,
                        limit: limits.txn_conditions_max as u64,
                    });
                }
                for branch in [&txn.success, &txn.failure] {
                    if branch.len() > limits.txn_ops_max {
                        return Err(FsmError::LimitExceeded {
                            what: "number of operations in a txn branch".into(),
                            size: branch.len() as u64,
                            limit: limits.txn_ops_max as u64,
                        });
                    }
                }
                let mut total: u64 = 0;
                for op in txn.success.iter().chain(&txn.failure) {
                    match op {
                        TxnOp::Create(create) => {
                            check_data(&create.path, &create.data, limits)?;
                            total += create.data.len() as u64;
                        }
                        TxnOp::Set(set) => {
                            check_data(&set.path, &set.data, limits)?;
                            total += set.data.len() as u64;
                        }
                        TxnOp::Delete(_) | TxnOp::Get { .. } => {}
                    }
                }
                if total > COMMAND_BYTES_MAX {
                    return Err(FsmError::LimitExceeded {
                        what: "total data in one txn".into(),
                        size: total,
                        limit: COMMAND_BYTES_MAX,
                    });
                }
                Ok(())
            }
        }
    }
}

fn check_data(path: &str, data: &[u8], limits: &Limits) -> Result<(), FsmError> {
    let size = data.len() as u64;
    if size > limits.node_data_bytes_max {
        return Err(FsmError::TooLarge {
            path: path.to_owned(),
            size,
            limit: limits.node_data_bytes_max,
        });
    }
    Ok(())
}

/// Most writes the leader gathers into one entry.
pub const BATCH_ITEMS_MAX: usize = 256;

/// A write of a batch: what a `Proposal` of its own would carry. Encoded exactly as a
/// `Proposal` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchItem {
    /// Set for client writes: a repeat of the same id gets the first outcome again.
    pub write_id: Option<WriteId>,
    pub command: Command,
}

impl<'de> Deserialize<'de> for BatchItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<BatchItem, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "BatchItem")]
        struct Fields {
            write_id: Option<WriteId>,
            command: Unbatched,
        }
        let fields = Fields::deserialize(deserializer)?;
        Ok(BatchItem {
            write_id: fields.write_id,
            command: fields.command.0,
        })
    }
}

/// The variant names of `Command`, in declaration order (their position is their encoding).
const COMMAND_VARIANTS: &[&str] = &[
    "Create",
    "Set",
    "Delete",
    "Txn",
    "OpenSession",
    "CloseSession",
    "CheckpointSessions",
    "Batch",
];

/// A `Command` that is not a `Batch`.
struct Unbatched(Command);

impl<'de> Deserialize<'de> for Unbatched {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unbatched, D::Error> {
        deserializer
            .deserialize_enum("Command", COMMAND_VARIANTS, UnbatchedVisitor)
            .map(Unbatched)
    }
}

struct UnbatchedVisitor;

impl<'de> Visitor<'de> for UnbatchedVisitor {
    type Value = Command;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a command other than a batch")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Command, A::Error> {
        let (variant, content): (VariantIndex, _) = data.variant()?;
        match variant.0 {
            0 => content.newtype_variant().map(Command::Create),
            1 => content.newtype_variant().map(Command::Set),
            2 => content.newtype_variant().map(Command::Delete),
            3 => content.newtype_variant().map(Command::Txn),
            4 => content.newtype_variant().map(Command::OpenSession),
            5 => content.newtype_variant().map(Command::CloseSession),
            6 => content.newtype_variant().map(Command::CheckpointSessions),
            _ => Err(de::Error::custom("a batch item cannot be a batch")),
        }
    }
}

/// A variant of `Command` named by its position (bincode) or its name (self-describing
/// formats).
struct VariantIndex(usize);

impl<'de> Deserialize<'de> for VariantIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<VariantIndex, D::Error> {
        deserializer.deserialize_identifier(VariantIndexVisitor)
    }
}

struct VariantIndexVisitor;

impl Visitor<'_> for VariantIndexVisitor {
    type Value = VariantIndex;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a command variant")
    }

    fn visit_u64<E: de::Error>(self, index: u64) -> Result<VariantIndex, E> {
        match usize::try_from(index) {
            Ok(index) if index < COMMAND_VARIANTS.len() => Ok(VariantIndex(index)),
            _ => Err(E::invalid_value(de::Unexpected::Unsigned(index), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<VariantIndex, E> {
        COMMAND_VARIANTS
            .iter()
            .position(|known| *known == name)
            .map(VariantIndex)
            .ok_or_else(|| E::unknown_variant(name, COMMAND_VARIANTS))
    }
}

#[cfg(test)]
mod tests {
    use bincode::Options;

    use super::*;

    fn codec() -> impl Options {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_little_endian()
            .reject_trailing_bytes()
    }

    fn every_unbatched_command() -> Vec<Command> {
        vec![
            Command::Create(CreateCommand {
                path: "/a".into(),
                data: b"x".to_vec(),
                kind: NodeKind::Persistent,
                sequential: true,
                make_parents: false,
                session: SessionId(0),
            }),
            Command::Set(SetCommand {
                path: "/a".into(),
                data: b"y".to_vec(),
                expected_version: Some(1),
            }),
            Command::Delete(DeleteCommand {
                path: "/a".into(),
                expected_version: None,
                recursive: true,
            }),
            Command::Txn(TxnCommand {
                compares: Vec::new(),
                fences: Vec::new(),
                success: Vec::new(),
                failure: Vec::new(),
            }),
            Command::OpenSession(OpenSessionCommand {
                ttl_ms: 10_000,
                owner: "c".into(),
            }),
            Command::CloseSession(CloseSessionCommand {
                session: SessionId(4),
                end: SessionEnd::Expired,
            }),
            Command::CheckpointSessions(CheckpointCommand {
                remaining: vec![(SessionId(4), 900)],
                elapsed_ms: 5,
                write_id_retention_ms: 60_000,
            }),
        ]
    }

    #[test]
    fn every_command_but_a_batch_decodes_as_an_item_as_it_was_encoded() {
        let commands = every_unbatched_command();
        assert_eq!(commands.len() + 1, COMMAND_VARIANTS.len());
        for (position, command) in commands.into_iter().enumerate() {
            let item = BatchItem {
                write_id: Some(WriteId {
                    client: "c".into(),
                    sequence: position as u64,
                    answered_below: 0,
                }),
                command,
            };
            let bytes = codec().serialize(&item).expect("encodes");
            // A struct is encoded as the tuple of its fields, as `Proposal` is.
            let fields = (item.write_id.clone(), item.command.clone());
            assert_eq!(bytes, codec().serialize(&fields).expect("encodes"));
            let decoded: BatchItem = codec().deserialize(&bytes).expect("decodes");
            assert_eq!(decoded, item);
        }
    }

    #[test]
    fn a_batch_inside_a_batch_is_refused_without_decoding_it() {
        let inner = Command::Batch(vec![BatchItem {
            write_id: None,
            command: every_unbatched_command().remove(2),
        }]);
        let outer = Command::Batch(vec![BatchItem {
            write_id: None,
            command: inner,
        }]);
        let bytes = codec().serialize(&outer).expect("encodes");
        let refused = codec().deserialize::<Command>(&bytes);
        assert!(refused
            .expect_err("nested batches do not decode")
            .to_string()
            .contains("cannot be a batch"));
        // Deeply nested forged bytes stop at the second level: each level is a variant index
        // of 7 and a length of 1, with no item data at the bottom.
        let mut forged = Vec::new();
        for _ in 0..100_000 {
            forged.extend_from_slice(&7u32.to_le_bytes());
            forged.extend_from_slice(&1u64.to_le_bytes());
            forged.push(0);
        }
        assert!(codec().deserialize::<Command>(&forged).is_err());
    }

    #[test]
    fn an_unknown_variant_is_refused() {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&9u32.to_le_bytes());
        assert!(codec().deserialize::<BatchItem>(&bytes).is_err());
    }
}
