//! gRPC services: the only module that knows `tonic::Status`.
//!
//! Client port: `Namespace`, `Sessions`, `Watch`, `Cluster`.
//! Peer port: `Peer` (Raft messages between members).
//! Every service validates its input and turns every error into a status through `status.rs`;
//! no request can panic the member.

mod cluster_service;
mod namespace_service;
mod peer_service;
mod sessions_service;
mod status;
mod watch_service;

pub use cluster_service::ClusterService;
pub use namespace_service::{NamespaceService, CHILDREN_PAGE_DEFAULT, CHILDREN_PAGE_MAX};
pub use peer_service::PeerService;
pub use sessions_service::{SessionsService, TtlBounds};
pub use status::{consensus_status, fsm_status};
pub use watch_service::WatchService;

/// Largest client request accepted, in bytes: a txn may carry 8 MiB of data, plus framing.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 9 * 1024 * 1024;

/// The header every response carries: `revision` (this member's applied revision when `None`)
/// and this member's view of the term and the leader.
fn response_header(
    consensus: &crate::raft::Consensus,
    revision: Option<crate::fsm::Revision>,
) -> coord_proto::v1::ResponseHeader {
    let view = consensus.view();
    let revision =
        revision.unwrap_or_else(|| consensus.replica().read(|state| state.namespace.revision()));
    coord_proto::v1::ResponseHeader {
        revision: revision.0,
        raft_term: view.term,
        leader_id: view.leader.unwrap_or(0),
        member_id: view.member_id,
    }
}

/// Checks `command` against `limits`, proposes it, and returns its revision and output, or the
/// error as a status.
async fn propose(
    consensus: &crate::raft::Consensus,
    limits: &crate::fsm::Limits,
    command: crate::fsm::Command,
) -> Result<(crate::fsm::Revision, crate::fsm::Output), tonic::Status> {
    command
        .check_limits(limits)
        .map_err(|error| fsm_status(&error))?;
    let (revision, outcome) = consensus
        .write(command)
        .await
        .map_err(|error| consensus_status(&error))?;
    let output = outcome.map_err(|error| fsm_status(&error))?;
    Ok((revision, output))
}
