//! The `coord.v1.Cluster` service: status and membership changes (run on the leader).

use std::sync::Arc;

use coord_proto::v1 as pb;
use coord_proto::v1::cluster_server::Cluster as ClusterApi;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::status::{consensus_status, invalid_argument};
use crate::raft::{Consensus, ForwardRequest};

pub struct ClusterService {
    consensus: Arc<Consensus>,
    client_address: String,
}

impl ClusterService {
    pub fn new(consensus: Arc<Consensus>, client_address: String) -> ClusterService {
        ClusterService {
            consensus,
            client_address,
        }
    }

    fn header(&self) -> pb::ResponseHeader {
        super::response_header(&self.consensus, None)
    }

    fn client_address_of(&self, id: u64) -> String {
        if id == self.consensus.member_id().0 {
            self.client_address.clone()
        } else {
            self.consensus
                .directory()
                .client_address(id)
                .unwrap_or_default()
        }
    }

    fn members(&self) -> Vec<pb::Member> {
        self.consensus
            .status()
            .members
            .iter()
            .map(|member| pb::Member {
                id: member.id,
                peer_address: member.peer_address.clone(),
                client_address: self.client_address_of(member.id),
                voter: member.voter,
            })
            .collect()
    }

    async fn change(
        &self,
        request: ForwardRequest,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.consensus
            .change_membership(request)
            .await
            .map_err(|error| consensus_status(&error))?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: self.members(),
        }))
    }
}

#[tonic::async_trait]
impl ClusterApi for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let status = self.consensus.status();
        let members = status
            .members
            .iter()
            .map(|state| {
                let is_self = state.id == status.member_id;
                let role = if Some(state.id) == status.leader {
                    pb::MemberRole::Leader
                } else if !state.voter {
                    pb::MemberRole::Learner
                } else if is_self && status.role == ServerState::Candidate {
                    pb::MemberRole::Candidate
                } else {
                    pb::MemberRole::Follower
                };
                // The leader knows each member's progress; others know only their own.
                let matched_index = if is_self {
                    Some(status.last_log_index)
                } else {
                    state.matched_index
                };
                let reachable = is_self || self.consensus.directory().is_reachable(state.id);
                pb::MemberStatus {
                    member: Some(pb::Member {
                        id: state.id,
                        peer_address: state.peer_address.clone(),
                        client_address: self.client_address_of(state.id),
                        voter: state.voter,
                    }),
                    role: role as i32,
                    matched_index: matched_index.unwrap_or(0),
                    lag: matched_index
                        .map_or(0, |matched| status.last_log_index.saturating_sub(matched)),
                    reachable,
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            header: Some(self.header()),
            cluster_id: self.consensus.cluster_id().to_owned(),
            leader_id: status.leader.unwrap_or(0),
            term: status.term,
            committed_index: status.applied_index,
            applied_index: status.applied_index,
            last_log_index: status.last_log_index,
            snapshot_index: status.snapshot_index,
            members,
            purged_index: status.purged_index,
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: self.members(),
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(invalid_argument("id: member ids start at 1"));
        }
        if !request.peer_address.contains(':') {
            return Err(invalid_argument(format!(
                "peer_address {:?} is not HOST:PORT",
                request.peer_address
            )));
        }
        if self
            .consensus
            .status()
            .members
            .iter()
            .any(|member| member.id == request.id)
        {
            return Err(invalid_argument(format!(
                "member {} is already in the cluster",
                request.id
            )));
        }
        self.change(ForwardRequest::AddLearner {
            id: request.id,
            peer_address: request.peer_address,
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.change(ForwardRequest::Promote {
            id: request.into_inner().id,
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.change(ForwardRequest::Remove {
            id: request.into_inner().id,
        })
        .await
    }
}
