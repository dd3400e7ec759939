//! Property tests: `Namespace` against a deliberately naive reference model.
//!
//! The model keeps a flat map of paths, finds children by scanning, and gets atomicity by
//! cloning itself before each command. Random command sequences must give the same outcomes,
//! the same trees (data and every stat field) and the same revisions; every state must pass
//! `validate`, and snapshot → restore must give an equal state and equal bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelNode {
    data: Vec<u8>,
    stat: NodeStat,
    next_sequence: u64,
}

#[derive(Debug, Clone)]
struct Model {
    nodes: BTreeMap<String, ModelNode>,
    /// Live sessions: id to (TTL, remaining at the last checkpoint).
    sessions: BTreeMap<u64, (u64, u64)>,
    revision: u64,
}

fn parent_of(path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let cut = path.rfind('/').unwrap();
    Some(if cut == 0 {
        "/".to_owned()
    } else {
        path[..cut].to_owned()
    })
}

fn parse(path: &str) -> Result<NodePath, FsmError> {
    NodePath::parse(path).map_err(|rule| FsmError::invalid_path(path, rule))
}

fn np(path: &str) -> NodePath {
    NodePath::parse(path).unwrap()
}

impl Model {
    fn new() -> Model {
        let root = Node::new(Vec::new(), NodeKind::Persistent, SessionId(0), Revision(0));
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "/".to_owned(),
            ModelNode {
                data: Vec::new(),
                stat: root.stat,
                next_sequence: 0,
            },
        );
        Model {
            nodes,
            sessions: BTreeMap::new(),
            revision: 0,
        }
    }

    fn children_of(&self, path: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|key| parent_of(key).as_deref() == Some(path))
            .cloned()
            .collect()
    }

    fn apply(&mut self, command: &Command) -> Result<Output, FsmError> {
        self.revision += 1;
        let saved = (self.nodes.clone(), self.sessions.clone());
        let result = match command {
            Command::Create(create) => self.create(create),
            Command::Set(set) => self.set(set),
            Command::Delete(delete) => self.delete(delete),
            Command::Txn(txn) => self.txn(txn),
            Command::OpenSession(open) => {
                self.sessions
                    .insert(self.revision, (open.ttl_ms, open.ttl_ms));
                Ok(Output::SessionOpened {
                    session: SessionId(self.revision),
                    ttl_ms: open.ttl_ms,
                })
            }
            Command::CloseSession(close) => self.close_session(close),
            Command::CheckpointSessions(checkpoint) => {
                for (session, remaining) in &checkpoint.remaining {
                    if let Some((ttl, left)) = self.sessions.get_mut(&session.0) {
                        *left = (*remaining).min(*ttl);
                    }
                }
                Ok(Output::Checkpointed)
            }
            Command::Batch(_) => unreachable!("the model is given single writes"),
        };
        if result.is_err() {
            (self.nodes, self.sessions) = saved;
        }
        result
    }

    fn close_session(&mut self, close: &CloseSessionCommand) -> Result<Output, FsmError> {
        if self.sessions.remove(&close.session.0).is_none() {
            return Err(FsmError::SessionExpired {
                session: close.session,
            });
        }
        let owned: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.stat.ephemeral_owner == close.session)
            .map(|(path, _)| path.clone())
            .collect();
        for path in &owned {
            self.remove_subtree(path);
            self.collapse_containers(parent_of(path).unwrap());
        }
        Ok(Output::SessionClosed {
            deleted: owned.len() as u64,
        })
    }

    /// Removes `current` and its ancestors while each is an empty container.
    fn collapse_containers(&mut self, mut current: String) {
        while current != "/"
            && self.nodes[&current].stat.kind == NodeKind::Container
            && self.children_of(&current).is_empty()
        {
            self.remove_subtree(&current.clone());
            current = parent_of(&current).unwrap();
        }
    }

    fn touch_parent(&mut self, path: &str, delta: i64) {
        let revision = Revision(self.revision);
        let parent = self.nodes.get_mut(&parent_of(path).unwrap()).unwrap();
        parent.stat.num_children = (parent.stat.num_children as i64 + delta) as u64;
        parent.stat.cversion += 1;
        parent.stat.children_revision = revision;
    }

    fn add(&mut self, path: &str, data: Vec<u8>, kind: NodeKind, owner: SessionId) -> NodeStat {
        let node = Node::new(data.clone(), kind, owner, Revision(self.revision));
        self.nodes.insert(
            path.to_owned(),
            ModelNode {
                data,
                stat: node.stat,
                next_sequence: 0,
            },
        );
        self.touch_parent(path, 1);
        node.stat
    }

    fn parent_ok(&self, path: &str) -> Result<(), FsmError> {
        let parent = parent_of(path).unwrap();
        match self.nodes.get(&parent) {
            None => Err(FsmError::NoParent {
                parent: np(&parent),
            }),
            Some(node) if node.stat.kind == NodeKind::Ephemeral => Err(FsmError::EphemeralParent {
                parent: np(&parent),
            }),
            Some(_) => Ok(()),
        }
    }

    fn create(&mut self, create: &CreateCommand) -> Result<Output, FsmError> {
        let mut path = if create.sequential {
            let sample = format!("{}0000000000", create.path);
            NodePath::parse(&sample).map_err(|rule| FsmError::invalid_path(&create.path, rule))?;
            sample
        } else {
            parse(&create.path)?;
            create.path.clone()
        };
        if path == "/" {
            return Err(FsmError::NodeExists {
                path: NodePath::root(),
            });
        }
        if create.make_parents {
            for ancestor in np(&path).ancestors() {
                if !self.nodes.contains_key(ancestor.as_str()) {
                    self.parent_ok(ancestor.as_str())?;
                    self.add(
                        ancestor.as_str(),
                        Vec::new(),
                        NodeKind::Persistent,
                        SessionId(0),
                    );
                }
            }
        }
        if create.sequential {
            let parent = parent_of(&path).unwrap();
            let parent_node = self
                .nodes
                .get_mut(&parent)
                .ok_or_else(|| FsmError::NoParent {
                    parent: np(&parent),
                })?;
            path = format!("{}{:010}", create.path, parent_node.next_sequence);
            parse(&path)?;
            parent_node.next_sequence += 1;
        }
        if self.nodes.contains_key(&path) {
            return Err(FsmError::NodeExists { path: np(&path) });
        }
        self.parent_ok(&path)?;
        let owner = match create.kind {
            NodeKind::Ephemeral if !self.sessions.contains_key(&create.session.0) => {
                return Err(FsmError::SessionExpired {
                    session: create.session,
                })
            }
            NodeKind::Ephemeral => create.session,
            _ if create.session != SessionId(0) => {
                return Err(FsmError::InvalidArgument {
                    reason: "a session may only own ephemeral nodes".into(),
                })
            }
            _ => SessionId(0),
        };
        let stat = self.add(&path, create.data.clone(), create.kind, owner);
        Ok(Output::Created {
            path: np(&path),
            stat,
        })
    }

    fn set(&mut self, set: &SetCommand) -> Result<Output, FsmError> {
        let path = parse(&set.path)?;
        let revision = Revision(self.revision);
        let node = self
            .nodes
            .get_mut(path.as_str())
            .ok_or(FsmError::NoNode { path: path.clone() })?;
        if let Some(expected) = set.expected_version {
            if expected != node.stat.version {
                return Err(FsmError::BadVersion {
                    path,
                    expected,
                    actual: node.stat.version,
                });
            }
        }
        node.data = set.data.clone();
        node.stat.version += 1;
        node.stat.mod_revision = revision;
        node.stat.data_length = set.data.len() as u64;
        Ok(Output::Set { stat: node.stat })
    }

    fn remove_subtree(&mut self, path: &str) -> u64 {
        let mut count = 0;
        for child in self.children_of(path) {
            count += self.remove_subtree(&child);
        }
        self.nodes.remove(path);
        self.touch_parent(path, -1);
        count + 1
    }

    fn delete(&mut self, delete: &DeleteCommand) -> Result<Output, FsmError> {
        let path = parse(&delete.path)?;
        if path.is_root() {
            return Err(FsmError::RootReadOnly);
        }
        let node = self
            .nodes
            .get(path.as_str())
            .ok_or(FsmError::NoNode { path: path.clone() })?;
        if let Some(expected) = delete.expected_version {
            if expected != node.stat.version {
                return Err(FsmError::BadVersion {
                    path,
                    expected,
                    actual: node.stat.version,
                });
            }
        }
        if !self.children_of(path.as_str()).is_empty() && !delete.recursive {
            return Err(FsmError::NotEmpty { path });
        }
        let count = self.remove_subtree(path.as_str());
        self.collapse_containers(parent_of(path.as_str()).unwrap());
        Ok(Output::Deleted { count })
    }

    fn txn(&mut self, txn: &TxnCommand) -> Result<Output, FsmError> {
        for fence in &txn.fences {
            let path = parse(&fence.path)?;
            let current = self
                .nodes
                .get(path.as_str())
                .map_or(0, |node| node.stat.create_revision.0);
            if current != fence.token.0 || !self.nodes.contains_key(path.as_str()) {
                return Err(FsmError::FenceRejected {
                    path,
                    token: fence.token,
                    current: FencingToken(current),
                });
            }
        }
        let mut succeeded = true;
        for compare in &txn.compares {
            let path = parse(&compare.path)?;
            let node = self.nodes.get(path.as_str());
            let holds = match (&compare.target, node) {
                (CompareTarget::Exists(expected), node) => match compare.op {
                    CompareOp::Equal => node.is_some() == *expected,
                    CompareOp::NotEqual => node.is_some() != *expected,
                    _ => {
                        return Err(FsmError::InvalidArgument {
                            reason: format!(
                                "compare on {path}: existence takes only EQUAL or NOT_EQUAL"
                            ),
                        })
                    }
                },
                (_, None) => false,
                (target, Some(node)) => {
                    let ordering = match target {
                        CompareTarget::Version(value) => node.stat.version.cmp(value),
                        CompareTarget::CreateRevision(value) => {
                            node.stat.create_revision.cmp(value)
                        }
                        CompareTarget::ModRevision(value) => node.stat.mod_revision.cmp(value),
                        CompareTarget::Value(value) => node.data.cmp(value),
                        CompareTarget::Exists(_) => unreachable!(),
                    };
                    match compare.op {
                        CompareOp::Equal => ordering.is_eq(),
                        CompareOp::NotEqual => ordering.is_ne(),
                        CompareOp::Less => ordering.is_lt(),
                        CompareOp::Greater => ordering.is_gt(),
                    }
                }
            };
            succeeded &= holds;
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::new();
        for (op_index, op) in branch.iter().enumerate() {
            let result = match op {
                TxnOp::Create(create) => self.create(create),
                TxnOp::Set(set) => self.set(set),
                TxnOp::Delete(delete) => self.delete(delete),
                TxnOp::Get { path } => parse(path).and_then(|path| {
                    let node = self
                        .nodes
                        .get(path.as_str())
                        .ok_or(FsmError::NoNode { path: path.clone() })?;
                    Ok(Output::Got {
                        data: node.data.clone(),
                        stat: node.stat,
                    })
                }),
            };
            results.push(result.map_err(|source| FsmError::TxnOpFailed {
                op_index,
                source: Box::new(source),
            })?);
        }
        Ok(Output::Txn { succeeded, results })
    }

    fn tree(&self) -> Vec<(String, ModelNode)> {
        self.nodes
            .iter()
            .map(|(path, node)| (path.clone(), node.clone()))
            .collect()
    }
}

