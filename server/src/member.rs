//! `run`: one member's whole life: claim the data directory, bind both ports, start consensus,
//! serve gRPC until `shutdown` resolves, then stop cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use coord_proto::v1::auth_server::AuthServer;
use coord_proto::v1::cluster_server::ClusterServer;
use coord_proto::v1::namespace_server::NamespaceServer;
use coord_proto::v1::peer::peer_server::PeerServer;
use coord_proto::v1::sessions_server::SessionsServer;
use coord_proto::v1::watch_server::WatchServer;
use coord_tls::{ClientCertificates, ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles};
use futures::Stream;
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::config::ServerConfig;
use crate::consensus::{
    ApplyObserver, Consensus, ConsensusConfig, MemberId, StartError, PEER_CONNECTION_WINDOW_BYTES,
    PEER_MESSAGE_BYTES_MAX, PEER_STREAM_WINDOW_BYTES,
};
use crate::fsm::{Limits, Namespace, Revision, SessionChange, WatchEvent, COMMAND_BYTES_MAX};
use crate::grpc::{
    starting_status, Access, AuthService, ClusterService, NamespaceService, PeerService,
    SessionCaps, SessionsService, TtlBounds, WatchCounters, WatchService, CLIENT_MESSAGE_BYTES_MAX,
};
use crate::listener::{accept, refuse_until, Connection, Gate};
use crate::membership::{self, Greeter, JoinPlan, MemberDirectory};
use crate::observe;
use crate::sessions::{KeeperConfig, SessionDeadlines, SessionKeeper};
use crate::storage::{DataDirIdentity, IdentityError};
use crate::tls_port::{PortsTls, TlsPort};
use crate::watch::{History, HistoryLimits, TurnWaiters};

/// How long a removed member keeps answering before it stops.
const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a member could not start or stopped abnormally. Each message says what to change.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot listen for {role} on {address}: {source} (is another coord-server running?)")]
    Bind {
        role: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("TLS of the {port}: {source}")]
    Tls {
        port: &'static str,
        source: coord_tls::TlsError,
    },
    #[error("cannot open the data directory {dir}: {source} (is another coord-server using it?)")]
    Start { dir: String, source: StartError },
    /// Raft stopped on a storage fault (a full disk, a failing device): the member exits so
    /// that it restarts from what is on disk, rather than answer "no leader" forever.
    #[error("raft stopped on a storage fault: {reason}; exiting so the member restarts from disk")]
    Fault { reason: String },
    #[error("{role} server failed: {source}")]
    Serve {
        role: &'static str,
        source: tonic::transport::Error,
    },
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.resolve().map_err(RunError::Config)?;
    check_flags(&config)?;
    let initial_members = config.initial_members().map_err(RunError::Config)?;
    let cluster_id = match &config.join {
        Some(cluster_id) => cluster_id.clone(),
        None => config.cluster_id(&initial_members),
    };
    // Bind before claiming the data directory: a start that fails on a taken port leaves a new
    // data directory untouched, so a retry with other flags is not refused.
    let security = Security::load(&config)?;
    let client_listener = bind("client requests", config.listen_client).await?;
    let peer_listener = bind("peer traffic", config.listen_peer).await?;
    // The metrics port answers /livez at once, and /readyz "starting" until the data is loaded.
    let metrics_port = match config.listen_metrics {
        Some(address) => {
            let listener = bind("metrics and health checks", address).await?;
            let slot = observe::MetricsSlot::default();
            Some((slot.clone(), tokio::spawn(observe::serve(listener, slot))))
        }
        None => None,
    };
    let is_new = DataDirIdentity::claim(&config.data_dir, &cluster_id, config.id)?;
    // Both ports answer at once: while the member loads its data every request gets a
    // retryable "starting" status instead of hanging.
    let max_connections = max_connections(config.max_connections);
    let client_incoming = accept(
        client_listener,
        Arc::new(Gate::new("client", max_connections)),
        security.client_port.clone(),
    );
    let peer_incoming = accept(
        peer_listener,
        Arc::new(Gate::new("peer", max_connections)),
        security.peer_port.clone(),
    );
    let (ready, ready_receiver) = tokio::sync::watch::channel(false);
    let starting = starting_status(config.id);
    let client_refusing = tokio::spawn(refuse_until(
        client_incoming,
        starting.clone(),
        ready_receiver.clone(),
    ));
    let peer_refusing = tokio::spawn(refuse_until(peer_incoming, starting, ready_receiver));
    let (members, founder, join_plan) = founding(&config, is_new, initial_members);
    let parts = Parts::start(&config, &security, cluster_id.clone(), members, founder).await?;
    if join_plan.is_some() {
        parts.consensus.hold_raft_traffic();
    }
    let _ = ready.send(true);
    let (Ok(client_incoming), Ok(peer_incoming)) = (client_refusing.await, peer_refusing.await)
    else {
        return Err(RunError::Config(
            "the start-up listener tasks failed".into(),
        ));
    };
    tracing::info!(
        member = config.id,
        cluster = %cluster_id,
        new_data_dir = is_new,
        client = %config.listen_client,
        peer = %config.listen_peer,
        data_dir = %config.data_dir.display(),
        client_tls = security.client_port.is_some(),
        peer_tls = security.peer_port.is_some(),
        "coord-server serving"
    );
    // Joining stops with the member (a task handle's drop would not stop it).
    let joining = join_plan.map(|plan| membership::join(parts.consensus.clone(), plan));
    let joining = tokio::spawn(async move { futures::future::OptionFuture::from(joining).await });
    let ports = (client_incoming, peer_incoming, metrics_port);
    let served = parts.serve(&config, ports, shutdown).await;
    joining.abort();
    served
}

