//! `fsm::Output` → responses.

use coord_proto::v1 as pb;

use super::impl_stat::stat_to_pb;
use crate::fsm::{NodePath, NodeStat, Output};

pub fn created_response(
    header: pb::ResponseHeader,
    path: &NodePath,
    stat: &NodeStat,
) -> pb::CreateResponse {
    pb::CreateResponse {
        header: Some(header),
        path: path.to_string(),
        stat: Some(stat_to_pb(stat)),
    }
}

/// The per-operation results of a txn branch; nested headers are left empty. An output that
/// no txn operation produces (it could only come from a broken peer) is refused by name.
pub fn txn_results(results: &[Output]) -> Result<Vec<pb::TxnOpResult>, String> {
    results
        .iter()
        .map(|output| {
            let result = match output {
                Output::Created { path, stat } => {
                    pb::txn_op_result::Result::Create(pb::CreateResponse {
                        header: None,
                        path: path.to_string(),
                        stat: Some(stat_to_pb(stat)),
                    })
                }
                Output::Set { stat } => pb::txn_op_result::Result::Set(pb::SetResponse {
                    header: None,
                    stat: Some(stat_to_pb(stat)),
                }),
                Output::Deleted { count } => {
                    pb::txn_op_result::Result::Delete(pb::DeleteResponse {
                        header: None,
                        deleted: *count,
                    })
                }
                Output::Got { data, stat } => pb::txn_op_result::Result::Get(pb::GetResponse {
                    header: None,
                    data: data.clone(),
                    stat: Some(stat_to_pb(stat)),
                }),
                Output::Txn { .. }
                | Output::SessionOpened { .. }
                | Output::SessionClosed { .. }
                | Output::Checkpointed => {
                    return Err(format!("a txn operation cannot produce {output:?}"));
                }
            };
            Ok(pb::TxnOpResult {
                result: Some(result),
            })
        })
        .collect()
}
