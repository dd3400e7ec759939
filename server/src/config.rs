//! `ServerConfig`: every setting of a member, as flags with `COORD_*` environment equivalents.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::fsm::{NODE_DATA_BYTES_MAX, QUOTA_BYTES_DEFAULT};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "coord-server",
    version,
    // A flag given twice takes its last value, so a wrapper can append overrides.
    args_override_self = true,
    about = "A Coord member: Raft-replicated coordination service"
)]
pub struct ServerConfig {
    /// This member's id, unique in the cluster (1..).
    #[arg(long, env = "COORD_ID", default_value_t = 1)]
    pub id: u64,

    /// Take the member id from the ordinal that ends NAME, plus one: `coord-0` is member 1,
    /// `coord-2` member 3 (a StatefulSet pod's name). Overrides --id.
    #[arg(long, env = "COORD_ID_FROM_ORDINAL", value_name = "NAME")]
    pub id_from_ordinal: Option<String>,

    /// Where the Raft log, snapshots and identity live.
    #[arg(long, env = "COORD_DATA_DIR", default_value = "./coord-data")]
    pub data_dir: PathBuf,

    /// Address for client gRPC traffic.
    #[arg(long, env = "COORD_LISTEN_CLIENT", default_value = "127.0.0.1:7400")]
    pub listen_client: SocketAddr,

    /// Address of the HTTP listener for `/livez`, `/readyz` and Prometheus `/metrics`
    /// (default: none). Listens off loopback only when given such an address.
    #[arg(long, env = "COORD_LISTEN_METRICS", value_name = "HOST:PORT")]
    pub listen_metrics: Option<SocketAddr>,

    /// Address for member-to-member (Raft) traffic.
    #[arg(long, env = "COORD_LISTEN_PEER", default_value = "127.0.0.1:7401")]
    pub listen_peer: SocketAddr,

    /// Local address outgoing member-to-member connections are made from, e.g. to pick one
    /// interface of a multi-homed host (default: chosen by the OS).
    #[arg(long, env = "COORD_PEER_SOURCE_ADDRESS", value_name = "IP")]
    pub peer_source_address: Option<std::net::IpAddr>,

    /// Client address other members and clients should use for this member (default:
    /// --listen-client, or this host's name at its port when that listens on every interface).
    #[arg(long, env = "COORD_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,

    /// Peer address other members should use for this member, e.g. a DNS name that follows it
    /// to a new IP (default: --listen-peer, or this host's name at its port when that listens
    /// on every interface). Sent when the member joins through --join-via.
    #[arg(long, env = "COORD_ADVERTISE_PEER", value_name = "HOST:PORT")]
    pub advertise_peer: Option<String>,

    /// The founding members, `ID=HOST:PEER_PORT,...` (default: only this member, at its
    /// --listen-peer address). Read only when the data directory is new.
    #[arg(long, env = "COORD_INITIAL_CLUSTER", default_value = "")]
    pub initial_cluster: String,

