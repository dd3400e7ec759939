//! The `coord.v1.peer.Peer` service: receives Raft messages from other members and hands them
//! to openraft. Replies carry the remote `Result`, encoded like the request.

use std::sync::Arc;

use coord_proto::v1::peer::peer_server::Peer as PeerApi;
use coord_proto::v1::peer::PeerMessage;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::raft::{decode_peer, encode_peer, Consensus, TypeConfig};

pub struct PeerService {
    consensus: Arc<Consensus>,
}

impl PeerService {
    pub fn new(consensus: Arc<Consensus>) -> PeerService {
        PeerService { consensus }
    }
}

fn undecodable(error: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {error}"))
}

#[tonic::async_trait]
impl PeerApi for PeerService {
    async fn append_entries(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let append: AppendEntriesRequest<TypeConfig> =
            decode_peer(request.get_ref()).map_err(undecodable)?;
        let result = self.consensus.raft().append_entries(append).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let vote: VoteRequest<u64> = decode_peer(request.get_ref()).map_err(undecodable)?;
        let result = self.consensus.raft().vote(vote).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let chunk: InstallSnapshotRequest<TypeConfig> =
            decode_peer(request.get_ref()).map_err(undecodable)?;
        let result = self.consensus.raft().install_snapshot(chunk).await;
        Ok(Response::new(encode_peer(&result)))
    }

    async fn forward(
        &self,
        _request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        Err(Status::unimplemented(
            "write forwarding arrives with multi-member routing",
        ))
    }

    async fn read_index(
        &self,
        _request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        Err(Status::unimplemented(
            "remote read index arrives with multi-member routing",
        ))
    }

    async fn hello(&self, _request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        Err(Status::unimplemented(
            "member identity exchange arrives with multi-member routing",
        ))
    }
}
