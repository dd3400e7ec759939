//! Locks, elections and barriers between real client processes on three real members:
//! mutual exclusion over a shared file (also while the leader dies and a member pauses), no
//! herd on release (each release wakes one waiting `AwaitTurn` on the members), split brain
//! prevented by fencing after a holder is paused past its TTL, leader election with failover
//! and an observer, single and double barriers with a crashing participant, `coordctl lock`
//! end to end, when a grant time is stamped, and a mutex through a member that predates
//! `AwaitTurn`.
//!
//! Tests in this file run one at a time (`SERIAL`).

use std::path::Path;
use std::time::{Duration, Instant};

use coord_client::recipes::{list_elections, list_locks};
use coord_client::{Client, Election, Error, HeldNode, Mutex, Op, Session, Txn};
use coord_tests::metrics::scrape;
use coord_tests::older_member::OlderMember;
use coord_tests::{eventually, free_port, Cluster, ToolProcess};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Members' election timeout is at most 1 s (`ServerProcess`); checkpoints every second.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(1);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Scheduling slack on a loaded 2-core machine, on top of the promised bound.
const SLACK: Duration = Duration::from_millis(1500);

async fn started_cluster() -> Cluster {
    let cluster = Cluster::start(3, &["--session-checkpoint-interval", "1s"]);
    cluster.wait_for_leader(&cluster.ids(), LEADER_WAIT).await;
    cluster
}

/// `count` clients of `cluster`, each with a session of its own (30 s TTL), like separate
/// processes.
async fn participants(cluster: &Cluster, count: usize) -> Vec<(Client, Session)> {
    let mut participants = Vec::new();
    for _ in 0..count {
        let client = cluster.client().await;
        let session = client
            .open_session(Duration::from_secs(30))
            .await
            .expect("a session");
        participants.push((client, session));
    }
    participants
}

fn lockers(cluster: &Cluster, count: usize, iterations: u64, dir: &Path) -> Vec<ToolProcess> {
    (0..count)
        .map(|_| {
            let args: Vec<String> = [
                "--endpoints",
                &cluster.endpoints().join(","),
                "--name",
                "/locks/counter",
                "--dir",
                &dir.display().to_string(),
                "--iterations",
                &iterations.to_string(),
                "--ttl",
                "10s",
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect();
            ToolProcess::start("coord-locker", &args, dir)
        })
        .collect()
}

/// Checks the shared file after every locker finished: the counter equals every increment,
/// and the log shows counts 1, 2, 3, ... with strictly increasing tokens.
fn check_no_lost_update(dir: &Path, expected: u64) {
    let counter = std::fs::read_to_string(dir.join("counter")).expect("the counter exists");
    assert_eq!(counter.trim(), expected.to_string(), "lost updates");
    let log = std::fs::read_to_string(dir.join("log")).expect("the log exists");
    let mut last_token = 0;
    for (index, line) in log.lines().enumerate() {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|field| field.parse().expect("numbers"))
            .collect();
        let (token, count) = (fields[0], fields[1]);
        assert_eq!(count, index as u64 + 1, "log line {index}: {line}");
        assert!(
            token > last_token,
            "log line {index}: token {token} after {last_token}: two holders at once"
        );
        last_token = token;
    }
    assert_eq!(log.lines().count() as u64, expected);
}

