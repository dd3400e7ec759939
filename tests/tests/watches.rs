//! Watches against real members: every event of thousands of writes, in order, once, through a
//! leader kill and the watcher's own reconnection to another member; `Compacted` for a start
//! older than the retained history; and an expired session's node seen going, with its reason,
//! by a watcher on another member; thousands of watches of one client sharing its streams,
//! each getting only its own events; a watch not read that holds up none of the others; and
//! `AwaitTurn`, a recipe waiter's turn decided on the member.
//!
//! Tests in this file run one at a time (`SERIAL`).

use std::collections::BTreeSet;
use std::time::Duration;

use coord_client::{
    Client, ClientOptions, CreateOptions, DeleteReason, Error, EventKind, WatchOptions,
};
use coord_tests::metrics::{http_get, metric_value};
use coord_tests::{eventually, Cluster, ServerProcess, ToolProcess};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEADER_WAIT: Duration = Duration::from_secs(30);

/// A client whose first endpoint is member `first`, failing over to the others in order.
async fn client_starting_at(cluster: &Cluster, first: u64) -> Client {
    let mut endpoints = Vec::new();
    for id in std::iter::once(first).chain(cluster.ids().into_iter().filter(|id| *id != first)) {
        let member = cluster
            .members
            .iter()
            .find(|member| member.id == id)
            .unwrap();
        endpoints.push(member.client_address());
    }
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
    };
    Client::connect_with(endpoints, options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_on_a_follower_gets_every_event_in_order_through_failures() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let follower = cluster.a_follower(leader);
    let writer = client_starting_at(&cluster, leader).await;
    let directory = writer
        .create("/w", "", &CreateOptions::default())
        .await
        .unwrap();
    let watcher = client_starting_at(&cluster, follower).await;
    let options = WatchOptions {
        path: "/w".into(),
        recursive: true,
        // From just after the directory's creation. A watch "from now" starts after what its
        // member has applied, and a follower may not have applied the directory yet: its
        // creation would then be delivered too and counted as one of the creates.
        start_revision: directory.stat.create_revision + 1,
        ..WatchOptions::default()
    };
    let mut watch = watcher.watch(options).await.unwrap();

    // 5,000 creates from 8 writers; the leader is killed (and restarted) a third of the way
    // in, and the watcher's member two thirds of the way in (restarted only at the end).
    const WRITES: usize = 5_000;
    const WRITERS: usize = 8;
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for index in 0..WRITERS {
        let writer = writer.clone();
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..WRITES / WRITERS {
                let path = format!("/w/{index}-{n:05}");
                // Retried until acknowledged: write ids make the retries exactly-once.
                for _ in 0..50 {
                    match writer.create(&path, "", &CreateOptions::default()).await {
                        Ok(_) => {
                            acknowledged.push(path.clone());
                            break;
                        }
                        Err(Error::NodeExists { .. }) => {
                            acknowledged.push(path.clone());
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            acknowledged
        }));
    }
    let mut events = Vec::new();
    let mut leader_killed = false;
    let mut watcher_member_killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut created: BTreeSet<String> = BTreeSet::new();
    while created.len() < WRITES {
        let progress = written.load(std::sync::atomic::Ordering::Relaxed);
        if !leader_killed && progress >= WRITES / 3 {
            cluster.member(leader).kill9();
            cluster.member(leader).start();
            leader_killed = true;
        }
        if !watcher_member_killed && progress >= 2 * WRITES / 3 {
            // Left down until the end: the watcher must move to another member.
            cluster.member(follower).kill9();
            watcher_member_killed = true;
        }
        let next = tokio::time::timeout_at(deadline, watch.next()).await;
        let event = next
            .unwrap_or_else(|_| panic!("only {} of {WRITES} creates seen", created.len()))
            .expect("the watch goes on")
            .expect("no error on the watch");
        if event.kind == EventKind::Created {
            assert!(
                created.insert(event.path.clone()),
                "{} delivered twice",
                event.path
            );
        }
        events.push(event);
    }
    cluster.member(follower).start();
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(leader_killed && watcher_member_killed);
    assert_eq!(
        acknowledged.len(),
        WRITES,
        "every write was eventually acknowledged"
    );
    assert_eq!(
        created, acknowledged,
        "every acknowledged create was seen, nothing else"
    );
    for pair in events.windows(2) {
        assert!(
            pair[0].revision <= pair[1].revision,
            "revision {} after {}",
            pair[1].revision,
            pair[0].revision
        );
    }
    eprintln!(
        "{} events for {WRITES} creates, revisions {}..={}",
        events.len(),
        events[0].revision,
        events[events.len() - 1].revision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_older_than_the_retained_history_is_compacted() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &["--watch-history-events", "50"]);
    let client = server.client().await;
    let make_parents = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    for index in 0..200 {
        client
            .create(&format!("/h/{index:03}"), "", &make_parents)
            .await
            .unwrap();
    }
    let from_the_start = WatchOptions {
        path: "/h".into(),
        recursive: true,
        start_revision: 1,
        ..WatchOptions::default()
    };
    let oldest = match client.watch(from_the_start).await {
        Err(Error::Compacted { oldest_revision }) => oldest_revision,
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, the watch started"),
    };
    assert!(oldest > 1);
    // From the oldest retained revision on, the history is complete.
    let from_oldest = WatchOptions {
        path: "/h".into(),
        recursive: true,
        start_revision: oldest,
        ..WatchOptions::default()
    };
    let mut watch = client.watch(from_oldest).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.revision, oldest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_on_another_member_sees_an_expired_sessions_node_go() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let other = cluster.a_follower(leader);
    let holder_endpoint = cluster
        .members
        .iter()
        .find(|member| member.id == leader)
        .unwrap()
        .client_address();
    let mut holder = ToolProcess::coordctl(
        &[holder_endpoint],
        &[
            "create",
            "--ephemeral",
            "--ttl",
            "2s",
            "--hold",
            "/alive",
            "x",
        ],
        cluster.dir.path(),
    );
    let watcher = client_starting_at(&cluster, other).await;
    let mut watch = watcher
        .watch(WatchOptions {
            path: "/alive".into(),
            start_revision: 1,
            ..WatchOptions::default()
        })
        .await
        .unwrap();
    let created = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the node is created")
        .unwrap()
        .unwrap();
    assert_eq!(created.kind, EventKind::Created);
    holder.signal(libc::SIGSTOP);
    let deleted = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the node goes after the TTL")
        .unwrap()
        .unwrap();
    assert_eq!(
        deleted.kind,
        EventKind::Deleted(DeleteReason::SessionExpired)
    );
    assert_eq!(deleted.path, "/alive");
    assert!(deleted.revision > created.revision);
    holder.kill9();
}

/// Back-pressure: a watcher that stops reading costs the member nothing beyond its bounded
/// history. The member keeps serving everyone else; once the history has moved past the
/// watcher, its watch is cancelled as too slow, with the revision it can resume from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_stops_reading_is_cancelled_as_too_slow() {
    use coord_proto::v1 as pb;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &["--watch-history-events", "200"]);
    let client = server.client().await;
    client
        .create("/s", "", &CreateOptions::default())
        .await
        .unwrap();
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let create = pb::WatchCreate {
        watch_id: 7,
        path: "/s".into(),
        with_data: true,
        ..pb::WatchCreate::default()
    };
    requests
        .send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::Create(create)),
        })
        .await
        .unwrap();
    let mut raw = pb::watch_client::WatchClient::new(
        coord_tests::pki::raw_channel(&server.client_address()).await,
    );
    let mut responses = raw
        .watch(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let created = responses.message().await.unwrap().unwrap();
    assert!(created.created);

    // 3,000 changes of 1 KiB while the watcher reads nothing; the member serves them all.
    for round in 0..3_000u32 {
        let data = vec![b'a' + (round % 26) as u8; 1024];
        client.set("/s", data, None).await.unwrap();
    }
    assert_eq!(client.get("/s").await.unwrap().stat.version, 3_000);

    // Reading again: what was already on its way arrives in order, then the cancellation.
    let mut last = 0;
    let canceled = loop {
        let response = tokio::time::timeout(Duration::from_secs(20), responses.message())
            .await
            .expect("the member answers")
            .unwrap()
            .expect("the stream stays open until the cancellation");
        if response.canceled {
            break response;
        }
        for event in &response.events {
            assert!(
                event.revision > last,
                "revision {} after {last}",
                event.revision
            );
            last = event.revision;
        }
    };
    assert_eq!(
        canceled.cancel_reason,
        pb::CancelReason::TooSlow as i32,
        "{}",
        canceled.cancel_message
    );
    assert!(canceled.compact_revision > last + 1, "{canceled:?}");
    assert!(
        canceled
            .cancel_message
            .contains(&format!("resume from revision {}", last + 1)),
        "{}",
        canceled.cancel_message
    );
    eprintln!(
        "slow watcher read up to revision {last}, cancelled with history starting at {}",
        canceled.compact_revision
    );
}

