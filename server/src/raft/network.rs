//! `PeerNetwork`: openraft's network over tonic, to the `coord.v1.peer.Peer` service on each
//! member's peer port. Messages are openraft's own types encoded with bincode inside a
//! `PeerMessage`; the remote's `Result` travels back the same way.
//!
//! Every call has a deadline (openraft's per-RPC TTL); a connection that fails is dropped and
//! re-created lazily on the next call, and openraft backs off from unreachable members.

use std::net::IpAddr;
use std::time::Duration;

use coord_proto::v1::peer::peer_client::PeerClient;
use coord_proto::v1::peer::PeerMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::{Member, TypeConfig};

/// Connect timeout for a peer link.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest peer message accepted, in bytes: 64 entries of up to 8 MiB plus framing.
pub const PEER_MESSAGE_BYTES_MAX: usize = 600 * 1024 * 1024;

/// gRPC metadata naming the sender's cluster; a member refuses peer traffic from another one.
pub const CLUSTER_ID_METADATA_KEY: &str = "coord-cluster-id";

pub struct PeerNetwork {
    member_id: u64,
    cluster_id: String,
    source_address: Option<IpAddr>,
}

impl PeerNetwork {
    /// `source_address`: the local address outgoing peer connections are made from (the OS
    /// chooses when `None`).
    pub fn new(member_id: u64, cluster_id: String, source_address: Option<IpAddr>) -> PeerNetwork {
        PeerNetwork {
            member_id,
            cluster_id,
            source_address,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, member: &Member) -> PeerLink {
        PeerLink {
            from: self.member_id,
            target,
            address: member.addr.clone(),
            cluster_id: self.cluster_id.clone(),
            source_address: self.source_address,
            client: None,
        }
    }
}

/// A lazily connected link to one peer.
pub struct PeerLink {
    from: u64,
    target: u64,
    address: String,
    cluster_id: String,
    source_address: Option<IpAddr>,
    client: Option<PeerClient<Channel>>,
}

/// A peer request with a deadline and the sender's cluster id.
pub fn peer_request(
    cluster_id: &str,
    message: PeerMessage,
    timeout: Duration,
) -> tonic::Request<PeerMessage> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if let Ok(value) = cluster_id.parse() {
        request
            .metadata_mut()
            .insert(CLUSTER_ID_METADATA_KEY, value);
    }
    request
}

/// Opens a lazily connecting client to a peer address.
fn connect_peer(
    address: &str,
    source_address: Option<IpAddr>,
) -> Result<PeerClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| format!("bad peer address {address}: {error}"))?
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .local_address(source_address)
        .tcp_nodelay(true);
    Ok(PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
}

/// Clients for the member-to-member calls Coord makes itself (forwarding, read index, hello),
/// one per peer address, reused across calls.
pub struct PeerClients {
    cluster_id: String,
    source_address: Option<IpAddr>,
    clients: std::sync::Mutex<std::collections::BTreeMap<String, PeerClient<Channel>>>,
}

/// The member-to-member calls Coord makes itself.
#[derive(Debug, Clone, Copy)]
pub enum PeerCall {
    Forward,
    ReadIndex,
    Hello,
}

impl PeerClients {
    pub fn new(cluster_id: String, source_address: Option<IpAddr>) -> PeerClients {
        PeerClients {
            cluster_id,
            source_address,
            clients: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    fn client(&self, address: &str) -> Result<PeerClient<Channel>, String> {
        let mut clients = self
            .clients
            .lock()
            .expect("no panic while holding the peer client lock");
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let client = connect_peer(address, self.source_address)?;
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }

    fn forget(&self, address: &str) {
        self.clients
            .lock()
            .expect("no panic while holding the peer client lock")
            .remove(address);
    }

    /// Calls `method` on the peer at `address` and decodes its reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        address: &str,
        method: PeerCall,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        let mut client = self.client(address)?;
        let request = peer_request(&self.cluster_id, encode_peer(request), timeout);
        let reply = match method {
            PeerCall::Forward => client.forward(request).await,
            PeerCall::ReadIndex => client.read_index(request).await,
            PeerCall::Hello => client.hello(request).await,
        };
        match reply {
            Ok(reply) => decode_peer(reply.get_ref())
                .map_err(|error| format!("undecodable reply from {address}: {error}")),
            Err(status) => {
                self.forget(address);
                Err(format!("{address}: {}", status.message()))
            }
        }
    }
}

/// Encodes a peer message body.
pub fn encode_peer<T: Serialize>(value: &T) -> PeerMessage {
    PeerMessage {
        payload: bincode::serialize(value).expect("encoding into memory cannot fail"),
    }
}

/// Decodes a peer message body.
pub fn decode_peer<T: DeserializeOwned>(message: &PeerMessage) -> Result<T, bincode::Error> {
    bincode::deserialize(&message.payload)
}

type CallError<E> = RPCError<u64, Member, E>;

impl PeerLink {
    fn client(&mut self) -> Result<PeerClient<Channel>, Unreachable> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = connect_peer(&self.address, self.source_address)
            .map_err(|error| Unreachable::new(&AnyError::error(error)))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn call<Req, Resp, E>(
        &mut self,
        method: PeerMethod,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let ttl = option.hard_ttl();
        let grpc_request = peer_request(&self.cluster_id, encode_peer(request), ttl);
        let call = async {
            match method {
                PeerMethod::AppendEntries => client.append_entries(grpc_request).await,
                PeerMethod::Vote => client.vote(grpc_request).await,
                PeerMethod::InstallSnapshot => client.install_snapshot(grpc_request).await,
            }
        };
        let response = match tokio::time::timeout(ttl, call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: method.action(),
                    id: self.from,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => {
                // Drop the connection so the next call reconnects from scratch.
                self.client = None;
                let error = AnyError::error(format!("{}: {}", self.address, status.message()));
                return Err(if status.code() == tonic::Code::Unavailable {
                    RPCError::Unreachable(Unreachable::new(&error))
                } else {
                    RPCError::Network(NetworkError::new(&error))
                });
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let remote: Result<Resp, E> = decode_peer(&response).map_err(|error| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "undecodable reply: {error}"
            ))))
        })?;
        remote.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

#[derive(Debug, Clone, Copy)]
enum PeerMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerMethod {
    fn action(self) -> openraft::network::RPCTypes {
        match self {
            PeerMethod::AppendEntries => openraft::network::RPCTypes::AppendEntries,
            PeerMethod::Vote => openraft::network::RPCTypes::Vote,
            PeerMethod::InstallSnapshot => openraft::network::RPCTypes::InstallSnapshot,
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, CallError<RaftError<u64>>> {
        self.call(PeerMethod::AppendEntries, &request, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, CallError<RaftError<u64, InstallSnapshotError>>> {
        self.call(PeerMethod::InstallSnapshot, &request, &option)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, CallError<RaftError<u64>>> {
        self.call(PeerMethod::Vote, &request, &option).await
    }
}
