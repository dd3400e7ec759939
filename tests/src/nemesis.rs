//! The nemesis: seeded random fault schedules against a cluster behind `FaultyNetwork`, and
//! `FaultRun`, which runs the register workload through one and checks what users are promised:
//! a linearizable history, members that converge, and no acknowledged write lost.
//!
//! Invariants:
//! - The schedule (which fault, for how long, which member by position) follows from the seed
//!   alone; only "the leader" is resolved against the live cluster. A failing run prints its
//!   seed, and `COORD_FAULT_SEED` replays it.
//! - Every fault is healed before the next one starts, and everything is healed (links, paused
//!   and killed members) before any check runs.
//! - Fault times are offsets on the history's clock, so a report can place them among the
//!   operations.

use std::fmt;
use std::time::Duration;

use coord_client::{Consistency, Error};

use crate::history::{ClientId, History, HistoryRecorder, Operation, Outcome, Response, Value};
use crate::linearizability::{self, Verdict};
use crate::proxy::{LinkQuality, Node};
use crate::rng::SeededRng;
use crate::workload::{RegisterWorkload, Tally, WorkloadOptions};
use crate::Cluster;

/// The kinds of fault a schedule draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A random minority cut off from the majority (clients reach both sides).
    PartitionHalves,
    /// The leader cut off from every member and every client.
    IsolateLeader,
    /// The leader cut off from every other member while clients still reach it: a deposed
    /// leader that keeps answering is the classic source of stale reads.
    PartitionLeader,
    /// Only the leader's messages to the others are lost; it still hears them.
    LeaderOutboundCut,
    /// The leader killed with SIGKILL, restarted at the heal.
    KillLeader,
    /// A member (the leader half the time) stopped with SIGSTOP, resumed at the heal.
    PauseMember,
    /// Every member killed at once, all restarted at the heal.
    RestartAll,
    /// Two sides that cannot reach each other, and one member that reaches both.
    Bridge,
    /// Delay, jitter and lost segments on every member-to-member link.
    SlowLinks,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::PartitionHalves,
        FaultKind::IsolateLeader,
        FaultKind::PartitionLeader,
        FaultKind::LeaderOutboundCut,
        FaultKind::KillLeader,
        FaultKind::PauseMember,
        FaultKind::RestartAll,
        FaultKind::Bridge,
        FaultKind::SlowLinks,
    ];
}

/// Something the nemesis did, at an offset on the history's clock.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    pub at: Duration,
    /// The fault injected; `None` for a heal.
    pub kind: Option<FaultKind>,
    pub description: String,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:>10.3}s {}",
            self.at.as_secs_f64(),
            self.description
        )
    }
}

/// How long faults and the quiet periods between them last.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub kinds: Vec<FaultKind>,
    pub fault_min: Duration,
    pub fault_max: Duration,
    pub quiet_min: Duration,
    pub quiet_max: Duration,
}

impl Schedule {
    /// Faults of 1 to 4 s with 0.5 to 2 s of quiet between them.
    pub fn of(kinds: &[FaultKind]) -> Schedule {
        Schedule {
            kinds: kinds.to_vec(),
            fault_min: Duration::from_millis(1000),
            fault_max: Duration::from_millis(4000),
            quiet_min: Duration::from_millis(500),
            quiet_max: Duration::from_millis(2000),
        }
    }
}

/// Faults in force that the heal must undo.
#[derive(Default)]
struct Damage {
    paused: Vec<u64>,
    killed: Vec<u64>,
}

/// Runs `schedule` against `cluster` for `duration`, healing after each fault and at the end.
pub async fn unleash(
    cluster: &mut Cluster,
    schedule: &Schedule,
    seed: u64,
    duration: Duration,
    recorder: &HistoryRecorder,
) -> Vec<FaultEvent> {
    assert!(!schedule.kinds.is_empty(), "a schedule needs fault kinds");
    let mut rng = SeededRng::derive(seed, u64::MAX);
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline {
        let kind = schedule.kinds[rng.index(schedule.kinds.len())];
        let hold = rng.between(schedule.fault_min, schedule.fault_max);
        let quiet = rng.between(schedule.quiet_min, schedule.quiet_max);
        let mut damage = Damage::default();
        let description = inject(cluster, kind, &mut rng, &mut damage).await;
        events.push(FaultEvent {
            at: recorder.now(),
            kind: Some(kind),
            description,
        });
        tokio::time::sleep(hold).await;
        heal(cluster, damage);
        events.push(FaultEvent {
            at: recorder.now(),
            kind: None,
            description: "heal".to_owned(),
        });
        tokio::time::sleep(quiet).await;
    }
    events
}