/// Each live session: id, TTL, checkpointed remainder, and owned nodes.
type SessionTable = Vec<(u64, u64, u64, Vec<String>)>;

fn sessions_of(namespace: &Namespace) -> SessionTable {
    namespace
        .sessions()
        .iter()
        .map(|(id, record)| {
            let owned = record.ephemerals.iter().map(ToString::to_string).collect();
            (id.0, record.ttl_ms, record.remaining_ms, owned)
        })
        .collect()
}

impl Model {
    fn session_table(&self) -> SessionTable {
        self.sessions
            .iter()
            .map(|(id, (ttl, remaining))| {
                let owned = self
                    .nodes
                    .iter()
                    .filter(|(_, node)| node.stat.ephemeral_owner == SessionId(*id))
                    .map(|(path, _)| path.clone())
                    .collect();
                (*id, *ttl, *remaining, owned)
            })
            .collect()
    }
}

fn tree_of(namespace: &Namespace) -> Vec<(String, ModelNode)> {
    namespace
        .iter()
        .map(|(path, node)| {
            let model_node = ModelNode {
                data: node.data.clone(),
                stat: node.stat,
                next_sequence: node.next_sequence,
            };
            (path.to_string(), model_node)
        })
        .collect()
}

// --- generators: a small alphabet so commands collide often ---

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
            .prop_map(|segments| format!("/{}", segments.join("/"))),
        1 => Just("/".to_owned()),
        1 => prop::sample::select(vec!["", "a", "/a/", "//a", "/a/./b", "/a/\u{7}"]).prop_map(str::to_owned),
    ]
}

fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'x', b'y']), 0..3)
}

fn create_strategy() -> impl Strategy<Value = CreateCommand> {
    (
        path_strategy(),
        data_strategy(),
        prop_oneof![4 => Just(NodeKind::Persistent), 2 => Just(NodeKind::Container), 3 => Just(NodeKind::Ephemeral)],
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.3),
        // Mostly no session; else a symbolic reference resolved by `resolve_sessions`.
        prop_oneof![6 => Just(0u64), 4 => 1u64..5],
    )
        .prop_map(|(path, data, kind, sequential, make_parents, with_session)| {
            let path = if sequential && path != "/" { format!("{path}-") } else { path };
            CreateCommand {
                path,
                data,
                kind,
                sequential,
                make_parents,
                session: SessionId(with_session),
            }
        })
}

/// Generated commands name sessions symbolically: `k` is the `k`th session opened so far (or a
/// session that never existed, once fewer were opened), so that ephemeral nodes and closes hit
/// live sessions often.
fn resolve_sessions(command: &Command, opened: &[u64]) -> Command {
    let resolve = |session: SessionId| match session.0 {
        0 => SessionId(0),
        k => SessionId(opened.get(k as usize - 1).copied().unwrap_or(1_000 + k)),
    };
    let resolve_create = |create: &CreateCommand| CreateCommand {
        session: resolve(create.session),
        ..create.clone()
    };
    match command {
        Command::Create(create) => Command::Create(resolve_create(create)),
        Command::Txn(txn) => {
            let resolve_ops = |ops: &[TxnOp]| -> Vec<TxnOp> {
                ops.iter()
                    .map(|op| match op {
                        TxnOp::Create(create) => TxnOp::Create(resolve_create(create)),
                        other => other.clone(),
                    })
                    .collect()
            };
            Command::Txn(TxnCommand {
                success: resolve_ops(&txn.success),
                failure: resolve_ops(&txn.failure),
                ..txn.clone()
            })
        }
        Command::CloseSession(close) => Command::CloseSession(CloseSessionCommand {
            session: resolve(close.session),
            end: close.end,
        }),
        Command::CheckpointSessions(checkpoint) => Command::CheckpointSessions(CheckpointCommand {
            remaining: checkpoint
                .remaining
                .iter()
                .map(|(session, left)| (resolve(*session), *left))
                .collect(),
            ..checkpoint.clone()
        }),
        other => other.clone(),
    }
}

fn set_strategy() -> impl Strategy<Value = SetCommand> {
    (
        path_strategy(),
        data_strategy(),
        prop::option::weighted(0.3, 0u64..3),
    )
        .prop_map(|(path, data, expected_version)| SetCommand {
            path,
            data,
            expected_version,
        })
}

fn delete_strategy() -> impl Strategy<Value = DeleteCommand> {
    (
        path_strategy(),
        prop::option::weighted(0.3, 0u64..3),
        prop::bool::weighted(0.4),
    )
        .prop_map(|(path, expected_version, recursive)| DeleteCommand {
            path,
            expected_version,
            recursive,
        })
}

fn compare_strategy() -> impl Strategy<Value = Compare> {
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ]);
    let target = prop_oneof![
        any::<bool>().prop_map(CompareTarget::Exists),
        (0u64..3).prop_map(CompareTarget::Version),
        (0u64..20).prop_map(|value| CompareTarget::CreateRevision(Revision(value))),
        (0u64..20).prop_map(|value| CompareTarget::ModRevision(Revision(value))),
        data_strategy().prop_map(CompareTarget::Value),
    ];
    (path_strategy(), op, target).prop_map(|(path, op, target)| Compare { path, op, target })
}

