//! `coord-bench`: small benchmarks that print numbers (never assert on them).
//!
//! ```text
//! coord-bench writes  [--endpoints E] [--clients 32] [--ops 20000] [--value-bytes 100]
//! coord-bench reads   [--endpoints E] [--clients 32] [--ops 20000] [--consistency linearizable|serializable]
//! coord-bench restart [--nodes 100000]
//! coord-bench failover [--runs 5] [--writers 4]
//! ```
//! Without `--endpoints`, `writes` and `reads` start their own servers in a temporary directory
//! (`--members 1` or `3`; the `coord-server` binary next to this one).

use std::time::{Duration, Instant};

use anyhow::Context;
use coord_client::{Client, CreateOptions, Op, Txn};
use coord_tests::{Cluster, ServerProcess};

fn flag(arguments: &[String], name: &str, default: &str) -> String {
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

type LatencyTask = tokio::task::JoinHandle<Result<Vec<Duration>, coord_client::Error>>;

/// Waits for every worker and returns all latencies, sorted, and the time since `started`.
async fn join_latencies(
    tasks: Vec<LatencyTask>,
    started: Instant,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok((latencies, elapsed))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.get(1).map(String::as_str) {
        Some("writes") => writes(&arguments).await,
        Some("restart") => restart(&arguments).await,
        Some("reads") => reads(&arguments).await,
        Some("failover") => failover(&arguments).await,
        _ => {
            report("usage: coord-bench writes   [--endpoints E | --members N] [--clients N] [--ops N] [--value-bytes B]");
            report("       coord-bench reads    [--endpoints E | --members N] [--clients N] [--ops N] [--consistency C]");
            report("       coord-bench restart  [--nodes N]");
            report("       coord-bench failover [--runs N] [--writers N]");
            std::process::exit(2);
        }
    }
}

async fn writes(arguments: &[String]) -> anyhow::Result<()> {
    let clients: usize = flag(arguments, "--clients", "32")
        .parse()
        .context("--clients")?;
    let ops: usize = flag(arguments, "--ops", "20000").parse().context("--ops")?;
    let value_bytes: usize = flag(arguments, "--value-bytes", "100")
        .parse()
        .context("--value-bytes")?;
    let directory = tempfile::tempdir()?;
    let (_target, endpoints) = target(arguments, directory.path()).await;
    let client = Client::connect(endpoints.split(',')).await?;
    let root = format!("/bench-{}", std::process::id());
    client.create(&root, "", &CreateOptions::default()).await?;
    let value = vec![b'v'; value_bytes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let client = client.clone();
        let root = root.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for index in (worker..ops).step_by(clients) {
                let begun = Instant::now();
                client
                    .create(
                        &format!("{root}/n{index}"),
                        value.clone(),
                        &CreateOptions::default(),
                    )
                    .await?;
                latencies.push(begun.elapsed());
            }
            Ok::<_, coord_client::Error>(latencies)
        }));
    }
    let (latencies, elapsed) = join_latencies(tasks, started).await?;
    report(&format!(
        "writes: clients={clients} ops={} value={value_bytes}B elapsed={:.2}s throughput={:.0} ops/s \
         latency p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    ));
    Ok(())
}

/// The servers a benchmark runs against: external (`--endpoints`), or started here
/// (`--members N`, default 1).
struct Target {
    /// Kept only so the processes live as long as the benchmark (they are killed on drop).
    _single: Option<ServerProcess>,
    _cluster: Option<Cluster>,
}

async fn target(arguments: &[String], directory: &std::path::Path) -> (Target, String) {
    if let Some(index) = arguments
        .iter()
        .position(|argument| argument == "--endpoints")
    {
        return (
            Target {
                _single: None,
                _cluster: None,
            },
            arguments[index + 1].clone(),
        );
    }
    let members: u64 = flag(arguments, "--members", "1")
        .parse()
        .expect("--members is a number");
    if members == 1 {
        let server = ServerProcess::start_single(directory, &[]);
        server.client().await;
        let address = server.client_address();
        return (
            Target {
                _single: Some(server),
                _cluster: None,
            },
            address,
        );
    }
    let cluster = Cluster::start(members, &[]);
    let ids: Vec<u64> = (1..=members).collect();
    cluster.wait_for_leader(&ids, Duration::from_secs(30)).await;
    let endpoints = cluster.endpoints().join(",");
    (
        Target {
            _single: None,
            _cluster: Some(cluster),
        },
        endpoints,
    )
}

/// Longest pause in acknowledged writes when the leader of a 3-member cluster is killed.
async fn failover(arguments: &[String]) -> anyhow::Result<()> {
    let runs: usize = flag(arguments, "--runs", "5").parse().context("--runs")?;
    let writers: usize = flag(arguments, "--writers", "4")
        .parse()
        .context("--writers")?;
    let mut gaps = Vec::new();
    for run in 0..runs {
        let mut cluster = Cluster::start(3, &[]);
        let leader = cluster
            .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
            .await;
        let client = cluster.client().await;
        client
            .create("/failover", "", &CreateOptions::default())
            .await?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let client = client.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut index = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = format!("/failover/w{writer}-{index}");
                    loop {
                        match client.create(&path, "x", &CreateOptions::default()).await {
                            Ok(_) | Err(coord_client::Error::NodeExists { .. }) => break,
                            Err(_) if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    acknowledged.push(Instant::now());
                    index += 1;
                }
                acknowledged
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed_at = Instant::now();
        cluster.member(leader).kill9();
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for task in tasks {
            acknowledged.extend(task.await?);
        }
        acknowledged.sort();
        let gap = acknowledged
            .windows(2)
            .filter(|pair| pair[1] >= killed_at)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default();
        report(&format!(
            "failover run {}: longest write gap {:.0} ms ({} writes acknowledged)",
            run + 1,
            gap.as_secs_f64() * 1e3,
            acknowledged.len()
        ));
        gaps.push(gap);
    }
    gaps.sort();
    report(&format!(
        "failover: median longest write gap over {runs} runs: {:.0} ms",
        gaps[gaps.len() / 2].as_secs_f64() * 1e3
    ));
    Ok(())
}

async fn reads(arguments: &[String]) -> anyhow::Result<()> {
    let clients: usize = flag(arguments, "--clients", "32")
        .parse()
        .context("--clients")?;
    let ops: usize = flag(arguments, "--ops", "20000").parse().context("--ops")?;
    let consistency = match flag(arguments, "--consistency", "linearizable").as_str() {
        "linearizable" => coord_client::Consistency::Linearizable,
        "serializable" => coord_client::Consistency::Serializable,
        other => anyhow::bail!("--consistency {other}: use linearizable or serializable"),
    };
    let directory = tempfile::tempdir()?;
    let (_target, endpoints) = target(arguments, directory.path()).await;
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let path = format!("/bench-read-{}", std::process::id());
    Client::connect(&endpoints)
        .await?
        .create(&path, "value", &CreateOptions::default())
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        // Spread clients over the endpoints, one connection each.
        let endpoint = endpoints[worker % endpoints.len()].clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect([endpoint]).await?;
            let mut latencies = Vec::new();
            for _ in (worker..ops).step_by(clients) {
                let begun = Instant::now();
                client.get_with(&path, consistency).await?;
                latencies.push(begun.elapsed());
            }
            Ok::<_, coord_client::Error>(latencies)
        }));
    }
    let (latencies, elapsed) = join_latencies(tasks, started).await?;
    report(&format!(
        "reads: consistency={consistency:?} clients={clients} ops={} elapsed={:.2}s throughput={:.0} ops/s \
         latency p50={:.2}ms p99={:.2}ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    ));
    Ok(())
}

async fn restart(arguments: &[String]) -> anyhow::Result<()> {
    let nodes: usize = flag(arguments, "--nodes", "100000")
        .parse()
        .context("--nodes")?;
    let directory = tempfile::tempdir()?;
    let mut server = ServerProcess::start_single(directory.path(), &[]);
    let client = server.client().await;
    client
        .create("/restart", "", &CreateOptions::default())
        .await?;
    let populate = Instant::now();
    const BATCH: usize = 100;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for batch in (worker * BATCH..nodes).step_by(8 * BATCH) {
                let mut txn = Txn::new();
                for index in batch..(batch + BATCH).min(nodes) {
                    txn = txn.then(Op::create(
                        &format!("/restart/n{index:07}"),
                        "data",
                        &CreateOptions::default(),
                    ));
                }
                client.txn(txn).await?;
            }
            Ok::<_, coord_client::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let status = client.cluster_status().await?;
    let pid = server.pid().context("server is running")?;
    report(&format!(
        "populated {nodes} nodes in {:.1}s (last log index {}, snapshot at {}, rss {} MiB)",
        populate.elapsed().as_secs_f64(),
        status.last_log_index,
        status.snapshot_index,
        rss_kib(pid).unwrap_or(0) / 1024
    ));
    server.kill9();
    let restarted = Instant::now();
    server.restart();
    let client = server.client().await;
    let ready = restarted.elapsed();
    let count = client
        .exists("/restart")
        .await?
        .context("/restart exists")?
        .num_children;
    let pid = server.pid().context("server is running")?;
    report(&format!(
        "restart after SIGKILL: serving linearizable reads {:.2}s after spawn; /restart has {count} children; rss {} MiB",
        ready.as_secs_f64(),
        rss_kib(pid).unwrap_or(0) / 1024
    ));
    anyhow::ensure!(
        count as usize == nodes,
        "expected {nodes} nodes after restart, found {count}"
    );
    Ok(())
}
