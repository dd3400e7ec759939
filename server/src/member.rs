//! `run`: one member's whole life: claim the data directory, bind both ports, start consensus,
//! serve gRPC until `shutdown` resolves, then stop cleanly.

use std::future::Future;
use std::sync::Arc;

use coord_proto::v1::cluster_server::ClusterServer;
use coord_proto::v1::namespace_server::NamespaceServer;
use coord_proto::v1::peer::peer_server::PeerServer;
use coord_proto::v1::sessions_server::SessionsServer;
use coord_proto::v1::watch_server::WatchServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::config::ServerConfig;
use crate::fsm::Limits;
use crate::grpc::{
    ClusterService, NamespaceService, PeerService, SessionsService, TtlBounds, WatchService,
    CLIENT_MESSAGE_BYTES_MAX,
};
use crate::raft::{
    Consensus, ConsensusConfig, HistoryLimits, Member, MemberId, StartError, PEER_MESSAGE_BYTES_MAX,
};
use crate::storage::{DataDirIdentity, IdentityError};

/// How often members exchange identities (client addresses) and liveness.
const HELLO_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

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
    #[error("cannot open the data directory {dir}: {source} (is another coord-server using it?)")]
    Start { dir: String, source: StartError },
    #[error("{role} server failed: {source}")]
    Serve {
        role: &'static str,
        source: tonic::transport::Error,
    },
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    if config.id == 0 {
        return Err(RunError::Config("--id must be at least 1".into()));
    }
    let initial_members = config.initial_members().map_err(RunError::Config)?;
    let cluster_id = match &config.join {
        Some(cluster_id) => cluster_id.clone(),
        None => config.cluster_id(&initial_members),
    };
    let is_new = DataDirIdentity::claim(&config.data_dir, &cluster_id, config.id)?;

    let client_listener = bind("client requests", config.listen_client).await?;
    let peer_listener = bind("peer traffic", config.listen_peer).await?;
    let client_address = config
        .advertise_client
        .clone()
        .unwrap_or_else(|| config.listen_client.to_string());

    let consensus_config = ConsensusConfig {
        member_id: MemberId(config.id),
        cluster_id: cluster_id.clone(),
        client_address: client_address.clone(),
        heartbeat_interval: config.heartbeat_interval,
        election_timeout_min: config.election_timeout,
        election_timeout_max: config.election_timeout * 2,
        snapshot_entries: config.snapshot_entries,
        snapshot_keep_entries: config.snapshot_keep_entries,
        snapshot_bytes: config.snapshot_bytes,
        request_timeout: config.request_timeout,
        peer_source_address: config.peer_source_address,
        session_checkpoint_interval: config.session_checkpoint_interval,
        write_id_retention: config.write_id_retention,
        watch_history: HistoryLimits {
            events_max: config.watch_history_events,
            bytes_max: config.watch_history_bytes,
        },
    };
    // Exactly one member founds a new cluster: the lowest id of the initial cluster. The others
    // (and members started with --join) wait for the leader; a restarted member never founds.
    let founder = config.join.is_none() && initial_members.keys().next() == Some(&config.id);
    let members = initial_members
        .into_iter()
        .map(|(id, address)| (id, Member { addr: address }))
        .collect();
    let consensus = Consensus::start(consensus_config, &config.data_dir, members, founder)
        .await
        .map_err(|source| RunError::Start {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
    let consensus = Arc::new(consensus);
    tracing::info!(
        member = config.id,
        cluster = %cluster_id,
        new_data_dir = is_new,
        client = %config.listen_client,
        peer = %config.listen_peer,
        data_dir = %config.data_dir.display(),
        "coord-server serving"
    );

    let limits = Limits {
        node_data_bytes_max: config.max_data_bytes,
        ..Limits::default()
    };
    let namespace = NamespaceServer::new(NamespaceService::new(consensus.clone(), limits))
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX);
    let cluster = ClusterServer::new(ClusterService::new(consensus.clone(), client_address));
    let ttl_bounds = TtlBounds {
        min: config.session_ttl_min,
        max: config.session_ttl_max,
    };
    let sessions = SessionsServer::new(SessionsService::new(consensus.clone(), ttl_bounds));
    let watch = WatchServer::new(WatchService::new(
        consensus.clone(),
        config.watch_progress_interval,
    ));
    let peer = PeerServer::new(PeerService::new(consensus.clone()))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);

    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let client_server = tonic::transport::Server::builder()
        .add_service(namespace)
        .add_service(cluster)
        .add_service(sessions)
        .add_service(watch)
        .serve_with_incoming_shutdown(incoming(client_listener), stopped(stop_receiver.clone()));
    let peer_server = tonic::transport::Server::builder()
        .add_service(peer)
        .serve_with_incoming_shutdown(incoming(peer_listener), stopped(stop_receiver));
    let client_task = tokio::spawn(client_server);
    let peer_task = tokio::spawn(peer_server);

    // Learn the other members' client addresses and reachability, once a second.
    let greeter = {
        let consensus = consensus.clone();
        tokio::spawn(async move {
            loop {
                consensus.greet_peers().await;
                tokio::time::sleep(HELLO_INTERVAL).await;
            }
        })
    };

    let session_keeper = tokio::spawn(consensus.clone().run_session_keeper());

    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        () = consensus.removed() => {
            tracing::warn!("this member was removed from the cluster; stopping");
            // Let in-flight requests (the removal itself, often) answer before the ports close.
            tokio::time::sleep(REMOVAL_GRACE).await;
        }
    }
    greeter.abort();
    session_keeper.abort();
    let _ = stop_sender.send(true);
    consensus.shutdown().await;
    for (role, task) in [("client", client_task), ("peer", peer_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(RunError::Serve { role, source }),
            Err(join_error) => {
                tracing::warn!(%join_error, role, "server task did not finish cleanly")
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: a gRPC reply is several small writes, and
/// with Nagle on each one after the first waits for the peer's delayed ACK (about 40 ms).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
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