fn txn_op_strategy() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        create_strategy().prop_map(TxnOp::Create),
        set_strategy().prop_map(TxnOp::Set),
        delete_strategy().prop_map(TxnOp::Delete),
        path_strategy().prop_map(|path| TxnOp::Get { path }),
    ]
}

fn command_strategy() -> impl Strategy<Value = Command> {
    prop_oneof![
        5 => create_strategy().prop_map(Command::Create),
        2 => set_strategy().prop_map(Command::Set),
        2 => delete_strategy().prop_map(Command::Delete),
        2 => (1u64..5).prop_map(|ttl_ms| Command::OpenSession(OpenSessionCommand { ttl_ms, owner: "c".into() })),
        2 => (1u64..5, any::<bool>()).prop_map(|(session, expired)| {
            Command::CloseSession(CloseSessionCommand {
                session: SessionId(session),
                end: if expired { SessionEnd::Expired } else { SessionEnd::Closed },
            })
        }),
        1 => prop::collection::vec((1u64..5, 0u64..6), 0..4).prop_map(|remaining| {
            let remaining = remaining
                .into_iter()
                .map(|(session, left)| (SessionId(session), left))
                .collect();
            Command::CheckpointSessions(CheckpointCommand {
                remaining,
                elapsed_ms: 250,
                write_id_retention_ms: 60_000,
            })
        }),
        2 => (
            prop::collection::vec(compare_strategy(), 0..3),
            prop::collection::vec((path_strategy(), 0u64..20), 0..2),
            prop::collection::vec(txn_op_strategy(), 0..4),
            prop::collection::vec(txn_op_strategy(), 0..3),
        )
            .prop_map(|(compares, fences, success, failure)| {
                let fences = fences
                    .into_iter()
                    .map(|(path, token)| Fence { path, token: FencingToken(token) })
                    .collect();
                Command::Txn(TxnCommand { compares, fences, success, failure })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn namespace_matches_the_reference_model(commands in prop::collection::vec(command_strategy(), 1..60)) {
        let mut namespace = Namespace::new();
        let mut model = Model::new();
        let mut opened = Vec::new();
        for (step, command) in commands.iter().enumerate() {
            let revision = Revision(step as u64 + 1);
            let command = &resolve_sessions(command, &opened);
            let applied = namespace.apply(revision, command);
            if let Ok(Output::SessionOpened { session, .. }) = &applied.outcome {
                opened.push(session.0);
            }
            let expected = model.apply(command);
            prop_assert_eq!(&applied.outcome, &expected, "step {} command {:?}", step, command);
            if applied.outcome.is_err() {
                prop_assert!(applied.events.is_empty());
            }
            for event in &applied.events {
                prop_assert_eq!(event.revision, revision);
            }
            prop_assert_eq!(namespace.revision(), revision);
            prop_assert_eq!(tree_of(&namespace), model.tree(), "tree after step {}", step);
            prop_assert_eq!(sessions_of(&namespace), model.session_table(), "sessions after step {}", step);
            if let Err(reason) = namespace.validate() {
                prop_assert!(false, "invalid state after step {}: {}", step, reason);
            }
        }
        let bytes = namespace.to_snapshot();
        let restored = Namespace::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(&restored, &namespace);
        prop_assert_eq!(restored.to_snapshot(), bytes);
    }

    /// A copy of the tree (what a snapshot is built from) shares its nodes with the live tree
    /// and keeps the state it was taken at, however the live tree changes afterwards:
    /// creates, sets, deletes, session expiry, and txns rolled back half way.
    #[test]
    fn a_copy_keeps_its_state_while_the_tree_it_shares_nodes_with_changes(
        commands in prop::collection::vec(command_strategy(), 2..60),
        split in 0.0..1.0f64,
    ) {
        let mut namespace = Namespace::new();
        let mut opened = Vec::new();
        let copy_after = (commands.len() as f64 * split) as usize;
        let mut copy = None;
        for (step, command) in commands.iter().enumerate() {
            if step == copy_after {
                let taken = namespace.clone();
                // The copy shares every node: taking it copied no node's data.
                let shared = taken
                    .nodes
                    .values()
                    .zip(namespace.nodes.values())
                    .all(|(copied, live)| Arc::ptr_eq(copied, live));
                prop_assert!(shared, "the copy at step {} holds nodes of its own", step);
                copy = Some((taken, namespace.to_snapshot()));
            }
            let command = &resolve_sessions(command, &opened);
            let applied = namespace.apply(Revision(step as u64 + 1), command);
            if let Ok(Output::SessionOpened { session, .. }) = &applied.outcome {
                opened.push(session.0);
            }
        }
        let (copy, bytes_then) = copy.expect("the copy is taken before the last command");
        prop_assert_eq!(copy.to_snapshot(), bytes_then);
        if let Err(reason) = copy.validate() {
            prop_assert!(false, "invalid copy: {}", reason);
        }
        if let Err(reason) = namespace.validate() {
            prop_assert!(false, "invalid tree after the copy: {}", reason);
        }
    }

    /// A batch entry does exactly what its items would do as entries of their own, at the
    /// revisions it reports: consecutive, above the last, never below the entry's index.
    #[test]
    fn a_batch_applies_as_its_items_would_one_by_one(
        entries in prop::collection::vec(
            (prop::collection::vec(command_strategy(), 0..6), prop::bool::weighted(0.2)),
            1..25,
        ),
    ) {
        let mut batched = Namespace::new();
        let mut single = Namespace::new();
        let mut opened = Vec::new();
        for (position, (commands, blank_before)) in entries.iter().enumerate() {
            let mut index = 2 * position as u64 + 1;
            if *blank_before {
                batched.pass_entry(index);
                single.advance(batched.revision());
            }
            index += 1;
            let items: Vec<BatchItem> = commands
                .iter()
                .map(|command| BatchItem { write_id: None, command: resolve_sessions(command, &opened) })
                .collect();
            let before = batched.revision();
            let proposal = Proposal::from(Command::Batch(items.clone()));
            let applied = batched.apply_entry(index, &proposal);
            prop_assert_eq!(applied.len(), items.len());
            let mut previous = before;
            for ((revision, batched_write), item) in applied.iter().zip(&items) {
                prop_assert!(*revision > previous && *revision >= Revision(index));
                previous = *revision;
                let single_write = single.apply(*revision, &item.command);
                prop_assert_eq!(&batched_write.outcome, &single_write.outcome);
                prop_assert_eq!(&batched_write.events, &single_write.events);
                prop_assert_eq!(&batched_write.sessions, &single_write.sessions);
                if let Ok(Output::SessionOpened { session, .. }) = &batched_write.outcome {
                    opened.push(session.0);
                }
            }
            if items.is_empty() {
                single.advance(batched.revision());
            }
            prop_assert!(batched.revision() >= Revision(index));
            prop_assert_eq!(batched.to_snapshot(), single.to_snapshot());
        }
        if let Err(reason) = batched.validate() {
            prop_assert!(false, "invalid state: {}", reason);
        }
    }
}

// --- scenario tests: exact outputs and events ---

fn create(path: &str, kind: NodeKind) -> Command {
    Command::Create(CreateCommand {
        path: path.into(),
        data: b"d".to_vec(),
        kind,
        sequential: false,
        make_parents: false,
        session: SessionId(0),
    })
}

fn kinds(applied: &Applied) -> Vec<(String, EventKind)> {
    applied
        .events
        .iter()
        .map(|event| (event.path.to_string(), event.kind))
        .collect()
}

#[test]
fn create_emits_created_and_children_changed() {
    let mut namespace = Namespace::new();
    let applied = namespace.apply(Revision(5), &create("/a", NodeKind::Persistent));
    assert_eq!(
        kinds(&applied),
        [
            ("/a".into(), EventKind::Created),
            ("/".into(), EventKind::ChildrenChanged)
        ]
    );
    let stat = namespace.get(&np("/a")).unwrap().stat;
    assert_eq!(stat.create_revision, Revision(5));
    assert_eq!(
        namespace
            .get(&NodePath::root())
            .unwrap()
            .stat
            .children_revision,
        Revision(5)
    );
}

#[test]
fn sequential_suffixes_increase_even_after_deletes() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/q", NodeKind::Persistent));
    let mut names = Vec::new();
    for step in 0..3u64 {
        let command = Command::Create(CreateCommand {
            path: "/q/n-".into(),
            data: Vec::new(),
            kind: NodeKind::Persistent,
            sequential: true,
            make_parents: false,
            session: SessionId(0),
        });
        let applied = namespace.apply(Revision(2 + step * 2), &command);
        let Ok(Output::Created { path, .. }) = applied.outcome else {
            panic!("{applied:?}")
        };
        names.push(path.to_string());
        let delete = Command::Delete(DeleteCommand {
            path: path.to_string(),
            expected_version: None,
            recursive: false,
        });
        assert!(namespace
            .apply(Revision(3 + step * 2), &delete)
            .outcome
            .is_ok());
    }
    assert_eq!(
        names,
        ["/q/n-0000000000", "/q/n-0000000001", "/q/n-0000000002"]
    );
}

#[test]
fn container_goes_with_its_last_child_and_cascades() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/locks", NodeKind::Container));
    namespace.apply(Revision(2), &create("/locks/x", NodeKind::Container));
    namespace.apply(
        Revision(3),
        &create("/locks/x/holder", NodeKind::Persistent),
    );
    let delete = Command::Delete(DeleteCommand {
        path: "/locks/x/holder".into(),
        expected_version: None,
        recursive: false,
    });
    let applied = namespace.apply(Revision(4), &delete);
    assert_eq!(
        kinds(&applied),
        [
            (
                "/locks/x/holder".into(),
                EventKind::Deleted(DeleteReason::Deleted)
            ),
            ("/locks/x".into(), EventKind::ChildrenChanged),
            (
                "/locks/x".into(),
                EventKind::Deleted(DeleteReason::ContainerEmpty)
            ),
            ("/locks".into(), EventKind::ChildrenChanged),
            (
                "/locks".into(),
                EventKind::Deleted(DeleteReason::ContainerEmpty)
            ),
            ("/".into(), EventKind::ChildrenChanged),
        ]
    );
    assert_eq!(namespace.node_count(), 1);
}

#[test]
fn failed_txn_changes_nothing_and_names_the_operation() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/a", NodeKind::Persistent));
    let before = namespace.to_snapshot();
    let txn = Command::Txn(TxnCommand {
        compares: vec![],
        fences: vec![],
        success: vec![
            TxnOp::Set(SetCommand {
                path: "/a".into(),
                data: b"new".to_vec(),
                expected_version: None,
            }),
            TxnOp::Create(CreateCommand {
                path: "/a".into(),
                data: Vec::new(),
                kind: NodeKind::Persistent,
                sequential: false,
                make_parents: false,
                session: SessionId(0),
            }),
        ],
        failure: vec![],
    });
    let applied = namespace.apply(Revision(2), &txn);
    assert_eq!(
        applied.outcome,
        Err(FsmError::TxnOpFailed {
            op_index: 1,
            source: Box::new(FsmError::NodeExists { path: np("/a") })
        })
    );
    assert!(applied.events.is_empty());
    // Only the revision moved.
    let mut expected = Namespace::from_snapshot(&before).unwrap();
    expected.advance(Revision(2));
    assert_eq!(namespace, expected);
}

