//! `RaftTimings`: what the log, the state machine and the write path measure as they work:
//! how long a synced log append and an apply batch take, how long a snapshot takes and how big
//! it is, proposals waiting or failed, and how many writes each proposed entry carried. `observe/` registers them for `/metrics`.
//!
//! Each is a Prometheus counter, gauge or histogram: atomics, so measuring costs a clock read
//! and an add, and no lock is shared with a scrape.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Buckets (seconds) for disk and apply work: 0.1 ms to 8 s, doubling (etcd's WAL fsync
/// histogram starts at 1 ms; a synced RocksDB write here takes about 0.1 ms).
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_1, 2.0, 17).unwrap_or_default()
}

/// Measurements taken by consensus.
#[derive(Clone)]
pub struct RaftTimings {
    /// A batch of log entries written and synced (the fsync a commit waits for).
    pub log_append: Histogram,
    /// A batch of committed entries applied to the namespace.
    pub apply: Histogram,
    /// A snapshot built and saved.
    pub snapshot_save: Histogram,
    /// Size of the last snapshot built or installed.
    pub snapshot_bytes: IntGauge,
    /// Proposals this member (as leader) is waiting on.
    pub proposals_pending: IntGauge,
    /// Proposals that were not committed: timed out, leadership lost, or refused by Raft.
    pub proposals_failed: IntCounter,
    /// Writes per log entry the leader proposed (`write_batch.rs`): 1 for a write alone.
    pub writes_per_entry: Histogram,
    /// Client writes a follower forwarded to the leader per `Peer.Forward` call
    /// (`forward_batch.rs`).
    pub writes_per_forward: Histogram,
}

impl RaftTimings {
    pub fn new() -> Result<RaftTimings, prometheus::Error> {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(disk_buckets()))
        };
        Ok(RaftTimings {
            log_append: histogram(
                "coord_disk_log_append_duration_seconds",
                "Time to write and fsync a batch of Raft log entries",
            )?,
            apply: histogram(
                "coord_apply_duration_seconds",
                "Time to apply a batch of committed entries to the namespace",
            )?,
            snapshot_save: histogram(
                "coord_snapshot_save_duration_seconds",
                "Time to build and save a snapshot",
            )?,
            snapshot_bytes: IntGauge::new(
                "coord_snapshot_size_bytes",
                "Size of the last snapshot this member built",
            )?,
            proposals_pending: IntGauge::new(
                "coord_server_proposals_pending",
                "Proposals this member, as leader, is waiting to see committed",
            )?,
            proposals_failed: IntCounter::new(
                "coord_server_proposals_failed_total",
                "Proposals not committed: timed out, leadership lost or refused",
            )?,
            writes_per_entry: Histogram::with_opts(
                HistogramOpts::new(
                    "coord_server_writes_per_entry",
                    "Writes the leader proposed together in one log entry",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 9)?),
            )?,
            writes_per_forward: Histogram::with_opts(
                HistogramOpts::new(
                    "coord_server_writes_per_forward",
                    "Client writes this member forwarded to the leader together in one call",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 7)?),
            )?,
        })
    }

    /// Adds every measurement to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.log_append.clone()))?;
        registry.register(Box::new(self.apply.clone()))?;
        registry.register(Box::new(self.snapshot_save.clone()))?;
        registry.register(Box::new(self.snapshot_bytes.clone()))?;
        registry.register(Box::new(self.proposals_pending.clone()))?;
        registry.register(Box::new(self.proposals_failed.clone()))?;
        registry.register(Box::new(self.writes_per_entry.clone()))?;
        registry.register(Box::new(self.writes_per_forward.clone()))?;
        Ok(())
    }
}

/// Counts a proposal as pending while it lives.
pub struct Pending<'a>(&'a IntGauge);

impl<'a> Pending<'a> {
    pub fn start(gauge: &'a IntGauge) -> Pending<'a> {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measurement_registers_once_and_pending_counts_down() {
        let timings = RaftTimings::new().unwrap();
        let registry = Registry::new();
        timings.register(&registry).unwrap();
        assert!(timings.register(&registry).is_err(), "registered twice");
        {
            let _one = Pending::start(&timings.proposals_pending);
            let _two = Pending::start(&timings.proposals_pending);
            assert_eq!(timings.proposals_pending.get(), 2);
        }
        assert_eq!(timings.proposals_pending.get(), 0);
        timings.log_append.observe(0.000_2);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        assert!(names.contains(&"coord_disk_log_append_duration_seconds".to_owned()));
        assert_eq!(names.len(), 8);
    }
}
