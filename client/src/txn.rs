//! `Txn`: compares, fences and operations applied all or nothing at one revision.

use coord_proto::v1 as pb;

use crate::types::{CreateOptions, Header, Stat};

/// A comparison operator of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// The node's attribute equals the given one.
    Equal,
    /// The node's attribute differs from the given one.
    NotEqual,
    /// The node's attribute is less than the given one (data compares byte by byte).
    Less,
    /// The node's attribute is greater than the given one (data compares byte by byte).
    Greater,
}

impl CompareOp {
    fn to_pb(self) -> i32 {
        match self {
            CompareOp::Equal => pb::CompareOp::Equal as i32,
            CompareOp::NotEqual => pb::CompareOp::NotEqual as i32,
            CompareOp::Less => pb::CompareOp::Less as i32,
            CompareOp::Greater => pb::CompareOp::Greater as i32,
        }
    }
}

/// A condition on one node, evaluated before any operation. Against a missing node, every
/// comparison except existence is false.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare(pub(crate) pb::Compare);

impl Compare {
    fn new(path: &str, op: CompareOp, target: pb::compare::Target) -> Compare {
        Compare(pb::Compare {
            path: path.to_owned(),
            op: op.to_pb(),
            target: Some(target),
        })
    }

    /// Holds when the node exists.
    pub fn exists(path: &str) -> Compare {
        Compare::new(path, CompareOp::Equal, pb::compare::Target::Exists(true))
    }

    /// Holds when the node does not exist.
    pub fn missing(path: &str) -> Compare {
        Compare::new(path, CompareOp::Equal, pb::compare::Target::Exists(false))
    }

    /// Holds when the node's version (its count of data changes) compares to `version` by `op`.
    pub fn version(path: &str, op: CompareOp, version: u64) -> Compare {
        Compare::new(path, op, pb::compare::Target::Version(version))
    }

    /// Holds when the revision that created the node compares to `revision` by `op`.
    /// With [`CompareOp::Equal`] this checks a fencing token.
    pub fn create_revision(path: &str, op: CompareOp, revision: u64) -> Compare {
        Compare::new(path, op, pb::compare::Target::CreateRevision(revision))
    }

    /// Holds when the revision of the node's last data change compares to `revision` by `op`.
    pub fn mod_revision(path: &str, op: CompareOp, revision: u64) -> Compare {
        Compare::new(path, op, pb::compare::Target::ModRevision(revision))
    }

    /// Holds when the node's data compares to `value` by `op`, byte by byte.
    pub fn value(path: &str, op: CompareOp, value: impl Into<Vec<u8>>) -> Compare {
        Compare::new(path, op, pb::compare::Target::Value(value.into()))
    }
}

/// One operation of a txn branch.
#[derive(Debug, Clone, PartialEq)]
pub struct Op(pub(crate) pb::TxnOp);

impl Op {
    /// Creates a node, like [`crate::Client::create`].
    pub fn create(path: &str, data: impl Into<Vec<u8>>, options: &CreateOptions) -> Op {
        Op(pb::TxnOp {
            op: Some(pb::txn_op::Op::Create(pb::TxnCreate {
                path: path.to_owned(),
                data: data.into(),
                kind: options.kind.to_pb(),
                sequential: options.sequential,
                make_parents: options.make_parents,
                session_id: options.session_id,
            })),
        })
    }

    /// Replaces a node's data, only if its version equals `expected_version` when one is given.
    pub fn set(path: &str, data: impl Into<Vec<u8>>, expected_version: Option<u64>) -> Op {
        Op(pb::TxnOp {
            op: Some(pb::txn_op::Op::Set(pb::TxnSet {
                path: path.to_owned(),
                data: data.into(),
                expected_version,
            })),
        })
    }

    /// Deletes a node, only if its version equals `expected_version` when one is given; with
    /// `recursive`, its whole subtree too.
    pub fn delete(path: &str, expected_version: Option<u64>, recursive: bool) -> Op {
        Op(pb::TxnOp {
            op: Some(pb::txn_op::Op::Delete(pb::TxnDelete {
                path: path.to_owned(),
                expected_version,
                recursive,
            })),
        })
    }

    /// Reads a node's data and stat.
    pub fn get(path: &str) -> Op {
        Op(pb::TxnOp {
            op: Some(pb::txn_op::Op::Get(pb::TxnGet {
                path: path.to_owned(),
            })),
        })
    }
}

/// A transaction: if every compare holds, run `then`, else run `otherwise`; all or nothing.
///
/// Fences are checked first: if a fence's node no longer has the given create revision, the
/// whole txn is refused with [`crate::Error::FenceRejected`].
///
/// ```no_run
/// # async fn example(client: coord_client::Client) -> Result<(), coord_client::Error> {
/// use coord_client::{Compare, CompareOp, Op, Txn};
/// // Compare-and-set: write only if nobody changed the node since version 3.
/// let result = client
///     .txn(
///         Txn::new()
///             .when(Compare::version("/config", CompareOp::Equal, 3))
///             .then(Op::set("/config", "new", None))
///             .otherwise(Op::get("/config")),
///     )
///     .await?;
/// println!("swapped: {}", result.succeeded);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    pub(crate) request: pb::TxnRequest,
}

impl Txn {
    /// An empty transaction: no compares, fences or operations.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, compare: Compare) -> Txn {
        self.request.compares.push(compare.0);
        self
    }

    /// Requires the node at `path` to still have create revision `token`.
    pub fn fence(mut self, path: &str, token: u64) -> Txn {
        self.request.fences.push(pb::Fence {
            path: path.to_owned(),
            token,
        });
        self
    }

    /// Adds an operation to run when every condition holds.
    pub fn then(mut self, op: Op) -> Txn {
        self.request.success.push(op.0);
        self
    }

    /// Adds an operation to run when some condition does not hold.
    pub fn otherwise(mut self, op: Op) -> Txn {
        self.request.failure.push(op.0);
        self
    }
}

/// The result of one txn operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The result of [`Op::create`].
    Created {
        /// The created path, with its sequential suffix if any.
        path: String,
        /// The new node's stat.
        stat: Stat,
    },
    /// The result of [`Op::set`].
    Set {
        /// The node's stat after the write.
        stat: Stat,
    },
    /// The result of [`Op::delete`].
    Deleted {
        /// How many nodes were removed (the whole subtree, for a recursive delete).
        count: u64,
    },
    /// The result of [`Op::get`].
    Got {
        /// The node's data.
        data: Vec<u8>,
        /// The node's stat.
        stat: Stat,
    },
}

/// The result of a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (so `then` ran).
    pub succeeded: bool,
    /// One result per operation of the branch that ran, in order.
    pub results: Vec<OpResult>,
    /// Which state the answer reflects and which member gave it.
    pub header: Header,
}

impl TxnResult {
    pub(crate) fn from_pb(response: pb::TxnResponse) -> TxnResult {
        let results = response
            .results
            .into_iter()
            .filter_map(|result| result.result)
            .map(|result| match result {
                pb::txn_op_result::Result::Create(created) => OpResult::Created {
                    path: created.path,
                    stat: created.stat.into(),
                },
                pb::txn_op_result::Result::Set(set) => OpResult::Set {
                    stat: set.stat.into(),
                },
                pb::txn_op_result::Result::Delete(deleted) => OpResult::Deleted {
                    count: deleted.deleted,
                },
                pb::txn_op_result::Result::Get(got) => OpResult::Got {
                    data: got.data,
                    stat: got.stat.into(),
                },
            })
            .collect();
        TxnResult {
            succeeded: response.succeeded,
            results,
            header: response.header.into(),
        }
    }
}
