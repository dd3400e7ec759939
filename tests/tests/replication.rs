//! Replication with real three-member clusters on loopback: routing from any member,
//! linearizable reads on followers, leader failure, catch-up by snapshot, a follower with a
//! slow disk, a paused leader, membership changes, and reads without a quorum.
//!
//! Tests in this file run one at a time (`SERIAL`): each starts several servers, and two
//! clusters on two cores would mostly measure the scheduler.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord_client::{Client, Consistency, CreateOptions, Error, Op, Txn};
use coord_tests::metrics::scrape;
use coord_tests::slow_disk::slow_down_syncs;
use coord_tests::{eventually, Cluster};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEADER_WAIT: Duration = Duration::from_secs(30);

/// Creates `path`, retrying while the outcome is unknown or the cluster unavailable; a
/// `NodeExists` on a retry means an earlier attempt was applied. Returns whether the create is
/// known to be applied.
async fn create_with_retry(client: &Client, path: &str) -> bool {
    let mut retried = false;
    for _ in 0..100 {
        match client
            .create(path, path.as_bytes().to_vec(), &CreateOptions::default())
            .await
        {
            Ok(_) => return true,
            Err(Error::NodeExists { .. }) if retried => return true,
            Err(error)
                if error.is_retryable()
                    || error.is_outcome_unknown()
                    || matches!(error, Error::Unreachable { .. }) =>
            {
                retried = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("create {path}: {error}"),
        }
    }
    false
}

/// Writers that create nodes until stopped, recording every acknowledged path.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(client: &Client, writers: usize, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|writer| {
                let client = client.clone();
                let stop = stop.clone();
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    let mut index = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("{prefix}/w{writer}-{index:06}");
                        if create_with_retry(&client, &path).await {
                            acknowledged.push(path);
                        }
                        index += 1;
                    }
                    acknowledged
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for task in self.tasks {
            acknowledged.extend(task.await.expect("writer task"));
        }
        acknowledged
    }
}

/// Waits until every member in `ids` has applied the same revision, then compares digests
/// of their whole trees read locally.
async fn assert_converged(cluster: &Cluster, ids: &[u64]) -> Vec<String> {
    cluster.converged_digest(ids, Duration::from_secs(60)).await
}

/// A txn that creates each of `paths` with a small payload.
fn creates(paths: impl IntoIterator<Item = String>) -> Txn {
    paths.into_iter().fold(Txn::new(), |txn, path| {
        txn.then(Op::create(&path, "payload", &CreateOptions::default()))
    })
}