async fn wait_for_lockers(mut lockers: Vec<ToolProcess>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for locker in &mut lockers {
        let left = deadline.saturating_duration_since(Instant::now());
        let code = tokio::task::block_in_place(|| locker.wait_exit(left));
        assert_eq!(code, Some(0), "a locker failed: {}", locker.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_increment_a_shared_file_under_the_lock_without_a_lost_update() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    let processes = lockers(&cluster, 8, 200, dir.path());
    wait_for_lockers(processes, Duration::from_secs(600)).await;
    eprintln!(
        "1600 locked increments by 8 processes in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    check_no_lost_update(dir.path(), 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_holds_while_the_leader_is_killed_and_a_member_paused() {
    let _serial = SERIAL.lock().await;
    let mut cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let processes = lockers(&cluster, 8, 200, dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = cluster.wait_for_leader(&cluster.ids(), LEADER_WAIT).await;
    cluster.member(leader).kill9();
    eprintln!("killed leader {leader}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.member(leader).restart();
    let survivors: Vec<u64> = cluster.ids();
    let new_leader = cluster.wait_for_leader(&survivors, LEADER_WAIT).await;
    let follower = survivors
        .into_iter()
        .find(|id| *id != new_leader)
        .expect("three members");
    cluster.member(follower).pause();
    eprintln!("paused member {follower}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.member(follower).resume();
    wait_for_lockers(processes, Duration::from_secs(600)).await;
    check_no_lost_update(dir.path(), 1600);
}

/// 50 waiters queue behind a holder; each release wakes exactly one of them, in arrival order.
/// The `AwaitTurn` wake-ups the members whose metrics listen on `ports` counted, summed.
fn turn_wakeups(ports: &[u16]) -> u64 {
    ports
        .iter()
        .map(|port| scrape(*port, "coord_await_turn_wakeups_total") as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_release_wakes_exactly_one_of_fifty_waiters() {
    let _serial = SERIAL.lock().await;
    let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster = Cluster::start_each(3, |id| {
        let port = metrics_ports[usize::try_from(id - 1).expect("small ids")];
        ["--session-checkpoint-interval", "1s", "--listen-metrics"]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("127.0.0.1:{port}")])
            .collect()
    });
    cluster.wait_for_leader(&cluster.ids(), LEADER_WAIT).await;
    let holder_client = cluster.client().await;
    let holder_session = holder_client
        .open_session(Duration::from_secs(30))
        .await
        .expect("a session");
    let first = Mutex::new(&holder_client, &holder_session, "/locks/herd")
        .acquire()
        .await
        .expect("the free lock is acquired");
    let (granted, mut grants) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for index in 0..50 {
        // Each waiter has its own connection and session, like a separate process, and waits
        // on the member its client reads from (they are spread over the three).
        let client = cluster.client().await;
        let session = client
            .open_session(Duration::from_secs(30))
            .await
            .expect("a session");
        let granted = granted.clone();
        let task_client = client.clone();
        let task = tokio::spawn(async move {
            let mutex = Mutex::new(&task_client, &session, "/locks/herd");
            let guard = mutex.acquire().await.expect("a waiter gets its turn");
            granted.send((index, guard)).expect("the test listens");
            // Keep the session alive until the test is done with the guard.
            std::future::pending::<()>().await;
        });
        waiters.push((client, task));
        // Queue the waiters one at a time, so their order is known.
        eventually("the waiter to queue", Duration::from_secs(10), || async {
            let locks = list_locks(&holder_client, "/locks/herd").await.ok()?;
            (locks.first()?.waiters.len() == index + 1).then_some(())
        })
        .await;
    }
    // Queueing fifty creates in the directory woke nobody: each waiter is filed under its
    // predecessor, not the directory.
    assert_eq!(turn_wakeups(&metrics_ports), 0, "nothing was released yet");
    first.release().await.expect("release");
    for release in 1..=50u64 {
        let (index, guard) = tokio::time::timeout(Duration::from_secs(20), grants.recv())
            .await
            .expect("the next waiter is granted in time")
            .expect("waiters run");
        assert_eq!(index, release as usize - 1, "FIFO order");
        // Give a stray wake-up time to happen before counting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            turn_wakeups(&metrics_ports),
            release,
            "after {release} releases, waiters woken on the members"
        );
        guard.release().await.expect("release");
    }
    for (_, task) in waiters {
        task.abort();
    }
}

/// Reads the first line a process printed, waiting for it.
async fn first_line(process: &ToolProcess, what: &str) -> String {
    eventually(what, Duration::from_secs(30), || async {
        process.stdout().lines().next().map(str::to_owned)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_ttl_is_told_it_lost_and_its_fenced_write_is_rejected() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child_pid = dir.path().join("child-pid");
    let child_token = dir.path().join("child-token");
    let script = format!(
        "echo $$ > {}; echo \"$COORD_LOCK_NAME $COORD_LOCK_TOKEN\" > {}; exec sleep 600",
        child_pid.display(),
        child_token.display()
    );
    let mut old = ToolProcess::coordctl(
        &cluster.endpoints(),
        &[
            "lock",
            "/locks/fenced",
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        dir.path(),
    );
    let old_token: u64 = first_line(&old, "the first holder's token")
        .await
        .parse()
        .expect("a token");
    let child_saw = eventually("the command to start", Duration::from_secs(10), || async {
        std::fs::read_to_string(&child_token).ok()
    })
    .await;
    assert_eq!(child_saw.trim(), format!("/locks/fenced {old_token}"));
    let client = cluster.client().await;
    let locks = list_locks(&client, "/locks").await.expect("a listing");
    let old_path = locks[0].holder().expect("a holder").path.clone();
    assert_eq!(locks[0].holder().expect("a holder").token, old_token);

    old.signal(libc::SIGSTOP);
    let paused_at = Instant::now();
    let new = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["lock", "/locks/fenced", "--ttl", "10s"],
        dir.path(),
    );
    let new_token: u64 = first_line(&new, "the second holder's token")
        .await
        .parse()
        .expect("a token");
    assert!(new_token > old_token);
    eprintln!("new holder after {:.1}s", paused_at.elapsed().as_secs_f64());

    // Resumed, the old holder learns at once that it can no longer rely on the lock: its
    // command is terminated and it exits 1.
    old.signal(libc::SIGCONT);
    let code = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(15)));
    assert_eq!(code, Some(1), "stderr: {}", old.stderr());
    assert!(old.stderr().contains("lost"), "stderr: {}", old.stderr());
    let pid = std::fs::read_to_string(&child_pid).expect("the child wrote its pid");
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the command was not terminated"
    );

    // Whatever the old holder still tries is refused by the fence; the new holder's is accepted.
    let stale = Txn::new().fence(&old_path, old_token).then(Op::set(
        "/locks",
        "written by the old holder",
        None,
    ));
    assert!(matches!(
        client.txn(stale).await,
        Err(Error::FenceRejected { .. })
    ));
    let locks = list_locks(&client, "/locks").await.expect("a listing");
    let new_path = locks[0].holder().expect("a holder").path.clone();
    let current = Txn::new().fence(&new_path, new_token).then(Op::set(
        "/locks",
        "written by the new holder",
        None,
    ));
    client
        .txn(current)
        .await
        .expect("the current holder writes");
    assert_eq!(
        client.get("/locks").await.expect("read").data,
        b"written by the new holder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_lock_runs_a_command_times_out_lists_and_releases_on_interrupt() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let seen = dir.path().join("seen");
    let script = format!(
        "echo \"$COORD_LOCK_NAME $COORD_LOCK_TOKEN\" > {}",
        seen.display()
    );
    let mut run = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["lock", "/locks/e2e", "--", "sh", "-c", &script],
        dir.path(),
    );
    assert_eq!(
        tokio::task::block_in_place(|| run.wait_exit(Duration::from_secs(20))),
        Some(0),
        "stderr: {}",
        run.stderr()
    );
    let token = run.stdout().lines().next().expect("a token").to_owned();
    assert_eq!(
        std::fs::read_to_string(&seen)
            .expect("the command ran")
            .trim(),
        format!("/locks/e2e {token}")
    );

    // A command's exit status is coordctl's.
    let mut failing = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["lock", "/locks/e2e", "--", "sh", "-c", "exit 7"],
        dir.path(),
    );
    assert_eq!(
        tokio::task::block_in_place(|| failing.wait_exit(Duration::from_secs(20))),
        Some(7)
    );

    // Held without a command; another coordctl gives up after its timeout.
    let mut holder = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["lock", "/locks/e2e", "--ttl", "30s"],
        dir.path(),
    );
    let held_token = first_line(&holder, "the holder's token").await;
    let mut impatient = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["lock", "/locks/e2e", "--timeout", "500ms", "--", "true"],
        dir.path(),
    );
    assert_eq!(
        tokio::task::block_in_place(|| impatient.wait_exit(Duration::from_secs(20))),
        Some(1)
    );
    assert!(
        impatient.stderr().contains("not within"),
        "{}",
        impatient.stderr()
    );

    let mut list = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["--output", "json", "lock", "--list", "/locks"],
        dir.path(),
    );
    assert_eq!(
        tokio::task::block_in_place(|| list.wait_exit(Duration::from_secs(20))),
        Some(0)
    );
    let listing: serde_json::Value = serde_json::from_str(&list.stdout()).expect("one JSON object");
    let lock = &listing["locks"][0];
    assert_eq!(lock["name"], "/locks/e2e");
    assert_eq!(lock["holders"][0]["token"].to_string(), held_token);
    assert_eq!(lock["waiters"].as_array().map(Vec::len), Some(0));

    // Ctrl-C releases the lock at once, long before the 30 s TTL.
    holder.signal(libc::SIGINT);
    assert_eq!(
        tokio::task::block_in_place(|| holder.wait_exit(Duration::from_secs(10))),
        Some(130)
    );
    let client = cluster.client().await;
    let locks = list_locks(&client, "/locks/e2e").await.expect("a listing");
    assert!(locks.iter().all(|lock| lock.holders.is_empty()));
}

