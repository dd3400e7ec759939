//! Test harness: runs real `coord-server` processes on loopback and talks to them over gRPC.
//!
//! Boundary: drives the built binaries (`target/<profile>/coord-server`, `coordctl`) and the
//! public client; never links the server library.
//! Invariants: every port is picked free at start; every wait is bounded; every process this
//! harness starts is killed (by PID) when its handle drops, even when a test panics.

pub mod chart;
mod cluster;
pub mod fixture;
pub mod history;
pub mod kubelet;
pub mod linearizability;
pub mod metrics;
pub mod nemesis;
pub mod older_member;
pub mod pki;
pub mod proxy;
pub mod rng;
mod server;
pub mod slow_disk;
mod tool;
pub mod workload;

pub use cluster::Cluster;
pub use server::{binary, free_port, ServerProcess, HEAVY_WORK_TIMINGS};
pub use tool::ToolProcess;

use std::time::Duration;

use coord_client::{Client, Consistency, Error};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node under `root` (inclusive) with its data and stat, in path order, read at
/// `consistency`: a digest of the whole tree that two members or two runs can compare.
pub async fn tree_digest(
    client: &Client,
    root: &str,
    consistency: Consistency,
) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let node = client.get_with(&path, consistency).await?;
        let stat = node.stat;
        lines.push(format!(
            "{path} data={:?} create={} mod={} version={} cversion={} children={} kind={:?}",
            node.data,
            stat.create_revision,
            stat.mod_revision,
            stat.version,
            stat.cversion,
            stat.num_children,
            stat.kind
        ));
        let mut token: Option<String> = None;
        loop {
            let page = client
                .children_page(&path, 0, token.as_deref(), false, consistency)
                .await?;
            for child in page.children {
                pending.push(if path == "/" {
                    format!("/{}", child.name)
                } else {
                    format!("{path}/{}", child.name)
                });
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    lines.sort();
    Ok(lines)
}
