//! The `coord.v1.Cluster` service: status and membership changes (run on the leader).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use coord_proto::v1 as pb;
use coord_proto::v1::cluster_server::Cluster as ClusterApi;
use tonic::{Request, Response, Status};

use super::access::Access;
use super::status::{consensus_status, invalid_argument};
use crate::consensus::{Consensus, MemberId, MembershipChange, Role};
use crate::membership::MemberDirectory;
use crate::tls_port::{PortsTls, TlsCounters};

pub struct ClusterService {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    directory: Arc<MemberDirectory>,
    client_address: String,
    /// `--quota-bytes`, for the NOSPACE alarm (0: none).
    quota_bytes: u64,
    /// Both ports' TLS, for the security status.
    tls: PortsTls,
}

impl ClusterService {
    pub fn new(
        consensus: Arc<Consensus>,
        access: Arc<Access>,
        directory: Arc<MemberDirectory>,
        client_address: String,
        quota_bytes: u64,
        tls: PortsTls,
    ) -> ClusterService {
        ClusterService {
            consensus,
            access,
            directory,
            client_address,
            quota_bytes,
            tls,
        }
    }

    fn header(&self) -> pb::ResponseHeader {
        super::header::response_header(&self.consensus, None)
    }

    fn client_address_of(&self, id: MemberId) -> String {
        if id == self.consensus.member_id() {
            self.client_address.clone()
        } else {
            self.directory.client_address(id).unwrap_or_default()
        }
    }

    fn members(&self) -> Vec<pb::Member> {
        self.consensus
            .status()
            .members
            .iter()
            .map(|member| pb::Member {
                id: member.id.0,
                peer_address: member.peer_address.clone(),
                client_address: self.client_address_of(member.id),
                voter: member.voter,
            })
            .collect()
    }

    async fn change(
        &self,
        change: MembershipChange,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let removed = match &change {
            MembershipChange::Remove { id } => Some(id.0),
            _ => None,
        };
        self.consensus
            .change_membership(change)
            .await
            .map_err(|error| consensus_status(&error))?;
        // The change is committed. A member that answers for a leader it handed leadership to
        // (removing the leader moves leadership first) may not have applied it yet; the member
        // removed is gone either way.
        let members = self
            .members()
            .into_iter()
            .filter(|member| Some(member.id) != removed)
            .collect();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members,
        }))
    }
}

impl ClusterService {
    /// This member's TLS and auth settings, and its refusals so far.
    fn security_status(&self) -> pb::SecurityStatus {
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let client = self.tls.client.as_deref();
        let peer = self.tls.peer.as_deref();
        let counted =
            |port: Option<&crate::tls_port::TlsPort>,
             which: fn(&TlsCounters) -> &std::sync::atomic::AtomicU64| {
                port.map_or(0, |port| count(which(&port.counters)))
            };
        pb::SecurityStatus {
            client_tls: client.is_some(),
            client_certificates_required: client.is_some_and(|port| port.requires_certificates()),
            peer_tls: peer.is_some(),
            auth_enabled: self.access.policy().is_ok_and(|policy| policy.is_enabled()),
            client_handshakes_refused: counted(client, |counters| &counters.handshakes_failed),
            peer_handshakes_refused: counted(peer, |counters| &counters.handshakes_failed),
            plaintext_refused: counted(client, |counters| &counters.plaintext_refused)
                + counted(peer, |counters| &counters.plaintext_refused),
            peer_names_refused: counted(peer, |counters| &counters.names_refused),
            unauthenticated: count(&self.access.counters.unauthenticated),
            denied: count(&self.access.counters.denied),
        }
    }
}

#[tonic::async_trait]
impl ClusterApi for ClusterService {
    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.access.require_user(&self.access.identify(&request)?)?;
        let status = self.consensus.status();
        let data_bytes = self
            .consensus
            .replica()
            .read(|namespace| namespace.data_bytes());
        let members = status
            .members
            .iter()
            .map(|state| {
                let is_self = state.id == status.member_id;
                let role = if Some(state.id) == status.leader {
                    pb::MemberRole::Leader
                } else if !state.voter {
                    pb::MemberRole::Learner
                } else if is_self && status.role == Role::Candidate {
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
                let reachable = is_self || self.directory.is_reachable(state.id);
                pb::MemberStatus {
                    member: Some(pb::Member {
                        id: state.id.0,
                        peer_address: state.peer_address.clone(),
                        client_address: self.client_address_of(state.id),
                        voter: state.voter,
                    }),
                    role: role as i32,
                    matched_index: matched_index.unwrap_or(0),
                    lag: matched_index
                        .map_or(0, |matched| status.last_log_index.saturating_sub(matched)),
                    reachable,
                    progress_unknown: matched_index.is_none(),
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            header: Some(self.header()),
            cluster_id: self.consensus.cluster_id().to_owned(),
            leader_id: status.leader.map_or(0, |leader| leader.0),
            term: status.term.0,
            committed_index: status.applied_index,
            applied_index: status.applied_index,
            last_log_index: status.last_log_index,
            snapshot_index: status.snapshot_index,
            members,
            purged_index: status.purged_index,
            alarms: if self.quota_bytes > 0 && data_bytes >= self.quota_bytes {
                vec!["NOSPACE".to_owned()]
            } else {
                Vec::new()
            },
            data_bytes,
            quota_bytes: self.quota_bytes,
            leader_has_quorum: self.consensus.leader_has_quorum(),
            security: Some(self.security_status()),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.access.require_user(&self.access.identify(&request)?)?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: self.members(),
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.access
            .require_admin(&self.access.identify(&request)?)?;
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
            .any(|member| member.id == MemberId(request.id))
        {
            return Err(invalid_argument(format!(
                "member {} is already in the cluster",
                request.id
            )));
        }
        self.change(MembershipChange::AddLearner {
            id: MemberId(request.id),
            peer_address: request.peer_address,
        })
        .await
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.access
            .require_admin(&self.access.identify(&request)?)?;
        self.change(MembershipChange::Promote {
            id: MemberId(request.into_inner().id),
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.access
            .require_admin(&self.access.identify(&request)?)?;
        self.change(MembershipChange::Remove {
            id: MemberId(request.into_inner().id),
        })
        .await
    }

    async fn member_move_leader(
        &self,
        request: Request<pb::MemberMoveLeaderRequest>,
    ) -> Result<Response<pb::MemberMoveLeaderResponse>, Status> {
        self.access
            .require_admin(&self.access.identify(&request)?)?;
        let target = match request.into_inner().target_id {
            0 => None,
            id => Some(MemberId(id)),
        };
        let moved = self
            .consensus
            .move_leader(target)
            .await
            .map_err(|error| consensus_status(&error))?;
        Ok(Response::new(pb::MemberMoveLeaderResponse {
            header: Some(self.header()),
            leader_id: moved.leader.0,
            term: moved.term.0,
        }))
    }
}
