//! `coord-bench`: small benchmarks that print numbers (never assert on them).
//!
//! ```text
//! coord-bench writes  [--endpoints E] [--clients 32] [--ops 20000] [--value-bytes 100] [--no-discovery] [--via-follower]
//! coord-bench reads   [--endpoints E] [--clients 32] [--ops 20000] [--consistency linearizable|serializable]
//! coord-bench restart [--nodes 100000]
//! coord-bench snapshots [--nodes 100000] [--seconds 10]
//! coord-bench failover [--runs 5] [--writers 4] [--fault kill|stop|term|move|all]
//! coord-bench sessions [--sessions 10000] [--ttl 10s] [--window 20s]
//! coord-bench watches  [--watches 10000] [--members-watched 3]
//! coord-bench watch-latency [--watchers 100] [--writes 2000] [--rate 0 (writes/s; 0: back to back)]
//! coord-bench locks [--contenders 16] [--seconds 10] [--uncontended 200] [--pinned]
//! ```
//! `sessions`, `watches`, `watch-latency` and `locks` always start a 3-member cluster of
//! their own. `writes`, `reads` and `locks` also print the CPU the members they started used
//! per operation (none with `--endpoints`).
//! Without `--endpoints`, `writes` and `reads` start their own servers in a temporary directory
//! (`--members 1` or `3`; the `coord-server` binary next to this one). `writes --no-discovery`
//! keeps the client on the endpoints given: with a follower's endpoint alone, every write is
//! forwarded to the leader; `--via-follower` does the same with a follower of the members it
//! started. `writes` also prints, from the metrics of the members it started, how many writes
//! shared each log entry and each forward to the leader, and how many went alone: the first
//! thing to look at when throughput under many writers changes. `locks --pinned` keeps each
//! contender on one member and prints the hand-offs to the leader's clients and to the
//! followers' apart; `--uncontended 0` skips the uncontended pairs. Counts of clients, operations, writers, watchers, writes and contenders
//! must be at least 1.
//! With `COORD_TEST_TLS=1` every member it starts serves both ports over TLS (peer mutual TLS)
//! and every client connects over TLS with a client certificate: the same run, TLS on.
//! `COORD_TOKEN` gives the clients a bearer token (a cluster with auth enabled, `--endpoints`).

use std::time::{Duration, Instant};

use anyhow::Context;
use coord_client::{Client, CreateOptions, Mutex, Op, Txn, WatchOptions};
use coord_tests::{Cluster, ServerProcess};

fn flag(arguments: &[String], name: &str, default: &str) -> String {
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// A count flag that must be at least 1: a load of nothing has no latency to report, and the
/// percentiles of no samples would be made up.
fn count(arguments: &[String], name: &str, default: &str) -> anyhow::Result<usize> {
    let value: usize = flag(arguments, name, default)
        .parse()
        .context(name.to_owned())?;
    anyhow::ensure!(value > 0, "{name} must be at least 1");
    Ok(value)
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

/// The usage text; every flag a command accepts (`COMMANDS`) appears on its line.
const USAGE: &str = "\
usage: coord-bench writes   [--endpoints E | --members N] [--clients N] [--ops N] [--value-bytes B] [--no-discovery] [--via-follower]
       coord-bench reads    [--endpoints E | --members N] [--clients N] [--ops N] [--consistency C]
       coord-bench restart  [--nodes N]
       coord-bench snapshots [--nodes N] [--seconds N]
       coord-bench failover [--runs N] [--writers N] [--fault kill|stop|term|move|all]
       coord-bench sessions [--sessions N] [--ttl D] [--window D]
       coord-bench watches  [--watches N] [--members-watched 1-3]
       coord-bench watch-latency [--watchers N] [--writes N] [--rate R]
       coord-bench locks [--contenders N] [--seconds N] [--uncontended N] [--pinned]";

/// Each command with the flags that take a value and the flags that stand alone.
const COMMANDS: &[(&str, &[&str], &[&str])] = &[
    (
        "writes",
        &[
            "--endpoints",
            "--members",
            "--clients",
            "--ops",
            "--value-bytes",
        ],
        &["--no-discovery", "--via-follower"],
    ),
    (
        "reads",
        &[
            "--endpoints",
            "--members",
            "--clients",
            "--ops",
            "--consistency",
        ],
        &[],
    ),
    ("restart", &["--nodes"], &[]),
    ("snapshots", &["--nodes", "--seconds"], &[]),
    ("failover", &["--runs", "--writers", "--fault"], &[]),
    ("sessions", &["--sessions", "--ttl", "--window"], &[]),
    ("watches", &["--watches", "--members-watched"], &[]),
    ("watch-latency", &["--watchers", "--writes", "--rate"], &[]),
    (
        "locks",
        &["--contenders", "--seconds", "--uncontended"],
        &["--pinned"],
    ),
];

fn usage() {
    report(USAGE);
}

/// Refuses what `command` does not take: a misspelt flag (`--contender 4`) would otherwise run
/// the benchmark with the default and print numbers for a load nobody asked for.
fn check_flags(command: &str, flags: &[String]) -> anyhow::Result<()> {
    let Some((_, values, switches)) = COMMANDS.iter().find(|(name, _, _)| *name == command) else {
        anyhow::bail!("unknown command {command:?}");
    };
    let mut rest = flags.iter();
    while let Some(argument) = rest.next() {
        if values.contains(&argument.as_str()) {
            match rest.next() {
                Some(value) if !value.starts_with("--") => {}
                _ => anyhow::bail!("coord-bench {command}: {argument} needs a value"),
            }
        } else if !switches.contains(&argument.as_str()) {
            anyhow::bail!("coord-bench {command}: unknown argument {argument:?} (see --help)");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().collect();
    // Asked for help, print it rather than run a benchmark with the defaults.
    if arguments
        .iter()
        .any(|argument| argument == "--help" || argument == "-h")
    {
        usage();
        return Ok(());
    }
    let command = arguments.get(1).map(String::as_str).unwrap_or_default();
    if let Err(error) = check_flags(command, arguments.get(2..).unwrap_or_default()) {
        report(&error.to_string());
        usage();
        std::process::exit(2);
    }
    match arguments.get(1).map(String::as_str) {
        Some("writes") => writes(&arguments).await,
        Some("restart") => restart(&arguments).await,
        Some("snapshots") => snapshots(&arguments).await,
        Some("reads") => reads(&arguments).await,
        Some("failover") => failover(&arguments).await,
        Some("sessions") => sessions(&arguments).await,
        Some("watches") => watches(&arguments).await,
        Some("watch-latency") => watch_latency(&arguments).await,
        Some("locks") => locks(&arguments).await,
        _ => {
            usage();
            std::process::exit(2);
        }
    }
}

async fn writes(arguments: &[String]) -> anyhow::Result<()> {
    let clients = count(arguments, "--clients", "32")?;
    let ops = count(arguments, "--ops", "20000")?;
    let value_bytes: usize = flag(arguments, "--value-bytes", "100")
        .parse()
        .context("--value-bytes")?;
    let directory = tempfile::tempdir()?;
    let (target, endpoints) = target(arguments, directory.path()).await;
    let via_follower = arguments
        .iter()
        .any(|argument| argument == "--via-follower");
    let (endpoints, discover) = if via_follower {
        let follower = target
            .follower_endpoint
            .clone()
            .context("--via-follower needs members started here (--members 2 or more)")?;
        (follower, false)
    } else {
        let discover = !arguments
            .iter()
            .any(|argument| argument == "--no-discovery");
        (endpoints, discover)
    };
    let client = connect_discovering(endpoints.split(','), discover).await?;
    let root = format!("/bench-{}", std::process::id());
    client.create(&root, "", &CreateOptions::default()).await?;
    settle_batching(&client, &target, &root).await?;
    let value = vec![b'v'; value_bytes];
    let cpu_before = members_cpu_time(&target.pids);
    let batching_before = target.batching();
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
         latency p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms{}{}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        cpu_line(&target.pids, cpu_before, latencies.len(), elapsed),
        batching_line(batching_before, target.batching()),
    ));
    Ok(())
}

/// A client of `endpoints` with default options, over TLS when `COORD_TEST_TLS=1` (the
/// members it starts then serve TLS too), so the same benchmark measures both.
async fn connect<I, S>(endpoints: I) -> Result<Client, coord_client::Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    connect_discovering(endpoints, true).await
}

/// `connect`, discovering the other members (and sending writes to the leader) only when
/// `discover`; without, the client uses `endpoints` alone, as a client that cannot reach the
/// other members would.
async fn connect_discovering<I, S>(
    endpoints: I,
    discover: bool,
) -> Result<Client, coord_client::Error>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let options = coord_client::ClientOptions {
        tls: coord_tests::pki::harness_client_tls(),
        token: std::env::var("COORD_TOKEN").ok(),
        discover_members: discover,
        ..coord_client::ClientOptions::default()
    };
    Client::connect_with(endpoints, options).await
}

