//! `coordctl check perf`: a short write load against a running cluster (as `etcdctl check perf`)
//! that reports throughput and latency, and passes or fails against stated thresholds.
//!
//! Each load level runs a number of writers, together paced at a target rate, for a fixed
//! time. Every write creates a new node of `VALUE_BYTES` bytes under a prefix of its own, so
//! the run never touches existing data; the prefix is deleted afterwards. The check passes
//! when the cluster sustained at least 90 % of the target rate, the 99th percentile write
//! latency stayed under the threshold, and no write failed.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use coord_client::{Client, CreateOptions, DeleteOptions};
use serde_json::json;

use crate::output::{emit, Printer};

/// Bytes of each node's value.
const VALUE_BYTES: usize = 256;
/// Share of the target rate the cluster must sustain.
const THROUGHPUT_PASS: f64 = 0.9;

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Write load for a while, then report throughput and latency, and pass or fail.
    Perf(PerfArgs),
}

#[derive(Debug, Args)]
pub struct PerfArgs {
    /// The load: s (8 writers, 200 writes/s), m (32, 1,000/s), l (64, 2,500/s),
    /// xl (128, 5,000/s).
    #[arg(long, value_enum, default_value = "s")]
    load: Load,
    /// How long to write (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = coord_client::parse_duration)]
    duration: Duration,
    /// Where the run's nodes go (a fresh child per run; deleted afterwards).
    #[arg(long, default_value = "/coordctl-check-perf")]
    prefix: String,
    /// Fail when the 99th percentile write latency is above this.
    #[arg(long, default_value = "100ms", value_parser = coord_client::parse_duration)]
    p99_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Load {
    S,
    M,
    L,
    Xl,
}

impl Load {
    /// Writers and the target rate in writes per second, all writers together.
    fn shape(self) -> (usize, f64) {
        match self {
            Load::S => (8, 200.0),
            Load::M => (32, 1_000.0),
            Load::L => (64, 2_500.0),
            Load::Xl => (128, 5_000.0),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub target_rate: f64,
    pub elapsed: Duration,
    /// Latency of every acknowledged write, sorted.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `fraction` of the writes fell (0 with no write).
    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64) * fraction).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// Why the check fails; empty when it passes.
    pub fn failures(&self, p99_max: Duration) -> Vec<String> {
        let mut failures = Vec::new();
        let floor = self.target_rate * THROUGHPUT_PASS;
        if self.throughput() < floor {
            failures.push(format!(
                "throughput {:.0} writes/s is below {:.0} (90 % of the target {:.0})",
                self.throughput(),
                floor,
                self.target_rate
            ));
        }
        let p99 = self.percentile(0.99);
        if p99 > p99_max {
            failures.push(format!(
                "p99 latency {:.1} ms is above {:.1} ms",
                millis(p99),
                millis(p99_max)
            ));
        }
        if self.errors > 0 {
            failures.push(format!(
                "{} writes failed (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        failures
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `coordctl check ...`: exits 0 on a pass, 1 on a fail.
pub async fn run(client: &Client, printer: &Printer, command: CheckCommand) -> anyhow::Result<i32> {
    let CheckCommand::Perf(args) = command;
    let (writers, target_rate) = args.load.shape();
    let run_prefix = format!(
        "{}/run-{}-{}",
        args.prefix.trim_end_matches('/'),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis())
    );
    if !printer.json {
        eprintln!(
            "coordctl: {writers} writers, {target_rate:.0} writes/s for {:?} under {run_prefix}",
            args.duration
        );
    }
    let create = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    client.create(&run_prefix, "", &create).await?;
    let measured = load(client, &run_prefix, writers, target_rate, args.duration).await;
    let recursive = DeleteOptions {
        recursive: true,
        ..DeleteOptions::default()
    };
    let cleaned = client.delete(&run_prefix, recursive).await;
    let failures = measured.failures(args.p99_max);
    report(printer, &measured, &failures);
    if let Err(error) = cleaned {
        eprintln!("coordctl: could not delete {run_prefix}: {error}");
    }
    Ok(if failures.is_empty() { 0 } else { 1 })
}

/// Runs `writers` writers together paced at `target_rate` for `duration`.
async fn load(
    client: &Client,
    prefix: &str,
    writers: usize,
    target_rate: f64,
    duration: Duration,
) -> Measured {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let interval = Duration::from_secs_f64(writers as f64 / target_rate);
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let client = client.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                // Writers start spread over one interval, so the load is even, not bursty.
                let offset = interval.mul_f64(writer as f64 / writers as f64);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let value = vec![b'x'; VALUE_BYTES];
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
                for sequence in 0u64.. {
                    ticks.tick().await;
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    let path = format!("{prefix}/{writer}-{sequence}");
                    let sent = Instant::now();
                    match client
                        .create(&path, value.clone(), &CreateOptions::default())
                        .await
                    {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut measured = Measured {
        target_rate,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        match task.await {
            Ok((latencies, errors, first_error)) => {
                measured.latencies.extend(latencies);
                measured.errors += errors;
                if measured.first_error.is_none() {
                    measured.first_error = first_error;
                }
            }
            Err(error) => {
                measured.errors += 1;
                measured
                    .first_error
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

fn report(printer: &Printer, measured: &Measured, failures: &[String]) {
    let (p50, p90, p99) = (
        measured.percentile(0.5),
        measured.percentile(0.9),
        measured.percentile(0.99),
    );
    let slowest = measured.latencies.last().copied().unwrap_or_default();
    if printer.json {
        let line = json!({
            "pass": failures.is_empty(),
            "failures": failures,
            "writes": measured.latencies.len(),
            "errors": measured.errors,
            "target_rate": measured.target_rate,
            "throughput": measured.throughput(),
            "p50_ms": millis(p50),
            "p90_ms": millis(p90),
            "p99_ms": millis(p99),
            "max_ms": millis(slowest),
        });
        emit(&format!("{line}\n"));
        return;
    }
    emit(&format!(
        "{} writes in {:.1}s: {:.0} writes/s (target {:.0}); latency p50 {:.2} ms, p90 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms; {} errors\n",
        measured.latencies.len(),
        measured.elapsed.as_secs_f64(),
        measured.throughput(),
        measured.target_rate,
        millis(p50),
        millis(p90),
        millis(p99),
        millis(slowest),
        measured.errors
    ));
    if failures.is_empty() {
        emit("PASS\n");
    } else {
        for failure in failures {
            emit(&format!("FAIL: {failure}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(latencies_ms: &[u64], errors: usize, seconds: u64) -> Measured {
        let mut latencies: Vec<Duration> = latencies_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
        latencies.sort_unstable();
        Measured {
            target_rate: 10.0,
            elapsed: Duration::from_secs(seconds),
            latencies,
            errors,
            first_error: (errors > 0).then(|| "no leader".to_owned()),
        }
    }

    #[test]
    fn percentiles_are_ranks_of_the_sorted_latencies() {
        let run = measured(&(1..=100).collect::<Vec<u64>>(), 0, 10);
        assert_eq!(run.percentile(0.5), Duration::from_millis(50));
        assert_eq!(run.percentile(0.99), Duration::from_millis(99));
        assert_eq!(run.percentile(1.0), Duration::from_millis(100));
        assert_eq!(measured(&[], 0, 1).percentile(0.99), Duration::ZERO);
    }

    #[test]
    fn passes_only_at_the_rate_under_the_latency_bound_without_errors() {
        let good = measured(&vec![5; 95], 0, 10);
        assert!(good.failures(Duration::from_millis(100)).is_empty());
        let slow_rate = measured(&vec![5; 80], 0, 10);
        assert!(slow_rate.failures(Duration::from_millis(100))[0].contains("throughput"));
        let slow_writes = measured(&vec![500; 100], 0, 10);
        assert!(slow_writes.failures(Duration::from_millis(100))[0].contains("p99"));
        let failing = measured(&vec![5; 100], 3, 10);
        assert!(failing.failures(Duration::from_millis(100))[0].contains("3 writes failed"));
    }
}