    /// Join the existing cluster with this id (shown by `coordctl cluster status`): a new data
    /// directory then waits to be added with `coordctl member add` instead of founding a cluster.
    #[arg(
        long,
        env = "COORD_JOIN",
        value_name = "CLUSTER_ID",
        conflicts_with = "join_via"
    )]
    pub join: Option<String>,

    /// Peer addresses (`HOST:PORT,...`, e.g. each member's own DNS name; a Service name that
    /// resolves to several members reaches only one per connection) through which a member
    /// with a new data directory joins on its own: a member not in --initial-cluster
    /// asks to be added as a learner, catches up and has itself promoted to voter; the founder
    /// first checks that no cluster answers there, and replaces itself in one that does
    /// instead of founding a second. Ignored once the data directory exists.
    #[arg(
        long,
        env = "COORD_JOIN_VIA",
        value_name = "ADDRESSES",
        value_delimiter = ','
    )]
    pub join_via: Vec<String>,

    /// A name that, with --initial-cluster, identifies the cluster; data directories of
    /// another cluster are refused.
    #[arg(long, env = "COORD_CLUSTER_NAME", default_value = "coord")]
    pub cluster_name: String,

    /// Leader heartbeat interval: about the round-trip time between members, or more (etcd's
    /// rule). At most a fifth of --election-timeout.
    #[arg(long, env = "COORD_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long followers wait without hearing from a leader before one stands for election
    /// (each waits a random time between this and 1.25 times this). A crashed leader is replaced
    /// after about this long; see README "Failover and session TTLs".
    #[arg(long, env = "COORD_ELECTION_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub election_timeout: Duration,

    /// Build a snapshot (and purge the log behind it) after this many log entries.
    #[arg(long, env = "COORD_SNAPSHOT_ENTRIES", default_value_t = 20_000)]
    pub snapshot_entries: u64,

    /// Also build a snapshot after this many bytes of log since the last one.
    #[arg(long, env = "COORD_SNAPSHOT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub snapshot_bytes: u64,

    /// Log entries kept behind a snapshot for slightly lagging followers.
    #[arg(long, env = "COORD_SNAPSHOT_KEEP_ENTRIES", default_value_t = 1_000)]
    pub snapshot_keep_entries: u64,

    /// Largest node data accepted, in bytes.
    #[arg(long, env = "COORD_MAX_DATA_BYTES", default_value_t = NODE_DATA_BYTES_MAX)]
    pub max_data_bytes: u64,

    /// Shortest session TTL granted; shorter requests are raised to it. Default and lowest
    /// value: 5 × --election-timeout, the shortest TTL that rides out a leader failover.
    #[arg(long, env = "COORD_SESSION_TTL_MIN", value_parser = parse_duration)]
    pub session_ttl_min: Option<Duration>,

    /// Longest session TTL granted; longer requests are lowered to it.
    #[arg(long, env = "COORD_SESSION_TTL_MAX", default_value = "1h", value_parser = parse_duration)]
    pub session_ttl_max: Duration,

    /// Past this size of data (paths, values and 128 bytes a node), writes that could grow it
    /// are refused (NO_SPACE) and the NOSPACE alarm shows in `cluster status`; reads and
    /// deletes still work. 0: no quota.
    #[arg(long, env = "COORD_QUOTA_BYTES", default_value_t = QUOTA_BYTES_DEFAULT)]
    pub quota_bytes: u64,

    /// Most sessions open at once in the cluster; more opens are refused (LIMIT_EXCEEDED).
    #[arg(long, env = "COORD_MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,

    /// Most sessions one client (its client id, or its address) may have open at once.
    #[arg(long, env = "COORD_MAX_SESSIONS_PER_CLIENT", default_value_t = 1_000)]
    pub max_sessions_per_client: usize,

    /// Most connections open at once on each port; past it a new connection is closed at once
    /// and logged. Lowered to fit the process's open-file limit.
    #[arg(long, env = "COORD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Threads that run this member's work (requests, consensus, replication); 0: one per core
    /// the process may use (cgroup CPU limits count), divided among the members that share this
    /// host, which this member knows of when its own peer address and theirs in
    /// --initial-cluster are loopback addresses (three members on one 2-core host: 1 each, as
    /// fewer hand-offs of work between threads spend less CPU per write and per read). Reads
    /// scale with threads on a machine of its own.
    #[arg(long, env = "COORD_WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// How Linux schedules this member's threads: `batch` (SCHED_BATCH: a thread woken by a
    /// message, a timer or a finished disk write waits for the running thread's turn to end
    /// instead of taking its core at once), `normal` (SCHED_OTHER, the kernel's default), or
    /// `auto`: `batch` while members share this host (as --worker-threads counts them), where
    /// each message from one member woke the next and took the core from the sender before
    /// its other sends went out (README, "Benchmarks"), and `normal` otherwise. Either way the
    /// threads get the same share of the CPU.
    #[arg(long, env = "COORD_CPU_SCHEDULING", default_value = "auto",
          value_parser = ["auto", "batch", "normal"])]
    pub cpu_scheduling: String,

    /// Whether this member's memory may be backed by transparent huge pages. Off by default:
    /// where the kernel gives every allocation 2 MiB pages (`always`), a growing heap has whole
    /// huge pages zeroed for a few small allocations: 7 to 10 % of the members' CPU under 64
    /// writers against 1.7 % without, and a third more resident memory (README, "Benchmarks").
    #[arg(long, env = "COORD_TRANSPARENT_HUGE_PAGES", default_value_t = false,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub transparent_huge_pages: bool,

    /// Most watches this member serves at once, over all streams.
    #[arg(long, env = "COORD_MAX_WATCHES", default_value_t = 200_000)]
    pub max_watches: usize,

    /// How often the leader checkpoints every session's remaining time through Raft. A dead
    /// client's session ends at most its TTL plus one election timeout plus this after its last
    /// keep-alive, however often the leader changes. Keep-alives are acknowledged once a
    /// checkpoint (taken four times as often) records them.
    #[arg(long, env = "COORD_SESSION_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub session_checkpoint_interval: Duration,

    /// How long the outcome of a client's writes is remembered after its last write, so its
    /// retries apply once. Measured on leader time carried by full session checkpoints (time
    /// without a leader does not count). Keep it well above the longest client request
    /// timeout: a retry arriving after its outcome was forgotten would apply again.
    #[arg(long, env = "COORD_WRITE_ID_RETENTION", default_value = "10m", value_parser = parse_duration)]
    pub write_id_retention: Duration,

    /// Recent watch events kept on each member, so a watch can start (or resume) in the past;
    /// an older start revision gets `Compacted`.
    #[arg(long, env = "COORD_WATCH_HISTORY_EVENTS", default_value_t = 100_000)]
    pub watch_history_events: usize,

    /// Also keep at most this many bytes of recent watch events.
    #[arg(long, env = "COORD_WATCH_HISTORY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub watch_history_bytes: usize,

    /// An idle watch is told which revision it is current to this often.
    #[arg(long, env = "COORD_WATCH_PROGRESS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub watch_progress_interval: Duration,

    /// Longest wait for a write to commit or a read barrier to pass.
    #[arg(long, env = "COORD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// On SIGTERM: the longest time from the signal to exit. A leader first hands leadership to
    /// another voter; open watch and keep-alive streams end at once with a retryable status.
    #[arg(long, env = "COORD_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Certificate (PEM chain) of the client port: with --key-file, the port speaks only TLS.
    /// Read again when the file changes. Names and meaning as etcd's flags.
    #[arg(
        long,
        env = "COORD_CERT_FILE",
        value_name = "PEM",
        requires = "key_file"
    )]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(
        long,
        env = "COORD_KEY_FILE",
        value_name = "PEM",
        requires = "cert_file"
    )]
    pub key_file: Option<PathBuf>,

    /// CA bundle (PEM) that client certificates must chain to: certificates presented are
    /// checked, and name the client (its subject's common name).
    #[arg(
        long,
        env = "COORD_TRUSTED_CA_FILE",
        value_name = "PEM",
        requires = "cert_file"
    )]
    pub trusted_ca_file: Option<PathBuf>,

    /// Refuse clients without a certificate from --trusted-ca-file.
    #[arg(long, env = "COORD_CLIENT_CERT_AUTH", requires = "trusted_ca_file")]
    pub client_cert_auth: bool,

    /// Certificate (PEM chain) of the peer port, also presented to other members when
    /// connecting to theirs. With --peer-key-file and --peer-trusted-ca-file, member-to-member
    /// traffic is mutual TLS: a member accepts and dials only members with a certificate from
    /// the peer CA.
    #[arg(long, env = "COORD_PEER_CERT_FILE", value_name = "PEM",
        requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --peer-cert-file.
    #[arg(
        long,
        env = "COORD_PEER_KEY_FILE",
        value_name = "PEM",
        requires = "peer_cert_file"
    )]
    pub peer_key_file: Option<PathBuf>,

    /// CA bundle (PEM) that other members' certificates must chain to.
    #[arg(
        long,
        env = "COORD_PEER_TRUSTED_CA_FILE",
        value_name = "PEM",
        requires = "peer_cert_file"
    )]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Accept peer connections only from certificates with one of these subject common names
    /// (comma-separated; default: any certificate from the peer CA).
    #[arg(
        long,
        env = "COORD_PEER_CERT_ALLOWED_CN",
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "peer_cert_file"
    )]
    pub peer_cert_allowed_cn: Vec<String>,

    /// Log format: `text` or `json` (filter with RUST_LOG).
    #[arg(long, env = "COORD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl ServerConfig {
    /// The founding members by id, defaulting to this member alone.
    pub fn initial_members(&self) -> Result<BTreeMap<u64, String>, String> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(BTreeMap::from([(self.id, self.peer_address())]));
        }
        let mut members = BTreeMap::new();
        for item in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster item {item:?} is not ID=HOST:PORT"))?;
            let id: u64 = id.trim().parse().map_err(|_| {
                format!("--initial-cluster item {item:?}: {id:?} is not a member id")
            })?;
            if id == 0 {
                return Err(format!(
                    "--initial-cluster item {item:?}: member ids start at 1"
                ));
            }
            if !address.contains(':') {
                return Err(format!(
                    "--initial-cluster item {item:?}: {address:?} has no port"
                ));
            }
            if members.insert(id, address.trim().to_owned()).is_some() {
                return Err(format!("--initial-cluster names member {id} twice"));
            }
        }
        // A member joining through --join-via need not be a founder.
        if !members.contains_key(&self.id) && self.join_via.is_empty() {
            return Err(format!(
                "--initial-cluster does not name this member (--id {})",
                self.id
            ));
        }
        Ok(members)
    }

    /// Settles what other flags imply: the id from --id-from-ordinal.
    pub fn resolve(&mut self) -> Result<(), String> {
        if let Some(name) = &self.id_from_ordinal {
            self.id = id_from_ordinal(name)?;
        }
        Ok(())
    }

    /// The threads the runtime gets for `cores` usable cores: --worker-threads when given,
    /// else the cores divided among the members on this host (`members_on_this_host`), at
    /// least one.
    pub fn worker_threads_for(&self, cores: usize) -> usize {
        if self.worker_threads > 0 {
            return usize::from(self.worker_threads);
        }
        (cores / self.members_on_this_host()).max(1)
    }

    /// Whether this member's threads run under SCHED_BATCH (`--cpu-scheduling`).
    pub fn batch_scheduling(&self) -> bool {
        match self.cpu_scheduling.as_str() {
            "batch" => true,
            "normal" => false,
            _ => self.members_on_this_host() > 1,
        }
    }

    /// How many founding members run on this host, this one included, as far as the flags
    /// tell: when this member's peer address is a loopback address, every member of
    /// --initial-cluster at a loopback address; otherwise (or with flags that do not parse)
    /// this member alone, since other hosts' members cannot be told from names.
    pub fn members_on_this_host(&self) -> usize {
        if !is_loopback_address(&self.peer_address()) {
            return 1;
        }
        let Ok(members) = self.initial_members() else {
            return 1;
        };
        let local = members
            .values()
            .filter(|address| is_loopback_address(address))
            .count();
        local.max(1)
    }

    /// This member's client address as others should use it.
    pub fn client_address(&self) -> String {
        advertised(self.advertise_client.as_deref(), self.listen_client)
    }

    /// This member's peer address as others should use it.
    pub fn peer_address(&self) -> String {
        advertised(self.advertise_peer.as_deref(), self.listen_peer)
    }

    /// The shortest session TTL granted: --session-ttl-min, by default the failover floor.
    pub fn session_ttl_floor(&self) -> Duration {
        self.session_ttl_min
            .unwrap_or_else(|| failover_ttl_floor(self.election_timeout))
    }

    /// Checks that the timing flags fit together (see README "Failover and session TTLs").
    pub fn check_timing(&self) -> Result<(), String> {
        let (heartbeat, election) = (self.heartbeat_interval, self.election_timeout);
        if heartbeat < Duration::from_millis(2) || heartbeat * 5 > election {
            return Err(format!(
                "--heartbeat-interval {heartbeat:?} must be at least 2ms and at most a fifth of \
                 --election-timeout {election:?}"
            ));
        }
        let floor = failover_ttl_floor(election);
        if self.session_ttl_floor() < floor {
            return Err(format!(
                "--session-ttl-min {:?} is below {floor:?} (5 × --election-timeout): sessions \
                 that short would expire during a leader failover",
                self.session_ttl_floor()
            ));
        }
        if self.session_ttl_floor() > self.session_ttl_max {
            return Err(format!(
                "--session-ttl-min {:?} is above --session-ttl-max {:?}",
                self.session_ttl_floor(),
                self.session_ttl_max
            ));
        }
        Ok(())
    }

    /// A stable id derived from the cluster name and founding members.
    pub fn cluster_id(&self, members: &BTreeMap<u64, String>) -> String {
        let mut text = self.cluster_name.clone();
        for (id, address) in members {
            text.push_str(&format!("|{id}={address}"));
        }
        format!("{}-{:016x}", self.cluster_name, fnv1a64(text.as_bytes()))
    }
}