/// The ids in a seeded random order.
fn shuffled(ids: &[u64], rng: &mut SeededRng) -> Vec<u64> {
    let mut ids = ids.to_vec();
    for index in (1..ids.len()).rev() {
        ids.swap(index, rng.index(index + 1));
    }
    ids
}

async fn inject(
    cluster: &mut Cluster,
    kind: FaultKind,
    rng: &mut SeededRng,
    damage: &mut Damage,
) -> String {
    let ids = shuffled(&cluster.ids(), rng);
    // Drawn even when unused, so the schedule does not depend on the cluster's answers.
    let fallback = ids[0];
    let leader = match kind {
        FaultKind::IsolateLeader
        | FaultKind::PartitionLeader
        | FaultKind::LeaderOutboundCut
        | FaultKind::KillLeader
        | FaultKind::PauseMember => cluster.current_leader().await.unwrap_or(fallback),
        _ => fallback,
    };
    let network = cluster.network();
    match kind {
        FaultKind::PartitionHalves => {
            let minority = ids[..ids.len() / 2].to_vec();
            let majority = ids[ids.len() / 2..].to_vec();
            network.partition(&[minority.clone(), majority.clone()]);
            format!("partition {minority:?} | {majority:?}")
        }
        FaultKind::IsolateLeader => {
            network.isolate(leader);
            format!("isolate leader {leader} from members and clients")
        }
        FaultKind::PartitionLeader => {
            let others: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
            network.partition(&[vec![leader], others.clone()]);
            format!("partition leader {leader} | {others:?} (clients reach both sides)")
        }
        FaultKind::LeaderOutboundCut => {
            for other in ids.iter().filter(|id| **id != leader) {
                network.cut(Node::Member(leader), Node::Member(*other));
            }
            format!("cut leader {leader}'s messages to the others (it still hears them)")
        }
        FaultKind::KillLeader => {
            cluster.member(leader).kill9();
            damage.killed.push(leader);
            format!("kill -9 leader {leader}")
        }
        FaultKind::PauseMember => {
            let target = if rng.chance(0.5) { leader } else { fallback };
            cluster.member(target).pause();
            damage.paused.push(target);
            let role = if target == leader { "leader" } else { "member" };
            format!("pause {role} {target}")
        }
        FaultKind::RestartAll => {
            for id in &ids {
                cluster.member(*id).kill9();
            }
            damage.killed.extend(&ids);
            "kill -9 every member".to_owned()
        }
        FaultKind::Bridge => {
            let bridge = ids[0];
            let rest = &ids[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            let mut left_side = vec![bridge];
            left_side.extend(left);
            let mut right_side = vec![bridge];
            right_side.extend(right);
            network.partition(&[left_side, right_side]);
            format!("bridge: {left:?} | {right:?}, only {bridge} reaches both")
        }
        FaultKind::SlowLinks => {
            let quality = LinkQuality {
                delay: rng.between(Duration::from_millis(10), Duration::from_millis(60)),
                jitter: Duration::from_millis(30),
                loss: 0.05,
            };
            network.degrade_all(quality);
            format!(
                "slow links: {:?} delay, {:?} jitter, 5% lost segments",
                quality.delay, quality.jitter
            )
        }
    }
}

fn heal(cluster: &mut Cluster, damage: Damage) {
    cluster.network().heal();
    for id in damage.paused {
        cluster.member(id).resume();
    }
    for id in damage.killed {
        cluster.member(id).start();
    }
}

/// One run of the register workload under a fault schedule, and its checks.
#[derive(Clone, Debug)]
pub struct FaultRun {
    pub members: u64,
    pub seed: u64,
    pub duration: Duration,
    pub schedule: Schedule,
    /// Workload clients; each starts at another member and fails over to the rest.
    pub clients: usize,
    pub keys: usize,
}

/// What a `FaultRun` did and found.
pub struct RunReport {
    pub seed: u64,
    pub tally: Tally,
    pub faults: Vec<FaultEvent>,
    pub history: History,
    pub verdict: Verdict,
    /// Nodes in the converged tree.
    pub nodes: usize,
}

impl RunReport {
    /// How many faults were injected (heals not counted).
    pub fn fault_count(&self) -> usize {
        self.faults
            .iter()
            .filter(|event| event.kind.is_some())
            .count()
    }

    /// How many faults of each kind were injected, in `FaultKind::ALL` order.
    pub fn faults_by_kind(&self) -> Vec<(FaultKind, usize)> {
        FaultKind::ALL
            .iter()
            .map(|kind| {
                let count = self
                    .faults
                    .iter()
                    .filter(|event| event.kind == Some(*kind))
                    .count();
                (*kind, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// Ephemeral registers the workload created (acknowledged) and then saw or ended: how much
    /// of the history exercised sessions.
    pub fn ephemeral_creates(&self) -> usize {
        self.history
            .operations()
            .iter()
            .filter(|recorded| is_ephemeral_register(&recorded.key))
            .filter(|recorded| {
                recorded.outcome == Outcome::Ok(Response::CompareAndSet { succeeded: true })
            })
            .count()
    }

    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} operations ({} ok, {} failed, {} unknown), {} acknowledged creates, \
             {} ephemeral registers created, {} faults {:?}, {} nodes converged; {}",
            self.seed,
            self.tally.operations(),
            self.tally.ok,
            self.tally.failed,
            self.tally.unknown,
            self.tally.created.len(),
            self.ephemeral_creates(),
            self.fault_count(),
            self.faults_by_kind(),
            self.nodes,
            if self.verdict.is_linearizable() {
                "linearizable"
            } else {
                "NOT linearizable"
            }
        )
    }

    /// Panics, with the seed, the faults and the operations around the violation, unless the
    /// history was found linearizable.
    pub fn assert_linearizable(&self) {
        if self.verdict.is_linearizable() {
            return;
        }
        let faults: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
        panic!(
            "{}\nreplay with COORD_FAULT_SEED={}\nfaults:\n{}\n{}",
            self.summary(),
            self.seed,
            faults.join("\n"),
            self.verdict.explain(&self.history)
        );
    }
}

/// Whether `key` is a client's ephemeral register (`{prefix}/e{client}`).
fn is_ephemeral_register(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with('e'))
}

/// The seed from `COORD_FAULT_SEED`, or a fresh one; printed either way so a run can be
/// replayed.
pub fn seed_from_env() -> u64 {
    let seed = match std::env::var("COORD_FAULT_SEED") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COORD_FAULT_SEED={text:?} is not a number")),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64 % 1_000_000_000),
    };
    eprintln!("fault seed {seed} (replay with COORD_FAULT_SEED={seed})");
    seed
}