/// The watches of one client share streams (a thousand to a stream): each of 2,500 watches on
/// one member gets exactly the events of its own node, whatever stream it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_watches_of_one_client_each_get_only_their_own_events() {
    use coord_client::{Op, Txn};
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    let client = server.client().await;
    client
        .create("/m", "", &CreateOptions::default())
        .await
        .unwrap();
    const WATCHES: usize = 2_500;
    let mut creators = Vec::new();
    for creator in 0..8 {
        let client = client.clone();
        creators.push(tokio::spawn(async move {
            let mut watches = Vec::new();
            for index in (creator..WATCHES).step_by(8) {
                let options = WatchOptions {
                    path: format!("/m/n{index}"),
                    ..WatchOptions::default()
                };
                watches.push((index, client.watch(options).await.unwrap()));
            }
            watches
        }));
    }
    let mut watches = Vec::new();
    for creator in creators {
        watches.extend(creator.await.unwrap());
    }
    // Every node created, a hundred to a revision.
    for first in (0..WATCHES).step_by(100) {
        let txn = (first..first + 100).fold(Txn::new(), |txn, index| {
            txn.then(Op::create(
                &format!("/m/n{index}"),
                "",
                &CreateOptions::default(),
            ))
        });
        assert!(client.txn(txn).await.unwrap().succeeded);
    }
    for (index, watch) in &mut watches {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .unwrap_or_else(|_| panic!("no event for /m/n{index}"))
            .unwrap()
            .unwrap();
        assert_eq!(event.kind, EventKind::Created);
        assert_eq!(event.path, format!("/m/n{index}"));
    }
    // Nothing else came: a second change to one node reaches its watch, and it is the next.
    let (index, watch) = &mut watches[WATCHES - 1];
    client
        .set(&format!("/m/n{index}"), "again", None)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, EventKind::DataChanged);
    assert_eq!(event.path, format!("/m/n{index}"));
}

