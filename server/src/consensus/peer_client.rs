//! `PeerClients`: connections for the member-to-member calls Coord makes itself (forwarding
//! leader work, read index, hello), one per peer address, reused across calls and dropped when
//! a call fails so the next one reconnects. Every call carries a deadline and the sender's
//! cluster id, and its reply is checked for format and kind (`PeerCallError` otherwise).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use coord_proto::v1::peer::peer_client::PeerClient;
use coord_proto::v1::peer::PeerMessage;
use coord_tls::{ChannelConnector, ClientTls, TcpConnector, TlsConnector};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tonic::codegen::http::Uri;

use super::error::ConsensusError;
use super::ids::MemberId;
use super::leader::{Forwarder, LeaderCall};
use super::peer_channel::{peer_channel, PeerChannel};
use super::wire::{decode_peer, encode_peer, FormatError, MessageKind};

/// Connect timeout for a peer link.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest peer message accepted, in bytes: 64 entries of up to 8 MiB plus framing.
pub const PEER_MESSAGE_BYTES_MAX: usize = 600 * 1024 * 1024;

/// gRPC metadata naming the sender's cluster; a member refuses peer traffic from another one.
pub const CLUSTER_ID_METADATA_KEY: &str = "coord-cluster-id";

/// Why a call to another member failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeerCallError {
    #[error("bad peer address {address}: {reason}")]
    BadAddress { address: String, reason: String },
    /// The call failed in transit or was refused; `code` is the gRPC status code.
    #[error("{address}: {message} ({code})")]
    Failed {
        address: String,
        code: String,
        message: String,
    },
    /// The reply was in a format or of a kind this member does not read.
    #[error("unusable reply from {address}: {source}")]
    Reply {
        address: String,
        #[source]
        source: FormatError,
    },
}

impl PeerCallError {
    /// The call to `address` failed with `status`.
    pub fn failed(address: &str, status: &tonic::Status) -> PeerCallError {
        PeerCallError::Failed {
            address: address.to_owned(),
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }
    }

    /// Whether the peer answered that it has no such call: it runs an older release.
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, PeerCallError::Failed { code, .. } if code == "Unimplemented")
    }

    /// Whether the peer was not reached at all (nothing it could have done).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PeerCallError::Failed { code, .. } if code == "Unavailable")
    }

    /// Whether no connection to the peer could be made (its port refused or nothing listens):
    /// the call certainly never reached it.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            PeerCallError::Failed { code, message, .. } if code == "Unavailable"
                && (message.contains("tcp connect error")
                    || message.contains("Connection refused")
                    || message.contains(coord_tls::HANDSHAKE_FAILED))
        )
    }

    /// What a caller whose call to the leader `leader` failed with this error learns:
    /// nothing was applied when the call never left this member, the outcome is unknown
    /// otherwise.
    pub fn for_leader_call(self, leader: MemberId) -> ConsensusError {
        if self.never_sent() {
            ConsensusError::NoLeader { leader_hint: None }
        } else {
            ConsensusError::LeaderUnreachable {
                leader,
                reason: self.to_string(),
            }
        }
    }
}

/// The member-to-member calls Coord makes itself (openraft's own go through `network.rs`).
#[derive(Debug, Clone, Copy)]
pub enum PeerMethod {
    Forward,
    ReadIndex,
    Hello,
    PreVote,
    TimeoutNow,
    Features,
}

/// A peer request with a deadline and the sender's cluster id.
pub fn peer_request(
    cluster_id: &str,
    message: PeerMessage,
    timeout: Duration,
) -> tonic::Request<PeerMessage> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    with_cluster_id(request, cluster_id)
}

/// `request` with the sender's cluster id, which the receiving member checks first.
pub fn with_cluster_id<T>(mut request: tonic::Request<T>, cluster_id: &str) -> tonic::Request<T> {
    if let Ok(value) = cluster_id.parse() {
        request
            .metadata_mut()
            .insert(CLUSTER_ID_METADATA_KEY, value);
    }
    request
}

/// How this member opens connections to other members' peer ports: from which local address,
/// and over mutual TLS when the peer port has certificates.
#[derive(Clone, Default)]
pub struct PeerDialer {
    /// The local address outgoing peer connections are made from (`None`: the OS chooses).
    pub source_address: Option<IpAddr>,
    /// This member's peer certificate and the peer CA (`None`: plaintext).
    pub tls: Option<Arc<ClientTls>>,
    /// `--peer-cert-allowed-cn`: the common names a member dialled must present (empty: any).
    pub allowed_names: Vec<String>,
    /// Counts the connections opened by every client this dialer made (and its clones').
    pub connections_opened: Arc<AtomicU64>,
}