/// The shortest session TTL that survives a leader failover: a keep-alive interval (a third
/// of the TTL) can pass before the crash, the election takes up to 1.5 election timeouts (2.5
/// with one split vote), and the acknowledgement needs a checkpoint commit. Five election
/// timeouts cover that with a margin.
pub fn failover_ttl_floor(election_timeout: Duration) -> Duration {
    election_timeout * 5
}

/// The member id of a StatefulSet pod: its trailing ordinal plus one.
pub fn id_from_ordinal(name: &str) -> Result<u64, String> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let ordinal = &name[name.len() - digits..];
    if digits == 0 || (digits > 1 && ordinal.starts_with('0')) {
        return Err(format!(
            "--id-from-ordinal {name:?} does not end in an ordinal such as `-0` or `-12`"
        ));
    }
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| format!("--id-from-ordinal {name:?}: the ordinal is too large"))
}

/// An address as others should use it: the one given, else the listening address, with this
/// host's name in place of an every-interface IP (0.0.0.0 or ::).
fn advertised(given: Option<&str>, listening: SocketAddr) -> String {
    if let Some(given) = given {
        return given.to_owned();
    }
    match host_name() {
        Some(host) if listening.ip().is_unspecified() => format!("{host}:{}", listening.port()),
        _ => listening.to_string(),
    }
}

