//! Plain data returned by the client: stats, headers, listings.

use coord_proto::v1 as pb;

/// Which state a response reflects and which member gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// The revision of the last write applied on the answering member.
    pub revision: u64,
    /// The Raft term the answering member knew.
    pub raft_term: u64,
    /// The leader the answering member knew (0: none).
    pub leader_id: u64,
    /// The member id of the member that answered.
    pub member_id: u64,
}

impl From<Option<pb::ResponseHeader>> for Header {
    fn from(header: Option<pb::ResponseHeader>) -> Header {
        let header = header.unwrap_or_default();
        Header {
            revision: header.revision,
            raft_term: header.raft_term,
            leader_id: header.leader_id,
            member_id: header.member_id,
        }
    }
}

/// What happens to a node besides explicit deletion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeKind {
    /// Stays until deleted explicitly.
    #[default]
    Persistent,
    /// Removed when its owning session ends; cannot have children.
    Ephemeral,
    /// Removed once its last child is gone.
    Container,
}

impl NodeKind {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            NodeKind::Persistent => pb::NodeKind::Persistent as i32,
            NodeKind::Ephemeral => pb::NodeKind::Ephemeral as i32,
            NodeKind::Container => pb::NodeKind::Container as i32,
        }
    }

    fn from_pb(value: i32) -> NodeKind {
        match pb::NodeKind::try_from(value) {
            Ok(pb::NodeKind::Ephemeral) => NodeKind::Ephemeral,
            Ok(pb::NodeKind::Container) => NodeKind::Container,
            _ => NodeKind::Persistent,
        }
    }
}

/// A node's metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// The revision that created the node; a lock's fencing token.
    pub create_revision: u64,
    /// The revision of the last change to the node's data (its creation, if none since).
    pub mod_revision: u64,
    /// Data changes since creation (0 at creation).
    pub version: u64,
    /// Child creations and deletions since creation.
    pub cversion: u64,
    /// How many children the node has now.
    pub num_children: u64,
    /// The owning session of an ephemeral node, else 0.
    pub ephemeral_owner: u64,
    /// The size of the node's data, in bytes.
    pub data_length: u64,
    /// Whether the node is persistent, ephemeral or a container.
    pub kind: NodeKind,
    /// The revision of the last change to the set of children.
    pub children_revision: u64,
}

impl From<Option<pb::NodeStat>> for Stat {
    fn from(stat: Option<pb::NodeStat>) -> Stat {
        let stat = stat.unwrap_or_default();
        Stat {
            create_revision: stat.create_revision,
            mod_revision: stat.mod_revision,
            version: stat.version,
            cversion: stat.cversion,
            num_children: stat.num_children,
            ephemeral_owner: stat.ephemeral_owner,
            data_length: stat.data_length,
            kind: NodeKind::from_pb(stat.kind),
            children_revision: stat.children_revision,
        }
    }
}

/// A node's data and stat, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeData {
    /// The node's data.
    pub data: Vec<u8>,
    /// The node's metadata at the same revision as `data`.
    pub stat: Stat,
    /// Which state the answer reflects and which member gave it.
    pub header: Header,
}

/// The result of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The created path, with its sequential suffix if any.
    pub path: String,
    /// The new node's metadata.
    pub stat: Stat,
    /// Which state the answer reflects and which member gave it.
    pub header: Header,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// From the answering member's replica: may be stale, answers without a leader.
    Serializable,
    /// From the answering member's replica once it has applied this revision.
    MinRevision(u64),
}

impl Consistency {
    pub(crate) fn to_pb(self) -> pb::ReadOptions {
        match self {
            Consistency::Linearizable => pb::ReadOptions {
                consistency: pb::Consistency::Linearizable as i32,
                min_revision: 0,
            },
            Consistency::Serializable => pb::ReadOptions {
                consistency: pb::Consistency::Serializable as i32,
                min_revision: 0,
            },
            Consistency::MinRevision(revision) => pb::ReadOptions {
                consistency: pb::Consistency::MinRevision as i32,
                min_revision: revision,
            },
        }
    }
}

/// Options of a create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// What happens to the node besides explicit deletion; persistent by default.
    pub kind: NodeKind,
    /// Append a zero-padded increasing suffix from the parent (the path may end in `/`).
    pub sequential: bool,
    /// Create missing ancestors as persistent nodes.
    pub make_parents: bool,
    /// The owning session ([`crate::Session::id`]), required for ephemeral nodes.
    /// Other kinds must leave it 0 (none).
    pub session_id: u64,
}

/// Options of a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete only if the node's version equals this.
    pub expected_version: Option<u64>,
    /// Delete the whole subtree at one revision.
    pub recursive: bool,
}

/// One child in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The child's name: the last segment of its path, without the parent.
    pub name: String,
    /// Present when the listing asked for stats.
    pub stat: Option<Stat>,
}

/// One page of a children listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildrenPage {
    /// This page's children, in byte order of their names.
    pub children: Vec<Child>,
    /// Pass to the next call to continue; `None` on the last page.
    pub next_page_token: Option<String>,
    /// The parent's stat.
    pub stat: Stat,
    /// Which state the answer reflects and which member gave it.
    pub header: Header,
}

/// The answer of a fence check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceCheck {
    /// Whether the token's holder is still current.
    pub current: bool,
    /// The create revision of the node now at the path (0: none).
    pub current_token: u64,
    /// Which state the answer reflects and which member gave it.
    pub header: Header,
}
