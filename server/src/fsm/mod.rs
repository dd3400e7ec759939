//! The namespace state machine: pure and deterministic.
//!
//! Owns the tree of nodes, the session table, command application, watch event generation and
//! snapshot encoding. It must never do I/O, read a clock, draw random numbers, read the
//! environment, or take a lock: time and identity arrive inside commands, and the caller
//! persists and publishes what `apply` returns.
//!
//! Invariants (checked by `Namespace::validate`, run after every apply in tests and on every
//! snapshot restore):
//! - the root exists and is persistent; every other node's parent exists and lists it;
//! - `num_children` and `data_length` match the children and the data;
//! - ephemeral nodes have no children and are owned by a live session, whose owner list
//!   names exactly them;
//! - the same state and the same commands give the same outputs, events and snapshot bytes.

mod command;
mod error;
mod event;
mod ids;
mod namespace;
mod node;
mod outcome;
mod path;
mod proposal;
mod snapshot;
mod turn;

#[cfg(test)]
mod model_tests;

pub use command::{
    BatchItem, CheckpointCommand, CloseSessionCommand, Command, Compare, CompareOp, CompareTarget,
    CreateCommand, DeleteCommand, Fence, Limits, OpenSessionCommand, Output, SessionEnd,
    SetCommand, TxnCommand, TxnOp, WriteId, BATCH_ITEMS_MAX, COMMAND_BYTES_MAX,
    NODE_DATA_BYTES_MAX, QUOTA_BYTES_DEFAULT, TXN_CONDITIONS_MAX, TXN_OPS_MAX, TXN_READ_BYTES_MAX,
    WRITE_CLIENT_ID_BYTES_MAX,
};
pub use error::FsmError;
pub use event::{DeleteReason, EventKind, SessionChange, WatchEvent};
pub use ids::{millis, FencingToken, Revision, SessionId};
pub use namespace::{
    Applied, ChildrenPage, Namespace, SessionRecord, WriterRecord, NODE_OVERHEAD_BYTES,
    WRITERS_BYTES_MAX, WRITERS_MAX, WRITER_RESULTS_MAX,
};
pub use node::{Node, NodeKind, NodeStat};
pub use outcome::{OutcomeRecord, REMEMBERED_READ_BYTES_MAX};
pub use path::{NodePath, PathRule, PATH_BYTES_MAX, PATH_DEPTH_MAX};
pub use proposal::Proposal;
pub use snapshot::SnapshotError;
pub use turn::{Turn, TurnRule};
