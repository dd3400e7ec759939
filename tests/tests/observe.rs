//! The health and metrics listener (`--listen-metrics`) of a real member: `/livez` answers,
//! `/readyz` is 200 once the member leads (and says why not before), `/metrics` carries the
//! documented metrics in Prometheus text format and its values move under load.

use std::time::Duration;

use coord_client::CreateOptions;
use coord_tests::metrics::{http_get as get, metric_value as value};
use coord_tests::{eventually, free_port, ServerProcess};

/// The value of `name` with every one of `labels` (`key="value"`) in `text`.
fn labelled(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.trim().parse().ok())
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
        "coord_raft_append_streams_given_up_total",
        "coord_peer_connections_opened_total",
        "coord_raft_term",
        "coord_raft_applied_index",
        "coord_raft_last_log_index",
        "coord_db_data_bytes",
        "coord_sessions_open",
        "coord_watches_active",
        "coord_auth_denied_total",
        "coord_server_proposals_committed_total",
        "coord_server_proposals_applied_total",
        "coord_server_proposals_pending",
        "coord_server_proposals_failed_total",
        "coord_server_writes_per_entry_count",
        "coord_disk_log_append_duration_seconds_count",
        "coord_apply_duration_seconds_count",
        "coord_snapshot_save_duration_seconds_count",
        "coord_snapshot_size_bytes",
        "coord_db_total_size_bytes",
        "coord_write_ids_clients",
        "coord_sessions_expired_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(value(&before, name).is_some(), "{name} missing:\n{before}");
    }
    assert_eq!(value(&before, "coord_server_is_leader"), Some(1.0));
    assert!(value(&before, "coord_server_leader_changes_seen_total") >= Some(1.0));

    let watching = coord_client::WatchOptions {
        path: "/".into(),
        recursive: true,
        ..coord_client::WatchOptions::default()
    };
    let mut watch = client.watch(watching).await.unwrap();
    for index in 0..50 {
        let path = format!("/load-{index}");
        client
            .create(&path, "x", &CreateOptions::default())
            .await
            .unwrap();
    }
    let _session = client.open_session(Duration::from_secs(10)).await.unwrap();
    assert!(client.get("/missing").await.is_err());
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event arrives")
        .expect("the watch is open")
        .expect("an event");
    let (_, after) = get(port, "/metrics").unwrap();
    let creates = ["method=\"coord.v1.Namespace/Create\"", "code=\"Ok\""];
    let created = labelled(&after, "coord_grpc_requests_total", &creates);
    assert!(created >= Some(50.0), "{after}");
    let missing = ["method=\"coord.v1.Namespace/Get\"", "code=\"NotFound\""];
    assert!(
        labelled(&after, "coord_grpc_requests_total", &missing) >= Some(1.0),
        "{after}"
    );
    assert!(value(&after, "coord_grpc_requests_in_flight").is_some());
    let sent = |text: &str| value(text, "coord_watch_events_sent_total").unwrap();
    assert!(sent(&after) > sent(&before), "{after}");
    assert_eq!(value(&after, "coord_watches_active"), Some(1.0));
    assert_eq!(
        value(&after, "coord_watches_cancelled_too_slow_total"),
        Some(0.0)
    );
    let moved = |name: &str| value(&after, name).unwrap() - value(&before, name).unwrap();
    assert!(moved("coord_raft_applied_index") >= 50.0, "{after}");
    assert!(
        moved("coord_server_proposals_committed_total") >= 50.0,
        "{after}"
    );
    assert!(
        moved("coord_server_proposals_applied_total") >= 50.0,
        "{after}"
    );
    assert!(
        moved("coord_disk_log_append_duration_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        moved("coord_apply_duration_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        moved("coord_server_writes_per_entry_sum") >= 50.0,
        "every write is counted in some entry: {after}"
    );
    assert!(
        value(&after, "coord_write_ids_clients") >= Some(1.0),
        "{after}"
    );
    assert!(
        value(&after, "coord_db_total_size_bytes") > Some(0.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "coord_server_proposals_failed_total"),
        Some(0.0)
    );
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
    // While it loads its data directory it says so ("starting: ..."); the answer that counts
    // is the one after.
    let (status, body) = eventually(
        "the member to finish starting",
        Duration::from_secs(10),
        || async { get(port, "/readyz").filter(|(_, body)| !body.starts_with("starting")) },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no leader known"), "{body}");
    assert_eq!(get(port, "/livez").map(|(status, _)| status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_and_reflection_answer_on_the_client_port() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let channel = coord_tests::pki::raw_channel(&server.client_address()).await;
    for service in ["", "coord.v1.Namespace", "coord.v1.Watch"] {
        let health = HealthClient::new(channel.clone());
        eventually(
            "the member reports SERVING",
            Duration::from_secs(10),
            || {
                let mut health = health.clone();
                async move {
                    let request = HealthCheckRequest {
                        service: service.to_owned(),
                    };
                    let status = health.check(request).await.ok()?.into_inner().status;
                    (status == ServingStatus::Serving as i32).then_some(())
                }
            },
        )
        .await;
    }
    let unknown = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection is served")
        .into_inner();
    let response = responses.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list: {response:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "coord.v1.Namespace",
        "coord.v1.Sessions",
        "coord.v1.Watch",
        "coord.v1.Cluster",
        "coord.v1.Auth",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} not in {names:?}"
        );
    }
    assert!(!names.iter().any(|name| name.contains("peer")), "{names:?}");
}
