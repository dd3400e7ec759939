//! The health and metrics listener (`--listen-metrics`) of a real member: `/livez` answers,
//! `/readyz` is 200 once the member leads (and says why not before), `/metrics` carries the
//! documented metrics in Prometheus text format and its values move under load.

use std::io::{Read, Write};
use std::time::Duration;

use coord_client::CreateOptions;
use coord_tests::{eventually, free_port, ServerProcess};

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: coord\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the unlabelled metric `name` in `text`.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_and_move_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let server = ServerProcess::start_single(dir.path(), &["--listen-metrics", &address]);
    let client = server.client().await;
    assert_eq!(get(port, "/livez"), Some((200, "ok\n".to_owned())));
    eventually(
        "the member is ready once it leads",
        Duration::from_secs(10),
        || async { (get(port, "/readyz")?.0 == 200).then_some(()) },
    )
    .await;
    let (status, before) = get(port, "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    for name in [
        "coord_server_has_leader",
        "coord_server_is_leader",
        "coord_server_leader_has_quorum",
        "coord_server_leader_changes_seen_total",
        "coord_raft_term",
        "coord_raft_applied_index",
        "coord_raft_last_log_index",
        "coord_db_data_bytes",
        "coord_sessions_open",
        "coord_watches_active",
        "coord_auth_denied_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(value(&before, name).is_some(), "{name} missing:\n{before}");
    }
    assert_eq!(value(&before, "coord_server_is_leader"), Some(1.0));
    assert!(value(&before, "coord_server_leader_changes_seen_total") >= Some(1.0));

    for index in 0..50 {
        let path = format!("/load-{index}");
        client
            .create(&path, "x", &CreateOptions::default())
            .await
            .unwrap();
    }
    let _session = client.open_session(Duration::from_secs(10)).await.unwrap();
    let (_, after) = get(port, "/metrics").unwrap();
    let moved = |name: &str| value(&after, name).unwrap() - value(&before, name).unwrap();
    assert!(moved("coord_raft_applied_index") >= 50.0, "{after}");
    assert!(moved("coord_db_data_bytes") > 0.0);
    assert_eq!(value(&after, "coord_sessions_open"), Some(1.0));
    assert_eq!(get(port, "/nothing").map(|(status, _)| status), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_why_a_member_without_a_quorum_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    // Member 1 of a three-member cluster whose other members never start: no leader.
    let mut member = ServerProcess::prepare(1, dir.path(), &["--listen-metrics", &address]);
    member.set_initial_cluster(&format!(
        "1={},2=127.0.0.1:{},3=127.0.0.1:{}",
        member.peer_address(),
        free_port(),
        free_port()
    ));
    member.start();
    let (status, body) = eventually("the listener answers", Duration::from_secs(10), || async {
        get(port, "/readyz")
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no leader known"), "{body}");
    assert_eq!(get(port, "/livez").map(|(status, _)| status), Some(200));
}