/// Who founds, and how a new member joins. Exactly one member founds a new cluster: the lowest
/// id of the initial cluster. The others (and members started with --join) wait for the
/// leader; a restarted member never founds. With --join-via, a new member outside the initial
/// cluster joins on its own, and the founder founds only once no cluster answers there
/// (`membership/joiner.rs`).
fn founding(
    config: &ServerConfig,
    is_new: bool,
    initial_members: BTreeMap<u64, String>,
) -> (BTreeMap<MemberId, String>, bool, Option<JoinPlan>) {
    let would_found = config.join.is_none() && initial_members.keys().next() == Some(&config.id);
    let joins = is_new
        && !config.join_via.is_empty()
        && (would_found || !initial_members.contains_key(&config.id));
    let members: BTreeMap<MemberId, String> = initial_members
        .into_iter()
        .map(|(id, address)| (MemberId(id), address))
        .collect();
    let join_plan = joins.then(|| JoinPlan {
        via: config.join_via.clone(),
        peer_address: config.peer_address(),
        founding: would_found.then(|| members.clone()),
    });
    (members, would_found && !joins, join_plan)
}

/// Refuses flags that cannot work, naming the flag.
fn check_flags(config: &ServerConfig) -> Result<(), RunError> {
    if config.id == 0 {
        return Err(RunError::Config("--id must be at least 1".into()));
    }
    if config.max_data_bytes > COMMAND_BYTES_MAX {
        return Err(RunError::Config(format!(
            "--max-data-bytes {} is above the largest command, {COMMAND_BYTES_MAX} bytes",
            config.max_data_bytes
        )));
    }
    config.check_timing().map_err(RunError::Config)?;
    // Other members and clients are sent to this address: an every-interface IP would not
    // reach this member (the host name stands in for it when the kernel tells it).
    for (flag, advertised) in [
        ("--advertise-client", config.client_address()),
        ("--advertise-peer", config.peer_address()),
    ] {
        if advertised.starts_with("0.0.0.0:") || advertised.starts_with("[::]:") {
            return Err(RunError::Config(format!(
                "{advertised} listens on every interface and no host name is known: give \
                 {flag} HOST:PORT, the address other members and clients should use"
            )));
        }
    }
    Ok(())
}

/// A started member: consensus and what runs beside it.
struct Parts {
    consensus: Arc<Consensus>,
    /// One policy cache and one refusal log for every service of the client port.
    access: Arc<Access>,
    /// The client port's request counters.
    requests: observe::RequestMetrics,
    /// Both ports' TLS, for the security status.
    tls: PortsTls,
    history: Arc<History>,
    /// The `AwaitTurn` waits, woken by the apply observer.
    turns: Arc<TurnWaiters>,
    directory: Arc<MemberDirectory>,
    greeter: Arc<Greeter>,
    keeper: Arc<SessionKeeper>,
}

