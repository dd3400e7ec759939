//! Writes the leader gathers into one log entry (`Command::Batch`), on a real three-member
//! cluster: concurrent writes share entries, yet each keeps a revision of its own, in the
//! order it was applied, and the followers read them all, linearizably and at a revision.

use std::time::Duration;

use coord_client::{Consistency, CreateOptions};
use coord_tests::metrics::{http_get, metric_value};
use coord_tests::{free_port, Cluster};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_keeps_its_own_revision() {
    let metrics_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster = Cluster::start_each(3, |id| {
        let port = metrics_ports[usize::try_from(id - 1).expect("small ids")];
        vec!["--listen-metrics".to_owned(), format!("127.0.0.1:{port}")]
    });
    let leader = cluster.wait_for_leader(&[1, 2, 3], LEADER_WAIT).await;
    let leader_metrics = metrics_ports[usize::try_from(leader - 1).expect("small ids")];
    let client = cluster.direct_client_of(leader).await;
    client
        .create("/batched", "", &CreateOptions::default())
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
            round.spawn(async move { client.create("/batched/n-", "x", &options).await });
        }
        while let Some(result) = round.join_next().await {
            let node = result
                .expect("a writer does not panic")
                .expect("every concurrent create succeeds");
            created.push((node.stat.create_revision, node.path));
        }
        // Each proposed entry counts its writes: a sum above the count means some entry
        // held several.
        let (_, metrics) = http_get(leader_metrics, "/metrics").expect("the leader's metrics");
        let entries = metric_value(&metrics, "coord_server_writes_per_entry_count");
        let writes = metric_value(&metrics, "coord_server_writes_per_entry_sum");
        if writes > entries {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {} writes no entry held more than one ({entries:?} entries, {writes:?} writes)",
            created.len()
        );
    }
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