impl std::fmt::Debug for PeerDialer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PeerDialer")
            .field("source_address", &self.source_address)
            .field("tls", &self.tls.as_ref().map(|tls| tls.files()))
            .field("allowed_names", &self.allowed_names)
            .field("connections_opened", &self.connections_opened)
            .finish()
    }
}

impl PeerDialer {
    /// Opens a lazily connecting client to a peer address.
    pub fn connect(&self, address: &str) -> Result<PeerClient<PeerChannel>, PeerCallError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{address}").parse().map_err(
            |error: tonic::codegen::http::uri::InvalidUri| PeerCallError::BadAddress {
                address: address.to_owned(),
                reason: error.to_string(),
            },
        )?;
        // Our own connectors (source address, TCP_NODELAY, each request's frames in one
        // write: `coord_tls::Coalesce`) rather than tonic's.
        let connector = match &self.tls {
            Some(tls) => ChannelConnector::Tls(
                TlsConnector::new(tls.clone(), PEER_CONNECT_TIMEOUT)
                    .local_address(self.source_address)
                    .allowed_names(self.allowed_names.clone())
                    .log_refusals("peer"),
            ),
            None => ChannelConnector::Tcp(
                TcpConnector::new(PEER_CONNECT_TIMEOUT).local_address(self.source_address),
            ),
        };
        let channel = peer_channel(origin.clone(), connector, self.connections_opened.clone());
        Ok(PeerClient::with_origin(channel, origin)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }
}

pub struct PeerClients {
    cluster_id: String,
    dialer: PeerDialer,
    clients: Mutex<BTreeMap<String, PeerClient<PeerChannel>>>,
}

impl PeerClients {
    pub fn new(cluster_id: String, dialer: PeerDialer) -> PeerClients {
        PeerClients {
            cluster_id,
            dialer,
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many connections the clients of this dialer, and of its clones, opened.
    pub fn connections_opened(&self) -> u64 {
        self.dialer
            .connections_opened
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerClient<PeerChannel>>> {
        // The map is consistent after any panic: every change is one insert or remove.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self, address: &str) -> Result<PeerClient<PeerChannel>, PeerCallError> {
        let mut clients = self.clients();
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let client = self.dialer.connect(address)?;
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// Calls `method` with a message of `kind` on the peer at `address` and decodes its reply,
    /// which must be of the same kind.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        address: &str,
        method: PeerMethod,
        kind: MessageKind,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let mut client = self.client(address)?;
        let request = peer_request(&self.cluster_id, encode_peer(kind, request), timeout);
        let reply = match method {
            PeerMethod::Forward => client.forward(request).await,
            PeerMethod::ReadIndex => client.read_index(request).await,
            PeerMethod::Hello => client.hello(request).await,
            PeerMethod::PreVote => client.pre_vote(request).await,
            PeerMethod::TimeoutNow => client.timeout_now(request).await,
            PeerMethod::Features => client.features(request).await,
        };
        match reply {
            Ok(reply) => {
                decode_peer(reply.get_ref(), kind).map_err(|source| PeerCallError::Reply {
                    address: address.to_owned(),
                    source,
                })
            }
            Err(status) => {
                self.clients().remove(address);
                Err(PeerCallError::failed(address, &status))
            }
        }
    }

    /// Opens a `Peer.ForwardStream` to the peer at `address`, sending what `requests` gives
    /// (`forward_stream.rs`); returns its answers once the peer accepted it.
    pub async fn open_forward_stream(
        &self,
        address: &str,
        requests: tokio::sync::mpsc::UnboundedReceiver<PeerMessage>,
    ) -> Result<tonic::Streaming<PeerMessage>, PeerCallError> {
        let mut client = self.client(address)?;
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(requests);
        let call = with_cluster_id(tonic::Request::new(requests), &self.cluster_id);
        match client.forward_stream(call).await {
            Ok(answers) => Ok(answers.into_inner()),
            Err(status) => {
                // An older peer's refusal says nothing about the connection.
                if status.code() != tonic::Code::Unimplemented {
                    self.clients().remove(address);
                }
                Err(PeerCallError::failed(address, &status))
            }
        }
    }
}

/// Runs a call on the leader as a `Peer.Forward` call of its own.
impl<C: LeaderCall> Forwarder<C> for PeerClients {
    async fn forward(
        &self,
        leader: MemberId,
        address: &str,
        call: &C,
        timeout: Duration,
    ) -> Result<C::Reply, ConsensusError> {
        let reply: Result<Result<C::Reply, ConsensusError>, PeerCallError> = self
            .call(address, PeerMethod::Forward, C::KIND, call, timeout)
            .await;
        reply.unwrap_or_else(|error| Err(error.for_leader_call(leader)))
    }
}
