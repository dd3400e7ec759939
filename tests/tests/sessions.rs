//! Sessions and ephemeral nodes on three real members: a holder that stops sending keep-alives
//! loses its node after its TTL; a holder that closes loses it at once; a healthy session keeps
//! its node through repeated leader kills; a dead client's session ends within its bound even
//! while leaders keep dying.
//!
//! Tests in this file run one at a time (`SERIAL`).

use std::time::{Duration, Instant};

use coord_client::{
    Client, ClientOptions, Consistency, CreateOptions, Error, NodeKind, SessionState,
};
use coord_tests::{eventually, Cluster, ToolProcess};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Members' election timeout is 500 ms to 1 s (`ServerProcess`); checkpoints every second.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_secs(1);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const SERVER_ARGS: &[&str] = &["--session-checkpoint-interval", "1s"];

const LEADER_WAIT: Duration = Duration::from_secs(30);

/// Whether `path` exists, read linearizably through any member; `None` while no member can
/// answer (a failover).
async fn exists(client: &Client, path: &str) -> Option<bool> {
    match client.get_with(path, Consistency::Linearizable).await {
        Ok(_) => Some(true),
        Err(Error::NoNode { .. }) => Some(false),
        Err(_) => None,
    }
}

async fn short_timeout_client(cluster: &Cluster) -> Client {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        discover_members: false,
        tls: coord_tests::pki::harness_client_tls(),
        token: None,
    };
    Client::connect_with(cluster.endpoints(), options)
        .await
        .expect("some member answers")
}

