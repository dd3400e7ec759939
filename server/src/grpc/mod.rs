//! gRPC services: the only module that knows `tonic::Status`.
//!
//! Client port: `Namespace`, `Sessions`, `Watch`, `Cluster`, `Auth`; every call is checked by
//! `access.rs` against the auth policy before it does anything.
//! Peer port: `Peer` (Raft messages between members).
//! Every service validates its input and turns every error into a status through `status.rs`;
//! no request can panic the member.

mod access;
mod auth_service;
mod await_turn;
mod cluster_service;
mod header;
mod namespace_service;
mod peer_service;
mod propose;
mod sessions_service;
mod status;
mod watch_budget;
mod watch_service;

pub use access::{Access, AUTH_PATH, RESERVED_ROOT};
pub use auth_service::AuthService;
pub use cluster_service::ClusterService;
pub use namespace_service::{NamespaceService, CHILDREN_PAGE_DEFAULT, CHILDREN_PAGE_MAX};
pub use peer_service::PeerService;
pub use sessions_service::{SessionCaps, SessionsService, TtlBounds};
pub use status::{consensus_status, fsm_status, starting_status};
pub use watch_budget::WatchCounters;
pub use watch_service::WatchService;

/// Largest client request accepted, in bytes: a txn may carry 8 MiB of data, plus framing.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 9 * 1024 * 1024;
