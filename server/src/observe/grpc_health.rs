//! The standard gRPC health service (`grpc.health.v1`) on the client port, so `grpcurl`, load
//! balancers and Kubernetes gRPC probes can ask a member whether it serves: `SERVING` exactly
//! when `/readyz` would answer 200 (see [`readiness`](super::readiness)), for the whole server
//! (`""`) and for each Coord service; `NOT_SERVING` once the member stops.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::metrics::readiness;
use crate::consensus::Consensus;

/// How often readiness is looked at again.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The services the health status names, besides the whole server (`""`).
const SERVICES: [&str; 5] = [
    "coord.v1.Namespace",
    "coord.v1.Sessions",
    "coord.v1.Watch",
    "coord.v1.Cluster",
    "coord.v1.Auth",
];

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Keeps `reporter` current with this member's readiness until the task is dropped.
pub async fn report_readiness(reporter: HealthReporter, consensus: Arc<Consensus>) {
    let mut reported = None;
    let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let ready = readiness(&consensus.status(), consensus.leader_has_quorum()).is_ok();
        if reported != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            report(&reporter, status).await;
            reported = Some(ready);
        }
    }
}

/// Marks every service `NOT_SERVING` (the member is stopping).
pub async fn report_stopping(reporter: &HealthReporter) {
    report(reporter, ServingStatus::NotServing).await;
}
