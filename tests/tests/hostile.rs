//! Heavy and hostile input against real members: each test asserts that the members survive,
//! serve everyone else and lose nothing acknowledged.
//! - the largest allowed txns from many clients at once commit, and the cluster keeps
//!   committing (replication batches are bounded by bytes, not only by count);
//! - forged peer messages of every kind (impossible terms, log gaps, unknown candidates,
//!   oversize writes, snapshot chunks at huge offsets, garbage) are refused or survived, and a
//!   restart afterwards finds its data directory intact;
//! - a recursive delete too large for the watch history cancels only the watches it touches;
//! - remembered write outcomes and txn responses stay bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use coord_client::{Consistency, CreateOptions, DeleteOptions, Op, Txn, WatchOptions};
use coord_tests::{binary, eventually, Cluster, HEAVY_WORK_TIMINGS};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_allowed_txns_from_many_clients_commit_and_the_cluster_keeps_committing() {
    let cluster = Cluster::start(3, &HEAVY_WORK_TIMINGS);
    ready(&cluster).await;
    // 96 MiB through a debug build on two cores shared with other tests: a long budget, since
    // the test is about committing at all, not about speed.
    let options = coord_client::ClientOptions {
        request_timeout: Duration::from_secs(90),
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
        ..coord_client::ClientOptions::default()
    };
    let client = coord_client::Client::connect_with(cluster.endpoints(), options)
        .await
        .unwrap();
    client
        .create("/big", "", &CreateOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..12 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            // Eight 1 MiB values: the largest txn the limits allow (8 MiB of data).
            let mut txn = Txn::new();
            for index in 0..8 {
                let path = format!("/big/w{writer:02}-{index}");
                txn = txn.then(Op::create(
                    &path,
                    vec![writer as u8; MIB],
                    &CreateOptions::default(),
                ));
            }
            client.txn(txn).await
        }));
    }
    let mut committed = 0;
    for writer in writers {
        let result = writer.await.unwrap().expect("a large txn commits");
        assert!(result.succeeded);
        committed += 1;
    }
    eprintln!(
        "12 txns of 8 MiB committed on 3 members in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(committed, 12);
    // The cluster keeps committing small writes and answering linearizable reads.
    for index in 0..20 {
        client
            .create(&format!("/after-{index}"), "x", &CreateOptions::default())
            .await
            .expect("small writes commit after the large ones");
    }
    let children = client.children("/big").await.unwrap();
    assert_eq!(children.len(), 96);
    let node = client.get("/big/w07-3").await.unwrap();
    assert_eq!(node.data, vec![7u8; MIB]);
    // Every member applied all of it.
    let digest = cluster
        .converged_digest(&cluster.ids(), Duration::from_secs(60))
        .await;
    assert!(digest.len() > 96);
}

/// A client of `cluster` once its members agree on a leader.
async fn ready(cluster: &Cluster) -> coord_client::Client {
    cluster
        .wait_for_leader(&cluster.ids(), Duration::from_secs(30))
        .await;
    cluster.client().await
}

