//! `coord-client`: the Rust client of Coord, a Raft-replicated coordination service.
//!
//! It speaks the `coord.v1` gRPC API and turns every failure into a typed [`Error`] that says
//! whether the request was rejected, not applied (retry later), or of unknown outcome.
//!
//! Boundary: this crate depends on `coord-proto` only, never on the server.
//!
//! Coordination recipes (mutex, read-write lock, semaphore, election, barriers), fencing
//! helpers and lock introspection live in [`recipes`]; the main types are re-exported here.
//!
//! ```no_run
//! # async fn example() -> Result<(), coord_client::Error> {
//! use coord_client::{Client, CreateOptions, DeleteOptions};
//! let client = Client::connect(["127.0.0.1:7400"]).await?;
//! let options = CreateOptions { make_parents: true, ..CreateOptions::default() };
//! client.create("/services/db/leader", "member-3", &options).await?;
//! let node = client.get("/services/db/leader").await?;
//! assert_eq!(node.data, b"member-3");
//! client.delete("/services", DeleteOptions { recursive: true, ..DeleteOptions::default() }).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

/// The README's Rust examples, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

mod auth;
mod client;
mod endpoints;
mod error;
mod hung;
mod lock;
pub mod recipes;
mod session;
mod txn;
mod types;
mod watch;
mod watch_streams;
mod write_id;

pub use auth::AuthChange;
pub use client::{Client, ClientOptions, TlsOptions, AUTO_SYNC_INTERVAL};
pub use coord_proto::parse_duration;
pub use coord_proto::v1::{
    AuthGrant, AuthRole, AuthStatusResponse, AuthToken, AuthUser, ClusterStatusResponse, Member,
    MemberRole, MemberStatus, SecurityStatus,
};
pub use error::Error;
pub use recipes::{
    Barrier, DoubleBarrier, Election, HeldNode, HoldState, LeaderChanges, LeaderInfo, Leadership,
    LockGuard, LostReason, Mutex, Participation, RwLock, Semaphore, Sequencer, TokenVerifier,
};
pub use session::{Session, SessionInfo, SessionOptions, SessionState};
pub use txn::{Compare, CompareOp, Op, OpResult, Txn, TxnResult};
pub use types::{
    Child, ChildrenPage, Consistency, CreateOptions, Created, DeleteOptions, FenceCheck, Header,
    NodeData, NodeKind, Stat,
};
pub use watch::{DeleteReason, EventFilter, EventKind, Watch, WatchEvent, WatchOptions};