/// The servers a benchmark runs against: external (`--endpoints`), or started here
/// (`--members N`, default 1).
struct Target {
    /// Kept only so the processes live as long as the benchmark (they are killed on drop).
    _single: Option<ServerProcess>,
    _cluster: Option<Cluster>,
    /// The process ids of the members this benchmark started (none with `--endpoints`).
    pids: Vec<u32>,
    /// The metrics ports (`--listen-metrics` on loopback) of the members it started.
    metrics_ports: Vec<u16>,
    /// The client endpoint of a member that was a follower once the cluster had a leader
    /// (none with `--endpoints` or a single member).
    follower_endpoint: Option<String>,
}

impl Target {
    /// How the members it started have gathered writes so far, all members together (the
    /// leader's entries; the followers' forwards); zero with `--endpoints`.
    fn batching(&self) -> Batching {
        self.metrics_ports
            .iter()
            .filter_map(|port| coord_tests::metrics::http_get(*port, "/metrics"))
            .map(|(_, text)| Batching::read(&text))
            .fold(Batching::default(), Batching::plus)
    }
}

/// How writes were gathered: log entries proposed by a leader and calls forwarding writes to
/// it, how many writes they held, and how many held one write alone.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Batching {
    entries: f64,
    entry_writes: f64,
    entries_alone: f64,
    forwards: f64,
    forward_writes: f64,
    forwards_alone: f64,
}

impl Batching {
    /// The counts in one member's Prometheus text (`coord_server_writes_per_entry` and
    /// `coord_server_writes_per_forward`, whose first bucket is `le="1"`); zero for what is
    /// missing.
    fn read(text: &str) -> Batching {
        let value = |name: &str| coord_tests::metrics::metric_value(text, name).unwrap_or(0.0);
        let entry = "coord_server_writes_per_entry";
        let forward = "coord_server_writes_per_forward";
        Batching {
            entries: value(&format!("{entry}_count")),
            entry_writes: value(&format!("{entry}_sum")),
            entries_alone: value(&format!("{entry}_bucket{{le=\"1\"}}")),
            forwards: value(&format!("{forward}_count")),
            forward_writes: value(&format!("{forward}_sum")),
            forwards_alone: value(&format!("{forward}_bucket{{le=\"1\"}}")),
        }
    }

    /// Each count of `self` combined with the same count of `other` by `combine`.
    fn zip(self, other: Batching, combine: impl Fn(f64, f64) -> f64) -> Batching {
        Batching {
            entries: combine(self.entries, other.entries),
            entry_writes: combine(self.entry_writes, other.entry_writes),
            entries_alone: combine(self.entries_alone, other.entries_alone),
            forwards: combine(self.forwards, other.forwards),
            forward_writes: combine(self.forward_writes, other.forward_writes),
            forwards_alone: combine(self.forwards_alone, other.forwards_alone),
        }
    }

    fn plus(self, other: Batching) -> Batching {
        self.zip(other, |mine, theirs| mine + theirs)
    }

    fn since(self, before: Batching) -> Batching {
        self.zip(before, |now, then| now - then)
    }
}

