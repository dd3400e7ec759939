//! Fault tests: the register workload against three real members behind fault-injecting proxies,
//! under each kind of fault and under a mixed schedule, checked for linearizability, convergence
//! and lost acknowledged writes; and a demonstration that the checker catches the stale reads
//! serializable reads give during a partition.
//!
//! Every run prints its seed; `COORD_FAULT_SEED=N` replays it. The mixed run lasts
//! `COORD_SOAK_SECONDS` (default 30) with `COORD_FAULT_MEMBERS` members (default 3):
//! `./dev soak SECONDS [SEED]` is the long soak.
//! Tests in this file run one at a time (`SERIAL`): two clusters on two cores would mostly
//! measure the scheduler.

use std::time::Duration;

use coord_client::Consistency;
use coord_tests::history::HistoryRecorder;
use coord_tests::linearizability;
use coord_tests::nemesis::{seed_from_env, FaultKind, FaultRun, Schedule};
use coord_tests::proxy::Node;
use coord_tests::workload::{ClientPlan, Mix, RegisterWorkload, WorkloadOptions};
use coord_tests::Cluster;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each single-kind run injects faults.
const KIND_RUN: Duration = Duration::from_secs(10);

async fn run_kind(kind: FaultKind) {
    let _serial = SERIAL.lock().await;
    let run = FaultRun::new(Schedule::of(&[kind]), seed_from_env(), KIND_RUN);
    let report = run.run().await;
    report.assert_linearizable();
    assert!(report.fault_count() >= 2, "{}", report.summary());
    assert!(
        report.tally.ok > 0,
        "nothing succeeded: {}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_halves() {
    run_kind(FaultKind::PartitionHalves).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader() {
    run_kind(FaultKind::IsolateLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_in_a_minority_partition() {
    run_kind(FaultKind::PartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_that_cannot_be_heard() {
    run_kind(FaultKind::LeaderOutboundCut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leader() {
    run_kind(FaultKind::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_member() {
    run_kind(FaultKind::PauseMember).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_members_restarted() {
    run_kind(FaultKind::RestartAll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_partition() {
    run_kind(FaultKind::Bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_links() {
    run_kind(FaultKind::SlowLinks).await;
}

/// Every kind of fault, drawn at random; `COORD_SOAK_SECONDS` sets how long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_faults() {
    let _serial = SERIAL.lock().await;
    let seconds = match std::env::var("COORD_SOAK_SECONDS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COORD_SOAK_SECONDS={text:?} is not a number")),
        Err(_) => 30,
    };
    let mut run = FaultRun::new(
        Schedule::of(&FaultKind::ALL),
        seed_from_env(),
        Duration::from_secs(seconds),
    );
    if let Ok(text) = std::env::var("COORD_FAULT_MEMBERS") {
        run.members = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COORD_FAULT_MEMBERS={text:?} is not a number"));
    }
    let report = run.run().await;
    report.assert_linearizable();
    assert!(
        report.tally.ok > 0,
        "nothing succeeded: {}",
        report.summary()
    );
    // Sessions and ephemeral nodes were part of the checked history, not just present.
    assert!(
        report.ephemeral_creates() > 0,
        "no ephemeral register was created: {}",
        report.summary()
    );
}

/// The harness can catch a bug: serializable reads at a member cut off from the others return
/// values the majority has already overwritten, and the checker says so. The same workload
/// with linearizable reads passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checker_catches_stale_serializable_reads_in_a_partition() {
    let _serial = SERIAL.lock().await;
    let seed = seed_from_env();
    for reads in [Consistency::Serializable, Consistency::Linearizable] {
        let cluster = Cluster::start_behind_proxies(3, &[], seed);
        let leader = cluster
            .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
            .await;
        let cut_off = if leader == 3 { 2 } else { 3 };
        let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != cut_off).collect();
        let endpoint = |id: u64| {
            cluster
                .members
                .iter()
                .find(|member| member.id == id)
                .map(|member| member.client_address())
                .expect("member exists")
        };
        let writer = ClientPlan {
            endpoints: majority.iter().map(|id| endpoint(*id)).collect(),
            mix: Mix::WRITES_ONLY,
            reads,
        };
        let reader = ClientPlan {
            endpoints: vec![endpoint(cut_off)],
            mix: Mix::READS_ONLY,
            reads,
        };
        let options = WorkloadOptions {
            clients: vec![writer.clone(), writer, reader.clone(), reader],
            keys: 2,
            prefix: "/registers".to_owned(),
            request_timeout: Duration::from_secs(1),
            think_time: Duration::from_millis(20),
            session_ttl: Duration::from_secs(10),
            seed,
        };
        let recorder = HistoryRecorder::new();
        let setup = cluster.client().await;
        let workload = RegisterWorkload::start(&setup, &options, &recorder)
            .await
            .expect("the workload starts on a healthy cluster");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Only member-to-member links are cut: the readers still reach the cut-off member.
        cluster
            .network()
            .partition(&[vec![cut_off], majority.clone()]);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.network().heal();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tally = workload.stop().await;
        let history = recorder.snapshot();
        let verdict = linearizability::check(&history);
        eprintln!(
            "{reads:?} reads: {} operations ({} ok): {}",
            tally.operations(),
            tally.ok,
            verdict.explain(&history)
        );
        match reads {
            Consistency::Serializable => assert!(
                matches!(verdict, linearizability::Verdict::Violation { .. }),
                "seed {seed}: stale reads from the cut-off member went unnoticed"
            ),
            _ => assert!(
                verdict.is_linearizable(),
                "seed {seed}: {}",
                verdict.explain(&history)
            ),
        }
        // No node of the cluster was harmed: it still converges.
        cluster
            .converged_digest(&[1, 2, 3], Duration::from_secs(60))
            .await;
        assert!(!cluster
            .network()
            .cuts()
            .contains(&(Node::Member(1), Node::Member(2))));
    }
}

/// A member whose disk is wiped rejoins as a new learner, catches up, is promoted, and the
/// cluster converges with nothing acknowledged lost, while the workload runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_member_rejoins() {
    let _serial = SERIAL.lock().await;
    let seed = seed_from_env();
    let mut cluster = Cluster::start_behind_proxies(3, &["--snapshot-entries", "200"], seed);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    let recorder = HistoryRecorder::new();
    let options = WorkloadOptions::balanced(&cluster.endpoints(), 4, seed);
    let setup = cluster.client().await;
    let workload = RegisterWorkload::start(&setup, &options, &recorder)
        .await
        .expect("the workload starts on a healthy cluster");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = if leader == 1 { 2 } else { 1 };
    cluster
        .wipe_and_rejoin(victim, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = workload.stop().await;
    let digest = cluster
        .converged_digest(&[1, 2, 3], Duration::from_secs(60))
        .await;
    for path in &tally.created {
        assert!(
            digest
                .iter()
                .any(|line| line.starts_with(&format!("{path} "))),
            "seed {seed}: acknowledged create {path} lost"
        );
    }
    let history = recorder.snapshot();
    let verdict = linearizability::check(&history);
    assert!(
        verdict.is_linearizable(),
        "seed {seed}: {}",
        verdict.explain(&history)
    );
}

/// Exactly-once: a write applied by the cluster whose reply the network lost is retried by the
/// client with the same write id, and the cluster answers with the first outcome instead of
/// applying it again (a sequential create would otherwise make a second node).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_write_whose_reply_was_lost_is_applied_once() {
    let _serial = SERIAL.lock().await;
    let seed = seed_from_env();
    let cluster = Cluster::start_behind_proxies(3, &[], seed);
    let leader = cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    let admin = cluster.direct_client_of(leader).await;
    admin
        .create("/queue", "", &coord_client::CreateOptions::default())
        .await
        .unwrap();
    // The client starts with member 1, whose replies to clients are then lost.
    let options = coord_client::ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(12),
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
    };
    let client = coord_client::Client::connect_with(cluster.endpoints(), options)
        .await
        .unwrap();
    cluster.network().cut(Node::Member(1), Node::Clients);
    let write = tokio::spawn(async move {
        let sequential = coord_client::CreateOptions {
            sequential: true,
            ..coord_client::CreateOptions::default()
        };
        client.create("/queue/job-", "payload", &sequential).await
    });
    // The first attempt is applied although its reply never arrives.
    let first = coord_tests::eventually(
        "the first attempt to be applied",
        Duration::from_secs(10),
        || async {
            let children = admin.children("/queue").await.ok()?;
            (!children.is_empty()).then_some(children)
        },
    )
    .await;
    let created = write
        .await
        .expect("the writer does not panic")
        .expect("the retry, sent to another member, succeeds");
    cluster.network().heal();
    let children = admin.children("/queue").await.unwrap();
    assert_eq!(children, first, "the retry must not apply the write again");
    assert_eq!(children.len(), 1);
    assert_eq!(created.path, format!("/queue/{}", children[0]));
}
