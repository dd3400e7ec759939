//! A rolling restart (SIGTERM, restart, wait until ready, next member) of all three members
//! under load: writers, watchers spread over the members, a lock holder, an elected leader and
//! a `coordctl lock -- CMD` loop.
//! Asserted: no acknowledged write is lost, no watch misses or repeats an event, neither holder
//! loses its lock or leadership (the same token throughout, still valid at the end), every
//! member exits within its shutdown bound, and every client operation ends within its deadline.
//! Printed: the longest write gap of each restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_client::{
    Client, ClientOptions, CreateOptions, Election, Error, HeldNode, Mutex, WatchOptions,
};
use coord_tests::{Cluster, ToolProcess};

const WRITERS: usize = 4;
const WATCHERS: usize = 20;
/// The harness runs members with a 500 ms election timeout, so 2.5 s is the shortest TTL the
/// servers grant (5 × the election timeout): the holders use exactly that.
const SESSION_TTL: Duration = Duration::from_millis(2_500);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const READY_WAIT: Duration = Duration::from_secs(30);

/// A client over every member, starting at member `first` (so load spreads over members).
async fn client_from(cluster: &Cluster, first: usize) -> Client {
    let mut endpoints = cluster.endpoints();
    let count = endpoints.len();
    endpoints.rotate_left(first % count);
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: REQUEST_TIMEOUT,
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
    };
    Client::connect_with(endpoints, options)
        .await
        .expect("the cluster answers")
}

/// Creates `/rr/w{writer}-{n}` until stopped; returns the acknowledged paths. Every operation
/// must end within its deadline; a retryable failure is retried with the same path.
fn writer(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
    last_ack_ms: Arc<AtomicU64>,
    started: Instant,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut index = 0;
        let options = CreateOptions::default();
        while !stop.load(Ordering::Relaxed) {
            let path = format!("/rr/w{writer}-{index:06}");
            let create = client.create(&path, "x", &options);
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(2), create)
                .await
                .unwrap_or_else(|_| panic!("create {path} did not end within its deadline"));
            match outcome {
                Ok(_) | Err(Error::NodeExists { .. }) => {
                    acknowledged.push(path);
                    index += 1;
                    last_ack_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(error) if error.is_retryable() || error.is_outcome_unknown() => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("create {path}: {error}"),
            }
        }
        acknowledged
    })
}

/// Watches `/rr` recursively from `start_revision` until stopped; returns the created paths
/// in order, after checking that revisions never go back and no change comes twice.
fn watcher(
    client: Client,
    start_revision: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let options = WatchOptions {
            path: "/rr".into(),
            recursive: true,
            start_revision,
            ..WatchOptions::default()
        };
        let mut watch = client.watch(options).await.expect("the watch starts");
        let mut created = Vec::new();
        let mut last_revision = 0;
        // One write can change several nodes (a child and its parent's child list) at one
        // revision; the same change twice is a repeat.
        let mut seen_at_last = BTreeSet::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
            match next {
                Ok(Some(Ok(event))) => {
                    assert!(
                        event.revision >= last_revision,
                        "revision {} after {last_revision}",
                        event.revision
                    );
                    if event.revision > last_revision {
                        seen_at_last.clear();
                    }
                    let change = (event.path.clone(), format!("{:?}", event.kind));
                    assert!(
                        seen_at_last.insert(change),
                        "{:?} {} delivered twice at revision {}",
                        event.kind,
                        event.path,
                        event.revision
                    );
                    last_revision = event.revision;
                    if matches!(event.kind, coord_client::EventKind::Created) {
                        created.push(event.path);
                    }
                }
                Ok(Some(Err(error))) => panic!("the watch failed: {error}"),
                Ok(None) => panic!("the watch ended"),
                Err(_) if stop.load(Ordering::Relaxed) => return created,
                Err(_) => {}
            }
        }
    })
}

