//! `observe/`: what an operator or an orchestrator sees of a member from outside the gRPC API:
//! an HTTP listener of its own (`--listen-metrics`) with `/livez`, `/readyz` and Prometheus
//! `/metrics`; and the standard gRPC health service on the client port, which says the same.
//!
//! Invariant: nothing here waits on Raft or takes a lock held across I/O: every answer is built
//! from values the member already keeps (openraft's metrics channel, atomic counters, the
//! local replica), so a probe answers within its bound even while the member is stuck.

mod grpc_health;
mod http;
mod metrics;
mod requests;

pub use grpc_health::{report_readiness, report_stopping};
pub use http::{serve, MetricsSlot};
pub use metrics::{committed_index, readiness, MemberMetrics, Sources, READY_APPLY_LAG_MAX};
pub use requests::{CountRequests, RequestMetrics};
