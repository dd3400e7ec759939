//! `ServerProcess`: one `coord-server` child process with its own data directory and ports.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coord_client::{Client, ClientOptions};

use crate::proxy::FaultyNetwork;

/// Path of a binary built by this workspace, next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let executable = std::env::current_exe().expect("the running binary knows its path");
    // Tests run from target/<profile>/deps/, tools such as coord-bench from target/<profile>/.
    let directory = executable.parent().expect("binaries live in a directory");
    let profile_dir = if directory.ends_with("deps") {
        directory.parent().expect("deps has a parent")
    } else {
        directory
    };
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binaries are built",
        path.display()
    );
    path
}

/// Ports the harness picks from: below Linux's ephemeral range (32768 and up by default), so
/// that no outgoing connection's local port takes one between its pick and the member's bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that was free a moment ago and that this process never handed out before
/// (two members of one test never share a port, however the kernel reuses them).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u64::from(PORTS.end - PORTS.start);
    for _ in 0..10_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(handed_out.len());
        let offset = u16::try_from(hasher.finish() % span).expect("the span fits a port");
        let port = PORTS.start + offset;
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.push(port);
        return port;
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// Timings for tests whose members do the heaviest work (the largest txns, from many clients)
/// in a debug build, where a heartbeat, which must be answered within one interval, can wait
/// behind that work for longer than the tests' 100 ms on a loaded machine. A 250 ms heartbeat
/// and a 1.5 s election timeout (the server's defaults are 100 ms and 1 s); passed after the
/// tests' own timings, which they override.
pub const HEAVY_WORK_TIMINGS: [&str; 4] = [
    "--heartbeat-interval",
    "250ms",
    "--election-timeout",
    "1500ms",
];

/// A running (or stopped) member. Killed with SIGKILL when dropped.
pub struct ServerProcess {
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    /// The loopback address both ports listen on and peer connections come from: 127.0.0.1,
    /// or the member's own address behind proxies, where the proxies' ports (on 127.0.0.1)
    /// cannot collide with it.
    ip: IpAddr,
    /// Addresses given out instead of the real ones, when the member sits behind proxies.
    advertised_peer: Option<String>,
    advertised_client: Option<String>,
    /// `--initial-cluster` for multi-member clusters.
    initial_cluster: Option<String>,
    /// Start with `--join CLUSTER_ID` (a new member waiting to be added).
    join: Option<String>,
    extra_args: Vec<String>,
    /// Environment variables set for the process beyond the harness's own.
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    /// The TLS the harness's clients of this member use (`COORD_TEST_TLS`'s by default; a
    /// test that gives the member its own certificates sets its own).
    pub client_tls: Option<coord_client::TlsOptions>,
}

impl ServerProcess {
    /// Starts a single-member cluster in `dir` (which the caller keeps alive).
    pub fn start_single(dir: &Path, extra_args: &[&str]) -> ServerProcess {
        let mut server = ServerProcess::prepare(1, dir, extra_args);
        server.spawn();
        server
    }

    /// A member that is not started yet, with fresh ports and its own directory under `dir`.
    pub fn prepare(id: u64, dir: &Path, extra_args: &[&str]) -> ServerProcess {
        let member_dir = if id == 1 {
            dir.to_path_buf()
        } else {
            dir.join(format!("member-{id}"))
        };
        std::fs::create_dir_all(&member_dir).expect("member directories can be created");
        ServerProcess {
            id,
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: member_dir.join("data"),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_peer: None,
            advertised_client: None,
            initial_cluster: None,
            join: None,
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: Vec::new(),
            log_path: member_dir.join("server.log"),
            child: None,
            client_tls: crate::pki::harness_client_tls(),
        }
    }

    /// The peer address other members use for this one.
    pub fn peer_address(&self) -> String {
        self.advertised_peer
            .clone()
            .unwrap_or_else(|| format!("{}:{}", self.ip, self.peer_port))
    }