/// Before a timed run against members started here: writes rounds of concurrent creates under
/// `root` until the leader has put several writes in one entry (and, when they go through a
/// follower, the follower several in one forward), for at most `SETTLE_WAIT`. A leader writes
/// one write per entry until every member has said it applies batch entries, and a follower
/// forwards one write per call until the leader has said it takes batches (the members ask each
/// other once a second), so without this the first second or two of a fresh cluster's run
/// measures plain entries (in one 20,000-write run, 10,756 of its 11,240 entries held one
/// write).
async fn settle_batching(client: &Client, target: &Target, root: &str) -> anyhow::Result<()> {
    const SETTLE_WAIT: Duration = Duration::from_secs(10);
    const ROUND: usize = 32;
    if target.metrics_ports.len() < 2 {
        return Ok(());
    }
    let begun = Instant::now();
    let deadline = begun + SETTLE_WAIT;
    for round in 0.. {
        let before = target.batching();
        let mut writes = tokio::task::JoinSet::new();
        for index in 0..ROUND {
            let (client, path) = (client.clone(), format!("{root}/settle-{round}-{index}"));
            writes.spawn(async move {
                client
                    .create(&path, "", &CreateOptions::default())
                    .await
                    .map(|_| ())
            });
        }
        while let Some(written) = writes.join_next().await {
            written.context("a settling write")??;
        }
        let settled = target.batching().since(before);
        let forwards_settled = settled.forwards == 0.0 || settled.forward_writes > settled.forwards;
        if settled.entry_writes > settled.entries && forwards_settled {
            report(&format!(
                "writes: batching after {:.2}s of settling ({} rounds of {ROUND} writes)",
                begun.elapsed().as_secs_f64(),
                round + 1
            ));
            break;
        }
        if Instant::now() >= deadline {
            report(&format!(
                "writes: no entry held more than one write within {SETTLE_WAIT:?}; measuring \
                 anyway"
            ));
            break;
        }
    }
    Ok(())
}

/// The report's words on how the writes between `before` and `after` were gathered: entries
/// and forwards, writes per each, and how many held a single write. Empty when no entry was
/// counted (`--endpoints`, or members without metrics).
fn batching_line(before: Batching, after: Batching) -> String {
    let run = after.since(before);
    let mut line = String::new();
    for (what, groups, writes, alone) in [
        ("entries", run.entries, run.entry_writes, run.entries_alone),
        (
            "forwards",
            run.forwards,
            run.forward_writes,
            run.forwards_alone,
        ),
    ] {
        if groups > 0.0 {
            line.push_str(&format!(
                "; {what} {groups:.0} ({:.1} writes each, {alone:.0} with one)",
                writes / groups
            ));
        }
    }
    line
}

/// CPU time (user and system) the processes `pids` have used so far, all together.
fn members_cpu_time(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|pid| cpu_time(*pid)).sum()
}

/// The report's words on the CPU the members `pids` used since they had used `since` (see
/// `members_cpu_time`), over a run of `ops` operations that took `elapsed`: per operation,
/// and as a share of one core. CPU per operation is steadier than throughput on a shared
/// machine: a change that saves work shows there even when the machine's speed drifts between
/// runs. Empty when this benchmark started no members (`--endpoints`).
fn cpu_line(pids: &[u32], since: Duration, ops: usize, elapsed: Duration) -> String {
    if pids.is_empty() || ops == 0 {
        return String::new();
    }
    let used = members_cpu_time(pids).saturating_sub(since);
    format!(
        "; members' CPU {:.0} us/op ({:.0}% of one core, {} members)",
        used.as_secs_f64() * 1e6 / ops as f64,
        used.as_secs_f64() * 100.0 / elapsed.as_secs_f64(),
        pids.len()
    )
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
                pids: Vec::new(),
                metrics_ports: Vec::new(),
                follower_endpoint: None,
            },
            arguments[index + 1].clone(),
        );
    }
    let members: u64 = flag(arguments, "--members", "1")
        .parse()
        .expect("--members is a number");
    let metrics_ports: Vec<u16> = (0..members).map(|_| coord_tests::free_port()).collect();
    let metrics_flag = |id: u64| {
        let port = metrics_ports[usize::try_from(id - 1).expect("a small member id")];
        vec!["--listen-metrics".to_owned(), format!("127.0.0.1:{port}")]
    };
    if members == 1 {
        let flags = metrics_flag(1);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = ServerProcess::start_single(directory, &flags);
        server.client().await;
        let address = server.client_address();
        let pids = server.pid().into_iter().collect();
        return (
            Target {
                _single: Some(server),
                _cluster: None,
                pids,
                metrics_ports,
                follower_endpoint: None,
            },
            address,
        );
    }
    let mut cluster = Cluster::start_each(members, metrics_flag);
    let ids: Vec<u64> = (1..=members).collect();
    let leader = cluster.wait_for_leader(&ids, Duration::from_secs(30)).await;
    let all = cluster.endpoints();
    let follower_endpoint = ids
        .iter()
        .find(|id| **id != leader)
        .map(|id| all[usize::try_from(id - 1).expect("a small member id")].clone());
    let pids = ids
        .iter()
        .filter_map(|id| cluster.member(*id).pid())
        .collect();
    (
        Target {
            _single: None,
            _cluster: Some(cluster),
            pids,
            metrics_ports,
            follower_endpoint,
        },
        all.join(","),
    )
}

/// How the leader of a 3-member cluster is made to go (the measure: the longest pause in
/// acknowledged writes after it).
#[derive(Debug, Clone, Copy)]
enum LeaderFault {
    /// SIGKILL.
    Kill,
    /// SIGSTOP (resumed once the measurement is over): a leader that hangs.
    Stop,
    /// SIGTERM: the leader hands leadership over as it stops.
    Term,
    Move,
}

