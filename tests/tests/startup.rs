//! Start-up: a data directory of another member or cluster, and a taken port, each stop the
//! member with a message that says what to change and a non-zero exit; the runtime's thread
//! count (`--worker-threads`) is taken within bounds; transparent huge pages are off for the
//! member's process unless `--transparent-huge-pages true` asks for them; members sharing a
//! host run every thread under SCHED_BATCH, a member alone under the default policy, unless
//! `--cpu-scheduling` says otherwise.

use std::process::Command;
use std::time::Duration;

use coord_tests::{binary, free_port, Cluster, ServerProcess};

fn run_server(args: &[String]) -> (Option<i32>, String) {
    let output = Command::new(binary("coord-server"))
        .args(args)
        .output()
        .expect("coord-server runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_foreign_data_directories_and_taken_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;

    // The port is taken by the running member.
    let mut taken = server.args();
    taken[3] = dir.path().join("other").display().to_string();
    let (code, stderr) = run_server(&taken);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot listen for client requests")
            && stderr.contains(&server.client_address()),
        "{stderr}"
    );

    // SIGTERM is a clean shutdown.
    assert_eq!(server.terminate(Duration::from_secs(20)), Some(0));

    // Same directory, another member id.
    let fresh_ports = |args: &mut Vec<String>| {
        args[5] = format!("127.0.0.1:{}", free_port());
        args[7] = format!("127.0.0.1:{}", free_port());
    };
    let mut other_member = server.args();
    other_member[1] = "2".into();
    other_member.extend([
        "--initial-cluster".to_owned(),
        format!("2=127.0.0.1:{}", free_port()),
    ]);
    fresh_ports(&mut other_member);
    let (code, stderr) = run_server(&other_member);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("belongs to member 1, not to member 2"),
        "{stderr}"
    );

    // Same directory and id, another cluster.
    let mut other_cluster = server.args();
    other_cluster.extend(["--cluster-name".to_owned(), "elsewhere".to_owned()]);
    fresh_ports(&mut other_cluster);
    let (code, stderr) = run_server(&other_cluster);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("belongs to cluster coord-"), "{stderr}");

    // The original configuration still starts and finds its data.
    server.restart();
    server.client().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_one_worker_thread_serves_and_a_silly_thread_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_single(dir.path(), &["--worker-threads", "1"]);
    let client = server.client().await;
    client
        .create("/one-thread", "x", &coord_client::CreateOptions::default())
        .await
        .expect("a write on one worker thread");
    let node = client.get("/one-thread").await.expect("a read");
    assert_eq!(node.data, b"x");
    assert_eq!(server.terminate(Duration::from_secs(20)), Some(0));

    // The same flags with the count out of range (given once: a repeated flag would be refused
    // for that alone).
    let mut silly = server.args();
    let flag = silly
        .iter()
        .position(|argument| argument == "--worker-threads")
        .expect("the member was started with --worker-threads");
    silly[flag + 1] = "5000".to_owned();
    let (code, stderr) = run_server(&silly);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--worker-threads") && stderr.contains("0..=1024"),
        "{stderr}"
    );
}

/// What `/proc/<pid>/status` says of transparent huge pages for the process (`THP_enabled`,
/// 0 once it turned them off); `None` where the kernel has none to say.
fn huge_pages_enabled(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a status");
    let line = status
        .lines()
        .find(|line| line.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1) != Some("0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_turns_transparent_huge_pages_off_unless_asked_to_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let pid = server.pid().expect("running");
    let Some(enabled) = huge_pages_enabled(pid) else {
        eprintln!("this kernel reports no THP_enabled: it has no transparent huge pages");
        return;
    };
    assert!(!enabled, "the member left transparent huge pages on");

    server.set_extra_args(&["--transparent-huge-pages", "true"]);
    server.restart();
    server.client().await;
    let pid = server.pid().expect("running");
    assert_eq!(huge_pages_enabled(pid), Some(true));
    assert_eq!(server.terminate(Duration::from_secs(20)), Some(0));
}

/// The scheduling policy of each thread of the process (`policy` in `/proc/<pid>/task/*/stat`:
/// 0 SCHED_OTHER, 3 SCHED_BATCH); threads that end while being read are left out.
fn thread_policies(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    let mut policies = Vec::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which sits in parentheses and may hold spaces:
        // `policy` is field 41 of the line, so the 39th after the name.
        let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
        let policy = after_name
            .split_whitespace()
            .nth(38)
            .expect("a policy field");
        policies.push(policy.parse().expect("a number"));
    }
    policies
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sharing_a_host_schedule_every_thread_as_a_batch() {
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_for_leader(&[1, 2, 3], Duration::from_secs(30))
        .await;
    for member in &cluster.members {
        let policies = thread_policies(member.pid().expect("running"));
        assert!(policies.len() > 1, "a member runs several threads");
        assert!(
            policies.iter().all(|&policy| policy == SCHED_BATCH),
            "threads of a member sharing this host: {policies:?}"
        );
    }
    drop(cluster);

    let dir = tempfile::tempdir().unwrap();
    let mut alone = ServerProcess::start_single(dir.path(), &[]);
    alone.client().await;
    let policies = thread_policies(alone.pid().expect("running"));
    assert!(
        policies.iter().all(|&policy| policy == SCHED_OTHER),
        "threads of a member alone on its host: {policies:?}"
    );
    alone.set_extra_args(&["--cpu-scheduling", "batch"]);
    alone.restart();
    alone.client().await;
    let policies = thread_policies(alone.pid().expect("running"));
    assert!(
        policies.iter().all(|&policy| policy == SCHED_BATCH),
        "threads with --cpu-scheduling batch: {policies:?}"
    );
    assert_eq!(alone.terminate(Duration::from_secs(20)), Some(0));
}
