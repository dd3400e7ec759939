//! Requests (`coord.v1.*Request`, `TxnOp`, `Compare`, `Fence`) → `fsm::Proposal`.

use coord_proto::v1 as pb;

use crate::fsm::{
    Command, Compare, CompareOp, CompareTarget, CreateCommand, DeleteCommand, Fence, FencingToken,
    FsmError, NodeKind, Proposal, Revision, SessionId, SetCommand, TxnCommand, TxnOp, WriteId,
};

fn invalid(reason: String) -> FsmError {
    FsmError::InvalidArgument { reason }
}

fn kind_from_pb(value: i32) -> Result<NodeKind, FsmError> {
    match pb::NodeKind::try_from(value) {
        Ok(pb::NodeKind::Persistent) => Ok(NodeKind::Persistent),
        Ok(pb::NodeKind::Ephemeral) => Ok(NodeKind::Ephemeral),
        Ok(pb::NodeKind::Container) => Ok(NodeKind::Container),
        Err(_) => Err(invalid(format!("kind: unknown node kind {value}"))),
    }
}

fn create_from_parts(
    path: String,
    data: Vec<u8>,
    kind: i32,
    sequential: bool,
    make_parents: bool,
    session_id: u64,
) -> Result<CreateCommand, FsmError> {
    Ok(CreateCommand {
        path,
        data,
        kind: kind_from_pb(kind)?,
        sequential,
        make_parents,
        session: SessionId(session_id),
    })
}

pub fn command_from_create(request: pb::CreateRequest) -> Result<Proposal, FsmError> {
    let pb::CreateRequest {
        path,
        data,
        kind,
        sequential,
        make_parents,
        session_id,
        write_id,
    } = request;
    let create = create_from_parts(path, data, kind, sequential, make_parents, session_id)?;
    Ok(with_write_id(Command::Create(create), write_id))
}

pub fn command_from_set(request: pb::SetRequest) -> Proposal {
    let set = Command::Set(SetCommand {
        path: request.path,
        data: request.data,
        expected_version: request.expected_version,
    });
    with_write_id(set, request.write_id)
}

pub fn command_from_delete(request: pb::DeleteRequest) -> Proposal {
    let delete = Command::Delete(DeleteCommand {
        path: request.path,
        expected_version: request.expected_version,
        recursive: request.recursive,
    });
    with_write_id(delete, request.write_id)
}

fn op_from_pb(index: usize, op: pb::TxnOp) -> Result<TxnOp, FsmError> {
    match op.op {
        None => Err(invalid(format!("txn operation {index}: no operation set"))),
        Some(pb::txn_op::Op::Create(create)) => Ok(TxnOp::Create(create_from_parts(
            create.path,
            create.data,
            create.kind,
            create.sequential,
            create.make_parents,
            create.session_id,
        )?)),
        Some(pb::txn_op::Op::Set(set)) => Ok(TxnOp::Set(SetCommand {
            path: set.path,
            data: set.data,
            expected_version: set.expected_version,
        })),
        Some(pb::txn_op::Op::Delete(delete)) => Ok(TxnOp::Delete(DeleteCommand {
            path: delete.path,
            expected_version: delete.expected_version,
            recursive: delete.recursive,
        })),
        Some(pb::txn_op::Op::Get(get)) => Ok(TxnOp::Get { path: get.path }),
    }
}

fn compare_from_pb(index: usize, compare: pb::Compare) -> Result<Compare, FsmError> {
    let op = match pb::CompareOp::try_from(compare.op) {
        Ok(pb::CompareOp::Equal) => CompareOp::Equal,
        Ok(pb::CompareOp::NotEqual) => CompareOp::NotEqual,
        Ok(pb::CompareOp::Less) => CompareOp::Less,
        Ok(pb::CompareOp::Greater) => CompareOp::Greater,
        Err(_) => {
            return Err(invalid(format!(
                "compare {index}: unknown compare op {}",
                compare.op
            )))
        }
    };
    let target = match compare.target {
        None => return Err(invalid(format!("compare {index}: no target set"))),
        Some(pb::compare::Target::Exists(exists)) => CompareTarget::Exists(exists),
        Some(pb::compare::Target::Version(version)) => CompareTarget::Version(version),
        Some(pb::compare::Target::CreateRevision(revision)) => {
            CompareTarget::CreateRevision(Revision(revision))
        }
        Some(pb::compare::Target::ModRevision(revision)) => {
            CompareTarget::ModRevision(Revision(revision))
        }
        Some(pb::compare::Target::Value(value)) => CompareTarget::Value(value),
    };
    Ok(Compare {
        path: compare.path,
        op,
        target,
    })
}

pub fn command_from_txn(request: pb::TxnRequest) -> Result<Proposal, FsmError> {
    let compares = request
        .compares
        .into_iter()
        .enumerate()
        .map(|(index, compare)| compare_from_pb(index, compare))
        .collect::<Result<_, _>>()?;
    let fences = request
        .fences
        .into_iter()
        .map(|fence| Fence {
            path: fence.path,
            token: FencingToken(fence.token),
        })
        .collect();
    let success = request
        .success
        .into_iter()
        .enumerate()
        .map(|(index, op)| op_from_pb(index, op))
        .collect::<Result<_, _>>()?;
    let failure = request
        .failure
        .into_iter()
        .enumerate()
        .map(|(index, op)| op_from_pb(index, op))
        .collect::<Result<_, _>>()?;
    let txn = Command::Txn(TxnCommand {
        compares,
        fences,
        success,
        failure,
    });
    Ok(with_write_id(txn, request.write_id))
}

/// `command` with the request's write id, if it has one: applied at most once per id.
pub fn with_write_id(command: Command, write_id: Option<pb::WriteId>) -> Proposal {
    Proposal {
        write_id: write_id.map(|id| WriteId {
            client: id.client_id,
            sequence: id.sequence,
            answered_below: id.answered_below,
        }),
        command,
    }
}
