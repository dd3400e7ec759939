//! Writes gathered together, on a real three-member cluster: the leader's log entries
//! (`Command::Batch`) and a follower's forwards to the leader (`MessageKind::WriteBatch`).
//! Concurrent writes share entries and forwards, yet each keeps a revision of its own, in the
//! order it was applied, and every member reads them all.

use std::time::Duration;

use coord_client::{Consistency, CreateOptions};
use coord_tests::metrics::{http_get, metric_value};
use coord_tests::Cluster;
use tokio::time::Instant;

const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long the leader may take to learn that both followers apply batches (the greeter asks
/// every second) and then to put more than one write in an entry.
const BATCHING_WAIT: Duration = Duration::from_secs(60);
const WRITES_PER_ROUND: usize = 200;

/// The sequence number a sequential create appended to `path`.
fn sequence_of(path: &str) -> u64 {
    let digits = path
        .rsplit('-')
        .next()
        .expect("a sequential name has a suffix");
    digits.parse().expect("the suffix is a number")
}

/// A three-member cluster whose members serve metrics, and their metrics ports by id - 1.
async fn cluster_with_metrics() -> (Cluster, Vec<u16>, u64) {
    let (cluster, metrics_ports) = Cluster::start_with_metrics(3);
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    (cluster, metrics_ports, leader)
}

/// Creates `WRITES_PER_ROUND` sequential children of `parent` at once, round after round,
/// until the histogram `histogram` (`_count` and `_sum`) on the member whose metrics listen
/// on `metrics_port` shows that one of its observations held several writes; returns each
/// child's create revision and path.
async fn write_until_grouped(
    client: &coord_client::Client,
    parent: &str,
    metrics_port: u16,
    histogram: &str,
) -> Vec<(u64, String)> {
    client
        .create(parent, "", &CreateOptions::default())
        .await
        .expect("the parent is created");
    let sequential = CreateOptions {
        sequential: true,
        ..CreateOptions::default()
    };
    let deadline = Instant::now() + BATCHING_WAIT;
    let mut created = Vec::new();
    loop {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..WRITES_PER_ROUND {
            let (client, options) = (client.clone(), sequential.clone());
            let path = format!("{parent}/n-");
            round.spawn(async move { client.create(&path, "x", &options).await });
        }
        while let Some(result) = round.join_next().await {
            let node = result
                .expect("a writer does not panic")
                .expect("every concurrent create succeeds");
            created.push((node.stat.create_revision, node.path));
        }
        let (_, metrics) = http_get(metrics_port, "/metrics").expect("the member's metrics");
        let groups = metric_value(&metrics, &format!("{histogram}_count"));
        let writes = metric_value(&metrics, &format!("{histogram}_sum"));
        if writes > groups {
            return created;
        }
        assert!(
            Instant::now() < deadline,
            "after {} writes no {histogram} held more than one ({groups:?} groups, {writes:?} \
             writes)",
            created.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_keeps_its_own_revision() {
    let (cluster, metrics_ports, leader) = cluster_with_metrics().await;
    let leader_metrics = metrics_ports[usize::try_from(leader - 1).expect("small ids")];
    let client = cluster.direct_client_of(leader).await;
    // Each proposed entry counts its writes: a sum above the count means some entry held
    // several.
    let mut created = write_until_grouped(
        &client,
        "/batched",
        leader_metrics,
        "coord_server_writes_per_entry",
    )
    .await;
    created.sort();
    for pair in created.windows(2) {
        let ((earlier_revision, earlier), (later_revision, later)) = (&pair[0], &pair[1]);
        assert!(
            earlier_revision < later_revision,
            "{earlier} and {later} share revision {earlier_revision}"
        );
        assert!(
            sequence_of(earlier) < sequence_of(later),
            "{earlier} (revision {earlier_revision}) was numbered after {later} (revision \
             {later_revision}): names and revisions disagree on the order of apply"
        );
    }
    // The followers took the batch entries as they are: a refused entry would still reach
    // them in a snapshot, so their logs are the place to look.
    for member in &cluster.members {
        assert!(
            !member.log().contains("peer message refused"),
            "member {} refused its leader's entries",
            member.id
        );
    }
    let (last_revision, last_path) = created.last().expect("writes were made").clone();
    for follower in cluster.ids().into_iter().filter(|id| *id != leader) {
        let reader = cluster.direct_client_of(follower).await;
        let children = reader
            .children("/batched")
            .await
            .expect("a linearizable listing on a follower");
        assert_eq!(
            children.len(),
            created.len(),
            "follower {follower} misses writes"
        );
        let node = reader
            .get_with(&last_path, Consistency::MinRevision(last_revision))
            .await
            .expect("the last write is readable at its revision");
        assert_eq!(node.data, b"x");
        assert!(node.header.revision >= last_revision);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_a_follower_forwards_travel_together_and_each_gets_its_own_answer() {
    let (cluster, metrics_ports, leader) = cluster_with_metrics().await;
    let follower = cluster.a_follower(leader);
    let follower_metrics = metrics_ports[usize::try_from(follower - 1).expect("small ids")];
    // A client of the follower alone: every write it makes is forwarded.
    let client = cluster.direct_client_of(follower).await;
    let created = write_until_grouped(
        &client,
        "/forwarded",
        follower_metrics,
        "coord_server_writes_per_forward",
    )
    .await;
    let revisions: std::collections::BTreeSet<u64> =
        created.iter().map(|(revision, _)| *revision).collect();
    assert_eq!(
        revisions.len(),
        created.len(),
        "two writes share a revision"
    );
    let leader_client = cluster.direct_client_of(leader).await;
    for (revision, path) in &created {
        let node = leader_client
            .get(path)
            .await
            .expect("each answered write is on the leader");
        assert_eq!(node.stat.create_revision, *revision, "{path}");
    }
    let children = leader_client
        .children("/forwarded")
        .await
        .expect("a listing on the leader");
    assert_eq!(
        children.len(),
        created.len(),
        "a write that was not answered was applied"
    );
    let leader_log = cluster
        .members
        .iter()
        .find(|member| member.id == leader)
        .expect("the leader is a member")
        .log();
    assert!(
        !leader_log.contains("peer message refused"),
        "the leader refused a forward"
    );
}
