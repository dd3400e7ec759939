//! `ToolProcess`: a long-running client process (`coordctl` as a lock holder or an ephemeral
//! node's owner, `coord-locker`), whose output goes to files, that a test can pause, signal and
//! reap; killed by PID on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{binary, signal};

pub struct ToolProcess {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ToolProcess {
    /// Starts `coordctl --endpoints ENDPOINTS ARGS...`, writing its output under `dir`.
    pub fn coordctl(endpoints: &[String], args: &[&str], dir: &Path) -> ToolProcess {
        let mut all = vec!["--endpoints".to_owned(), endpoints.join(",")];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        ToolProcess::start("coordctl", &all, dir)
    }

    /// Starts the workspace binary `name` (built next to the tests) with `args`, writing its
    /// output under `dir`.
    pub fn start(name: &str, args: &[String], dir: &Path) -> ToolProcess {
        let stdout = dir.join(format!("{name}-{}.out", unique()));
        let stderr = stdout.with_extension("err");
        let mut command = Command::new(binary(name));
        if let Some(tls) = crate::pki::harness_tls() {
            // coordctl reads --cacert/--cert/--key from these; coord-locker the harness's own.
            command
                .env("COORD_TEST_TLS_DIR", &tls.dir)
                .env("COORD_CACERT", &tls.ca)
                .env("COORD_CERT", &tls.client.cert)
                .env("COORD_KEY", &tls.client.key);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("the output file can be created"))
            .stderr(File::create(&stderr).expect("the error file can be created"))
            .spawn()
            .unwrap_or_else(|error| panic!("{name} starts: {error}"));
        ToolProcess {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) while the process runs.
    pub fn signal(&self, signal_number: libc::c_int) {
        if let Some(child) = &self.child {
            signal(child, signal_number);
        }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit; its exit code (`None`: killed by a
    /// signal). Panics if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("the process was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("the child can be polled") {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the process still runs after {timeout:?}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