/// A watch whose reader stops is taken off the stream it shares with the client's other
/// watches: they keep getting every event while it is not read, and when it is read again it
/// delivers every event too, in order, once, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_not_read_does_not_hold_up_the_other_watches_of_its_client() {
    use coord_client::{Op, Txn};
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    let client = server.client().await;
    client
        .create("/slow", "", &CreateOptions::default())
        .await
        .unwrap();
    let options = WatchOptions {
        path: "/slow".into(),
        recursive: true,
        kinds: vec![coord_client::EventFilter::Created],
        ..WatchOptions::default()
    };
    let mut unread = client.watch(options.clone()).await.unwrap();
    let mut read = client.watch(options).await.unwrap();
    // 400 revisions of 10 creations each: far more than the unread watch buffers.
    const REVISIONS: usize = 400;
    const PER_REVISION: usize = 10;
    let reader = tokio::spawn(async move {
        let mut paths = Vec::new();
        while paths.len() < REVISIONS * PER_REVISION {
            let event = tokio::time::timeout(Duration::from_secs(30), read.next())
                .await
                .expect("the read watch keeps getting events")
                .unwrap()
                .unwrap();
            paths.push(event.path);
        }
        paths
    });
    for revision in 0..REVISIONS {
        let txn = (0..PER_REVISION).fold(Txn::new(), |txn, index| {
            let path = format!("/slow/r{revision:04}-{index:02}");
            txn.then(Op::create(&path, "", &CreateOptions::default()))
        });
        assert!(client.txn(txn).await.unwrap().succeeded);
    }
    let expected: Vec<String> = (0..REVISIONS)
        .flat_map(|revision| {
            (0..PER_REVISION).map(move |index| format!("/slow/r{revision:04}-{index:02}"))
        })
        .collect();
    let paths = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the read watch got every event while the other was not read")
        .unwrap();
    assert_eq!(paths, expected);
    let mut late = Vec::new();
    let mut last_revision = 0;
    while late.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(30), unread.next())
            .await
            .expect("the unread watch resumes once read")
            .unwrap()
            .unwrap();
        assert!(event.revision >= last_revision);
        last_revision = event.revision;
        late.push(event.path);
    }
    assert_eq!(late, expected);
}

