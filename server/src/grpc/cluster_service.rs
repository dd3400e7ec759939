//! The `coord.v1.Cluster` service: status and membership.

use std::sync::Arc;

use coord_proto::v1 as pb;
use coord_proto::v1::cluster_server::Cluster as ClusterApi;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::status::status;
use crate::raft::Consensus;

pub struct ClusterService {
    consensus: Arc<Consensus>,
    cluster_id: String,
    client_address: String,
}

impl ClusterService {
    pub fn new(
        consensus: Arc<Consensus>,
        cluster_id: String,
        client_address: String,
    ) -> ClusterService {
        ClusterService {
            consensus,
            cluster_id,
            client_address,
        }
    }

    fn header(&self) -> pb::ResponseHeader {
        let view = self.consensus.view();
        let revision = self
            .consensus
            .replica()
            .read(|state| state.namespace.revision());
        pb::ResponseHeader {
            revision: revision.0,
            raft_term: view.term,
            leader_id: view.leader.unwrap_or(0),
            member_id: view.member_id,
        }
    }

    fn members(&self) -> Vec<pb::Member> {
        let status = self.consensus.status();
        status
            .members
            .iter()
            .map(|member| pb::Member {
                id: member.id,
                peer_address: member.peer_address.clone(),
                client_address: if member.id == status.member_id {
                    self.client_address.clone()
                } else {
                    String::new()
                },
                voter: member.voter,
            })
            .collect()
    }
}

fn unsupported(what: &str) -> Status {
    status(
        tonic::Code::Unimplemented,
        pb::ErrorDetail {
            code: pb::ErrorCode::Membership as i32,
            message: format!("{what} is not supported by this release yet"),
            ..pb::ErrorDetail::default()
        },
    )
}

#[tonic::async_trait]
impl ClusterApi for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let status = self.consensus.status();
        let members = self
            .members()
            .into_iter()
            .map(|member| {
                let state = status.members.iter().find(|state| state.id == member.id);
                let role = if Some(member.id) == status.leader {
                    pb::MemberRole::Leader
                } else if !member.voter {
                    pb::MemberRole::Learner
                } else if member.id == status.member_id && status.role == ServerState::Candidate {
                    pb::MemberRole::Candidate
                } else {
                    pb::MemberRole::Follower
                };
                let matched_index = state.and_then(|state| state.matched_index);
                let matched_index = if member.id == status.member_id {
                    Some(status.last_log_index)
                } else {
                    matched_index
                };
                pb::MemberStatus {
                    role: role as i32,
                    matched_index: matched_index.unwrap_or(0),
                    lag: matched_index
                        .map_or(0, |matched| status.last_log_index.saturating_sub(matched)),
                    reachable: matched_index.is_some() || !status.is_leader,
                    member: Some(member),
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            header: Some(self.header()),
            cluster_id: self.cluster_id.clone(),
            leader_id: status.leader.unwrap_or(0),
            term: status.term,
            committed_index: status.applied_index,
            applied_index: status.applied_index,
            last_log_index: status.last_log_index,
            snapshot_index: status.snapshot_index,
            purged_index: status.purged_index,
            members,
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
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(unsupported("adding a member"))
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(unsupported("promoting a member"))
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(unsupported("removing a member"))
    }
}
