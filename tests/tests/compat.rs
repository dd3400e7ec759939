//! Compatibility: a data directory written by an earlier build (`tests/fixtures/data-format-N`,
//! made by `coord-fixture`) is read by this one: the same tree, its session and ephemeral node,
//! and its remembered write outcome, then new writes on top.

use std::path::Path;
use std::time::Duration;

use coord_client::{Consistency, CreateOptions};
use coord_tests::fixture::{
    copy_fixture, send_remembered_write, DIGEST_FILE, FIXTURE_ARGS, REMEMBERED_PATH,
};
use coord_tests::{tree_digest, ServerProcess};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

async fn replay(fixture: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::prepare(1, dir.path(), &FIXTURE_ARGS);
    copy_fixture(fixture, &server.data_dir);
    server.start();
    let client = server.client().await;

    // The tree as the earlier build left it, read back node by node.
    let expected = std::fs::read_to_string(fixture.join(DIGEST_FILE)).unwrap();
    let digest = tree_digest(&client, "/", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        digest.join("\n") + "\n",
        expected,
        "{}: tree differs",
        fixture.display()
    );

    // The session that owns the ephemeral node survived, with it.
    let sessions = client.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].ephemeral_nodes, ["/locks/holder"]);

    // The remembered write id answers with its first outcome and applies nothing.
    let before = client.get(REMEMBERED_PATH).await.unwrap();
    let version = send_remembered_write(&server.client_address(), "again").await;
    assert_eq!(version, before.stat.version);
    assert_eq!(client.get(REMEMBERED_PATH).await.unwrap().data, before.data);

    // And the member takes new writes on top.
    client
        .create("/after-replay", "x", &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(server.terminate(Duration::from_secs(20)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_data_directory_is_read_by_this_build() {
    let mut fixtures: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("data-format-"))
        })
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no fixture under {FIXTURES}");
    for fixture in fixtures {
        replay(&fixture).await;
    }
}
