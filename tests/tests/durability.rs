//! Durability of a single member: acknowledged writes survive SIGKILL, and a restart from a
//! snapshot plus the log tail gives back the same tree.

use std::time::Duration;

use coord_client::{Consistency, CreateOptions, Stat};
use coord_tests::{eventually, tree_digest, ServerProcess};

const NODES: usize = 1000;
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_and_snapshot_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_single(dir.path(), &[]);
    let client = server.client().await;

    // Phase 1: 1,000 creates from 8 concurrent writers; remember every acknowledged stat.
    client
        .create("/durable", "", &CreateOptions::default())
        .await
        .unwrap();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for index in (writer..NODES).step_by(WRITERS) {
                let path = format!("/durable/n{index:04}");
                let created = client
                    .create(&path, format!("value-{index}"), &CreateOptions::default())
                    .await
                    .unwrap();
                acknowledged.push((path, created.stat));
            }
            acknowledged
        }));
    }
    let mut acknowledged: Vec<(String, Stat)> = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert_eq!(acknowledged.len(), NODES);

    // Phase 2: SIGKILL right after the last acknowledgement, restart on the same directory.
    server.kill9();
    server.restart();
    let client = server.client().await;
    for (path, stat) in &acknowledged {
        let node = client
            .get(path)
            .await
            .unwrap_or_else(|error| panic!("{path} lost after SIGKILL: {error}"));
        let index: usize = path.trim_start_matches("/durable/n").parse().unwrap();
        assert_eq!(
            node.data,
            format!("value-{index}").as_bytes(),
            "{path} data"
        );
        assert_eq!(&node.stat, stat, "{path} stat");
    }
    assert_eq!(client.children("/durable").await.unwrap().len(), NODES);

    // Phase 3: restart with a small snapshot threshold, write until a snapshot is taken and
    // the log purged behind it, then SIGKILL and compare the whole tree.
    server.set_extra_args(&["--snapshot-entries", "200", "--snapshot-keep-entries", "10"]);
    server.restart();
    let client = server.client().await;
    for index in 0..300 {
        client
            .set(
                &format!("/durable/n{index:04}"),
                format!("updated-{index}"),
                None,
            )
            .await
            .unwrap();
    }
    let status = eventually("a snapshot and a purge", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let status = client.cluster_status().await.ok()?;
            (status.snapshot_index > 0 && status.purged_index > 0).then_some(status)
        }
    })
    .await;
    // Some writes after the snapshot, so the restart needs snapshot + log tail.
    for index in 300..350 {
        client
            .set(
                &format!("/durable/n{index:04}"),
                format!("after-snapshot-{index}"),
                None,
            )
            .await
            .unwrap();
    }
    let before = tree_digest(&client, "/", Consistency::Linearizable)
        .await
        .unwrap();
    server.kill9();
    server.restart();
    let client = server.client().await;
    let after = tree_digest(&client, "/", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(before.len(), NODES + 2, "root, /durable and the nodes");
    assert_eq!(
        before, after,
        "tree changed across a restart from snapshot {} + log",
        status.snapshot_index
    );
    let restarted = client.cluster_status().await.unwrap();
    assert!(
        restarted.snapshot_index >= status.snapshot_index,
        "the snapshot survived the restart"
    );
}
