//! The `coord.v1.peer.Peer` service: receives Raft messages from other members and hands them
//! to openraft; runs forwarded leader-only work; answers read-index and hello requests.
//! Replies carry the remote `Result`, encoded like the request. Traffic from another cluster
//! (a different `coord-cluster-id`) is refused.

use std::sync::Arc;

use coord_proto::v1::peer::peer_server::Peer as PeerApi;
use coord_proto::v1::peer::PeerMessage;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::raft::{
    decode_peer, encode_peer, Consensus, ForwardRequest, Hello, TypeConfig, CLUSTER_ID_METADATA_KEY,
};

pub struct PeerService {
    consensus: Arc<Consensus>,
}

impl PeerService {
    pub fn new(consensus: Arc<Consensus>) -> PeerService {
        PeerService { consensus }
    }

    /// Decodes a request after checking that it comes from this cluster.
    fn accept<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request<PeerMessage>,
    ) -> Result<T, Status> {
        let sender = request
            .metadata()
            .get(CLUSTER_ID_METADATA_KEY)
            .and_then(|value| value.to_str().ok());
        let ours = self.consensus.cluster_id();
        if sender != Some(ours) {
            return Err(Status::permission_denied(format!(
                "peer traffic from cluster {:?} refused: this member belongs to cluster {ours}",
                sender.unwrap_or("<none>")
            )));
        }
        decode_peer(request.get_ref())
            .map_err(|error| Status::invalid_argument(format!("undecodable peer message: {error}")))
    }
}

#[tonic::async_trait]
impl PeerApi for PeerService {
    async fn append_entries(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let append: AppendEntriesRequest<TypeConfig> = self.accept(&request)?;
        let result = self.consensus.raft().append_entries(append).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let vote: VoteRequest<u64> = self.accept(&request)?;
        let result = self.consensus.raft().vote(vote).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let chunk: InstallSnapshotRequest<TypeConfig> = self.accept(&request)?;
        let result = self.consensus.raft().install_snapshot(chunk).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn forward(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let forwarded: ForwardRequest = self.accept(&request)?;
        let result = self.consensus.run_forwarded(forwarded).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn read_index(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let () = self.accept(&request)?;
        let result = self.consensus.leader_read_index().await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn hello(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let hello: Hello = self.accept(&request)?;
        self.consensus
            .directory()
            .heard_from(hello.member_id, hello.client_address);
        Ok(Response::new(encode_peer(&self.consensus.hello())))
    }
}
