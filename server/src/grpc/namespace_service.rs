//! The `coord.v1.Namespace` service: validates requests, runs writes through consensus and
//! reads from the local replica after the requested read barrier.

use std::sync::Arc;

use coord_proto::v1 as pb;
use coord_proto::v1::namespace_server::Namespace as NamespaceApi;
use tonic::{Request, Response, Status};

use super::access::Access;
use super::status::{consensus_status, fsm_status, invalid_argument};
use crate::auth::Permission;
use crate::consensus::{Consensus, Consistency};
use crate::fsm::{FencingToken, FsmError, Limits, NodePath, Output, Proposal, Revision};
use crate::pb::{
    command_from_create, command_from_delete, command_from_set, command_from_txn, created_response,
    stat_to_pb, txn_results,
};

/// Default and largest page of a children listing.
pub const CHILDREN_PAGE_DEFAULT: usize = 1000;
pub const CHILDREN_PAGE_MAX: usize = 10_000;

pub struct NamespaceService {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    limits: Limits,
}

impl NamespaceService {
    pub fn new(consensus: Arc<Consensus>, access: Arc<Access>, limits: Limits) -> NamespaceService {
        NamespaceService {
            consensus,
            access,
            limits,
        }
    }

    /// Requires read on `path` for `request`'s caller.
    fn require_read<T>(&self, request: &Request<T>, path: &str) -> Result<(), Status> {
        let who = self.access.identify(request)?;
        self.access.require(&who, Permission::Read, path)
    }

    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        super::header::response_header(&self.consensus, Some(revision))
    }

    /// Checks limits, proposes, and returns the revision and output, or the error as a status.
    async fn write(&self, proposal: Proposal) -> Result<(Revision, Output), Status> {
        super::propose::propose(&self.consensus, &self.limits, proposal).await
    }

    async fn barrier(&self, read: Option<pb::ReadOptions>) -> Result<(), Status> {
        read_barrier(&self.consensus, read).await
    }
}

/// Waits for the read barrier `read` asks for (linearizable when unset).
pub(super) async fn read_barrier(
    consensus: &Consensus,
    read: Option<pb::ReadOptions>,
) -> Result<(), Status> {
    let read = read.unwrap_or_default();
    let consistency = match pb::Consistency::try_from(read.consistency) {
        Ok(pb::Consistency::Unspecified | pb::Consistency::Linearizable) => {
            Consistency::Linearizable
        }
        Ok(pb::Consistency::Serializable) => Consistency::Serializable,
        Ok(pb::Consistency::MinRevision) => Consistency::MinRevision(Revision(read.min_revision)),
        Err(_) => {
            return Err(invalid_argument(format!(
                "read.consistency: unknown value {}",
                read.consistency
            )))
        }
    };
    consensus
        .read_barrier(consistency)
        .await
        .map_err(|error| consensus_status(&error))
}

pub(super) fn parse_path(text: &str) -> Result<NodePath, Status> {
    NodePath::parse(text).map_err(|rule| fsm_status(&FsmError::invalid_path(text, rule)))
}

fn unexpected(output: &Output) -> Status {
    Status::internal(format!("unexpected command output {output:?}"))
}