async fn failover(arguments: &[String]) -> anyhow::Result<()> {
    let runs = count(arguments, "--runs", "5")?;
    let writers = count(arguments, "--writers", "4")?;
    let faults = match flag(arguments, "--fault", "all").as_str() {
        "kill" => vec![LeaderFault::Kill],
        "stop" => vec![LeaderFault::Stop],
        "term" => vec![LeaderFault::Term],
        "move" => vec![LeaderFault::Move],
        "all" => vec![
            LeaderFault::Kill,
            LeaderFault::Stop,
            LeaderFault::Term,
            LeaderFault::Move,
        ],
        other => anyhow::bail!("--fault {other}: use kill, stop, term, move or all"),
    };
    // The servers' default timing, not the test harness's faster one.
    let timing = ["--heartbeat-interval", "100ms", "--election-timeout", "1s"];
    for fault in faults {
        let mut gaps = Vec::new();
        for run in 0..runs {
            let gap = failover_run(fault, writers, &timing).await?;
            report(&format!(
                "failover {fault:?} run {}: longest write gap {:.0} ms",
                run + 1,
                gap.as_secs_f64() * 1e3,
            ));
            gaps.push(gap);
        }
        gaps.sort();
        report(&format!(
            "failover {fault:?}: median longest write gap over {runs} runs: {:.0} ms (min {:.0}, max {:.0})",
            gaps[gaps.len() / 2].as_secs_f64() * 1e3,
            gaps[0].as_secs_f64() * 1e3,
            gaps[gaps.len() - 1].as_secs_f64() * 1e3,
        ));
    }
    Ok(())
}