#[test]
fn fence_rejects_a_stale_token_and_accepts_the_current_one() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/lock", NodeKind::Persistent));
    namespace.apply(Revision(2), &create("/resource", NodeKind::Persistent));
    let fenced_write = |token: u64| {
        Command::Txn(TxnCommand {
            compares: vec![],
            fences: vec![Fence {
                path: "/lock".into(),
                token: FencingToken(token),
            }],
            success: vec![TxnOp::Set(SetCommand {
                path: "/resource".into(),
                data: b"w".to_vec(),
                expected_version: None,
            })],
            failure: vec![],
        })
    };
    let stale = namespace.apply(Revision(3), &fenced_write(7));
    assert_eq!(
        stale.outcome,
        Err(FsmError::FenceRejected {
            path: np("/lock"),
            token: FencingToken(7),
            current: FencingToken(1)
        })
    );
    assert!(namespace
        .apply(Revision(4), &fenced_write(1))
        .outcome
        .is_ok());
    assert_eq!(namespace.get(&np("/resource")).unwrap().data, b"w");
}

#[test]
fn limits_are_checked_before_proposal() {
    let limits = Limits {
        node_data_bytes_max: 4,
        ..Limits::default()
    };
    let command = Command::Set(SetCommand {
        path: "/a".into(),
        data: vec![0; 5],
        expected_version: None,
    });
    assert_eq!(
        command.check_limits(&limits),
        Err(FsmError::TooLarge {
            path: "/a".into(),
            size: 5,
            limit: 4
        })
    );
}