fn followers(all: &[u64], leader: u64) -> Vec<u64> {
    all.iter().copied().filter(|id| *id != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_at_one_follower_is_read_linearizably_at_the_other() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let followers = followers(&[1, 2, 3], leader);
    let writer = cluster.client_of(followers[0]).await;
    let reader = cluster.client_of(followers[1]).await;
    for index in 0..50 {
        let path = format!("/seen-{index}");
        let created = writer
            .create(&path, "x", &CreateOptions::default())
            .await
            .unwrap();
        assert_eq!(
            created.header.leader_id, leader,
            "responses carry the leader's id"
        );
        let node = reader
            .get(&path)
            .await
            .unwrap_or_else(|error| panic!("{path} not visible at a follower: {error}"));
        assert_eq!(node.data, b"x");
        assert!(node.header.revision >= created.header.revision);
        assert_eq!(
            node.header.member_id, followers[1],
            "answered by the follower itself"
        );
    }
    // Members learn each other's client addresses over the peer link.
    let members = reader.member_list().await.unwrap();
    assert_eq!(members.len(), 3);
    for member in members {
        let expected = cluster
            .members
            .iter()
            .find(|process| process.id == member.id)
            .unwrap()
            .client_address();
        eventually(
            "client addresses to be learned",
            Duration::from_secs(10),
            || {
                let reader = reader.clone();
                let expected = expected.clone();
                async move {
                    let list = reader.member_list().await.ok()?;
                    list.iter()
                        .any(|known| known.id == member.id && known.client_address == expected)
                        .then_some(())
                }
            },
        )
        .await;
    }
    // The leader knows every member's progress; a follower only its own, and says so.
    let led = cluster
        .client_of(leader)
        .await
        .cluster_status()
        .await
        .unwrap();
    assert_eq!(led.members.len(), 3);
    for member in &led.members {
        assert!(!member.progress_unknown, "{led:?}");
        assert!(member.matched_index > 0, "{led:?}");
    }
    let followed = reader.cluster_status().await.unwrap();
    for member in &followed.members {
        let id = member.member.as_ref().unwrap().id;
        assert_eq!(member.progress_unknown, id != followers[1], "{followed:?}");
        if id == followers[1] {
            assert!(member.matched_index > 0, "{followed:?}");
        } else {
            assert_eq!((member.matched_index, member.lag), (0, 0), "{followed:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = cluster.client().await;
    client
        .create("/load", "", &CreateOptions::default())
        .await
        .unwrap();

    let load = Load::start(&client, 8, "/load");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.member(leader).kill9();
    let survivors = followers(&[1, 2, 3], leader);
    let new_leader = cluster.wait_for_leader(&survivors, LEADER_WAIT).await;
    assert_ne!(new_leader, leader);
    // The writers keep going against the new leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acknowledged = load.finish().await;
    assert!(
        acknowledged.len() > 50,
        "only {} writes were acknowledged",
        acknowledged.len()
    );

    for id in &survivors {
        let member = cluster.client_of(*id).await;
        let present: BTreeSet<String> = member
            .children("/load")
            .await
            .unwrap()
            .into_iter()
            .map(|name| format!("/load/{name}"))
            .collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|path| !present.contains(*path))
            .collect();
        assert!(
            lost.is_empty(),
            "member {id} lost {} acknowledged writes, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }

    // The killed member restarts and converges.
    cluster.member(leader).restart();
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    assert_converged(&cluster, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_far_behind_catches_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    far_behind_catches_up_by_snapshot("2").await;
}

/// The same with one worker thread per member, as three members sharing two cores get by
/// default. Ignored: on some machines the live follower stops answering the leader for 8 to
/// 30 s right after its first log purge (heartbeats time out at the leader while the follower's
/// threads sit idle), so the writers see "no leader is known" for their whole 20 s. Known
/// defect, open; `cargo test -p coord-tests --test replication -- --ignored` reproduces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a single-worker follower stalls after its log purge (known defect, open)"]
async fn a_member_far_behind_catches_up_by_snapshot_with_one_worker_each() {
    let _serial = SERIAL.lock().await;
    far_behind_catches_up_by_snapshot("1").await;
}

/// Kills a follower, writes 400 txns of 50 creates with snapshots every 100 entries (members
/// run `worker_threads` worker threads each), and checks that the follower, restarted,
/// catches up by installing a snapshot.
async fn far_behind_catches_up_by_snapshot(worker_threads: &str) {
    // With the tests' 100 ms heartbeat, the one live follower of these 50-create txns answers
    // later than one heartbeat interval; the leader must keep its stream and its quorum.
    let flags = [
        "--snapshot-entries",
        "100",
        "--snapshot-keep-entries",
        "10",
        "--worker-threads",
        worker_threads,
    ];
    let mut cluster = Cluster::start(3, &flags);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let absent = followers(&[1, 2, 3], leader)[0];
    cluster.member(absent).kill9();

    let client = cluster.client_of(leader).await;
    client
        .create("/bulk", "", &CreateOptions::default())
        .await
        .unwrap();
    // 20,000 nodes in 400 txns of 50: 400 log entries, four snapshot thresholds.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for batch in (writer..400).step_by(4) {
                let paths =
                    (batch * 50..(batch + 1) * 50).map(|index| format!("/bulk/n{index:05}"));
                if let Err(error) = client.txn(creates(paths)).await {
                    return Err(format!("txn {batch} failed: {error}"));
                }
            }
            Ok(())
        }));
    }
    for writer in writers {
        if let Err(failed) = writer.await.unwrap() {
            panic!("{failed}\n{}", cluster.log_tails(200));
        }
    }
    let status = eventually(
        "a snapshot and a purge on the leader",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let status = client.cluster_status().await.ok()?;
                (status.snapshot_index > 0 && status.purged_index > 0).then_some(status)
            }
        },
    )
    .await;

    cluster.member(absent).restart();
    let digest = assert_converged(&cluster, &[1, 2, 3]).await;
    assert_eq!(digest.len(), 20_002, "root, /bulk and 20,000 nodes");
    let caught_up = cluster
        .client_of(absent)
        .await
        .cluster_status()
        .await
        .unwrap();
    assert!(
        caught_up.snapshot_index >= status.purged_index,
        "member {absent} must have installed a snapshot (it has {}, the leader purged through {})",
        caught_up.snapshot_index,
        status.purged_index
    );
}