/// Holds `lock` and `election` (each on its own session) for the whole run; fails if either
/// is lost, suspended past its TTL, or changes token.
async fn holders(cluster: &Cluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    let client = client_from(cluster, 1).await;
    tokio::spawn(async move {
        let lock_session = client.open_session(SESSION_TTL).await.expect("a session");
        let guard = Mutex::new(&client, &lock_session, "/rr-locks/one")
            .acquire()
            .await
            .expect("the lock");
        let leader_session = client.open_session(SESSION_TTL).await.expect("a session");
        let leadership = Election::new(&client, &leader_session, "/rr-elections/one")
            .campaign("worker")
            .await
            .expect("leadership");
        let tokens = (guard.token(), leadership.token());
        while !stop.load(Ordering::Relaxed) {
            assert!(
                guard.lost_reason().is_none(),
                "the lock was lost: {:?}",
                guard.lost_reason()
            );
            assert!(
                leadership.lost_reason().is_none(),
                "leadership was lost: {:?}",
                leadership.lost_reason()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lock_check = client
            .check_fence(guard.path(), guard.token())
            .await
            .expect("the fence check answers");
        assert!(lock_check.current, "the lock's token is no longer valid");
        let leader_check = client
            .check_fence(leadership.path(), leadership.token())
            .await
            .expect("the fence check answers");
        assert!(
            leader_check.current,
            "the leadership token is no longer valid"
        );
        assert_eq!(tokens, (guard.token(), leadership.token()));
        tokens
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_loses_nothing_and_no_holder() {
    let shutdown_flag = format!("{}s", SHUTDOWN_TIMEOUT.as_secs());
    let mut cluster = Cluster::start(3, &["--shutdown-timeout", shutdown_flag.as_str()]);
    cluster.wait_for_leader(&[1, 2, 3], READY_WAIT).await;
    let setup = client_from(&cluster, 0).await;
    setup
        .create("/rr", "", &CreateOptions::default())
        .await
        .expect("/rr");
    let start_revision = setup.header().await.expect("a header").revision + 1;

    let stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for index in 0..WATCHERS {
        let client = client_from(&cluster, index).await;
        watchers.push(watcher(client, start_revision, stop.clone()));
    }
    let holders = holders(&cluster, stop.clone()).await;
    let started = Instant::now();
    let last_ack_ms = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for index in 0..WRITERS {
        let client = client_from(&cluster, index).await;
        writers.push(writer(
            client,
            index,
            stop.clone(),
            last_ack_ms.clone(),
            started,
        ));
    }
    let locker = coordctl_lock_loop(cluster.endpoints(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    for id in cluster.ids() {
        let gap = restart_one(&mut cluster, id, &last_ack_ms, started).await;
        eprintln!("rolling restart: member {id}: longest write gap {gap:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = BTreeSet::new();
    for task in writers {
        acknowledged.extend(task.await.expect("the writer does not panic"));
    }
    let tokens = holders
        .await
        .expect("no holder lost its lock or leadership");
    let (ran, unavailable) = locker.await.expect("no coordctl lock run lost its lock");
    eprintln!("coordctl lock -- CMD: {ran} runs held and released, {unavailable} unavailable");
    assert!(ran > 0, "no coordctl lock run completed");
    eprintln!(
        "holders kept tokens {tokens:?}; {} writes",
        acknowledged.len()
    );
    let listed: BTreeSet<String> = setup
        .children("/rr")
        .await
        .expect("the listing")
        .into_iter()
        .map(|name| format!("/rr/{name}"))
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for (index, task) in watchers.into_iter().enumerate() {
        let seen = task.await.expect("the watcher does not panic");
        let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            seen.len(),
            seen_set.len(),
            "watcher {index} saw a create twice"
        );
        let missed: Vec<&String> = acknowledged.difference(&seen_set).collect();
        assert!(missed.is_empty(), "watcher {index} missed {missed:?}");
    }
}

/// SIGTERM member `id`, check it exits within the shutdown bound, restart it and wait until it
/// serves again; returns the longest time without an acknowledged write meanwhile.
async fn restart_one(
    cluster: &mut Cluster,
    id: u64,
    last_ack_ms: &AtomicU64,
    started: Instant,
) -> Duration {
    let mut longest = Duration::ZERO;
    let signalled = Instant::now();
    let member = cluster.member(id);
    let exit = tokio::task::block_in_place(|| member.terminate(SHUTDOWN_TIMEOUT * 2));
    let took = signalled.elapsed();
    assert!(
        took <= SHUTDOWN_TIMEOUT + Duration::from_secs(1),
        "member {id} took {took:?} to exit ({exit:?})"
    );
    cluster.member(id).start();
    let ready_by = Instant::now() + READY_WAIT;
    loop {
        let since_ack =
            started.elapsed() - Duration::from_millis(last_ack_ms.load(Ordering::Relaxed));
        longest = longest.max(since_ack);
        let client = cluster.direct_client_of(id).await;
        if let Ok(status) = client.cluster_status().await {
            if status.leader_id != 0 && status.applied_index + 50 >= status.committed_index {
                break;
            }
        }
        assert!(Instant::now() < ready_by, "member {id} did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the cluster settle with the member back before the next one goes.
    let settle_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle_until {
        let since_ack =
            started.elapsed() - Duration::from_millis(last_ack_ms.load(Ordering::Relaxed));
        longest = longest.max(since_ack);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    longest
}

/// Runs `coordctl lock /rr-cli-lock -- sh -c 'sleep 0.2'` again and again until stopped. Each
/// run must end within its bound, and none may lose its lock (exit 1); one that could not
/// reach the cluster in its command timeout (exit 3) is counted, not failed. Returns the runs
/// that held and released the lock, and the unavailable ones.
fn coordctl_lock_loop(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut ran, mut unavailable) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let args = ["lock", "/rr-cli-lock", "--", "sh", "-c", "sleep 0.2"];
            let mut run = ToolProcess::coordctl(&endpoints, &args, dir.path());
            match run.wait_exit(Duration::from_secs(30)) {
                Some(0) => ran += 1,
                Some(3) => unavailable += 1,
                other => panic!(
                    "coordctl lock ended with {other:?}: {}{}",
                    run.stdout(),
                    run.stderr()
                ),
            }
        }
        (ran, unavailable)
    })
}