#[test]
fn children_pages_are_ordered_and_complete() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/d", NodeKind::Persistent));
    for index in 0..25u64 {
        namespace.apply(
            Revision(2 + index),
            &create(&format!("/d/n{index:02}"), NodeKind::Persistent),
        );
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = namespace.children(&np("/d"), after.as_deref(), 10).unwrap();
        names.extend(page.children.iter().map(|(name, _)| name.clone()));
        after = page.children.last().map(|(name, _)| name.clone());
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|index| format!("n{index:02}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn closing_a_session_deletes_its_ephemerals_at_one_revision_and_collapses_containers() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/jobs", NodeKind::Container));
    let opened = namespace.apply(
        Revision(2),
        &Command::OpenSession(OpenSessionCommand {
            ttl_ms: 5_000,
            owner: "c".into(),
        }),
    );
    assert_eq!(
        opened.outcome,
        Ok(Output::SessionOpened {
            session: SessionId(2),
            ttl_ms: 5_000
        })
    );
    for (revision, path) in [(3, "/jobs/one"), (4, "/jobs/two")] {
        let ephemeral = Command::Create(CreateCommand {
            path: path.into(),
            data: Vec::new(),
            kind: NodeKind::Ephemeral,
            sequential: false,
            make_parents: false,
            session: SessionId(2),
        });
        assert!(namespace
            .apply(Revision(revision), &ephemeral)
            .outcome
            .is_ok());
    }
    let close = Command::CloseSession(CloseSessionCommand {
        session: SessionId(2),
        end: SessionEnd::Expired,
    });
    let applied = namespace.apply(Revision(5), &close);
    assert_eq!(applied.outcome, Ok(Output::SessionClosed { deleted: 2 }));
    let expired = EventKind::Deleted(DeleteReason::SessionExpired);
    assert_eq!(
        kinds(&applied),
        [
            ("/jobs/one".into(), expired),
            ("/jobs".into(), EventKind::ChildrenChanged),
            ("/jobs/two".into(), expired),
            (
                "/jobs".into(),
                EventKind::Deleted(DeleteReason::ContainerEmpty)
            ),
            ("/".into(), EventKind::ChildrenChanged),
        ]
    );
    assert!(applied
        .events
        .iter()
        .all(|event| event.revision == Revision(5)));
    assert!(namespace.sessions().is_empty());
    assert_eq!(namespace.node_count(), 1);
    // A closed session is gone: closing it again, or creating under it, is refused.
    assert_eq!(
        namespace.apply(Revision(6), &close).outcome,
        Err(FsmError::SessionExpired {
            session: SessionId(2)
        })
    );
    namespace.validate().unwrap();
}

