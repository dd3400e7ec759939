//! `observe/`: what an operator or an orchestrator sees of a member from outside the gRPC API:
//! an HTTP listener of its own (`--listen-metrics`) with `/livez`, `/readyz` and Prometheus
//! `/metrics`.
//!
//! Invariant: nothing here waits on Raft or takes a lock held across I/O: every answer is built
//! from values the member already keeps (openraft's metrics channel, atomic counters, the
//! local replica), so a probe answers within its bound even while the member is stuck.

mod http;
mod metrics;

pub use http::serve;
pub use metrics::{readiness, MemberMetrics, Sources, READY_APPLY_LAG_MAX};