/// One 3-member cluster, `writers` clients creating nodes through one `Client` over all three
/// endpoints, the leader made to go by `fault`: the longest time between two acknowledged
/// writes after the fault.
async fn failover_run(
    fault: LeaderFault,
    writers: usize,
    args: &[&str],
) -> anyhow::Result<Duration> {
    let mut cluster = Cluster::start(3, args);
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
    let fault_at = Instant::now();
    match fault {
        LeaderFault::Kill => cluster.member(leader).kill9(),
        LeaderFault::Stop => cluster.member(leader).pause(),
        LeaderFault::Term => {
            cluster.member(leader).terminate(Duration::from_secs(15));
        }
        LeaderFault::Move => {
            client.member_move_leader(0).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let LeaderFault::Stop = fault {
        cluster.member(leader).resume();
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await?);
    }
    acknowledged.sort();
    let gap = acknowledged
        .windows(2)
        .filter(|pair| pair[1] >= fault_at)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    if gap > Duration::from_secs(5) {
        report(&format!(
            "failover {fault:?}: writes stopped for {gap:?}; member logs:\n{}",
            cluster.log_tails(30)
        ));
    }
    Ok(gap)
}

async fn reads(arguments: &[String]) -> anyhow::Result<()> {
    let clients = count(arguments, "--clients", "32")?;
    let ops = count(arguments, "--ops", "20000")?;
    let consistency = match flag(arguments, "--consistency", "linearizable").as_str() {
        "linearizable" => coord_client::Consistency::Linearizable,
        "serializable" => coord_client::Consistency::Serializable,
        other => anyhow::bail!("--consistency {other}: use linearizable or serializable"),
    };
    let directory = tempfile::tempdir()?;
    let (target, endpoints) = target(arguments, directory.path()).await;
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let path = format!("/bench-read-{}", std::process::id());
    connect(&endpoints)
        .await?
        .create(&path, "value", &CreateOptions::default())
        .await?;
    let cpu_before = members_cpu_time(&target.pids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        // Spread clients over the endpoints, one connection each.
        let endpoint = endpoints[worker % endpoints.len()].clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect([endpoint]).await?;
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
         latency p50={:.2}ms p99={:.2}ms{}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu_line(&target.pids, cpu_before, latencies.len(), elapsed),
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
    let populate = Instant::now();
    populate_children(&client, "/restart", nodes).await?;
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

/// Creates `parent` and `nodes` children under it (`n0000000`, ...), 100 to a txn, 8 at a time.
async fn populate_children(client: &Client, parent: &str, nodes: usize) -> anyhow::Result<()> {
    client.create(parent, "", &CreateOptions::default()).await?;
    const BATCH: usize = 100;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        let parent = parent.to_owned();
        tasks.push(tokio::spawn(async move {
            for batch in (worker * BATCH..nodes).step_by(8 * BATCH) {
                let mut txn = Txn::new();
                for index in batch..(batch + BATCH).min(nodes) {
                    txn = txn.then(Op::create(
                        &format!("{parent}/n{index:07}"),
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
    Ok(())
}

/// Log entries between snapshots in `snapshots`: at one writer's pace, several a second.
const SNAPSHOT_EVERY_ENTRIES: &str = "2000";

/// Write latency while snapshots are built: one member holding `--nodes` nodes, started to
/// build a snapshot every `SNAPSHOT_EVERY_ENTRIES` entries, and one writer changing them back
/// to back for `--seconds`. Taking a snapshot copies the tree under the applier's lock, so the
/// slowest writes show what that copy costs at this size.
async fn snapshots(arguments: &[String]) -> anyhow::Result<()> {
    let nodes: usize = flag(arguments, "--nodes", "100000")
        .parse()
        .context("--nodes")?;
    let seconds: u64 = flag(arguments, "--seconds", "10")
        .parse()
        .context("--seconds")?;
    anyhow::ensure!(nodes > 0, "--nodes must be at least 1");
    let directory = tempfile::tempdir()?;
    let server = ServerProcess::start_single(
        directory.path(),
        &["--snapshot-entries", SNAPSHOT_EVERY_ENTRIES],
    );
    let client = server.client().await;
    populate_children(&client, "/snapshots", nodes).await?;
    let built_before = server.log().matches("snapshot built").count();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    while Instant::now() < stop_at {
        let path = format!("/snapshots/n{:07}", latencies.len() % nodes);
        let began = Instant::now();
        client.set(&path, "changed", None).await?;
        latencies.push(began.elapsed());
    }
    let log = server.log();
    let built = log.matches("snapshot built").count() - built_before;
    let longest_copy = log
        .split("copied_in=")
        .skip(1)
        .filter_map(|rest| parse_debug_duration(rest.split_whitespace().next()?))
        .max()
        .unwrap_or_default();
    latencies.sort();
    let ms = |fraction| percentile(&latencies, fraction).as_secs_f64() * 1e3;
    report(&format!(
        "snapshots: {nodes} nodes, {} writes in {seconds}s while {built} snapshots were built: \
         latency p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms; longest copy of the tree \
         (applying paused) {:.2}ms",
        latencies.len(),
        ms(0.50),
        ms(0.99),
        ms(0.999),
        ms(1.0),
        longest_copy.as_secs_f64() * 1e3,
    ));
    Ok(())
}

/// A duration as `Debug` prints it (`950ns`, `12.5µs`, `6.6ms`, `1.2s`), as the member logs it.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| Some((text.strip_suffix(unit)?, *scale)))?;
    let seconds = number.parse::<f64>().ok()? * scale;
    Some(Duration::from_secs_f64(seconds))
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;
    Some(Duration::from_secs_f64(
        (user + system) as f64 / TICKS_PER_SECOND,
    ))
}

/// A 3-member cluster with its leader and each member's process id.
async fn three_members() -> anyhow::Result<(Cluster, u64, Vec<(u64, u32)>)> {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    let mut pids = Vec::new();
    for id in 1..=3 {
        pids.push((id, cluster.member(id).pid().context("member is running")?));
    }
    Ok((cluster, leader, pids))
}

fn rss_by_member(pids: &[(u64, u32)]) -> Vec<u64> {
    pids.iter()
        .map(|(_, pid)| rss_kib(*pid).unwrap_or(0))
        .collect()
}

/// Reports each member's resident memory growth from `before` to now, per item.
fn report_memory(
    (what, one): (&str, &str),
    count: usize,
    leader: u64,
    pids: &[(u64, u32)],
    before: &[u64],
) {
    let after = rss_by_member(pids);
    for (((id, _), before_kib), after_kib) in pids.iter().zip(before).zip(&after) {
        let grown = after_kib.saturating_sub(*before_kib);
        report(&format!(
            "{what}: member {id}{} rss {} -> {} KiB: {:.0} bytes per {one}",
            if *id == leader { " (leader)" } else { "" },
            before_kib,
            after_kib,
            grown as f64 * 1024.0 / count as f64,
        ));
    }
}

/// Connections used to hold many sessions or watches (HTTP/2 caps streams per connection).
const STREAMS_PER_CONNECTION: usize = 100;

/// Memory per idle session on each member, and the leader's CPU to keep them alive.
async fn sessions(arguments: &[String]) -> anyhow::Result<()> {
    let count: usize = flag(arguments, "--sessions", "10000")
        .parse()
        .context("--sessions")?;
    let ttl = coord_client::parse_duration(&flag(arguments, "--ttl", "10s"))
        .map_err(anyhow::Error::msg)?;
    let window = coord_client::parse_duration(&flag(arguments, "--window", "20s"))
        .map_err(anyhow::Error::msg)?;
    let (cluster, leader, pids) = three_members().await?;
    let leader_pid = pids[usize::try_from(leader - 1)?].1;
    let endpoints = cluster.endpoints();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu = cpu_over(leader_pid, window).await;
    let before = rss_by_member(&pids);
    let opened = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..count.div_ceil(STREAMS_PER_CONNECTION) {
        let mut rotated = endpoints.clone();
        rotated.rotate_left(connection % endpoints.len());
        let wanted = STREAMS_PER_CONNECTION.min(count - connection * STREAMS_PER_CONNECTION);
        tasks.push(tokio::spawn(async move {
            let client = connect(rotated).await?;
            let mut sessions = Vec::new();
            for _ in 0..wanted {
                sessions.push(client.open_session(ttl).await?);
            }
            Ok::<_, coord_client::Error>(sessions)
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.extend(task.await??);
    }
    report(&format!(
        "sessions: opened {} sessions (ttl {ttl:?}) in {:.1}s over {} connections",
        sessions.len(),
        opened.elapsed().as_secs_f64(),
        count.div_ceil(STREAMS_PER_CONNECTION)
    ));
    // Let keep-alives reach a steady state before measuring.
    tokio::time::sleep(ttl).await;
    report_memory(("sessions", "session"), count, leader, &pids, &before);
    let busy_cpu = cpu_over(leader_pid, window).await;
    let keep_alives_per_second = count as f64 / (ttl / 3).as_secs_f64();
    report(&format!(
        "sessions: leader cpu idle {:.1}% of a core, with {count} sessions {:.1}% \
         (~{keep_alives_per_second:.0} keep-alives/s, {:.1} us cpu per keep-alive)",
        idle_cpu * 100.0,
        busy_cpu * 100.0,
        (busy_cpu - idle_cpu).max(0.0) * 1e6 / keep_alives_per_second,
    ));
    let unsafe_sessions = sessions.iter().filter(|session| !session.is_safe()).count();
    report(&format!(
        "sessions: {unsafe_sessions} of {count} sessions not safe at the end"
    ));
    Ok(())
}

/// The share of one core `pid` used over `window`.
async fn cpu_over(pid: u32, window: Duration) -> f64 {
    let start = cpu_time(pid).unwrap_or_default();
    let begun = Instant::now();
    tokio::time::sleep(window).await;
    let used = cpu_time(pid).unwrap_or_default().saturating_sub(start);
    used.as_secs_f64() / begun.elapsed().as_secs_f64()
}

/// Memory per idle watch on each member, and in the watching process; then the latency of
/// writes among the watches and of their events, one write at a time.
///
/// One client per watched member (`--members-watched`, the first 1 to 3) holds an equal share
/// of the watches, as an application with many watches would: the client multiplexes them on
/// a few streams.
async fn watches(arguments: &[String]) -> anyhow::Result<()> {
    let count: usize = flag(arguments, "--watches", "10000")
        .parse()
        .context("--watches")?;
    let spread: usize = flag(arguments, "--members-watched", "3")
        .parse()
        .context("--members-watched")?;
    let (cluster, leader, pids) = three_members().await?;
    let all = cluster.endpoints();
    let endpoints = &all[..spread.clamp(1, all.len())];
    let setup = connect(&all).await?;
    setup
        .create("/watched", "", &CreateOptions::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_by_member(&pids);
    let own_before = rss_kib(std::process::id()).unwrap_or(0);
    let opened = Instant::now();
    let mut tasks = Vec::new();
    for (member, endpoint) in endpoints.iter().enumerate() {
        let client = connect([endpoint.clone()]).await?;
        // A few creators per client, so that creating is not one round trip at a time.
        for creator in 0..WATCH_CREATORS {
            let client = client.clone();
            let indexes: Vec<usize> = (0..count)
                .filter(|index| index % endpoints.len() == member)
                .skip(creator)
                .step_by(WATCH_CREATORS)
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut watches = Vec::new();
                for index in indexes {
                    let options = WatchOptions {
                        path: format!("/watched/n{index}"),
                        ..WatchOptions::default()
                    };
                    watches.push((index, client.watch(options).await?));
                }
                Ok::<_, coord_client::Error>(watches)
            }));
        }
    }
    let mut watches = Vec::new();
    for task in tasks {
        watches.extend(task.await??);
    }
    report(&format!(
        "watches: opened {} watches in {:.1}s on {} member(s), one client per member",
        watches.len(),
        opened.elapsed().as_secs_f64(),
        endpoints.len()
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Each watched member holds an equal share (the others' growth is divided the same way).
    report_memory(
        ("watches", "watch"),
        count / endpoints.len(),
        leader,
        &pids,
        &before,
    );
    let own_after = rss_kib(std::process::id()).unwrap_or(0);
    report(&format!(
        "watches: the watching process grew {} -> {} KiB: {:.0} bytes per watch",
        own_before,
        own_after,
        own_after.saturating_sub(own_before) as f64 * 1024.0 / count.max(1) as f64
    ));
    // Events through, one write at a time, to watches spread over the streams.
    let mut acknowledged = Vec::new();
    let mut received = Vec::new();
    let step = (watches.len() / WATCH_EVENTS_SAMPLED).max(1);
    for (index, watch) in watches.iter_mut().step_by(step).take(WATCH_EVENTS_SAMPLED) {
        let written = Instant::now();
        setup
            .create(&format!("/watched/n{index}"), "", &CreateOptions::default())
            .await?;
        acknowledged.push(written.elapsed());
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .context("no event within 10 s")?
            .context("the watch ended")??;
        received.push(written.elapsed());
    }
    if received.is_empty() {
        return Ok(());
    }
    acknowledged.sort();
    received.sort();
    let median = |samples: &[Duration]| samples[samples.len() / 2].as_secs_f64() * 1e3;
    report(&format!(
        "watches: {} creates among {count} watches, one at a time: acknowledged p50 {:.2} ms, \
         event received p50 {:.2} ms, slowest {:.2} ms (from the write's start)",
        received.len(),
        median(&acknowledged),
        median(&received),
        received
            .last()
            .map_or(0.0, |slowest| slowest.as_secs_f64() * 1e3)
    ));
    Ok(())
}

/// Writes whose events `coord-bench watches` times.
const WATCH_EVENTS_SAMPLED: usize = 50;

/// Tasks creating one client's watches at once in `coord-bench watches`.
const WATCH_CREATORS: usize = 16;

/// Time from a write's acknowledgement to each watcher's receipt of its event.
type LatencyWatcher =
    tokio::task::JoinHandle<Result<(bool, Vec<(u64, Instant)>), coord_client::Error>>;

/// A client of its own on `endpoint` watching `/latency` from `start_revision` until it has
/// `writes` events: whether its member is `leader`, and each event's revision and arrival.
async fn latency_watcher(
    endpoint: String,
    leader: u64,
    start_revision: u64,
    writes: usize,
) -> anyhow::Result<LatencyWatcher> {
    let client = connect([endpoint]).await?;
    let on_leader = client.header().await?.member_id == leader;
    let options = WatchOptions {
        path: "/latency".to_owned(),
        start_revision,
        with_data: true,
        ..WatchOptions::default()
    };
    let mut watch = client.watch(options).await?;
    Ok(tokio::spawn(async move {
        let _client = client;
        let mut received = Vec::with_capacity(writes);
        while received.len() < writes {
            match watch.next().await {
                Some(Ok(event)) => received.push((event.revision, Instant::now())),
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        Ok((on_leader, received))
    }))
}

async fn watch_latency(arguments: &[String]) -> anyhow::Result<()> {
    let watchers = count(arguments, "--watchers", "100")?;
    let writes = count(arguments, "--writes", "2000")?;
    let rate: f64 = flag(arguments, "--rate", "0").parse().context("--rate")?;
    let (cluster, leader, _pids) = three_members().await?;
    let endpoints = cluster.endpoints();
    let writer = connect(&endpoints).await?;
    let path = "/latency";
    writer.create(path, "0", &CreateOptions::default()).await?;
    let start_revision = writer.header().await?.revision + 1;
    let mut receivers = Vec::new();
    for watcher in 0..watchers {
        let endpoint = endpoints[watcher % endpoints.len()].clone();
        receivers.push(latency_watcher(endpoint, leader, start_revision, writes).await?);
    }
    let mut sent = std::collections::HashMap::new();
    let mut ticks = (rate > 0.0).then(|| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let started = Instant::now();
    for index in 0..writes {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let begun = Instant::now();
        let stat = writer.set(path, index.to_string(), None).await?;
        sent.insert(stat.mod_revision, (begun, Instant::now()));
    }
    let elapsed = started.elapsed();
    let mut delays = Vec::new();
    for receiver in receivers {
        delays.push(receiver.await??);
    }
    report_watch_delays(watchers, writes, elapsed, &sent, delays)
}

/// Prints how long after each write's send and reply its events reached the watchers, for
/// watchers on the leader and on the followers.
fn report_watch_delays(
    watchers: usize,
    writes: usize,
    elapsed: Duration,
    sent: &std::collections::HashMap<u64, (Instant, Instant)>,
    received: Vec<(bool, Vec<(u64, Instant)>)>,
) -> anyhow::Result<()> {
    let (mut on_leader, mut on_followers, mut after_send) = (Vec::new(), Vec::new(), Vec::new());
    let mut early = 0;
    for (leader_side, events) in received {
        for (revision, received_at) in events {
            let (begun, acked_at) = sent
                .get(&revision)
                .context("an event for a revision nobody wrote")?;
            after_send.push(received_at.saturating_duration_since(*begun));
            // None: the event reached the watcher before the reply reached the writer.
            let delay = received_at.checked_duration_since(*acked_at);
            early += usize::from(delay.is_none());
            let side = if leader_side {
                &mut on_leader
            } else {
                &mut on_followers
            };
            side.push(delay.unwrap_or_default());
        }
    }
    let events = on_leader.len() + on_followers.len();
    report(&format!(
        "watch-latency: {watchers} watchers x {writes} sequential writes ({:.0} writes/s): \
         {events} events, {early} arrived before the write's reply",
        writes as f64 / elapsed.as_secs_f64(),
    ));
    for (what, mut delays) in [
        (
            "after the reply, all",
            [&on_leader[..], &on_followers[..]].concat(),
        ),
        ("after the reply, on the leader", on_leader),
        ("after the reply, on followers", on_followers),
        ("after the write was sent", after_send),
    ] {
        delays.sort();
        if delays.is_empty() {
            continue;
        }
        report(&format!(
            "  {what}: p50={:.2}ms p99={:.2}ms max={:.2}ms",
            percentile(&delays, 0.50).as_secs_f64() * 1e3,
            percentile(&delays, 0.99).as_secs_f64() * 1e3,
            delays.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        ));
    }
    anyhow::ensure!(
        events == watchers * writes,
        "expected {} events, received {events}",
        watchers * writes,
    );
    Ok(())
}

/// Uncontended acquire + release latency of a `Mutex`, then hand-offs per second with many
/// contenders on one lock, each with its own connection and session (like separate processes).
async fn locks(arguments: &[String]) -> anyhow::Result<()> {
    let contenders = count(arguments, "--contenders", "16")?;
    let seconds: u64 = flag(arguments, "--seconds", "10")
        .parse()
        .context("--seconds")?;
    let uncontended: usize = flag(arguments, "--uncontended", "200")
        .parse()
        .context("--uncontended")?;
    let (cluster, leader, pids) = three_members().await?;
    let endpoints = cluster.endpoints();
    // Member ids are 1..=3 in the order of `endpoints`.
    let leader_index = usize::try_from(leader - 1).context("member ids start at 1")?;
    let pids: Vec<u32> = pids.into_iter().map(|(_, pid)| pid).collect();

    if uncontended > 0 {
        locks_uncontended(&endpoints, uncontended).await?;
    }
    let pinned = arguments.iter().any(|argument| argument == "--pinned");
    let placement = if pinned {
        Placement::Pinned { leader_index }
    } else {
        Placement::Discovering
    };
    locks_contended(&endpoints, contenders, seconds, placement, &pids).await
}

/// One client acquiring and releasing a lock nobody else wants, `times` times: the latency of
/// an acquire and release pair.
async fn locks_uncontended(endpoints: &[String], times: usize) -> anyhow::Result<()> {
    let client = connect(endpoints).await?;
    let session = client.open_session(Duration::from_secs(10)).await?;
    let mutex = Mutex::new(&client, &session, "/bench/uncontended");
    // The first acquisition creates the lock's directory.
    mutex.acquire().await?.release().await?;
    let mut latencies = Vec::with_capacity(times);
    for _ in 0..times {
        let begun = Instant::now();
        let guard = mutex.acquire().await?;
        guard.release().await?;
        latencies.push(begun.elapsed());
    }
    latencies.sort();
    report(&format!(
        "locks: uncontended acquire+release x{times}: p50={:.2}ms p99={:.2}ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    ));
    Ok(())
}

/// How the contenders of `locks` reach the cluster.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    /// Each client discovers the members and writes to the leader.
    Discovering,
    /// Each client knows its own member only (as peerbench's lock-cycle connects them), so a
    /// client of a follower has its releases forwarded and its turn decided there; the
    /// leader is `endpoints[leader_index]`.
    Pinned { leader_index: usize },
}

/// `contenders` clients, spread over `endpoints`, acquiring and releasing one lock for
/// `seconds`: hand-offs per second, and how long each hand-off and release took; with pinned
/// clients, hand-offs apart by where the new holder is pinned (the leader or a follower).
async fn locks_contended(
    endpoints: &[String],
    contenders: usize,
    seconds: u64,
    placement: Placement,
    pids: &[u32],
) -> anyhow::Result<()> {
    let pinned = placement != Placement::Discovering;
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = members_cpu_time(pids);
    // When the last release began: the next acquisition to return measures its hand-off.
    let release_began = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for contender in 0..contenders {
        let endpoints = endpoints.to_vec();
        let release_began = release_began.clone();
        tasks.push(tokio::spawn(async move {
            let mut rotated = endpoints;
            let shift = contender % rotated.len();
            rotated.rotate_left(shift);
            if pinned {
                rotated.truncate(1);
            }
            let client = connect_discovering(rotated, !pinned).await?;
            let session = client.open_session(Duration::from_secs(10)).await?;
            let mutex = Mutex::new(&client, &session, "/bench/contended");
            let on_leader =
                matches!(placement, Placement::Pinned { leader_index } if leader_index == shift);
            let (mut handoffs, mut releases) = (Vec::new(), Vec::new());
            while Instant::now() < stop_at {
                let guard = mutex.acquire().await?;
                let releasing = {
                    let mut began = release_began.lock().expect("not poisoned");
                    handoffs.extend(began.take().map(|began| (began.elapsed(), on_leader)));
                    *began.insert(Instant::now())
                };
                guard.release().await?;
                releases.push(releasing.elapsed());
            }
            session.close().await?;
            Ok::<_, coord_client::Error>((handoffs, releases))
        }));
    }
    let started = Instant::now();
    let (mut handoffs, mut releases, mut per_contender) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (handed, released) = task.await??;
        per_contender.push(released.len());
        handoffs.extend(handed);
        releases.extend(released);
    }
    let elapsed = started.elapsed();
    per_contender.sort_unstable();
    report(&format!(
        "locks: {contenders} contenders{} on one lock for {:.1}s: {} acquisitions, {:.0} \
         hand-offs/s (fewest by one contender {}, most {}){}",
        if pinned {
            " (each pinned to one member)"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        releases.len(),
        releases.len() as f64 / elapsed.as_secs_f64(),
        per_contender.first().copied().unwrap_or_default(),
        per_contender.last().copied().unwrap_or_default(),
        cpu_line(pids, cpu_before, releases.len(), elapsed),
    ));
    report_handoffs(handoffs, releases);
    Ok(())
}

/// Reports the percentiles of `handoffs` (each with whether the new holder was pinned to the
/// leader; when some were, the p50 to the leader's and to followers' apart) and of `releases`.
fn report_handoffs(mut handoffs: Vec<(Duration, bool)>, mut releases: Vec<Duration>) {
    handoffs.sort();
    releases.sort();
    report_handoffs_by_member(&handoffs);
    let handoffs: Vec<Duration> = handoffs.into_iter().map(|(duration, _)| duration).collect();
    if !handoffs.is_empty() {
        let ms = |samples: &[Duration], fraction| percentile(samples, fraction).as_secs_f64() * 1e3;
        report(&format!(
            "locks: hand-off (a release begun -> the next holder's acquire returned) p50={:.2}ms \
             p99={:.2}ms; the release alone p50={:.2}ms p99={:.2}ms",
            ms(&handoffs, 0.50),
            ms(&handoffs, 0.99),
            ms(&releases, 0.50),
            ms(&releases, 0.99),
        ));
    }
}

/// Reports the hand-off p50 to holders pinned to the leader and to followers apart, from
/// sorted `(hand-off, new holder pinned to the leader)` samples; nothing unless both kinds
/// are there (clients that discover the members are never marked pinned).
fn report_handoffs_by_member(handoffs: &[(Duration, bool)]) {
    let durations = |to_leader: bool| -> Vec<Duration> {
        handoffs
            .iter()
            .filter(|(_, on_leader)| *on_leader == to_leader)
            .map(|(duration, _)| *duration)
            .collect()
    };
    let (to_leader, to_followers) = (durations(true), durations(false));
    if to_leader.is_empty() || to_followers.is_empty() {
        return;
    }
    let ms = |samples: &[Duration]| percentile(samples, 0.50).as_secs_f64() * 1e3;
    report(&format!(
        "locks: hand-off p50 to a holder pinned to the leader {:.2}ms (x{}), to a follower \
         {:.2}ms (x{})",
        ms(&to_leader),
        to_leader.len(),
        ms(&to_followers),
        to_followers.len(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn durations_read_back_as_the_member_logs_them() {
        let read = |text| parse_debug_duration(text).map(|duration| duration.as_secs_f64());
        assert_eq!(read("950ns"), Some(950e-9));
        assert_eq!(read("12.5µs"), Some(12.5e-6));
        assert_eq!(read("6.5ms"), Some(6.5e-3));
        assert_eq!(read("1.25s"), Some(1.25));
        assert_eq!(read("ms"), None);
        assert_eq!(read("12"), None);
    }

    #[test]
    fn a_misspelt_or_unknown_flag_is_refused() {
        let error = check_flags("locks", &arguments("--contender 4")).unwrap_err();
        assert!(error.to_string().contains("\"--contender\""), "{error}");
        assert!(check_flags("locks", &arguments("--seconds 5 extra")).is_err());
        assert!(check_flags("reads", &arguments("--no-discovery")).is_err());
        assert!(check_flags("nonsense", &[]).is_err());
    }

    #[test]
    fn a_flag_without_its_value_is_refused() {
        let error = check_flags("writes", &arguments("--endpoints")).unwrap_err();
        assert!(
            error.to_string().contains("--endpoints needs a value"),
            "{error}"
        );
        assert!(check_flags("writes", &arguments("--clients --ops 5")).is_err());
    }

    #[test]
    fn a_count_of_nothing_is_refused_and_a_default_is_kept() {
        let error = count(&arguments("--uncontended 0 --ops 0"), "--ops", "20000").unwrap_err();
        assert!(
            error.to_string().contains("--ops must be at least 1"),
            "{error}"
        );
        assert!(count(&arguments("--ops ten"), "--ops", "20000").is_err());
        assert_eq!(
            count(&arguments("--clients 3"), "--ops", "20000").unwrap(),
            20_000
        );
        assert_eq!(count(&arguments("--ops 7"), "--ops", "20000").unwrap(), 7);
    }

    #[test]
    fn batching_is_read_from_a_members_histograms_and_reported_for_the_run_alone() {
        let text = "\
# TYPE coord_server_writes_per_entry histogram
coord_server_writes_per_entry_bucket{le=\"1\"} 504
coord_server_writes_per_entry_bucket{le=\"2\"} 900
coord_server_writes_per_entry_sum 40000
coord_server_writes_per_entry_count 2679
coord_server_writes_per_forward_bucket{le=\"1\"} 0
coord_server_writes_per_forward_sum 0
coord_server_writes_per_forward_count 0
";
        let member = Batching::read(text);
        assert_eq!(member.entries, 2679.0);
        assert_eq!(member.entry_writes, 40000.0);
        assert_eq!(member.entries_alone, 504.0);
        assert_eq!(Batching::read("").plus(member), member);
        let before = Batching {
            entries: 79.0,
            entry_writes: 1000.0,
            entries_alone: 4.0,
            ..Batching::default()
        };
        assert_eq!(
            batching_line(before, member),
            "; entries 2600 (15.0 writes each, 500 with one)"
        );
        assert_eq!(batching_line(member, member), "");
    }

    #[test]
    fn every_flag_a_command_takes_is_accepted_and_in_its_usage_line() {
        for (command, values, switches) in COMMANDS {
            let line = USAGE
                .lines()
                .find(|line| {
                    let mut words = line
                        .split_whitespace()
                        .skip_while(|word| *word != "coord-bench");
                    words.nth(1) == Some(command)
                })
                .unwrap_or_else(|| panic!("no usage line for {command}"));
            let mut given = Vec::new();
            for flag in values.iter() {
                assert!(line.contains(flag), "{flag} missing from {line:?}");
                given.extend([flag.to_string(), "1".to_owned()]);
            }
            for flag in switches.iter() {
                assert!(line.contains(flag), "{flag} missing from {line:?}");
                given.push(flag.to_string());
            }
            check_flags(command, &given).unwrap();
        }
    }
}