fn once(client: &str, sequence: u64, answered_below: u64, command: Command) -> Proposal {
    Proposal::once(
        WriteId {
            client: client.into(),
            sequence,
            answered_below,
        },
        command,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `remember` keeps the byte count by what each write adds and lets go: after any run of
    /// writes (new, repeated, refused as stale, answered) it is the sum a restore computes from
    /// the records. Past the per-client window: the test after this one.
    #[test]
    fn remembered_bytes_stay_the_sum_of_the_records(
        writes in prop::collection::vec(
            (0u8..2, 0u64..1_000, 0u64..1_000, prop::bool::weighted(0.05), 0u8..4),
            1..700,
        ),
    ) {
        let mut namespace = Namespace::new();
        let mut answered = [0u64; 2];
        for (step, (client, sequence, answered_below, lifts, path)) in writes.into_iter().enumerate() {
            let slot = usize::from(client);
            if lifts {
                answered[slot] = answered[slot].max(answered_below.min(sequence));
            }
            // Creates of a few paths: some succeed, some are refused as existing.
            let command = create(&format!("/n{path}"), NodeKind::Persistent);
            let proposal = once(&format!("client-{client}"), sequence, answered[slot], command);
            namespace.apply_proposal(Revision(step as u64 + 1), &proposal);
            let sum: u64 = namespace.writers().values().map(WriterRecord::bytes).sum();
            prop_assert_eq!(namespace.writers_bytes, sum, "after write {}", step);
            for record in namespace.writers().values() {
                prop_assert!(record.results.len() <= WRITER_RESULTS_MAX);
            }
        }
    }
}

#[test]
fn remembered_bytes_stay_the_sum_past_the_per_client_window() {
    let mut namespace = Namespace::new();
    let writes = WRITER_RESULTS_MAX as u64 + 40;
    for sequence in 0..writes {
        let command = create(&format!("/w{}", sequence % 7), NodeKind::Persistent);
        namespace.apply_proposal(Revision(sequence + 1), &once("c", sequence, 0, command));
    }
    let record = &namespace.writers()["c"];
    assert_eq!(record.results.len(), WRITER_RESULTS_MAX);
    assert_eq!(namespace.writers_bytes, record.bytes());
}

#[test]
fn a_repeated_write_id_gets_the_first_outcome_and_applies_once() {
    let mut namespace = Namespace::new();
    namespace.apply(Revision(1), &create("/q", NodeKind::Persistent));
    let sequential = Command::Create(CreateCommand {
        path: "/q/job-".into(),
        data: Vec::new(),
        kind: NodeKind::Persistent,
        sequential: true,
        make_parents: false,
        session: SessionId(0),
    });
    let first = namespace.apply_proposal(Revision(2), &once("c1", 7, 0, sequential.clone()));
    let again = namespace.apply_proposal(Revision(3), &once("c1", 7, 0, sequential.clone()));
    assert_eq!(first.outcome, again.outcome);
    assert!(again.events.is_empty(), "a repeat changes nothing");
    assert_eq!(namespace.get(&np("/q")).unwrap().children.len(), 1);
    // Another sequence, or another client, is a new write.
    assert!(namespace
        .apply_proposal(Revision(4), &once("c1", 8, 0, sequential.clone()))
        .outcome
        .is_ok());
    assert!(namespace
        .apply_proposal(Revision(5), &once("c2", 7, 0, sequential.clone()))
        .outcome
        .is_ok());
    assert_eq!(namespace.get(&np("/q")).unwrap().children.len(), 3);
    // A failure is remembered too: the repeat does not succeed later by accident.
    let missing = Command::Set(SetCommand {
        path: "/nope".into(),
        data: Vec::new(),
        expected_version: None,
    });
    let failed = namespace.apply_proposal(Revision(6), &once("c1", 9, 0, missing.clone()));
    assert!(failed.outcome.is_err());
    namespace.apply(Revision(7), &create("/nope", NodeKind::Persistent));
    assert_eq!(
        namespace
            .apply_proposal(Revision(8), &once("c1", 9, 0, missing))
            .outcome,
        failed.outcome
    );
    // Writes remembered survive a snapshot.
    let restored = Namespace::from_snapshot(&namespace.to_snapshot()).unwrap();
    assert_eq!(restored.writers(), namespace.writers());
}

#[test]
fn a_write_id_below_what_the_client_has_answers_for_is_refused() {
    let mut namespace = Namespace::new();
    let make = |path: &str| create(path, NodeKind::Persistent);
    assert!(namespace
        .apply_proposal(Revision(1), &once("c", 1, 0, make("/a")))
        .outcome
        .is_ok());
    // The client now says it has every answer below 5: sequence 1 is forgotten.
    assert!(namespace
        .apply_proposal(Revision(2), &once("c", 5, 5, make("/b")))
        .outcome
        .is_ok());
    assert_eq!(
        namespace
            .apply_proposal(Revision(3), &once("c", 1, 5, make("/a")))
            .outcome,
        Err(FsmError::StaleWriteId {
            client: "c".into(),
            sequence: 1,
            answered_below: 5
        })
    );
    assert_eq!(namespace.writers()["c"].results.len(), 1);
    assert!(Proposal::once(
        WriteId {
            client: String::new(),
            sequence: 1,
            answered_below: 0
        },
        make("/c"),
    )
    .check_limits(&Limits::default())
    .is_err());
}

#[test]
fn a_client_idle_past_the_retention_is_forgotten_on_the_replicated_clock() {
    let mut namespace = Namespace::new();
    let make = |path: &str| create(path, NodeKind::Persistent);
    let tick = |elapsed_ms: u64| {
        Command::CheckpointSessions(CheckpointCommand {
            remaining: Vec::new(),
            elapsed_ms,
            write_id_retention_ms: 1_000,
        })
    };
    namespace.apply_proposal(Revision(1), &once("idle", 1, 0, make("/a")));
    namespace.apply(Revision(2), &tick(600));
    namespace.apply_proposal(Revision(3), &once("busy", 1, 0, make("/b")));
    // The clock reads 1_000: "idle" last wrote at 0, so it is exactly at the retention.
    namespace.apply(Revision(4), &tick(400));
    assert_eq!(namespace.clock_ms(), 1_000);
    assert_eq!(namespace.writers().len(), 2);
    namespace.apply(Revision(5), &tick(1));
    assert!(!namespace.writers().contains_key("idle"));
    assert_eq!(namespace.writers()["busy"].last_clock_ms, 600);
    // The clock and the records survive a snapshot, so every replica forgets at one revision.
    let restored = Namespace::from_snapshot(&namespace.to_snapshot()).unwrap();
    assert_eq!(restored.clock_ms(), 1_001);
    assert_eq!(restored.writers(), namespace.writers());
    // A renewal checkpoint (no elapsed time) never forgets anyone.
    namespace.apply(Revision(6), &tick(0));
    assert!(namespace.writers().contains_key("busy"));
    namespace.apply(Revision(7), &tick(2_000));
    assert!(namespace.writers().is_empty());
}

fn get(path: &str) -> TxnOp {
    TxnOp::Get { path: path.into() }
}

fn big_node(namespace: &mut Namespace, revision: u64, path: &str, bytes: usize) {
    let command = Command::Create(CreateCommand {
        path: path.into(),
        data: vec![7; bytes],
        kind: NodeKind::Persistent,
        sequential: false,
        make_parents: false,
        session: SessionId(0),
    });
    assert!(namespace
        .apply(Revision(revision), &command)
        .outcome
        .is_ok());
}

#[test]
fn a_txn_reading_more_than_the_response_bound_fails_whole() {
    let mut namespace = Namespace::new();
    big_node(&mut namespace, 1, "/big", NODE_DATA_BYTES_MAX as usize);
    let reads = (TXN_READ_BYTES_MAX / NODE_DATA_BYTES_MAX) as usize;
    let within = Command::Txn(TxnCommand {
        compares: Vec::new(),
        fences: Vec::new(),
        success: vec![get("/big"); reads],
        failure: Vec::new(),
    });
    assert!(namespace.apply(Revision(2), &within).outcome.is_ok());
    let mut success = vec![TxnOp::Create(CreateCommand {
        path: "/made".into(),
        data: Vec::new(),
        kind: NodeKind::Persistent,
        sequential: false,
        make_parents: false,
        session: SessionId(0),
    })];
    success.extend(vec![get("/big"); reads + 1]);
    let over = Command::Txn(TxnCommand {
        compares: Vec::new(),
        fences: Vec::new(),
        success,
        failure: Vec::new(),
    });
    let applied = namespace.apply(Revision(3), &over);
    assert!(
        matches!(applied.outcome, Err(FsmError::LimitExceeded { .. })),
        "{:?}",
        applied.outcome
    );
    assert!(
        namespace.get(&np("/made")).is_none(),
        "nothing of it applied"
    );
    assert!(applied.events.is_empty());
}

#[test]
fn a_remembered_txn_keeps_small_reads_and_drops_large_ones_but_never_applies_twice() {
    let mut namespace = Namespace::new();
    big_node(&mut namespace, 1, "/small", 10);
    big_node(&mut namespace, 2, "/big", 100_000);
    let reading = |path: &str| {
        Command::Txn(TxnCommand {
            compares: Vec::new(),
            fences: Vec::new(),
            success: vec![
                get(path),
                TxnOp::Create(CreateCommand {
                    path: format!("{path}-seq-"),
                    data: Vec::new(),
                    kind: NodeKind::Persistent,
                    sequential: true,
                    make_parents: false,
                    session: SessionId(0),
                }),
            ],
            failure: Vec::new(),
        })
    };
    let small = namespace.apply_proposal(Revision(3), &once("c", 1, 0, reading("/small")));
    let again = namespace.apply_proposal(Revision(4), &once("c", 1, 0, reading("/small")));
    assert_eq!(
        small.outcome, again.outcome,
        "small reads are remembered whole"
    );
    let big = namespace.apply_proposal(Revision(5), &once("c", 2, 0, reading("/big")));
    assert!(big.outcome.is_ok());
    let repeat = namespace.apply_proposal(Revision(6), &once("c", 2, 0, reading("/big")));
    assert_eq!(
        repeat.outcome,
        Err(FsmError::ResultNotRetained {
            succeeded: true,
            revision: Revision(5)
        })
    );
    assert!(repeat.events.is_empty(), "the repeat applied nothing");
    assert_eq!(namespace.get(&np("/")).unwrap().stat.num_children, 4);
    let remembered = namespace.writers()["c"].bytes();
    assert!(
        remembered < 4_096,
        "{remembered} bytes remembered for client c"
    );
}

#[test]
fn remembered_outcomes_are_bounded_by_bytes_over_all_clients() {
    let mut namespace = Namespace::new();
    big_node(&mut namespace, 1, "/data", 4_000);
    let reading = Command::Txn(TxnCommand {
        compares: Vec::new(),
        fences: Vec::new(),
        success: vec![get("/data")],
        failure: Vec::new(),
    });
    let clients = 3 * WRITERS_BYTES_MAX as usize / (WRITER_RESULTS_MAX * 4_000);
    let mut revision = 1;
    for client in 0..clients {
        for sequence in 0..WRITER_RESULTS_MAX as u64 {
            revision += 1;
            let proposal = once(&format!("client-{client}"), sequence, 0, reading.clone());
            namespace.apply_proposal(Revision(revision), &proposal);
        }
    }
    let total: u64 = namespace.writers().values().map(WriterRecord::bytes).sum();
    assert!(total <= WRITERS_BYTES_MAX, "{total} bytes remembered");
    assert!(
        namespace.writers().len() < clients,
        "the least recent clients went"
    );
    assert!(namespace
        .writers()
        .contains_key(&format!("client-{}", clients - 1)));
    let restored = Namespace::from_snapshot(&namespace.to_snapshot()).unwrap();
    assert_eq!(restored.writers(), namespace.writers());
}