/// How many replication streams the member whose metrics listen on `port` gave up on.
fn streams_given_up(port: u16) -> f64 {
    scrape(port, "coord_raft_append_streams_given_up_total")
}

/// One follower's disk takes 1.5 heartbeat intervals for every sync, as a throttled cloud
/// volume can, and the other follower is down, so every commit waits for the slow disk. The
/// follower's answers come later than each AppendEntries' deadline (the heartbeat interval),
/// but they come: the leader keeps its replication stream (it gave one up only after five
/// deadlines of silence) instead of sending the same entries again to a follower busy writing
/// them, and it keeps taking writes and serving linearizable reads, also after an idle pause
/// longer than its quorum check's window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_disk_syncs_slower_than_the_heartbeat_keeps_the_cluster_writing() {
    let _serial = SERIAL.lock().await;
    let (mut cluster, metrics_ports) = Cluster::start_with_metrics(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let [slow, absent] = followers(&[1, 2, 3], leader)[..] else {
        unreachable!("three members, one leader")
    };
    let leader_metrics = metrics_ports[usize::try_from(leader - 1).expect("small ids")];

    // The tests' heartbeat interval is 100 ms.
    cluster.member(slow).kill9();
    slow_down_syncs(cluster.member(slow), Duration::from_millis(150));
    cluster.member(slow).restart();
    let client = cluster.client_of(leader).await;
    client
        .create("/slow", "", &CreateOptions::default())
        .await
        .unwrap();
    assert_converged(&cluster, &[1, 2, 3]).await;
    cluster.member(absent).kill9();
    let given_up_before = streams_given_up(leader_metrics);

    // Four writers of single creates and 50-create txns: every commit needs the slow disk.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..10 {
                client
                    .create(
                        &format!("/slow/w{writer}-{round:02}"),
                        "payload",
                        &CreateOptions::default(),
                    )
                    .await
                    .expect("a write commits on the slow follower");
                if round % 5 == 4 {
                    let paths =
                        (0..50).map(|index| format!("/slow/t{writer}-{round:02}-{index:02}"));
                    client
                        .txn(creates(paths))
                        .await
                        .expect("a txn commits on the slow follower");
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    // Idle for longer than the leader's quorum check looks back (three election timeouts of
    // 500 ms): heartbeats need no sync, and keep the leader's quorum current.
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .create("/slow/after-idle", "", &CreateOptions::default())
        .await
        .expect("a write after an idle pause commits");
    let children = client
        .children("/slow")
        .await
        .expect("a linearizable read is served");
    assert_eq!(children.len(), 4 * 10 + 4 * 2 * 50 + 1);

    assert_eq!(
        cluster.wait_for_leader(&[leader, slow], LEADER_WAIT).await,
        leader,
        "the leader kept its leadership"
    );
    let given_up = streams_given_up(leader_metrics) - given_up_before;
    assert!(
        given_up == 0.0,
        "the leader gave up {given_up} replication streams to the slow follower"
    );
    cluster.member(absent).restart();
    assert_converged(&cluster, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_steps_down_and_commits_nothing_in_its_old_term() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let old_leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let stale_client = cluster.client_of(old_leader).await;
    let old_term = stale_client.header().await.unwrap().raft_term;

    cluster.member(old_leader).pause();
    let others = followers(&[1, 2, 3], old_leader);
    let new_leader = cluster.wait_for_leader(&others, LEADER_WAIT).await;
    assert_ne!(new_leader, old_leader);
    let fresh = cluster.client_of(new_leader).await;
    fresh
        .create("/after-failover", "", &CreateOptions::default())
        .await
        .unwrap();

    // A write sent to the paused member waits in its socket; resume it and see what happens.
    let pending = {
        let stale_client = stale_client.clone();
        tokio::spawn(async move {
            stale_client
                .create("/from-stale", "", &CreateOptions::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.member(old_leader).resume();
    match pending.await.unwrap() {
        // Accepted only after the member stepped down and forwarded it: a new-term commit.
        Ok(created) => assert!(
            created.header.raft_term > old_term,
            "committed in term {}",
            created.header.raft_term
        ),
        Err(error) => assert!(
            error.is_retryable() || error.is_outcome_unknown(),
            "{error}"
        ),
    }
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    assert_ne!(leader, old_leader, "the resumed member stepped down");
    let status = cluster
        .client_of(old_leader)
        .await
        .cluster_status()
        .await
        .unwrap();
    assert!(
        status.term > old_term,
        "the resumed member learned the new term"
    );
    assert_converged(&cluster, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_to_four_and_shrink_back_by_removing_the_leader_under_load() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let original_leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = cluster.client().await;
    client
        .create("/grow", "", &CreateOptions::default())
        .await
        .unwrap();
    let load = Load::start(&client, 4, "/grow");

    let cluster_id = client.cluster_status().await.unwrap().cluster_id;
    let mut fourth = coord_tests::ServerProcess::prepare(4, cluster.dir.path(), &[]);
    fourth.set_join(Some(cluster_id));
    fourth.start();
    client.member_add(4, &fourth.peer_address()).await.unwrap();
    let members = client.member_promote(4).await.unwrap();
    assert!(
        members.iter().any(|member| member.id == 4 && member.voter),
        "{members:?}"
    );
    cluster.members.push(fourth);

    let members = client.member_remove(original_leader).await.unwrap();
    assert!(
        members.iter().all(|member| member.id != original_leader),
        "{members:?}"
    );
    let remaining: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != original_leader)
        .collect();
    cluster.wait_for_leader(&remaining, LEADER_WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acknowledged = load.finish().await;

    // The removed member stops by itself.
    eventually(
        "the removed member to exit",
        Duration::from_secs(20),
        || {
            let running = cluster.member(original_leader).is_running();
            async move { (!running).then_some(()) }
        },
    )
    .await;
    let digest = assert_converged(&cluster, &remaining).await;
    for path in &acknowledged {
        assert!(
            digest
                .iter()
                .any(|line| line.starts_with(&format!("{path} "))),
            "{path} was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_member_serves_stale_reads_and_refuses_linearizable_ones() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = cluster.client().await;
    client
        .create("/kept", "value", &CreateOptions::default())
        .await
        .unwrap();
    let lonely = followers(&[1, 2, 3], leader)[0];
    let lonely_client = cluster.client_of(lonely).await;
    eventually(
        "the follower to apply /kept",
        Duration::from_secs(10),
        || {
            let lonely_client = lonely_client.clone();
            async move {
                lonely_client
                    .get_with("/kept", Consistency::Serializable)
                    .await
                    .ok()
            }
        },
    )
    .await;
    for id in [1, 2, 3].into_iter().filter(|id| *id != lonely) {
        cluster.member(id).kill9();
    }
    let node = lonely_client
        .get_with("/kept", Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(node.data, b"value");
    let started = tokio::time::Instant::now();
    let error = lonely_client.get("/kept").await.unwrap_err();
    assert!(
        error.is_retryable() || error.is_outcome_unknown(),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the refusal took {:?}",
        started.elapsed()
    );
}

/// A client given one member finds the others, and keeps working when that member dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_given_one_member_discovers_the_others_and_fails_over_to_them() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let follower = cluster.a_follower(leader);
    let only = cluster.member(follower).client_address();
    // Members learn each other's client addresses within a second or so of starting.
    let client = eventually(
        "every member to be discovered",
        Duration::from_secs(10),
        || {
            let only = only.clone();
            async move {
                let options = coord_client::ClientOptions {
                    tls: coord_tests::pki::harness_client_tls(),
                    ..coord_client::ClientOptions::default()
                };
                let client = Client::connect_with([only], options).await.ok()?;
                (client.endpoints().len() == 3).then_some(client)
            }
        },
    )
    .await;
    let mut endpoints = client.endpoints().to_vec();
    assert_eq!(endpoints[0], only, "the given endpoint comes first");
    endpoints.sort();
    let mut expected = cluster.endpoints();
    expected.sort();
    assert_eq!(endpoints, expected);
    client
        .create("/discovered", "yes", &CreateOptions::default())
        .await
        .expect("a write through the given member");
    cluster.member(follower).kill9();
    let node = client
        .get("/discovered")
        .await
        .expect("read through a discovered member");
    assert_eq!(node.data, b"yes");
    assert_ne!(node.header.member_id, follower);
}

/// The value of `flag` in a member's arguments.
fn flag_value(args: &[String], flag: &str) -> String {
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[at + 1].clone()
}

/// Waits until member `id`'s log holds `text` at least `times` times; the logs on timeout.
async fn wait_for_log(cluster: &Cluster, id: u64, text: &str, times: usize) {
    let member = cluster
        .members
        .iter()
        .find(|member| member.id == id)
        .expect("the member exists");
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    while member.log().matches(text).count() < times {
        assert!(
            tokio::time::Instant::now() < deadline,
            "member {id} logged {text:?} fewer than {times} times:\n{}",
            cluster.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `id` is a voter of the membership `client` sees.
async fn wait_voter(client: &Client, id: u64) {
    eventually(&format!("member {id} is a voter"), LEADER_WAIT, || async {
        let members = client.member_list().await.ok()?;
        members
            .iter()
            .any(|member| member.id == id && member.voter)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_member_joins_through_join_via_and_replaces_itself_after_losing_its_disk() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = cluster.client().await;
    assert!(create_with_retry(&client, "/join").await);
    for key in 0..20 {
        let path = format!("/join/{key}");
        assert!(create_with_retry(&client, &path).await, "{path}");
    }
    let initial_cluster = flag_value(&cluster.member(1).args(), "--initial-cluster");
    let via = format!(
        "{},{}",
        cluster.member(1).peer_address(),
        cluster.member(3).peer_address()
    );

    // A fourth member: same founders and name, not among them, joins on its own.
    let mut fourth =
        coord_tests::ServerProcess::prepare(4, cluster.dir.path(), &["--join-via", &via]);
    fourth.set_initial_cluster(&initial_cluster);
    fourth.start();
    wait_voter(&client, 4).await;
    cluster.members.push(fourth);
    wait_for_log(&cluster, 4, "joined the cluster as a voter", 1).await;

    // Member 4 loses its disk and comes back empty: the cluster still counts it as a voter, so
    // it must refuse Raft traffic (the leader would see its log go back) until it has had
    // itself removed and added again as a learner.
    let lost = cluster.member(4);
    lost.kill9();
    lost.wipe();
    lost.start();
    wait_for_log(&cluster, 4, "joined the cluster as a voter", 2).await;
    let log = cluster.member(4).log();
    assert!(
        log.contains("its data directory is new"),
        "member 4 did not notice it was a voter with an empty disk:\n{log}"
    );
    for id in [1, 2, 3] {
        assert!(
            cluster.member(id).is_running(),
            "member {id} stopped:\n{}",
            cluster.log_tails(40)
        );
    }
    wait_voter(&client, 4).await;
    let rejoined = cluster.direct_client_of(4).await;
    for key in 0..20 {
        rejoined
            .get_with(&format!("/join/{key}"), Consistency::Serializable)
            .await
            .unwrap_or_else(|error| panic!("/join/{key} on the rejoined member: {error}"));
    }
    assert_converged(&cluster, &[1, 2, 3, 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_founding_member_restarted_empty_neither_stops_the_leader_nor_loses_data() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = cluster.client().await;
    assert!(create_with_retry(&client, "/empty").await);
    for key in 0..20 {
        assert!(create_with_retry(&client, &format!("/empty/{key}")).await);
    }
    // A follower of the initial cluster loses its disk and restarts without --join-via: the
    // leader sees its log go back and must start over with it rather than stop.
    let follower = cluster.a_follower(leader);
    let member = cluster.member(follower);
    member.kill9();
    member.wipe();
    member.start();
    let rejoined = cluster.direct_client_of(follower).await;
    eventually("the emptied member catches up", LEADER_WAIT, || async {
        rejoined
            .get_with("/empty/19", Consistency::Serializable)
            .await
            .ok()
    })
    .await;
    for id in [1, 2, 3] {
        assert!(
            cluster.member(id).is_running(),
            "member {id} stopped:\n{}",
            cluster.log_tails(40)
        );
    }
    assert!(create_with_retry(&client, "/empty/after").await);
    assert_converged(&cluster, &[1, 2, 3]).await;
}
