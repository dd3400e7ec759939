//! The data-directory fixture: a small directory written by one build (a snapshot, a log after
//! it, a session with an ephemeral node, a remembered write id), checked into
//! `tests/fixtures/data-format-N/` and replayed by every later build (`tests/tests/compat.rs`).
//! `coord-fixture DIR` writes a new one; see ARCHITECTURE.md, "Formats and compatibility".

use std::path::Path;
use std::time::Duration;

use coord_client::{Client, Consistency, CreateOptions, NodeKind, Op, Txn};
use coord_proto::v1 as pb;
use coord_proto::v1::namespace_client::NamespaceClient;
use coord_proto::v1::sessions_client::SessionsClient;

use crate::{tree_digest, ServerProcess};

/// Flags the fixture member was started with; the replay must use the same (they fix the
/// cluster id), except ports.
pub const FIXTURE_ARGS: [&str; 8] = [
    "--cluster-name",
    "fixture",
    "--initial-cluster",
    "1=fixture-member-1:7401",
    "--snapshot-entries",
    "8",
    "--snapshot-keep-entries",
    "2",
];

/// The write id of the fixture's remembered write, and the value it set.
pub const REMEMBERED_CLIENT: &str = "fixture-writer";
pub const REMEMBERED_SEQUENCE: u64 = 1;
pub const REMEMBERED_PATH: &str = "/app/remembered";

/// The digest file written beside the data directory.
pub const DIGEST_FILE: &str = "expected-tree.txt";

fn remembered_set(data: &str) -> pb::SetRequest {
    pb::SetRequest {
        path: REMEMBERED_PATH.into(),
        data: data.as_bytes().to_vec(),
        expected_version: None,
        write_id: Some(pb::WriteId {
            client_id: REMEMBERED_CLIENT.into(),
            sequence: REMEMBERED_SEQUENCE,
            answered_below: 0,
        }),
    }
}

/// Sends the fixture's remembered write (with its fixed write id) and returns the version the
/// node has afterwards.
pub async fn send_remembered_write(address: &str, data: &str) -> u64 {
    let mut namespace = NamespaceClient::connect(format!("http://{address}"))
        .await
        .expect("the member answers");
    let response = namespace
        .set(remembered_set(data))
        .await
        .expect("the remembered write is answered")
        .into_inner();
    response.stat.expect("a set returns a stat").version
}

/// Writes a fixture data directory to `target/data` and its digest to `target/DIGEST_FILE`.
pub async fn write_fixture(target: &Path) {
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut server = ServerProcess::start_single(work.path(), &FIXTURE_ARGS);
    let client = server.client().await;
    fill(&client, &server.client_address()).await;
    let digest = tree_digest(&client, "/", Consistency::Linearizable)
        .await
        .expect("the tree can be read");
    assert_eq!(server.terminate(Duration::from_secs(20)), Some(0));
    let data = target.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).expect("the old fixture can be removed");
    }
    copy_data_dir(&server.data_dir, &data);
    std::fs::write(target.join(DIGEST_FILE), digest.join("\n") + "\n")
        .expect("the digest can be written");
}

/// Enough writes of every kind for a snapshot and a log after it.
async fn fill(client: &Client, address: &str) {
    let parents = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    client.create("/app/config", "v1", &parents).await.unwrap();
    client.set("/app/config", "v2", Some(0)).await.unwrap();
    client.create(REMEMBERED_PATH, "", &parents).await.unwrap();
    assert_eq!(send_remembered_write(address, "remembered").await, 1);
    let sequential = CreateOptions {
        sequential: true,
        ..CreateOptions::default()
    };
    for _ in 0..3 {
        client
            .create("/app/job-", "job", &sequential)
            .await
            .unwrap();
    }
    client
        .delete("/app/job-0000000001", Default::default())
        .await
        .unwrap();
    let container = CreateOptions {
        kind: NodeKind::Container,
        ..CreateOptions::default()
    };
    client.create("/locks", "", &container).await.unwrap();
    let mut sessions = SessionsClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let session = sessions
        .open(pb::SessionOpenRequest {
            ttl_ms: 3_600_000,
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let ephemeral = CreateOptions {
        kind: NodeKind::Ephemeral,
        session_id: session,
        ..CreateOptions::default()
    };
    client
        .create("/locks/holder", "me", &ephemeral)
        .await
        .unwrap();
    let txn = Txn::new()
        .then(Op::create("/txn-a", "a", &CreateOptions::default()))
        .then(Op::create("/txn-b", "b", &CreateOptions::default()));
    assert!(client.txn(txn).await.unwrap().succeeded);
    client.set("/app/config", "v3", None).await.unwrap();
}

/// Copies a data directory, leaving out RocksDB's own info logs and lock file, and the zeros a
/// log segment is allocated with past its records (`trimmed_segment`).
fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the fixture directory can be created");
    for entry in std::fs::read_dir(from).expect("the data directory can be read") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("LOG") || name == "LOCK" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_data_dir(&path, &to.join(&name));
        } else if name.ends_with(".seg") {
            let bytes = std::fs::read(&path).expect("a log segment can be read");
            std::fs::write(to.join(&name), trimmed_segment(&bytes))
                .expect("a log segment can be copied");
        } else {
            std::fs::copy(&path, to.join(&name)).expect("a data file can be copied");
        }
    }
}

/// A log segment without the zeros it was allocated with past its last record: everything up to
/// the last non-zero byte, rounded up to a whole 4 KiB (so a record whose body ends in zeros
/// keeps them), never longer than the file. A shorter segment reads back the same: its records
/// end where its bytes do.
fn trimmed_segment(bytes: &[u8]) -> &[u8] {
    let used = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |at| at + 1);
    &bytes[..used.next_multiple_of(4096).min(bytes.len())]
}

/// Copies the fixture's data directory to `to`, for a replay.
pub fn copy_fixture(fixture: &Path, to: &Path) {
    copy_data_dir(&fixture.join("data"), to);
}
