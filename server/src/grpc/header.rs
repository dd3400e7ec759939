//! The header every response carries: the revision it reflects and this member's view of the
//! term and the leader.

/// The header every response carries: `revision` (this member's applied revision when `None`)
/// and this member's view of the term and the leader.
pub fn response_header(
    consensus: &crate::consensus::Consensus,
    revision: Option<crate::fsm::Revision>,
) -> coord_proto::v1::ResponseHeader {
    let view = consensus.view();
    let revision =
        revision.unwrap_or_else(|| consensus.replica().read(|namespace| namespace.revision()));
    coord_proto::v1::ResponseHeader {
        revision: revision.0,
        raft_term: view.term.0,
        leader_id: view.leader.map_or(0, |leader| leader.0),
        member_id: view.member_id.0,
    }
}