/// `AwaitTurn` over raw gRPC on one member: an answer at once when asked not to wait; a
/// waiting call answered granted once its predecessor goes, at a revision that shows it gone;
/// `NOT_FOUND` when the waiting node itself goes; not granted when the wait is over; and
/// refusals with typed errors for a bad rule and for a wait past `--max-watches`, while the
/// member keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_turn_answers_when_the_predecessor_goes_and_refuses_what_it_cannot_serve() {
    use coord_proto::v1 as pb;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = coord_tests::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let server = ServerProcess::start_single(
        dir.path(),
        &["--max-watches", "1", "--listen-metrics", &metrics],
    );
    let client = server.client().await;
    let session = client.open_session(Duration::from_secs(30)).await.unwrap();
    client
        .create("/q", "", &CreateOptions::default())
        .await
        .unwrap();
    let queued = CreateOptions {
        kind: coord_client::NodeKind::Ephemeral,
        sequential: true,
        session_id: session.id(),
        ..CreateOptions::default()
    };
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(client.create("/q/lock-", "", &queued).await.unwrap());
    }
    let ask = |index: usize, wait_ms: u64| pb::AwaitTurnRequest {
        directory: "/q".into(),
        name: nodes[index].path.rsplit('/').next().unwrap().to_owned(),
        token: nodes[index].stat.create_revision,
        blocking_prefixes: vec!["lock-".into()],
        permits: 1,
        read: Some(pb::ReadOptions {
            consistency: pb::Consistency::MinRevision as i32,
            min_revision: nodes[index].stat.create_revision,
        }),
        wait_ms,
    };
    let raw = pb::watch_client::WatchClient::new(
        coord_tests::pki::raw_channel(&server.client_address()).await,
    );

    // Not waiting: the first node holds, the second has one blocker.
    let now = raw
        .clone()
        .await_turn(ask(0, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(now.granted && !now.waited, "{now:?}");
    let now = raw
        .clone()
        .await_turn(ask(1, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(!now.granted && now.blockers == 1, "{now:?}");

    // A wait the member holds until the first node goes; a second waiting call finds no
    // place left (`--max-watches 1`), with a typed error.
    let waiting = wait_in_background(&raw, ask(1, 20_000));
    waiting_on_member(metrics_port, 1.0).await;
    let refused = raw.clone().await_turn(ask(2, 20_000)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("--max-watches"), "{refused:?}");
    assert!(!waiting.is_finished(), "the member holds the wait");
    client
        .delete(&nodes[0].path, coord_client::DeleteOptions::default())
        .await
        .unwrap();
    let granted = answer_of(waiting, "the predecessor went")
        .await
        .expect("granted")
        .into_inner();
    assert!(granted.granted && granted.waited, "{granted:?}");
    // Checked at the deletion's revision or later: after the last create before it.
    let revision = granted.header.as_ref().unwrap().revision;
    assert!(revision > nodes[3].stat.create_revision, "{granted:?}");

    // The third node waits on the second; deleting the third itself ends its wait.
    waiting_on_member(metrics_port, 0.0).await;
    let waiting = wait_in_background(&raw, ask(2, 20_000));
    waiting_on_member(metrics_port, 1.0).await;
    client
        .delete(&nodes[2].path, coord_client::DeleteOptions::default())
        .await
        .unwrap();
    let gone = answer_of(waiting, "the node went")
        .await
        .expect_err("the node is gone");
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");

    // A wait that ends first: the fourth node, behind the second, not granted after 300 ms.
    let over = raw
        .clone()
        .await_turn(ask(3, 300))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !over.granted && over.blockers == 1 && over.waited,
        "{over:?}"
    );

    // A bad rule, a name without a sequence, and a missing directory.
    let mut bad = ask(3, 0);
    bad.blocking_prefixes.clear();
    let refused = raw.clone().await_turn(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let mut bad = ask(3, 0);
    bad.name = "ready".into();
    let refused = raw.clone().await_turn(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let mut bad = ask(3, 0);
    bad.directory = "/nowhere".into();
    let refused = raw.clone().await_turn(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    // The member still serves.
    client.get("/q").await.unwrap();
}

type TurnAnswer = Result<tonic::Response<coord_proto::v1::AwaitTurnResponse>, tonic::Status>;

/// Sends `request` on a task of its own.
fn wait_in_background(
    raw: &coord_proto::v1::watch_client::WatchClient<tonic::transport::Channel>,
    request: coord_proto::v1::AwaitTurnRequest,
) -> tokio::task::JoinHandle<TurnAnswer> {
    let mut raw = raw.clone();
    tokio::spawn(async move { raw.await_turn(request).await })
}

/// The answer of a wait sent by `wait_in_background`, due soon after `what`.
async fn answer_of(waiting: tokio::task::JoinHandle<TurnAnswer>, what: &str) -> TurnAnswer {
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap_or_else(|_| panic!("answered soon after {what}"))
        .expect("the waiting task does not panic")
}

/// Waits until the member whose metrics listen on `metrics_port` serves `count` watches (a
/// waiting `AwaitTurn` is one).
async fn waiting_on_member(metrics_port: u16, count: f64) {
    eventually(
        "the member's watch count",
        Duration::from_secs(10),
        || async {
            let (_, body) = http_get(metrics_port, "/metrics")?;
            (metric_value(&body, "coord_watches_active")? == count).then_some(())
        },
    )
    .await;
}