impl FaultRun {
    pub fn new(schedule: Schedule, seed: u64, duration: Duration) -> FaultRun {
        FaultRun {
            members: 3,
            seed,
            duration,
            schedule,
            clients: 6,
            keys: 4,
        }
    }

    /// Starts a cluster behind proxies, runs the workload under the schedule, heals, and
    /// checks convergence and acknowledged creates (panicking with the seed if either fails).
    /// Returns the report with the linearizability verdict for the caller to assert.
    pub async fn run(&self) -> RunReport {
        let mut cluster = Cluster::start_behind_proxies(self.members, &[], self.seed);
        let ids = cluster.ids();
        cluster.wait_for_leader(&ids, Duration::from_secs(30)).await;
        let recorder = HistoryRecorder::new();
        let mut options = WorkloadOptions::balanced(&cluster.endpoints(), self.clients, self.seed);
        options.keys = self.keys;
        let setup = cluster.client().await;
        let workload = RegisterWorkload::start(&setup, &options, &recorder)
            .await
            .unwrap_or_else(|error| {
                panic!("seed {}: the workload could not start: {error}", self.seed)
            });
        let faults = unleash(
            &mut cluster,
            &self.schedule,
            self.seed,
            self.duration,
            &recorder,
        )
        .await;
        let tally = workload.stop().await;

        // Everything is healed: a leader must emerge, and the members must agree.
        let leader = cluster.wait_for_leader(&ids, Duration::from_secs(60)).await;
        let digest = cluster
            .converged_digest(&ids, Duration::from_secs(60))
            .await;
        let lost: Vec<&String> = tally
            .created
            .iter()
            .filter(|path| {
                !digest
                    .iter()
                    .any(|line| line.starts_with(&format!("{path} ")))
            })
            .collect();
        assert!(
            lost.is_empty(),
            "seed {}: acknowledged creates lost after healing: {lost:?}",
            self.seed
        );

        // A final linearizable read of every key pins the state every write led to.
        let reader = cluster.direct_client_of(leader).await;
        for key in options.all_keys() {
            let handle = recorder.invoke(ClientId(u32::MAX - 1), key.clone(), Operation::Read);
            let value = match reader.get_with(&key, Consistency::Linearizable).await {
                Ok(node) => Value::present(String::from_utf8_lossy(&node.data).into_owned()),
                // An ephemeral register is absent once its session closed.
                Err(Error::NoNode { .. }) => Value::absent(),
                Err(error) => panic!("seed {}: final read of {key}: {error}", self.seed),
            };
            recorder.complete(handle, Outcome::Ok(Response::Read(value)));
        }
        let history = recorder.snapshot();
        let verdict = linearizability::check(&history);
        let report = RunReport {
            seed: self.seed,
            tally,
            faults,
            history,
            verdict,
            nodes: digest.len(),
        };
        eprintln!("{}", report.summary());
        report
    }
}