impl Parts {
    /// Opens the data directory and starts consensus, sessions and the greeter.
    async fn start(
        config: &ServerConfig,
        security: &Security,
        cluster_id: String,
        members: BTreeMap<MemberId, String>,
        founder: bool,
    ) -> Result<Parts, RunError> {
        let consensus_config = ConsensusConfig {
            member_id: MemberId(config.id),
            cluster_id,
            heartbeat_interval: config.heartbeat_interval,
            election_timeout: config.election_timeout,
            snapshot_entries: config.snapshot_entries,
            snapshot_keep_entries: config.snapshot_keep_entries,
            snapshot_bytes: config.snapshot_bytes,
            request_timeout: config.request_timeout,
            peer_source_address: config.peer_source_address,
            peer_tls: security.peer_dialing.clone(),
            peer_allowed_names: config.peer_cert_allowed_cn.clone(),
        };
        let history = Arc::new(History::new(HistoryLimits {
            events_max: config.watch_history_events,
            bytes_max: config.watch_history_bytes,
        }));
        let deadlines = Arc::new(SessionDeadlines::default());
        let turns = Arc::new(TurnWaiters::default());
        let observer = Arc::new(AppliedFanout {
            history: history.clone(),
            turns: turns.clone(),
            deadlines: deadlines.clone(),
        });
        let consensus = Consensus::start(
            consensus_config,
            &config.data_dir,
            members,
            founder,
            observer,
        )
        .await
        .map_err(|source| RunError::Start {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
        let consensus = Arc::new(consensus);
        let directory = Arc::new(MemberDirectory::default());
        let greeter = Arc::new(Greeter::new(
            consensus.clone(),
            directory.clone(),
            config.client_address(),
        ));
        let keeper = Arc::new(SessionKeeper::new(
            consensus.clone(),
            deadlines,
            KeeperConfig {
                checkpoint_interval: config.session_checkpoint_interval,
                write_id_retention: config.write_id_retention,
                takeover_grace: config.election_timeout * 2,
            },
        ));
        Ok(Parts {
            access: Arc::new(Access::new(consensus.clone())),
            requests: observe::RequestMetrics::new()
                .map_err(|error| RunError::Config(format!("metrics: {error}")))?,
            consensus,
            tls: PortsTls {
                client: security.client_port.clone(),
                peer: security.peer_port.clone(),
            },
            history,
            turns,
            directory,
            greeter,
            keeper,
        })
    }

    /// The client port's services. `stopping` turns true when the member stops: open streams
    /// then end with a retryable "going away" status.
    fn client_routes(
        &self,
        config: &ServerConfig,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> (Routes, Arc<WatchCounters>, HealthReporter) {
        let consensus = &self.consensus;
        let access = self.access.clone();
        let namespace = NamespaceServer::new(NamespaceService::new(
            consensus.clone(),
            access.clone(),
            limits(config),
        ))
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
        let cluster = ClusterServer::new(ClusterService::new(
            consensus.clone(),
            access.clone(),
            self.directory.clone(),
            config.client_address(),
            config.quota_bytes,
            self.tls.clone(),
        ));
        let ttl_bounds = TtlBounds {
            min: config.session_ttl_floor(),
            max: config.session_ttl_max,
        };
        let caps = SessionCaps {
            total_max: config.max_sessions,
            per_client_max: config.max_sessions_per_client,
        };
        let sessions = SessionsServer::new(SessionsService::new(
            consensus.clone(),
            access.clone(),
            self.keeper.clone(),
            ttl_bounds,
            caps,
            limits(config),
            stopping.clone(),
        ));
        let watch = WatchService::new(
            consensus.clone(),
            access.clone(),
            (self.history.clone(), self.turns.clone()),
            config.watch_progress_interval,
            config.max_watches,
            stopping.clone(),
        );
        let watch_counters = watch.counters();
        let auth = AuthServer::new(AuthService::new(consensus.clone(), access));
        let (health, health_service) = tonic_health::server::health_reporter();
        let routes = Routes::new(namespace)
            .add_service(cluster)
            .add_service(auth)
            .add_service(sessions)
            .add_service(WatchServer::new(watch))
            .add_service(health_service);
        // Server reflection describes the client API, so `grpcurl` needs no .proto files.
        let routes = match tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(coord_proto::CLIENT_API_DESCRIPTOR_SET)
            .build_v1()
        {
            Ok(reflection) => routes.add_service(reflection),
            Err(error) => {
                tracing::warn!(%error, "gRPC server reflection is off: the API descriptors did not load");
                routes
            }
        };
        (routes, watch_counters, health)
    }

    /// Starts what reports on this member: the gRPC health status, and the metrics listener
    /// when `--listen-metrics` gave one.
    fn observe(
        &self,
        config: &ServerConfig,
        metrics_port: Option<MetricsPort>,
        watch_counters: Arc<WatchCounters>,
        health: HealthReporter,
    ) -> Result<Observers, RunError> {
        let health_task = tokio::spawn(observe::report_readiness(
            health.clone(),
            self.consensus.clone(),
        ));
        let metrics_task = match metrics_port {
            Some((slot, task)) => {
                self.fill_metrics(config, &slot, watch_counters)?;
                Some(task)
            }
            None => None,
        };
        Ok(Observers {
            health,
            health_task,
            metrics_task,
        })
    }

    /// Gives the metrics listener (`--listen-metrics`) this member's metrics.
    fn fill_metrics(
        &self,
        config: &ServerConfig,
        slot: &observe::MetricsSlot,
        watch_counters: Arc<WatchCounters>,
    ) -> Result<(), RunError> {
        let sources = observe::Sources {
            consensus: self.consensus.clone(),
            access: self.access.clone(),
            tls: self.tls.clone(),
            watches: watch_counters,
            quota_bytes: config.quota_bytes,
            requests: self.requests.clone(),
            keeper: self.keeper.clone(),
            data_dir: config.data_dir.clone(),
        };
        let metrics = observe::MemberMetrics::new(sources)
            .map_err(|error| RunError::Config(format!("metrics: {error}")))?;
        let _ = slot.set(metrics);
        Ok(())
    }

    /// The peer port's service.
    fn peer_routes(&self, config: &ServerConfig) -> Routes {
        let peer = PeerServer::new(PeerService::new(
            self.consensus.clone(),
            limits(config),
            self.keeper.clone(),
            self.directory.clone(),
            self.greeter.clone(),
        ))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        Routes::new(peer)
    }

    /// On SIGTERM: hands leadership over if this member leads (within half the shutdown
    /// timeout), so that writes pause for a round trip, not an election. Returns the instant
    /// by which the member must have exited.
    async fn begin_shutdown(&self, config: &ServerConfig) -> tokio::time::Instant {
        tracing::info!(timeout = ?config.shutdown_timeout, "shutting down");
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        let bound = config.shutdown_timeout / 2;
        let handing_off = self.consensus.hand_off_before_stopping();
        if tokio::time::timeout(bound, handing_off).await.is_err() {
            tracing::warn!(
                ?bound,
                "leadership hand-off did not finish; stopping anyway"
            );
        }
        deadline
    }

    /// Serves both ports until `shutdown` resolves or this member is removed, then stops.
    async fn serve<C, P>(
        self,
        config: &ServerConfig,
        (client_incoming, peer_incoming, metrics_port): (C, P, Option<MetricsPort>),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RunError>
    where
        C: Stream<Item = std::io::Result<Connection>> + Unpin + Send + 'static,
        P: Stream<Item = std::io::Result<Connection>> + Unpin + Send + 'static,
    {
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let (client_routes, watch_counters, health) = self.client_routes(config, &stop_receiver);
        let observers = self.observe(config, metrics_port, watch_counters, health)?;
        let client_server = tonic::transport::Server::builder()
            .layer(observe::CountRequests::new(self.requests.clone()))
            .add_routes(client_routes)
            .serve_with_incoming_shutdown(client_incoming, stopped(stop_receiver.clone()));
        // Windows large enough that a batch of large entries crosses in a few round trips.
        let peer_server = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(PEER_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(PEER_CONNECTION_WINDOW_BYTES))
            .add_routes(self.peer_routes(config))
            .serve_with_incoming_shutdown(peer_incoming, stopped(stop_receiver));
        let client_task = tokio::spawn(client_server);
        let peer_task = tokio::spawn(peer_server);
        let greeter = tokio::spawn(self.greeter.clone().run());
        let session_keeper = tokio::spawn(self.keeper.clone().run());
        let mut fault = None;
        let mut deadline = None;
        tokio::select! {
            () = shutdown => deadline = Some(self.begin_shutdown(config).await),
            reason = self.consensus.fault() => {
                tracing::error!(%reason, "raft stopped on a storage fault; stopping the member");
                fault = Some(reason);
            }
            () = self.consensus.removed() => {
                tracing::warn!("this member was removed from the cluster; stopping");
                // Let in-flight requests (the removal itself, often) answer before the ports
                // close.
                tokio::time::sleep(REMOVAL_GRACE).await;
            }
        }
        greeter.abort();
        session_keeper.abort();
        observers.stop().await;
        // Open streams (watches, keep-alives) end now with a retryable status; unary calls in
        // flight get until the deadline, then the process ends them by exiting.
        let _ = stop_sender.send(true);
        let deadline =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + config.shutdown_timeout);
        if tokio::time::timeout_at(deadline, self.consensus.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("raft did not stop before --shutdown-timeout");
        }
        for (role, task) in [("client", client_task), ("peer", peer_task)] {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(source))) => return Err(RunError::Serve { role, source }),
                Ok(Err(join_error)) => {
                    tracing::warn!(%join_error, role, "server task did not finish cleanly")
                }
                Err(_) => tracing::warn!(
                    role,
                    "connections still open at --shutdown-timeout; closing them"
                ),
            }
        }
        if let Some(reason) = fault {
            return Err(RunError::Fault { reason });
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The TLS of both ports and of outgoing peer connections, from the flags.
struct Security {
    client_port: Option<Arc<TlsPort>>,
    peer_port: Option<Arc<TlsPort>>,
    /// This member's peer certificate and the peer CA, for connecting to other members.
    peer_dialing: Option<Arc<ClientTls>>,
}

impl Security {
    fn load(config: &ServerConfig) -> Result<Security, RunError> {
        let client_port = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let client_certificates = match (&config.trusted_ca_file, config.client_cert_auth) {
                    (Some(_), true) => ClientCertificates::Required,
                    (Some(_), false) => ClientCertificates::Optional,
                    (None, _) => ClientCertificates::Ignored,
                };
                let files = ServerTlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: config.trusted_ca_file.clone(),
                    client_certificates,
                };
                let tls =
                    ServerTls::load("client port", files).map_err(|source| RunError::Tls {
                        port: "client port",
                        source,
                    })?;
                Some(Arc::new(TlsPort::new("client", tls, Vec::new())))
            }
            _ => None,
        };
        let (peer_port, peer_dialing) = match (
            &config.peer_cert_file,
            &config.peer_key_file,
            &config.peer_trusted_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                let tls_error = |source| RunError::Tls {
                    port: "peer port",
                    source,
                };
                let files = ServerTlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: Some(ca.clone()),
                    client_certificates: ClientCertificates::Required,
                };
                let serving = ServerTls::load("peer port", files).map_err(tls_error)?;
                let dialing = ClientTlsFiles {
                    trusted_ca: ca.clone(),
                    identity: Some((cert.clone(), key.clone())),
                    server_name: None,
                };
                let dialing = ClientTls::load("peer connections", dialing).map_err(tls_error)?;
                let port = TlsPort::new("peer", serving, config.peer_cert_allowed_cn.clone());
                (Some(Arc::new(port)), Some(Arc::new(dialing)))
            }
            _ => (None, None),
        };
        Ok(Security {
            client_port,
            peer_port,
            peer_dialing,
        })
    }
}

