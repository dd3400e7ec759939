//! `coordctl` end to end against a real member: output, JSON output and exit codes
//! (0 ok, 1 operation failed, 2 usage, 3 unreachable).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use coord_tests::{binary, free_port, ServerProcess};

struct Ctl {
    endpoint: String,
}

impl Ctl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(binary("coordctl"))
            .arg("--endpoints")
            .arg(&self.endpoint)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("coordctl starts");
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("coordctl reads stdin");
        drop(input);
        child.wait_with_output().expect("coordctl finishes")
    }

    /// Runs and asserts the exit code; returns stdout.
    fn expect(&self, args: &[&str], code: i32) -> String {
        self.expect_with_input(args, None, code)
    }

    fn expect_with_input(&self, args: &[&str], stdin: Option<&str>, code: i32) -> String {
        let output = self.run(args, stdin);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "coordctl {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let ctl = Ctl {
        endpoint: server.client_address(),
    };

    assert_eq!(ctl.expect(&["create", "/app", "v1"], 0), "/app\n");
    assert_eq!(ctl.expect(&["get", "/app"], 0), "v1\n");
    assert!(ctl
        .expect(&["set", "/app", "v2", "--version", "0"], 0)
        .contains("version=1"));
    ctl.expect(&["set", "/app", "v3", "--version", "0"], 1);
    assert_eq!(
        ctl.expect(&["get", "/app", "--consistency", "serializable"], 0),
        "v2\n"
    );

    assert_eq!(
        ctl.expect(&["create", "-p", "/app/config/db", "dsn"], 0),
        "/app/config/db\n"
    );
    let created = ctl.expect(&["create", "--sequential", "/app/job-", "payload"], 0);
    assert_eq!(created, "/app/job-0000000000\n");
    assert_eq!(ctl.expect(&["ls", "/app"], 0), "config\njob-0000000000\n");
    assert_eq!(
        ctl.expect(&["tree", "/app"], 0),
        "/app\n  config\n    db\n  job-0000000000\n"
    );
    let stat = ctl.expect(&["stat", "/app"], 0);
    assert!(
        stat.contains("version: 1\n") && stat.contains("num_children: 2\n"),
        "{stat}"
    );

    // JSON output is one object per result.
    let json = ctl.expect(&["--output", "json", "get", "/app"], 0);
    assert!(
        json.starts_with('{') && json.contains("\"data\":\"v2\"") && json.contains("\"version\":1"),
        "{json}"
    );
    let listing = ctl.expect(&["--output", "json", "ls", "/app"], 0);
    assert!(listing.contains("\"name\":\"config\""), "{listing}");

    // Txn in the line syntax and in JSON.
    let script = "compare version /app = 1\nthen set /app from-txn\nthen create /app/audit entry\nelse get /app\n";
    assert_eq!(
        ctl.expect_with_input(&["txn"], Some(script), 0),
        "SUCCEEDED\nset version=2\ncreated /app/audit\n"
    );
    assert_eq!(ctl.expect(&["get", "/app"], 0), "from-txn\n");
    assert_eq!(
        ctl.expect_with_input(&["txn"], Some(script), 4),
        "FAILED\nfrom-txn\n",
        "the compare no longer holds: exit 4"
    );
    let json_txn = r#"{"compares":[{"path":"/app","target":"value","op":"=","value":"from-txn"}],
        "success":[{"op":"delete","path":"/app/audit"}]}"#;
    let result = ctl.expect_with_input(&["--output", "json", "txn"], Some(json_txn), 0);
    assert!(
        result.contains("\"succeeded\":true") && result.contains("\"deleted\":1"),
        "{result}"
    );
    ctl.expect_with_input(&["txn"], Some("then explode /app\n"), 2);
    ctl.expect_with_input(&["txn"], Some("then create /app from-txn\n"), 1);

    // Removal: non-empty fails (1), recursive works, missing fails (1).
    ctl.expect(&["rm", "/app"], 1);
    assert_eq!(ctl.expect(&["rm", "-r", "/app"], 0), "deleted 4 nodes\n");
    ctl.expect(&["get", "/app"], 1);
    let error = ctl.expect(&["--output", "json", "get", "/app"], 1);
    assert!(error.contains("\"kind\":\"no_node\""), "{error}");

    // Usage errors exit 2; an unreachable cluster exits 3.
    ctl.expect(&["frobnicate"], 2);
    ctl.expect(&["set", "/only-path"], 2);
    let nobody = Ctl {
        endpoint: format!("127.0.0.1:{}", free_port()),
    };
    nobody.expect(&["get", "/"], 3);

    assert!(ctl.expect(&["cluster", "status"], 0).contains("leader"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_perf_reports_and_passes_or_fails_against_its_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let ctl = Ctl {
        endpoint: server.client_address(),
    };
    // The small load (200 writes/s) for two seconds: a member on loopback sustains it.
    let text = ctl.expect(&["check", "perf", "--duration", "2s"], 0);
    assert!(text.contains("writes/s (target 200)"), "{text}");
    assert!(text.ends_with("PASS\n"), "{text}");
    // A latency bound no write can meet fails the check, with the reason, exit status 1.
    let failed = ctl.expect(
        &[
            "check",
            "perf",
            "--duration",
            "1s",
            "--p99-max",
            "0ms",
            "--output",
            "json",
        ],
        1,
    );
    let report: serde_json::Value = serde_json::from_str(failed.trim()).expect("one JSON line");
    assert_eq!(report["pass"], false, "{report}");
    assert!(
        report["failures"][0].as_str().unwrap().contains("p99"),
        "{report}"
    );
    assert!(report["writes"].as_u64().unwrap() > 0, "{report}");
    // Each run deletes what it wrote.
    let left = ctl.expect(&["ls", "/coordctl-check-perf"], 0);
    assert_eq!(left, "", "runs left nodes behind: {left}");
}