fn probe(peer: &str, cluster_id: &str, term: u64, name: &str) -> String {
    let output = Command::new(binary("coord-peer-probe"))
        .args([peer, cluster_id, &term.to_string(), name])
        .output()
        .expect("coord-peer-probe runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_peer_messages_are_refused_and_no_member_aborts_or_loses_its_data() {
    let mut cluster = Cluster::start(3, &[]);
    let client = ready(&cluster).await;
    for index in 0..10 {
        client
            .create(&format!("/kept-{index}"), "v", &CreateOptions::default())
            .await
            .unwrap();
    }
    let status = client.cluster_status().await.unwrap();
    let leader = cluster
        .wait_for_leader(&cluster.ids(), Duration::from_secs(10))
        .await;
    let follower = cluster.a_follower(leader);
    let targets = [
        cluster.member(follower).peer_address(),
        cluster.member(leader).peer_address(),
    ];
    let refused_kinds = [
        "vote-impossible-term",
        "vote-unknown-candidate",
        "append-impossible-term",
        "append-with-gap",
        "append-future-term",
        "append-oversize",
        "snapshot-huge-offset",
        "append-nested-batch",
        "append-oversize-batch",
        "forward-oversize-batch",
        "garbage",
    ];
    for target in &targets {
        for kind in refused_kinds {
            let answer = probe(target, &status.cluster_id, status.term, kind);
            assert!(
                answer.starts_with("refused InvalidArgument"),
                "{kind} to {target}: {answer}"
            );
        }
        // The same AppendEntries, pipelined over `Peer.AppendStream`, are refused the same way.
        for kind in refused_kinds
            .iter()
            .filter(|kind| kind.starts_with("append-"))
        {
            let answer = probe(
                target,
                &status.cluster_id,
                status.term,
                &format!("stream-{kind}"),
            );
            assert!(
                answer.starts_with("refused InvalidArgument"),
                "stream-{kind} to {target}: {answer}"
            );
        }
        // Forged batches on a `Peer.ForwardStream` are refused as single calls are.
        for kind in ["forward-oversize-batch", "garbage"] {
            let answer = probe(
                target,
                &status.cluster_id,
                status.term,
                &format!("forward-stream-{kind}"),
            );
            assert!(
                answer.starts_with("refused InvalidArgument"),
                "forward-stream-{kind} to {target}: {answer}"
            );
        }
        let answer = probe(
            target,
            &status.cluster_id,
            status.term,
            "forward-stream-forward-oversize",
        );
        assert!(
            answer.starts_with("accepted Ok(StreamedReply { tag: 1, reply: Ok([Ok(Written")
                && answer.contains("Refused(TooLarge"),
            "{answer}"
        );
        let answer = probe(
            target,
            "other-cluster",
            status.term,
            "forward-stream-forward-oversize",
        );
        assert!(answer.starts_with("refused PermissionDenied"), "{answer}");
        // A forged forwarded write is answered as refused by the member's limits, applied
        // nowhere.
        let answer = probe(target, &status.cluster_id, status.term, "forward-oversize");
        assert!(
            answer.starts_with("accepted Ok(Ok(Written") && answer.contains("Refused(TooLarge"),
            "{answer}"
        );
        // Another cluster's id is refused before anything is decoded.
        let answer = probe(target, "other-cluster", status.term, "append-with-gap");
        assert!(answer.starts_with("refused PermissionDenied"), "{answer}");
    }
    // Every member still runs, the value stored by a forged write is nowhere, and the cluster
    // serves reads and writes.
    for id in cluster.ids() {
        assert!(cluster.member(id).is_running(), "member {id} stopped");
    }
    assert!(client.exists("/forged").await.unwrap().is_none());
    client
        .create("/after-forgery", "x", &CreateOptions::default())
        .await
        .unwrap();
    // No forged vote reached a disk: each member restarts on its data and rejoins.
    for id in cluster.ids() {
        cluster.member(id).restart();
    }
    let client = ready(&cluster).await;
    for index in 0..10 {
        let node = client.get(&format!("/kept-{index}")).await.unwrap();
        assert_eq!(node.data, b"v");
    }
    let after = client.cluster_status().await.unwrap();
    assert!(after.term < 1000, "term {} after forged terms", after.term);
    let log = cluster.member(follower).log();
    assert!(log.contains("peer message refused"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_too_large_for_the_watch_history_cancels_only_the_watches_it_touches() {
    let cluster = Cluster::start(1, &["--watch-history-events", "1000"]);
    let client = ready(&cluster).await;
    let parents = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    client.create("/other/x", "0", &parents).await.unwrap();
    for index in 0..1500 {
        client
            .create(&format!("/big/n{index:04}"), "", &parents)
            .await
            .unwrap();
    }
    let subtree = |path: &str| WatchOptions {
        path: path.into(),
        recursive: true,
        with_data: true,
        ..WatchOptions::default()
    };
    let mut unrelated = client.watch(subtree("/other")).await.unwrap();
    let mut touched = client.watch(subtree("/big")).await.unwrap();
    // One revision deletes 1,501 nodes: more events than the history holds.
    let deleted = client
        .delete(
            "/big",
            DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1501);
    client.set("/other/x", "1", None).await.unwrap();
    // The unrelated watch sees its next event; the touched one ends with Compacted.
    let event = tokio::time::timeout(Duration::from_secs(10), unrelated.next())
        .await
        .expect("the unrelated watch keeps running")
        .expect("a stream item")
        .expect("an event, not an error");
    assert_eq!(event.path, "/other/x");
    assert_eq!(event.data, b"1");
    let ended = tokio::time::timeout(Duration::from_secs(10), touched.next())
        .await
        .expect("the touched watch is told")
        .expect("a stream item");
    match ended {
        Err(coord_client::Error::Compacted { oldest_revision }) => {
            let now = client
                .get_with("/other/x", Consistency::Linearizable)
                .await
                .unwrap();
            assert!(oldest_revision <= now.header.revision, "{oldest_revision}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_txn_reading_too_much_is_refused_and_remembered_reads_stay_small() {
    let cluster = Cluster::start(1, &[]);
    let client = ready(&cluster).await;
    client
        .create("/mib", vec![1u8; MIB], &CreateOptions::default())
        .await
        .unwrap();
    // 128 reads of 1 MiB: a 128 MiB answer to a small request is refused whole.
    let mut greedy = Txn::new();
    for _ in 0..128 {
        greedy = greedy.then(Op::get("/mib"));
    }
    let refused = client.txn(greedy).await.unwrap_err();
    assert!(
        matches!(refused, coord_client::Error::LimitExceeded { .. }),
        "{refused:?}"
    );
    // Eight reads (8 MiB) are answered; the member does not keep them for repeats.
    let rss_before = rss_kib(&cluster);
    for _ in 0..20 {
        let mut reads = Txn::new();
        for _ in 0..8 {
            reads = reads.then(Op::get("/mib"));
        }
        let result = client.txn(reads).await.unwrap();
        assert_eq!(result.results.len(), 8);
    }
    let rss_after = rss_kib(&cluster);
    eprintln!(
        "member RSS {rss_before} KiB before, {rss_after} KiB after 20 txns reading 8 MiB each"
    );
    // 20 x 8 MiB = 160 MiB would be remembered without the bound.
    assert!(
        rss_after < rss_before + 120 * 1024,
        "{rss_before} KiB -> {rss_after} KiB"
    );
    eventually(
        "the member still answers",
        Duration::from_secs(5),
        || async { client.get("/mib").await.ok() },
    )
    .await;
}

fn rss_kib(cluster: &Cluster) -> u64 {
    let pid = cluster.members[0].pid().expect("the member runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop; `None` (with the reason printed)
/// where this machine does not let the test mount one.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        match status {
            Ok(status) if status.success() => Some(SmallDisk {
                dir: dir.to_path_buf(),
            }),
            other => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here ({other:?}); run as root to test ENOSPC"
                );
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_the_member_cleanly_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "40m") else {
        return;
    };
    let mut member = coord_tests::ServerProcess::prepare(1, &disk.dir, &[]);
    member.start();
    let client = member.client().await;
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for index in 0..200 {
        let path = format!("/fill-{index:03}");
        match client
            .create(&path, vec![index as u8; MIB / 2], &CreateOptions::default())
            .await
        {
            Ok(_) => acknowledged.push(path),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    assert!(refused.is_some(), "a 40 MiB disk took 100 MiB");
    // The member exits on its own (a supervisor restarts it), instead of staying half alive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while member.is_running() {
        assert!(
            Instant::now() < deadline,
            "the member stayed up on a full disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(member.log().contains("storage fault"), "{}", member.log());
    // With space again, it restarts on its data and every acknowledged write is there.
    disk.resize("400m");
    member.kill9();
    member.start();
    let client = member.client().await;
    for path in &acknowledged {
        let node = client
            .get(path)
            .await
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(node.data.len(), MIB / 2);
    }
    eprintln!(
        "{} writes acknowledged before the disk filled; all read back after the restart",
        acknowledged.len()
    );
    member.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_quota_growing_writes_are_refused_reads_and_deletes_work_and_it_recovers() {
    let cluster = Cluster::start(1, &["--quota-bytes", "2000000"]);
    let client = ready(&cluster).await;
    let value = vec![9u8; 100_000];
    let mut written = 0;
    let refused = loop {
        match client
            .create(
                &format!("/q/n{written:03}"),
                value.clone(),
                &CreateOptions {
                    make_parents: true,
                    ..CreateOptions::default()
                },
            )
            .await
        {
            Ok(_) => written += 1,
            Err(error) => break error,
        }
        assert!(written < 100, "a 2 MB quota took 10 MB");
    };
    assert!(
        matches!(refused, coord_client::Error::NoSpace { .. }),
        "{refused:?}"
    );
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.alarms, ["NOSPACE"]);
    let growing = client.set("/q/n001", vec![1u8; 200_000], None).await;
    assert!(
        matches!(growing, Err(coord_client::Error::NoSpace { .. })),
        "{growing:?}"
    );
    // Reads, shrinking sets and deletes still work.
    assert_eq!(client.get("/q/n000").await.unwrap().data, value);
    client.set("/q/n000", "small", None).await.unwrap();
    for index in 0..written / 2 {
        client
            .delete(&format!("/q/n{index:03}"), DeleteOptions::default())
            .await
            .unwrap();
    }
    // Below the quota again: writes are accepted and the alarm is gone.
    client
        .create("/q/after", value.clone(), &CreateOptions::default())
        .await
        .unwrap();
    let status = client.cluster_status().await.unwrap();
    assert!(status.alarms.is_empty(), "{:?}", status.alarms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_are_capped_per_client_and_in_all_with_a_typed_refusal() {
    let cluster = Cluster::start(
        1,
        &["--max-sessions-per-client", "3", "--max-sessions", "5"],
    );
    let first = ready(&cluster).await;
    let second = ready(&cluster).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(first.open_session(Duration::from_secs(30)).await.unwrap());
    }
    let Err(refused) = first.open_session(Duration::from_secs(30)).await else {
        panic!("a fourth session of one client was granted");
    };
    assert!(
        matches!(&refused, coord_client::Error::LimitExceeded { message } if message.contains("--max-sessions-per-client")),
        "{refused:?}"
    );
    for _ in 0..2 {
        kept.push(second.open_session(Duration::from_secs(30)).await.unwrap());
    }
    let Err(refused) = second.open_session(Duration::from_secs(30)).await else {
        panic!("a sixth session was granted");
    };
    assert!(
        matches!(&refused, coord_client::Error::LimitExceeded { message } if message.contains("--max-sessions")),
        "{refused:?}"
    );
    // Closing one makes room again.
    kept.pop().unwrap().close().await.unwrap();
    kept.push(second.open_session(Duration::from_secs(30)).await.unwrap());
    assert_eq!(second.list_sessions().await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_refused_and_logged_and_garbage_is_logged() {
    let cluster = Cluster::start(1, &["--max-connections", "30"]);
    let client = ready(&cluster).await;
    let address = cluster.members[0].client_address();
    // Idle connections up to the cap and beyond: those past it are closed by the member.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(std::net::TcpStream::connect(&address).unwrap());
    }
    let closed = eventually(
        "connections past the cap are closed",
        Duration::from_secs(10),
        || {
            let closed = idle.iter().filter(|stream| closed_by_peer(stream)).count();
            async move { (closed >= 5).then_some(closed) }
        },
    )
    .await;
    eprintln!("{closed} of 40 idle connections closed by a member capped at 30");
    let log = cluster.members[0].log();
    assert!(
        log.contains("--max-connections are open"),
        "the refusals are logged"
    );
    // Room again once the idle connections go (waited for first: garbage sent while the member
    // still counts them would be refused at the cap, not read); garbage is logged, not served.
    drop(idle);
    eventually(
        "the member serves again",
        Duration::from_secs(10),
        || async { client.get("/").await.ok() },
    )
    .await;
    let mut garbage = std::net::TcpStream::connect(&address).unwrap();
    use std::io::Write;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    eventually("garbage is logged", Duration::from_secs(10), || {
        let logged = cluster.members[0]
            .log()
            .contains("something other than HTTP/2");
        async move { logged.then_some(()) }
    })
    .await;
    assert!(client.get("/").await.is_ok(), "the member still serves");
}

/// Whether the other side closed `stream` (a read finds its end, not "would block").
fn closed_by_peer(stream: &std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_past_the_members_cap_are_refused_with_a_typed_error() {
    let cluster = Cluster::start(1, &["--max-watches", "5"]);
    let client = ready(&cluster).await;
    let mut watches = Vec::new();
    for index in 0..5 {
        let options = WatchOptions {
            path: format!("/w{index}"),
            ..WatchOptions::default()
        };
        watches.push(client.watch(options).await.unwrap());
    }
    let options = WatchOptions {
        path: "/w-sixth".into(),
        ..WatchOptions::default()
    };
    let refused = match client.watch(options.clone()).await {
        Err(error) => error,
        Ok(mut watch) => tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the sixth watch is refused within 10 s")
            .expect("the sixth watch ends")
            .expect_err("with an error"),
    };
    assert!(refused.to_string().contains("--max-watches"), "{refused:?}");
    // Closing one makes room.
    drop(watches.pop());
    eventually("a watch fits again", Duration::from_secs(10), || {
        let client = client.clone();
        let options = options.clone();
        async move {
            let mut watch = client.watch(options).await.ok()?;
            client
                .create("/w-sixth", "x", &CreateOptions::default())
                .await
                .ok()?;
            let event = tokio::time::timeout(Duration::from_secs(2), watch.next())
                .await
                .ok()??;
            event.ok()
        }
    })
    .await;
}

/// A `GetRequest` whose path field holds raw bytes, to send a path that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetRequest {
    #[prost(bytes = "vec", tag = "1")]
    path: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_path_that_is_not_utf8_is_an_invalid_argument_not_an_internal_error() {
    let cluster = Cluster::start(1, &[]);
    let client = ready(&cluster).await;
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.members[0].client_address()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/coord.v1.Namespace/Get");
    let codec = tonic_prost::ProstCodec::<RawGetRequest, coord_proto::v1::GetResponse>::default();
    let request = tonic::Request::new(RawGetRequest {
        path: b"/bad-\xff-utf8".to_vec(),
    });
    let status = grpc.unary(request, path, codec).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    // The member serves on.
    client.get("/").await.unwrap();
}
