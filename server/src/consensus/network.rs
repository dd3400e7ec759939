//! `PeerNetwork`: openraft's network over tonic, to the `coord.v1.peer.Peer` service on each
//! member's peer port. Messages are openraft's own types in a versioned `PeerMessage`
//! (`wire.rs`); the remote's `Result` travels back the same way.
//!
//! Every call has a deadline (openraft's per-RPC TTL); a connection that fails is dropped and
//! re-created lazily on the next call, and openraft backs off from unreachable members.
//!
//! Invariant: an AppendEntries never tells a follower of a commit index beyond the entries on
//! this member's own disk (the third gate of `log_flush`): it waits for its own write, at most
//! half the call's deadline, and sends a lower commit index after that.

use std::sync::Arc;

use coord_proto::v1::peer::peer_client::PeerClient;
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

use super::election::AckClock;
use super::log_flush::LogFlusher;
use super::peer_channel::PeerChannel;
use super::peer_client::{peer_request, PeerDialer};
use super::types::{Member, TypeConfig};
use super::wire::{decode_peer, encode_peer, MessageKind};

pub struct PeerNetwork {
    member_id: u64,
    cluster_id: String,
    dialer: PeerDialer,
    /// Where answered AppendEntries are recorded, for the leader's quorum check.
    acks: Arc<AckClock>,
    /// This member's log flusher: how far the commit index sent may go.
    durable: Arc<LogFlusher>,
}

impl PeerNetwork {
    /// `dialer`: how outgoing peer connections are made (source address, mutual TLS).
    pub fn new(
        member_id: u64,
        cluster_id: String,
        dialer: PeerDialer,
        acks: Arc<AckClock>,
        durable: Arc<LogFlusher>,
    ) -> PeerNetwork {
        PeerNetwork {
            member_id,
            cluster_id,
            dialer,
            acks,
            durable,
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
            dialer: self.dialer.clone(),
            client: None,
            acks: self.acks.clone(),
            durable: self.durable.clone(),
        }
    }
}

/// A lazily connected link to one peer.
pub struct PeerLink {
    from: u64,
    target: u64,
    address: String,
    cluster_id: String,
    dialer: PeerDialer,
    client: Option<PeerClient<PeerChannel>>,
    acks: Arc<AckClock>,
    durable: Arc<LogFlusher>,
}

type CallError<E> = RPCError<u64, Member, E>;

impl PeerLink {
    fn client(&mut self) -> Result<PeerClient<PeerChannel>, Unreachable> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = self
            .dialer
            .connect(&self.address)
            .map_err(|error| Unreachable::new(&AnyError::new(&error)))?;
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
        let grpc_request = peer_request(&self.cluster_id, encode_peer(method.kind(), request), ttl);
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
        let remote: Result<Resp, E> = decode_peer(&response, method.kind()).map_err(|error| {
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
    fn kind(self) -> MessageKind {
        match self {
            PeerMethod::AppendEntries => MessageKind::AppendEntries,
            PeerMethod::Vote => MessageKind::Vote,
            PeerMethod::InstallSnapshot => MessageKind::InstallSnapshot,
        }
    }

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
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, CallError<RaftError<u64>>> {
        // openraft counts this member's own copy of an entry before it is on disk; a follower
        // must not apply an entry that a crash here could still take from the majority. The
        // own write began before the followers' round trip, so it is nearly always done; if
        // not, wait for it rather than send a lower commit index, which openraft would not
        // send again until the next heartbeat (the wait is bounded below).
        if request.leader_commit > self.durable.durable() {
            if let Some(commit) = request.leader_commit {
                // Within half the call's deadline, so that a slow disk delays the commit index
                // (to the next heartbeat) rather than time the call out. A failed write leaves
                // the index capped below; the member is stopping.
                let wait = self.durable.wait_through(commit.index);
                let _ = tokio::time::timeout(option.hard_ttl() / 2, wait).await;
            }
            request.leader_commit = request.leader_commit.min(self.durable.durable());
        }
        let response = self
            .call(PeerMethod::AppendEntries, &request, &option)
            .await;
        // A follower that answers in the leader's term (success or a log conflict) counts
        // towards the leader's quorum; a higher vote or no answer does not.
        if matches!(&response, Ok(answer) if !matches!(answer, AppendEntriesResponse::HigherVote(_)))
        {
            self.acks.record(self.target);
        }
        response
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
        let response: Result<VoteResponse<u64>, _> =
            self.call(PeerMethod::Vote, &request, &option).await;
        // A voter that granted this member's candidacy answers a new leader's quorum check.
        if matches!(&response, Ok(answer) if answer.vote_granted) {
            self.acks.record(self.target);
        }
        response
    }
}
