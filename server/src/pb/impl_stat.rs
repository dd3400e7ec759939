//! `fsm::NodeStat` → `coord.v1.NodeStat`.

use coord_proto::v1 as pb;

use crate::fsm::{NodeKind, NodeStat};

pub fn kind_to_pb(kind: NodeKind) -> pb::NodeKind {
    match kind {
        NodeKind::Persistent => pb::NodeKind::Persistent,
        NodeKind::Ephemeral => pb::NodeKind::Ephemeral,
        NodeKind::Container => pb::NodeKind::Container,
    }
}

pub fn stat_to_pb(stat: &NodeStat) -> pb::NodeStat {
    pb::NodeStat {
        create_revision: stat.create_revision.0,
        mod_revision: stat.mod_revision.0,
        version: stat.version,
        cversion: stat.cversion,
        num_children: stat.num_children,
        ephemeral_owner: stat.ephemeral_owner.0,
        data_length: stat.data_length,
        kind: kind_to_pb(stat.kind) as i32,
        children_revision: stat.children_revision.0,
    }
}