/// Whether `HOST:PORT` names a loopback address (`127.0.0.0/8`, `[::1]` or `localhost`).
fn is_loopback_address(address: &str) -> bool {
    let Some((host, _port)) = address.trim().rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// This host's name (in a container, its hostname), if the kernel tells it.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub use coord_proto::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arguments: &[&str]) -> ServerConfig {
        let mut all = vec!["coord-server"];
        all.extend_from_slice(arguments);
        ServerConfig::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_member_id_follows_a_statefulset_ordinal() {
        assert_eq!(id_from_ordinal("coord-0"), Ok(1));
        assert_eq!(id_from_ordinal("my-release-coord-12"), Ok(13));
        for bad in [
            "coord",
            "coord-",
            "coord-01",
            "",
            "coord-99999999999999999999",
        ] {
            assert!(id_from_ordinal(bad).is_err(), "{bad:?} was accepted");
        }
        let mut resolved = config(&["--id", "7", "--id-from-ordinal", "coord-2"]);
        resolved.resolve().unwrap();
        assert_eq!(resolved.id, 3);
    }

    #[test]
    fn worker_threads_default_to_one_per_core_and_are_bounded() {
        assert_eq!(config(&[]).worker_threads, 0);
        assert_eq!(config(&["--worker-threads", "1"]).worker_threads, 1);
        for bad in ["-1", "1025", "many"] {
            let refused = ServerConfig::try_parse_from(["coord-server", "--worker-threads", bad]);
            assert!(refused.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn members_sharing_this_host_share_its_cores() {
        let on_loopback = [
            "--id",
            "2",
            "--listen-peer",
            "127.0.0.1:7502",
            "--initial-cluster",
            "1=127.0.0.1:7501,2=127.0.0.1:7502,3=localhost:7503",
        ];
        let shared = config(&on_loopback);
        assert_eq!(shared.members_on_this_host(), 3);
        assert_eq!(shared.worker_threads_for(2), 1);
        assert_eq!(shared.worker_threads_for(8), 2);
        // The flag wins.
        let mut pinned = on_loopback.to_vec();
        pinned.extend(["--worker-threads", "4"]);
        assert_eq!(config(&pinned).worker_threads_for(2), 4);
        // Members on other hosts, or named by host names: one member per host.
        let apart = config(&[
            "--id",
            "1",
            "--listen-peer",
            "10.0.0.1:7401",
            "--initial-cluster",
            "1=10.0.0.1:7401,2=10.0.0.2:7401,3=10.0.0.3:7401",
        ]);
        assert_eq!(apart.members_on_this_host(), 1);
        assert_eq!(apart.worker_threads_for(8), 8);
        let named = config(&[
            "--id",
            "1",
            "--listen-peer",
            "127.0.0.1:7401",
            "--initial-cluster",
            "1=[::1]:7401,2=coord-1.coord:7401",
        ]);
        assert_eq!(named.members_on_this_host(), 1);
        // A lone member on loopback keeps every core.
        assert_eq!(config(&[]).members_on_this_host(), 1);
        // Members sharing a host stop taking each other's cores on every message.
        assert!(shared.batch_scheduling());
        assert!(!apart.batch_scheduling());
        assert!(!named.batch_scheduling());
        assert!(!config(&[]).batch_scheduling());
        let mut normal = on_loopback.to_vec();
        normal.extend(["--cpu-scheduling", "normal"]);
        assert!(!config(&normal).batch_scheduling());
        assert!(config(&["--cpu-scheduling", "batch"]).batch_scheduling());
        let refused = ServerConfig::try_parse_from(["coord-server", "--cpu-scheduling", "fifo"]);
        assert!(refused.is_err());
        assert_eq!(config(&[]).worker_threads_for(2), 2);
        assert!(is_loopback_address("[::1]:7401"));
        assert!(!is_loopback_address("localhost"));
        assert!(!is_loopback_address("coord-0:7401"));
    }

    #[test]
    fn transparent_huge_pages_are_off_unless_asked_for() {
        assert!(!config(&[]).transparent_huge_pages);
        let on = config(&["--transparent-huge-pages", "true"]);
        assert!(on.transparent_huge_pages);
        assert!(!config(&["--transparent-huge-pages", "false"]).transparent_huge_pages);
        let refused =
            ServerConfig::try_parse_from(["coord-server", "--transparent-huge-pages", "y"]);
        assert!(refused.is_err());
    }

    #[test]
    fn a_joining_member_need_not_be_in_the_initial_cluster() {
        let founders = ["--id", "2", "--initial-cluster", "1=coord-0.coord:7401"];
        assert!(config(&founders).initial_members().is_err());
        let mut joining = founders.to_vec();
        joining.extend(["--join-via", "coord-headless:7401,other:7401"]);
        let joining = config(&joining);
        assert_eq!(joining.join_via, ["coord-headless:7401", "other:7401"]);
        let members = joining.initial_members().unwrap();
        assert_eq!(members.keys().copied().collect::<Vec<_>>(), [1]);
        let founder = config(&["--id", "1", "--initial-cluster", "1=coord-0.coord:7401"]);
        assert_eq!(
            joining.cluster_id(&members),
            founder.cluster_id(&founder.initial_members().unwrap()),
            "every member computes the same cluster id"
        );
    }

    #[test]
    fn every_interface_addresses_are_advertised_by_host_name() {
        let given = config(&["--listen-peer", "0.0.0.0:7401", "--advertise-peer", "p:1"]);
        assert_eq!(given.peer_address(), "p:1");
        let loopback = config(&["--listen-client", "127.0.0.1:7400"]);
        assert_eq!(loopback.client_address(), "127.0.0.1:7400");
        let every = config(&["--listen-client", "0.0.0.0:7400"]);
        if let Some(host) = host_name() {
            assert_eq!(every.client_address(), format!("{host}:7400"));
        }
    }

    #[test]
    fn defaults_form_a_single_member_cluster() {
        let config = config(&[]);
        assert_eq!(config.id, 1);
        assert_eq!(config.listen_client.to_string(), "127.0.0.1:7400");
        assert_eq!(
            config.initial_members().unwrap(),
            BTreeMap::from([(1, "127.0.0.1:7401".to_owned())])
        );
    }

    #[test]
    fn initial_cluster_is_parsed_and_checked() {
        let config = config(&["--id", "2", "--initial-cluster", "1=a:1,2=b:2"]);
        assert_eq!(config.initial_members().unwrap().len(), 2);
        let missing = self::config(&["--id", "3", "--initial-cluster", "1=a:1,2=b:2"]);
        assert!(missing
            .initial_members()
            .unwrap_err()
            .contains("does not name this member"));
        let duplicate = self::config(&["--initial-cluster", "1=a:1,1=b:2"]);
        assert!(duplicate.initial_members().unwrap_err().contains("twice"));
    }

    #[test]
    fn timing_flags_must_fit_together() {
        let defaults = config(&[]);
        assert_eq!(defaults.check_timing(), Ok(()));
        assert_eq!(defaults.session_ttl_floor(), Duration::from_secs(5));
        let slow_heartbeat = config(&["--heartbeat-interval", "300ms"]);
        assert!(slow_heartbeat
            .check_timing()
            .unwrap_err()
            .contains("a fifth"));
        let short_ttl = config(&["--session-ttl-min", "2s"]);
        assert!(short_ttl.check_timing().unwrap_err().contains("failover"));
        let fast = config(&[
            "--heartbeat-interval",
            "50ms",
            "--election-timeout",
            "400ms",
            "--session-ttl-min",
            "2s",
        ]);
        assert_eq!(fast.check_timing(), Ok(()));
        let derived = config(&["--election-timeout", "400ms"]);
        assert_eq!(derived.session_ttl_floor(), Duration::from_secs(2));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }
}