/// The metrics listener's slot for this member's metrics, and the task serving it.
type MetricsPort = (observe::MetricsSlot, tokio::task::JoinHandle<()>);

/// The tasks that report on a running member.
struct Observers {
    health: HealthReporter,
    health_task: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
}

impl Observers {
    /// Stops reporting, and tells gRPC health checkers the member no longer serves.
    async fn stop(self) {
        self.metrics_task
            .iter()
            .for_each(tokio::task::JoinHandle::abort);
        self.health_task.abort();
        observe::report_stopping(&self.health).await;
    }
}

/// The limits this member checks client writes against.
fn limits(config: &ServerConfig) -> Limits {
    Limits {
        node_data_bytes_max: config.max_data_bytes,
        quota_bytes: config.quota_bytes,
        ..Limits::default()
    }
}

/// `--max-connections` for each port, lowered so that both ports' connections fit in three
/// quarters of the process's open-file limit (the rest is for the data directory and peers).
fn max_connections(configured: usize) -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<usize>().ok())
        });
    match soft_limit {
        Some(soft) if configured > soft * 3 / 8 => {
            let lowered = (soft * 3 / 8).max(16);
            tracing::warn!(
                configured,
                lowered,
                open_file_limit = soft,
                "--max-connections lowered to fit the open-file limit (raise it with ulimit -n)"
            );
            lowered
        }
        _ => configured,
    }
}

async fn bind(role: &'static str, address: std::net::SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            role,
            address: address.to_string(),
            source,
        })
}

/// What the member does with every applied batch: the `AwaitTurn` waits on the paths it
/// changed woken, events into the watch history, session changes into the session deadlines.
struct AppliedFanout {
    history: Arc<History>,
    turns: Arc<TurnWaiters>,
    deadlines: Arc<SessionDeadlines>,
}

impl ApplyObserver for AppliedFanout {
    fn applied(
        &self,
        _revision: Revision,
        events: Vec<WatchEvent>,
        sessions: Vec<SessionChange>,
        at: std::time::Instant,
    ) {
        self.turns.touched(events.iter().map(|event| &event.path));
        self.history.extend(events);
        self.deadlines.record(&sessions, at);
    }

    fn restored(&self, namespace: &Namespace, at: std::time::Instant) {
        self.turns.wake_all();
        self.history.reset(namespace.revision());
        self.deadlines.reset(namespace.sessions(), at);
    }
}