#[tonic::async_trait]
impl NamespaceApi for NamespaceService {
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let who = self.access.identify(&request)?;
        let command =
            command_from_create(request.into_inner()).map_err(|error| fsm_status(&error))?;
        self.access.require_proposal(&who, &command)?;
        match self.write(command).await? {
            (revision, Output::Created { path, stat }) => Ok(Response::new(created_response(
                self.header(revision),
                &path,
                &stat,
            ))),
            (_, output) => Err(unexpected(&output)),
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.require_read(&request, &request.get_ref().path)?;
        let request = request.into_inner();
        let path = parse_path(&request.path)?;
        self.barrier(request.read).await?;
        let (revision, node) = self.consensus.replica().read(|namespace| {
            let node = namespace
                .get(&path)
                .map(|node| (node.data.clone(), node.stat));
            (namespace.revision(), node)
        });
        let (data, stat) = node.ok_or_else(|| fsm_status(&FsmError::NoNode { path }))?;
        Ok(Response::new(pb::GetResponse {
            header: Some(self.header(revision)),
            data,
            stat: Some(stat_to_pb(&stat)),
        }))
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        let who = self.access.identify(&request)?;
        let command = command_from_set(request.into_inner());
        self.access.require_proposal(&who, &command)?;
        match self.write(command).await? {
            (revision, Output::Set { stat }) => Ok(Response::new(pb::SetResponse {
                header: Some(self.header(revision)),
                stat: Some(stat_to_pb(&stat)),
            })),
            (_, output) => Err(unexpected(&output)),
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = self.access.identify(&request)?;
        let command = command_from_delete(request.into_inner());
        self.access.require_proposal(&who, &command)?;
        match self.write(command).await? {
            (revision, Output::Deleted { count }) => Ok(Response::new(pb::DeleteResponse {
                header: Some(self.header(revision)),
                deleted: count,
            })),
            (_, output) => Err(unexpected(&output)),
        }
    }

    async fn children(
        &self,
        request: Request<pb::ChildrenRequest>,
    ) -> Result<Response<pb::ChildrenResponse>, Status> {
        self.require_read(&request, &request.get_ref().path)?;
        let request = request.into_inner();
        let path = parse_path(&request.path)?;
        let page_size = match request.page_size as usize {
            0 => CHILDREN_PAGE_DEFAULT,
            size if size > CHILDREN_PAGE_MAX => {
                return Err(fsm_status(&FsmError::LimitExceeded {
                    what: "children page_size".into(),
                    size: size as u64,
                    limit: CHILDREN_PAGE_MAX as u64,
                }))
            }
            size => size,
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix("after:")
                    .ok_or_else(|| {
                        invalid_argument(format!(
                            "page_token {token:?} was not returned by this API"
                        ))
                    })?
                    .to_owned(),
            ),
        };
        self.barrier(request.read).await?;
        let (revision, page) = self.consensus.replica().read(|namespace| {
            (
                namespace.revision(),
                namespace.children(&path, after.as_deref(), page_size),
            )
        });
        let page = page.map_err(|error| fsm_status(&error))?;
        let next_page_token = match (page.more, page.children.last()) {
            (true, Some((name, _))) => format!("after:{name}"),
            _ => String::new(),
        };
        let children = page
            .children
            .iter()
            .map(|(name, stat)| pb::ChildEntry {
                name: name.clone(),
                stat: request.with_stats.then(|| stat_to_pb(stat)),
            })
            .collect();
        Ok(Response::new(pb::ChildrenResponse {
            header: Some(self.header(revision)),
            children,
            next_page_token,
            stat: Some(stat_to_pb(&page.parent)),
        }))
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        self.require_read(&request, &request.get_ref().path)?;
        let request = request.into_inner();
        let path = parse_path(&request.path)?;
        self.barrier(request.read).await?;
        let (revision, stat) = self.consensus.replica().read(|namespace| {
            (
                namespace.revision(),
                namespace.get(&path).map(|node| node.stat),
            )
        });
        Ok(Response::new(pb::ExistsResponse {
            header: Some(self.header(revision)),
            exists: stat.is_some(),
            stat: stat.as_ref().map(stat_to_pb),
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let who = self.access.identify(&request)?;
        let command = command_from_txn(request.into_inner()).map_err(|error| fsm_status(&error))?;
        self.access.require_proposal(&who, &command)?;
        match self.write(command).await? {
            (revision, Output::Txn { succeeded, results }) => Ok(Response::new(pb::TxnResponse {
                header: Some(self.header(revision)),
                succeeded,
                results: txn_results(&results).map_err(Status::internal)?,
            })),
            (_, output) => Err(unexpected(&output)),
        }
    }

    async fn check_fence(
        &self,
        request: Request<pb::CheckFenceRequest>,
    ) -> Result<Response<pb::CheckFenceResponse>, Status> {
        self.require_read(&request, &request.get_ref().path)?;
        let request = request.into_inner();
        let path = parse_path(&request.path)?;
        self.barrier(request.read).await?;
        let (revision, (current, holder)) = self.consensus.replica().read(|namespace| {
            (
                namespace.revision(),
                namespace.check_fence(&path, FencingToken(request.token)),
            )
        });
        Ok(Response::new(pb::CheckFenceResponse {
            header: Some(self.header(revision)),
            current,
            current_token: holder.0,
        }))
    }
}