    /// Puts the member behind `network`'s proxies: it listens for peers on its own loopback
    /// address and connects from it, and gives out proxy addresses for both ports. Call before
    /// the first start.
    pub fn put_behind(&mut self, network: &FaultyNetwork) {
        self.ip = network.member_ip(self.id);
        let peer = network.proxy(self.id, SocketAddr::new(self.ip, self.peer_port));
        let client = network.proxy(self.id, self.direct_client_socket());
        self.advertised_peer = Some(peer.to_string());
        self.advertised_client = Some(client.to_string());
    }

    fn direct_client_socket(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.client_port)
    }

    /// The client address that bypasses any proxy, for the harness's own observations.
    pub fn direct_client_address(&self) -> String {
        self.direct_client_socket().to_string()
    }

    /// Kills the member and deletes its data directory (an empty disk).
    pub fn wipe(&mut self) {
        self.kill9();
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir).expect("the data directory can be removed");
        }
    }

    pub fn set_initial_cluster(&mut self, initial_cluster: &str) {
        self.initial_cluster = Some(initial_cluster.to_owned());
    }

    pub fn set_join(&mut self, join: Option<String>) {
        self.join = join;
    }

    /// Starts a member prepared with `prepare`.
    pub fn start(&mut self) {
        self.spawn();
    }

    /// The client address clients use (a proxy's, when the member sits behind one).
    pub fn client_address(&self) -> String {
        self.advertised_client
            .clone()
            .unwrap_or_else(|| self.direct_client_address())
    }

    /// The arguments this member is started with.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--id".to_owned(),
            self.id.to_string(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--listen-client".to_owned(),
            self.direct_client_address(),
            "--listen-peer".to_owned(),
            format!("{}:{}", self.ip, self.peer_port),
            // Fast elections keep restarts short in tests (`HEAVY_WORK_TIMINGS` overrides them).
            "--heartbeat-interval".to_owned(),
            "100ms".to_owned(),
            "--election-timeout".to_owned(),
            "500ms".to_owned(),
        ];
        if let Some(client) = &self.advertised_client {
            args.extend(["--advertise-client".to_owned(), client.clone()]);
        }
        if self.ip != IpAddr::V4(Ipv4Addr::LOCALHOST) {
            args.extend(["--peer-source-address".to_owned(), self.ip.to_string()]);
        }
        if let Some(initial_cluster) = &self.initial_cluster {
            args.extend(["--initial-cluster".to_owned(), initial_cluster.clone()]);
        }
        if let Some(cluster_id) = &self.join {
            args.extend(["--join".to_owned(), cluster_id.clone()]);
        }
        if let Some(tls) = crate::pki::harness_tls() {
            args.extend(tls.server_args());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "member {} is already running",
            self.id
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("the log file can be opened");
        let child = Command::new(binary("coord-server"))
            .args(self.args())
            .env("RUST_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handles can be cloned"))
            .stderr(log)
            .spawn()
            .expect("coord-server starts");
        self.child = Some(child);
    }

    /// Sets the environment variable `key` for the next start (replacing an earlier value).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(set, _)| set != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Replaces the extra arguments used by the next `restart`.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("member {} ignored SIGTERM for {timeout:?}", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM without waiting (`terminate` waits for the exit).
    pub fn send_sigterm(&self) {
        signal(
            self.child.as_ref().expect("member is running"),
            libc::SIGTERM,
        );
    }

    /// SIGSTOP: the process stays alive but does nothing.
    pub fn pause(&self) {
        signal(
            self.child.as_ref().expect("member is running"),
            libc::SIGSTOP,
        );
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        signal(
            self.child.as_ref().expect("member is running"),
            libc::SIGCONT,
        );
    }

    /// Starts the member again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The member's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Connects a client, waiting (bounded) until the member answers and knows a leader.
    pub async fn client(&self) -> Client {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            discover_members: false,
            tls: self.client_tls.clone(),
            token: None,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(client) = Client::connect_with([self.client_address()], options.clone()).await
            {
                if let Ok(status) = client.cluster_status().await {
                    if status.leader_id != 0 {
                        return client;
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {} did not become ready within 30s; log:\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
    // SAFETY: sending a signal to a child process we own, identified by its PID.
    #[allow(unsafe_code, reason = "libc::kill has no safe wrapper in std")]
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A paused process must be resumed to die promptly on some kernels.
            signal(child, libc::SIGCONT);
        }
        self.kill9();
    }
}