/// Leader values in the order `coordctl elect --observe --output json` printed them, with
/// "no leader" moments left out.
fn observed_leaders(observer: &ToolProcess) -> Vec<String> {
    observer
        .stdout()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|change| change["leader"]["value"].as_str().map(str::to_owned))
        .collect()
}

async fn current_leader(client: &Client) -> Option<String> {
    match coord_client::Election::leader(client, "/elections/e").await {
        Ok(Some(leader)) => Some(String::from_utf8_lossy(&leader.value).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_successor_takes_over_within_its_ttl_and_observers_see_each_change() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = cluster.client().await;
    let observer = ToolProcess::coordctl(
        &cluster.endpoints(),
        &["--output", "json", "elect", "--observe", "/elections/e"],
        dir.path(),
    );
    let ttl = Duration::from_secs(2);
    let mut candidates = Vec::new();
    for index in 0..3 {
        let candidate = ToolProcess::coordctl(
            &cluster.endpoints(),
            &[
                "elect",
                "/elections/e",
                &format!("candidate-{index}"),
                "--ttl",
                "2s",
            ],
            dir.path(),
        );
        if index == 0 {
            first_line(&candidate, "the first candidate to lead").await;
        }
        candidates.push(candidate);
        // Queue them one at a time, so that candidate-1 is next in line.
        eventually(
            "the candidate to queue",
            Duration::from_secs(10),
            || async {
                let elections = coord_client::recipes::list_elections(&client, "/elections")
                    .await
                    .ok()?;
                (elections.first()?.followers.len() == index).then_some(())
            },
        )
        .await;
    }
    let bound = ttl + ELECTION_TIMEOUT_MAX + CHECKPOINT_INTERVAL + SLACK;
    for (killed, successor) in [(0, 1), (1, 2)] {
        assert_eq!(
            current_leader(&client).await.as_deref(),
            Some(format!("candidate-{killed}").as_str())
        );
        candidates[killed].kill9();
        let killed_at = Instant::now();
        let expected = format!("candidate-{successor}");
        eventually("the successor to lead", Duration::from_secs(30), || async {
            (current_leader(&client).await? == expected).then_some(())
        })
        .await;
        let took = killed_at.elapsed();
        eprintln!(
            "candidate-{successor} leads {:.2}s after candidate-{killed} was killed",
            took.as_secs_f64()
        );
        assert!(took <= bound, "took {took:?}, bound {bound:?}");
        assert!(first_line(&candidates[successor], "the successor's token")
            .await
            .parse::<u64>()
            .is_ok());
    }
    eventually(
        "the observer to see every change",
        Duration::from_secs(10),
        || async { (observed_leaders(&observer).len() >= 3).then_some(()) },
    )
    .await;
    let mut leaders = observed_leaders(&observer);
    leaders.dedup();
    assert_eq!(leaders, ["candidate-0", "candidate-1", "candidate-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barriers_hold_ten_participants_and_a_crashed_one_is_counted_out_by_its_ttl() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoints = cluster.endpoints();
    let run = |args: &[&str]| {
        let mut process = ToolProcess::coordctl(&endpoints, args, dir.path());
        tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(20)))
    };

    // A single barrier: ten waiters pass only once it is removed.
    assert_eq!(run(&["barrier", "set", "/barriers/gate"]), Some(0));
    let mut waiters: Vec<ToolProcess> = (0..10)
        .map(|_| {
            ToolProcess::coordctl(
                &endpoints,
                &["barrier", "wait", "/barriers/gate"],
                dir.path(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(waiters.iter().all(|waiter| waiter.stdout().is_empty()));
    assert_eq!(run(&["barrier", "remove", "/barriers/gate"]), Some(0));
    for waiter in &mut waiters {
        let code = tokio::task::block_in_place(|| waiter.wait_exit(Duration::from_secs(20)));
        assert_eq!(code, Some(0), "{}", waiter.stderr());
        assert!(waiter.stdout().contains("passed"));
    }

    // A double barrier for ten: nine wait until the tenth enters; the tenth crashes before
    // leaving, and the nine leave once its session expired.
    let double = |command: &[&str]| {
        let mut args = vec![
            "barrier",
            "double",
            "/barriers/double",
            "--count",
            "10",
            "--ttl",
            "2s",
            "--",
        ];
        args.extend_from_slice(command);
        ToolProcess::coordctl(&endpoints, &args, dir.path())
    };
    let mut participants: Vec<ToolProcess> = (0..9).map(|_| double(&["true"])).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        participants
            .iter()
            .all(|participant| participant.stdout().is_empty()),
        "entered with only nine participants"
    );
    let crasher_pid = dir.path().join("crasher-pid");
    let script = format!("echo $$ > {}; exec sleep 600", crasher_pid.display());
    let mut crasher = double(&["sh", "-c", &script]);
    let pid = eventually(
        "the tenth participant to enter",
        Duration::from_secs(20),
        || async { std::fs::read_to_string(&crasher_pid).ok() },
    )
    .await;
    crasher.kill9();
    kill_by_pid(pid.trim());
    let crashed_at = Instant::now();
    for participant in &mut participants {
        let code = tokio::task::block_in_place(|| participant.wait_exit(Duration::from_secs(30)));
        assert_eq!(code, Some(0), "{}", participant.stderr());
        let output = participant.stdout();
        assert!(
            output.contains("entered") && output.contains("left"),
            "{output}"
        );
    }
    eprintln!(
        "the nine left {:.1}s after the tenth crashed",
        crashed_at.elapsed().as_secs_f64()
    );
}

/// SIGKILL for a process this test started through a shell (the crasher's command).
fn kill_by_pid(pid: &str) {
    if let Ok(pid) = pid.parse::<libc::pid_t>() {
        #[allow(unsafe_code, reason = "libc::kill has no safe wrapper in std")]
        // SAFETY: kill has no memory effects; the pid is our own grandchild, just started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Readers share; a writer waits for the readers ahead of it, and a reader arriving after a
/// waiting writer queues behind it (no writer starvation). A semaphore admits exactly its
/// permits, and a participant asking for another count is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_writers_exclude_and_a_semaphore_admits_its_permits() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let participants = participants(&cluster, 5).await;
    let rwlock = |index: usize| {
        let (client, session) = &participants[index];
        coord_client::RwLock::new(client, session, "/locks/rw")
    };
    let first_reader = rwlock(0).read().await.expect("a free lock is read");
    let second_reader = rwlock(1)
        .try_read()
        .await
        .expect("try_read")
        .expect("readers share");
    assert!(rwlock(2).try_write().await.expect("try_write").is_none());
    let (granted, mut grants) = tokio::sync::mpsc::unbounded_channel();
    let writer_lock = rwlock(2);
    let writer = tokio::spawn(async move {
        let guard = writer_lock.write().await.expect("the writer gets its turn");
        granted.send(guard.token()).expect("the test listens");
        guard
    });
    let lister = cluster.client().await;
    eventually("the writer to queue", Duration::from_secs(10), || async {
        let locks = list_locks(&lister, "/locks/rw").await.ok()?;
        (locks.first()?.waiters.len() == 1).then_some(())
    })
    .await;
    assert!(
        rwlock(3).try_read().await.expect("try_read").is_none(),
        "a reader overtook a waiting writer"
    );
    first_reader.release().await.expect("release");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        grants.try_recv().is_err(),
        "the writer entered beside a reader"
    );
    second_reader.release().await.expect("release");
    let token = tokio::time::timeout(Duration::from_secs(10), grants.recv())
        .await
        .expect("the writer is granted once the readers left")
        .expect("the writer runs");
    let writer_guard = writer.await.expect("the writer task");
    assert_eq!(writer_guard.token(), token);
    assert!(rwlock(4).try_read().await.expect("try_read").is_none());
    writer_guard.release().await.expect("release");
    rwlock(4)
        .try_read()
        .await
        .expect("try_read")
        .expect("free again")
        .release()
        .await
        .expect("release");

    let semaphore = |index: usize, permits: u64| {
        let (client, session) = &participants[index];
        coord_client::Semaphore::new(client, session, "/limits/exports", permits)
    };
    let mut permits = Vec::new();
    for index in 0..3 {
        let permit = semaphore(index, 3)
            .try_acquire()
            .await
            .expect("try_acquire")
            .expect("a permit is free");
        permits.push(permit);
    }
    assert!(semaphore(3, 3).try_acquire().await.expect("try").is_none());
    assert!(matches!(
        semaphore(4, 5).try_acquire().await,
        Err(Error::PermitsMismatch { .. })
    ));
    let waiter_semaphore = semaphore(3, 3);
    let waiter = tokio::spawn(async move { waiter_semaphore.acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a fourth permit was handed out");
    permits
        .pop()
        .expect("three permits")
        .release()
        .await
        .expect("release");
    let fourth = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter gets the freed permit")
        .expect("the waiter task")
        .expect("a permit");
    fourth.release().await.expect("release");
    for permit in permits {
        permit.release().await.expect("release");
    }
}

/// Unix milliseconds on this machine's wall clock (the recipes stamp nodes with it).
fn now_unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_millis()).expect("milliseconds fit")
}

/// A waiter that was granted writes its grant time into its node only once it has held a
/// second (the recipes' `STAMP_AFTER`): a young hold's node is unwritten, a longer one is
/// stamped, and an election's value proclaimed at once is never overwritten
/// by the campaign's value when the stamp comes due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_stamped_after_a_second_held_and_never_over_a_proclaimed_value() {
    let _serial = SERIAL.lock().await;
    let cluster = started_cluster().await;
    let participants = participants(&cluster, 2).await;
    let [(first_client, first_session), (second_client, second_session)] = &participants[..] else {
        unreachable!("two participants")
    };
    let queued_waiter = |name: &'static str| async move {
        eventually("the waiter to queue", Duration::from_secs(10), || async {
            let locks = list_locks(first_client, name).await.ok()?;
            locks.first()?.waiters.first().cloned()
        })
        .await
    };

    // A short hold: the waiter's node is not written while it is young.
    let holder = Mutex::new(first_client, first_session, "/locks/stamp-short")
        .acquire()
        .await
        .expect("the free lock is acquired");
    let waiter = {
        let (mutex, client) = (
            Mutex::new(second_client, second_session, "/locks/stamp-short"),
            second_client.clone(),
        );
        tokio::spawn(async move {
            let guard = mutex.acquire().await?;
            let granted = Instant::now();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let node = client.get(guard.path()).await?;
            let held_for = granted.elapsed();
            guard.release().await?;
            Ok::<_, Error>((node.stat.version, held_for))
        })
    };
    queued_waiter("/locks/stamp-short").await;
    holder.release().await.expect("release");
    let (version, held_for) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter is granted in time")
        .expect("the waiter runs")
        .expect("the waiter acquires, reads and releases");
    // (Unless this machine stalled the hold towards the stamp's due time, when a stamp would
    // be right.)
    if held_for < Duration::from_millis(900) {
        assert_eq!(version, 0, "a node held {held_for:?} was written");
    } else {
        eprintln!("the short hold took {held_for:?}: its node is not checked");
    }

    // A longer hold: the grant time replaces the time the waiter queued.
    let holder = Mutex::new(first_client, first_session, "/locks/stamp-long")
        .acquire()
        .await
        .expect("the free lock is acquired");
    let waiter = {
        let mutex = Mutex::new(second_client, second_session, "/locks/stamp-long");
        tokio::spawn(async move { mutex.acquire().await })
    };
    let queued = queued_waiter("/locks/stamp-long").await;
    let released_at = now_unix_ms().max(queued.since_unix_ms + 1);
    // The stamp is in milliseconds: make sure the grant falls in a later one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    holder.release().await.expect("release");
    let granted = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter is granted in time")
        .expect("the waiter runs")
        .expect("the waiter acquires");
    eventually(
        "the grant time to be stamped",
        Duration::from_secs(10),
        || async {
            let locks = list_locks(first_client, "/locks/stamp-long").await.ok()?;
            let holder = locks.first()?.holder()?.clone();
            (holder.token == granted.token() && holder.since_unix_ms >= released_at).then_some(())
        },
    )
    .await;
    granted.release().await.expect("release");

    // An election: the value proclaimed at once survives the stamp's due time.
    let leading = Election::new(first_client, first_session, "/elections/stamp")
        .campaign("first")
        .await
        .expect("the only candidate leads");
    let candidate = {
        let election = Election::new(second_client, second_session, "/elections/stamp");
        tokio::spawn(async move { election.campaign("second").await })
    };
    eventually(
        "the candidate to queue",
        Duration::from_secs(10),
        || async {
            let elections = list_elections(first_client, "/elections/stamp")
                .await
                .ok()?;
            (elections.first()?.followers.len() == 1).then_some(())
        },
    )
    .await;
    leading.resign().await.expect("resign");
    let mut leadership = tokio::time::timeout(Duration::from_secs(20), candidate)
        .await
        .expect("the candidate leads in time")
        .expect("the candidate runs")
        .expect("the candidate campaigns");
    leadership.proclaim("proclaimed").await.expect("proclaim");
    // Past the stamp's due time, with slack for a loaded machine.
    tokio::time::sleep(Duration::from_secs(1) + SLACK).await;
    let leader = Election::leader(first_client, "/elections/stamp")
        .await
        .expect("the leader is read")
        .expect("someone leads");
    assert_eq!(leader.value, b"proclaimed");
    leadership.resign().await.expect("resign");
}

/// Against a member of a release before `AwaitTurn` (the `OlderMember` proxy answers it
/// `UNIMPLEMENTED`), the recipes fall back to listing and watching: a mutex still excludes,
/// queues and hands over, and `try_acquire` still says "held".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutex_works_through_a_member_that_predates_await_turn() {
    let _serial = SERIAL.lock().await;
    if coord_tests::pki::harness_tls().is_some() {
        eprintln!("skipped: the older-member proxy speaks plaintext only");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = coord_tests::ServerProcess::start_single(dir.path(), &[]);
    // Connecting directly waits until the member serves.
    let _direct = server.client().await;
    let older = OlderMember::start(&server.client_address()).await;
    let connect = || async {
        let options = coord_client::ClientOptions {
            discover_members: false,
            ..coord_client::ClientOptions::default()
        };
        let client = Client::connect_with([older.address()], options)
            .await
            .expect("a client through the proxy");
        let session = client
            .open_session(Duration::from_secs(30))
            .await
            .expect("a session");
        (client, session)
    };
    let (first_client, first_session) = connect().await;
    let (second_client, second_session) = connect().await;
    let first = Mutex::new(&first_client, &first_session, "/locks/older")
        .acquire()
        .await
        .expect("the free lock is acquired");
    let second_mutex = Mutex::new(&second_client, &second_session, "/locks/older");
    assert!(
        second_mutex
            .try_acquire()
            .await
            .expect("try_acquire answers")
            .is_none(),
        "held by the first"
    );
    let waiter = tokio::spawn(async move {
        let guard = second_mutex
            .acquire()
            .await
            .expect("the waiter gets its turn");
        (guard.token(), guard, second_session)
    });
    eventually(
        "the waiter to watch its predecessor",
        Duration::from_secs(10),
        || async {
            let locks = list_locks(&first_client, "/locks/older").await.ok()?;
            (locks.first()?.waiters.len() == 1).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "no turn while the first holds");
    let first_token = first.token();
    first.release().await.expect("release");
    let (token, _guard, _session) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is granted after the release")
        .expect("the waiter does not panic");
    assert!(
        token > first_token,
        "tokens increase: {token} after {first_token}"
    );
    assert!(
        older.turns_refused() >= 2,
        "the recipes asked AwaitTurn first ({} refused)",
        older.turns_refused()
    );
    assert!(
        second_client.watch_events_received() >= 1,
        "the waiter watched its predecessor"
    );
}