/// Starts `coordctl create --ephemeral --hold` and waits until the node is readable everywhere.
async fn hold(cluster: &Cluster, path: &str, ttl: &str) -> ToolProcess {
    let holder = ToolProcess::coordctl(
        &cluster.endpoints(),
        &[
            "create",
            "--ephemeral",
            "--ttl",
            ttl,
            "--hold",
            path,
            "held",
        ],
        cluster.dir.path(),
    );
    for id in cluster.ids() {
        let client = cluster.client_of(id).await;
        eventually(
            &format!("{path} to appear on member {id}"),
            Duration::from_secs(20),
            || async {
                let node = client
                    .get_with(path, Consistency::Serializable)
                    .await
                    .ok()?;
                (node.data == b"held").then_some(())
            },
        )
        .await;
    }
    assert_eq!(holder.stdout().trim(), path);
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ephemeral_node_goes_when_its_holder_stops_sending_keep_alives() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, SERVER_ARGS);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let mut holder = hold(&cluster, "/frozen", "2s").await;

    holder.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let client = short_timeout_client(&cluster).await;
    eventually(
        "the frozen holder's node to be deleted",
        Duration::from_secs(20),
        || async { (exists(&client, "/frozen").await == Some(false)).then_some(()) },
    )
    .await;
    let gone_after = stopped.elapsed();
    eprintln!("ephemeral node deleted {gone_after:?} after its holder stopped");
    // The last keep-alive went out at most a third of the TTL before the stop.
    assert!(
        gone_after >= Duration::from_millis(1_000),
        "deleted after {gone_after:?}, before the 2 s TTL could have run out"
    );
    // Every member agrees, and the session is gone from the listing.
    for id in cluster.ids() {
        let member = cluster.client_of(id).await;
        eventually(
            &format!("member {id} to apply the expiry"),
            Duration::from_secs(10),
            || async {
                let result = member.get_with("/frozen", Consistency::Serializable).await;
                matches!(result, Err(Error::NoNode { .. })).then_some(())
            },
        )
        .await;
    }
    assert!(client.list_sessions().await.unwrap().is_empty());

    // Resumed, the holder learns it lost the session and fails.
    holder.signal(libc::SIGCONT);
    let code = holder.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "stderr: {}", holder.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_is_interrupted_closes_its_session_and_the_node_goes_at_once() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, SERVER_ARGS);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let mut holder = hold(&cluster, "/leaving", "30s").await;
    let client = short_timeout_client(&cluster).await;
    let sessions = client.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].ttl, Duration::from_secs(30));
    assert_eq!(sessions[0].ephemeral_nodes, ["/leaving"]);

    holder.signal(libc::SIGTERM);
    assert_eq!(
        holder.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        holder.stderr()
    );
    // Closed, not expired: gone well before the 30 s TTL.
    assert_eq!(exists(&client, "/leaving").await, Some(false));
    assert!(client.list_sessions().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_session_keeps_its_node_through_five_leader_kills() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, SERVER_ARGS);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = short_timeout_client(&cluster).await;
    let session = client.open_session(Duration::from_secs(3)).await.unwrap();
    let options = CreateOptions {
        kind: NodeKind::Ephemeral,
        session_id: session.id(),
        ..CreateOptions::default()
    };
    client.create("/alive", "yes", &options).await.unwrap();
    let mut states = session.watch_state();

    for round in 1..=5 {
        let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
        cluster.member(leader).kill9();
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
        cluster.wait_for_leader(&others, LEADER_WAIT).await;
        cluster.member(leader).start();
        let present = eventually(
            &format!("a read of /alive after kill {round}"),
            Duration::from_secs(20),
            || async { exists(&client, "/alive").await },
        )
        .await;
        assert!(
            present,
            "round {round}: the healthy session's node is gone\n{}",
            cluster.log_tails(40)
        );
        // A healthy client renews with the new leader before the next failover.
        eventually(
            &format!("the session to be renewed after kill {round}"),
            Duration::from_secs(20),
            || async {
                let renewed = session.state() == SessionState::Connected && session.is_safe();
                renewed.then_some(())
            },
        )
        .await;
    }
    assert_ne!(*states.borrow_and_update(), SessionState::Expired);
    assert_eq!(session.close().await.unwrap(), 1);
    assert_eq!(exists(&client, "/alive").await, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_clients_session_ends_within_its_bound_while_leaders_keep_dying() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, SERVER_ARGS);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    // The shortest TTL the members grant: 5 × their 500 ms election timeout.
    let ttl = Duration::from_millis(2_500);
    let mut holder = hold(&cluster, "/orphan", "2500ms").await;
    holder.kill9();
    let died = Instant::now();
    let client = short_timeout_client(&cluster).await;

    // Kill the leader every 3 s, restarting each victim, until the node is gone.
    let mut kills = 0;
    let gone_after = loop {
        if exists(&client, "/orphan").await == Some(false) {
            break died.elapsed();
        }
        assert!(
            died.elapsed() < Duration::from_secs(60),
            "the dead session never ended"
        );
        if died.elapsed() >= Duration::from_millis(500 + 3_000 * kills) {
            if let Some(leader) = cluster.current_leader().await {
                cluster.member(leader).kill9();
                kills += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                cluster.member(leader).start();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Measured from the holder's death, which is after its last keep-alive. The last term
    // covers polling, the keeper's tick, one commit, and a leader that was itself just
    // restarted: replaying the log, it counts the recorded remainder from its restart.
    let bound = ttl + ELECTION_TIMEOUT_MAX + CHECKPOINT_INTERVAL + Duration::from_millis(1_500);
    eprintln!(
        "dead session ended {gone_after:?} after its client died, through {kills} leader kills"
    );
    assert!(kills >= 1, "no leader was killed while the session lived");
    assert!(
        gone_after <= bound,
        "the dead session lived {gone_after:?}, more than {bound:?}, through {kills} leader kills\n{}",
        cluster.log_tails(20)
    );
}

/// Split brain prevented by fencing: a holder whose session expired while it was frozen keeps
/// its old token, and the server rejects its fenced write while accepting the new holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_write_from_an_expired_holder_is_rejected_and_the_new_holders_accepted() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3, SERVER_ARGS);
    cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let client = short_timeout_client(&cluster).await;
    let make_parents = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    client
        .create("/db/rows/r1", "v0", &make_parents)
        .await
        .unwrap();
    client
        .create("/locks", "", &CreateOptions::default())
        .await
        .unwrap();

    // The first holder takes the lock node and remembers its token, then freezes past its TTL.
    let mut first = hold(&cluster, "/locks/db", "2s").await;
    let first_token = client.get("/locks/db").await.unwrap().stat.create_revision;
    assert!(
        client
            .check_fence("/locks/db", first_token)
            .await
            .unwrap()
            .current
    );
    first.signal(libc::SIGSTOP);
    eventually(
        "the frozen holder's lock node to go",
        Duration::from_secs(20),
        || async { (exists(&client, "/locks/db").await == Some(false)).then_some(()) },
    )
    .await;

    // A new holder takes over with a higher token.
    let second = client.open_session(Duration::from_secs(10)).await.unwrap();
    let ephemeral = CreateOptions {
        kind: NodeKind::Ephemeral,
        session_id: second.id(),
        ..CreateOptions::default()
    };
    let second_token = client
        .create("/locks/db", "second", &ephemeral)
        .await
        .unwrap()
        .stat
        .create_revision;
    assert!(second_token > first_token);
    let check = client.check_fence("/locks/db", first_token).await.unwrap();
    assert!(!check.current);
    assert_eq!(check.current_token, second_token);

    // The old holder, resumed, writes under its stale token: rejected, nothing changes.
    first.signal(libc::SIGCONT);
    let stale = coord_client::Txn::new()
        .fence("/locks/db", first_token)
        .then(coord_client::Op::set(
            "/db/rows/r1",
            "from-the-old-holder",
            None,
        ));
    match client.txn(stale).await {
        Err(Error::FenceRejected { token, current, .. }) => {
            assert_eq!((token, current), (first_token, second_token));
        }
        other => panic!("a stale fence must be rejected, got {other:?}"),
    }
    let fresh = coord_client::Txn::new()
        .fence("/locks/db", second_token)
        .then(coord_client::Op::set(
            "/db/rows/r1",
            "from-the-new-holder",
            None,
        ));
    assert!(client.txn(fresh).await.unwrap().succeeded);
    assert_eq!(
        client.get("/db/rows/r1").await.unwrap().data,
        b"from-the-new-holder"
    );
    assert_eq!(first.wait_exit(Duration::from_secs(20)), Some(1));
    second.close().await.unwrap();
}
