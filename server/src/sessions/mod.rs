//! Sessions: liveness decided by the leader, on its monotonic clock, and committed through Raft.
//!
//! - `leases.rs`: `LeaseTable`, the leader's deadlines; pure, tested without sleeping.
//! - `deadlines.rs`: `SessionDeadlines`, what every member derives from applied opens,
//!   checkpoints and closes; a new leader starts from it.
//! - `keeper.rs`: `SessionKeeper`, keep-alives (forwarded to the leader), expiry, checkpoints.
//!
//! Depends on `consensus` (to propose and to route) and `fsm` (the session table); consensus
//! knows nothing of sessions: the member wires `SessionDeadlines` in as an apply observer.

mod deadlines;
mod keeper;
mod leases;

pub use deadlines::SessionDeadlines;
pub use keeper::{KeepAliveCall, KeeperConfig, ListSessionsCall, SessionKeeper};
pub use leases::LeaseView;
