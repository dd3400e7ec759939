//! `Namespace`: the replicated tree of nodes and the session table, and the deterministic
//! `apply` that moves it from one revision to the next.
//!
//! Every command runs inside a `Change`, which journals the inverse of each primitive mutation.
//! A command that fails part-way (a txn whose third operation hits `NodeExists`, say) is rolled
//! back by replaying that journal backwards, so every command is all or nothing without cloning
//! the tree.
//!
//! ```text
//!  apply(revision, command)
//!     │  Change { undo: [], events: [] }
//!     ├─ primitives: insert / remove / set_data / touch_meta ──► push Undo, push WatchEvent
//!     ├─ Ok  ─► keep state, return (Ok(output), events)
//!     └─ Err ─► replay undo backwards, return (Err(error), [])
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::{
    CheckpointCommand, CloseSessionCommand, Command, Compare, CompareOp, CompareTarget,
    CreateCommand, DeleteCommand, Fence, OpenSessionCommand, Output, SessionEnd, SetCommand,
    TxnCommand, TxnOp, WriteId, TXN_READ_BYTES_MAX,
};
use super::error::FsmError;
use super::event::{DeleteReason, EventKind, SessionChange, WatchEvent};
use super::ids::{FencingToken, Revision, SessionId};
use super::node::{Node, NodeKind, NodeStat};
use super::outcome::{OutcomeRecord, REMEMBERED_READ_BYTES_MAX};
use super::path::NodePath;
use super::proposal::Proposal;

/// A live session as the state machine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub ttl_ms: u64,
    /// Time left at the last checkpoint (the TTL until the first one): what a new leader
    /// grants, plus an election's worth, before it has heard from the session itself.
    pub remaining_ms: u64,
    /// Ephemeral nodes this session owns.
    pub ephemerals: BTreeSet<NodePath>,
    /// Who opened it (see `OpenSessionCommand::owner`).
    pub owner: String,
}

/// Most clients whose write outcomes are remembered; beyond it the least recently writing
/// client is forgotten (its retries then apply again, as without a write id).
pub const WRITERS_MAX: usize = 10_000;
/// Most outcomes remembered per client (for writes it has in flight at once).
pub const WRITER_RESULTS_MAX: usize = 256;
/// Most bytes of remembered outcomes over all clients; beyond it the least recently writing
/// clients are forgotten.
pub const WRITERS_BYTES_MAX: u64 = 64 * 1024 * 1024;

const _: () = assert!(
    WRITER_RESULTS_MAX as u64 * (REMEMBERED_READ_BYTES_MAX + 4096) < WRITERS_BYTES_MAX,
    "one client's window of remembered outcomes fits in the bound"
);

/// The remembered outcomes of one client's writes, for exactly-once retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRecord {
    /// Every sequence below this was answered; such writes are refused as stale.
    pub answered_below: u64,
    /// Outcomes by sequence.
    pub results: BTreeMap<u64, OutcomeRecord>,
    /// The revision of this client's last write, to forget the least recent client first.
    pub last_revision: Revision,
    /// The replicated clock at this client's last write, to forget clients idle too long.
    pub last_clock_ms: u64,
}

impl WriterRecord {
    /// About how many bytes the remembered outcomes hold.
    pub fn bytes(&self) -> u64 {
        WRITER_RECORD_BYTES + outcomes_bytes(self.results.values())
    }
}

/// What a client's record counts before its outcomes.
const WRITER_RECORD_BYTES: u64 = 64;

/// What remembered outcomes count toward `WRITERS_BYTES_MAX`.
fn outcomes_bytes<'a>(outcomes: impl IntoIterator<Item = &'a OutcomeRecord>) -> u64 {
    outcomes
        .into_iter()
        .map(|outcome| 16 + outcome.bytes())
        .sum()
}

/// What a node counts toward the tree's size: its path, its data and a fixed allowance for
/// its stat and bookkeeping.
pub const NODE_OVERHEAD_BYTES: u64 = 128;

pub(super) fn node_bytes(path: &NodePath, data_len: usize) -> u64 {
    (path.as_str().len() + data_len) as u64 + NODE_OVERHEAD_BYTES
}

/// What one `apply` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Result<Output, FsmError>,
    /// Changes in the order they happened, all at the command's revision; empty on failure.
    pub events: Vec<WatchEvent>,
    /// Sessions opened, renewed by a checkpoint or closed; empty on failure and for a repeated
    /// write id (the first application reported them).
    pub sessions: Vec<SessionChange>,
}

/// One page of a children listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildrenPage {
    pub parent: NodeStat,
    pub children: Vec<(String, NodeStat)>,
    /// Whether names after the last returned one exist.
    pub more: bool,
}

/// The tree and sessions at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Each node behind an `Arc`, so that copying the tree for a snapshot shares the nodes
    /// (reference counts, no deep copy) and a change copies only the node it changes
    /// (`Arc::make_mut`) while a snapshot still holds it.
    pub(super) nodes: BTreeMap<NodePath, Arc<Node>>,
    pub(super) sessions: BTreeMap<SessionId, SessionRecord>,
    pub(super) writers: BTreeMap<String, WriterRecord>,
    /// The sum of `WriterRecord::bytes` over `writers` (derived; rebuilt on restore).
    pub(super) writers_bytes: u64,
    /// The size of the tree, by `node_bytes` (derived; rebuilt on restore), which
    /// `--quota-bytes` bounds.
    pub(super) data_bytes: u64,
    /// Leader milliseconds accounted for by full session checkpoints: a clock every replica
    /// agrees on, used to forget idle writers. It never runs fast (see `CheckpointCommand`).
    pub(super) clock_ms: u64,
    pub(super) revision: Revision,
}

impl Default for Namespace {
    fn default() -> Namespace {
        Namespace::new()
    }
}

enum Undo {
    Inserted {
        path: NodePath,
    },
    Removed {
        path: NodePath,
        node: Arc<Node>,
    },
    Meta {
        path: NodePath,
        stat: NodeStat,
        next_sequence: u64,
    },
    Data {
        path: NodePath,
        data: Vec<u8>,
    },
    Linked {
        parent: NodePath,
        name: String,
    },
    Unlinked {
        parent: NodePath,
        name: String,
    },
    OwnerLinked {
        session: SessionId,
        path: NodePath,
    },
    OwnerUnlinked {
        session: SessionId,
        path: NodePath,
    },
    SessionOpened {
        session: SessionId,
    },
    SessionClosed {
        session: SessionId,
        record: SessionRecord,
    },
    SessionRemaining {
        session: SessionId,
        remaining_ms: u64,
    },
}

/// One command in progress: the journal to roll it back and the events it produced.
struct Change<'a> {
    namespace: &'a mut Namespace,
    revision: Revision,
    undo: Vec<Undo>,
    events: Vec<WatchEvent>,
    sessions: Vec<SessionChange>,
    /// Index in `events` of the coalesced ChildrenChanged event of each parent.
    children_event: BTreeMap<NodePath, usize>,
}

impl Namespace {
    /// An empty tree: only the root, at revision 0.
    pub fn new() -> Namespace {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            NodePath::root(),
            Arc::new(Node::new(
                Vec::new(),
                NodeKind::Persistent,
                SessionId(0),
                Revision(0),
            )),
        );
        Namespace {
            nodes,
            sessions: BTreeMap::new(),
            writers: BTreeMap::new(),
            writers_bytes: 0,
            data_bytes: node_bytes(&NodePath::root(), 0),
            clock_ms: 0,
            revision: Revision(0),
        }
    }

    /// The clients whose write outcomes are remembered.
    pub fn writers(&self) -> &BTreeMap<String, WriterRecord> {
        &self.writers
    }

    /// The size of the tree in bytes (paths, data and `NODE_OVERHEAD_BYTES` per node): what
    /// `--quota-bytes` bounds.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Whether `command` may make the tree larger: creates, sets to longer data, session
    /// opens, and txns with such operations. Over the quota only other writes are proposed.
    pub fn grows(&self, command: &Command) -> bool {
        let set_grows = |set: &SetCommand| {
            NodePath::parse(&set.path)
                .ok()
                .and_then(|path| self.nodes.get(&path))
                .is_some_and(|node| set.data.len() > node.data.len())
        };
        match command {
            Command::Create(_) | Command::OpenSession(_) => true,
            Command::Set(set) => set_grows(set),
            Command::Txn(txn) => txn.success.iter().chain(&txn.failure).any(|op| match op {
                TxnOp::Create(_) => true,
                TxnOp::Set(set) => set_grows(set),
                TxnOp::Delete(_) | TxnOp::Get { .. } => false,
            }),
            Command::Delete(_) | Command::CloseSession(_) | Command::CheckpointSessions(_) => false,
            Command::Batch(items) => items.iter().any(|item| self.grows(&item.command)),
        }
    }

    /// The revision of the last applied entry.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Number of nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, path: &NodePath) -> Option<&Node> {
        self.nodes.get(path).map(Arc::as_ref)
    }

    /// The node at `path`, to change: copied first if a snapshot copy of the tree still
    /// shares it.
    fn node_mut(&mut self, path: &NodePath) -> Option<&mut Node> {
        self.nodes.get_mut(path).map(Arc::make_mut)
    }

    pub fn sessions(&self) -> &BTreeMap<SessionId, SessionRecord> {
        &self.sessions
    }

    /// All nodes in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodePath, &Node)> {
        self.nodes.iter().map(|(path, node)| (path, node.as_ref()))
    }

    /// Up to `limit` children of `path` whose names sort after `after`.
    pub fn children(
        &self,
        path: &NodePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ChildrenPage, FsmError> {
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| FsmError::NoNode { path: path.clone() })?;
        let names: Box<dyn Iterator<Item = &String>> = match after {
            Some(after) => Box::new(
                node.children
                    .range::<str, _>((Bound::Excluded(after), Bound::Unbounded)),
            ),
            None => Box::new(node.children.iter()),
        };
        let mut children = Vec::new();
        let mut more = false;
        for name in names {
            if children.len() == limit {
                more = true;
                break;
            }
            let child_path = path
                .child(name)
                .expect("stored child names are valid segments");
            let child = self.nodes.get(&child_path).expect("a listed child exists");
            children.push((name.clone(), child.stat));
        }
        Ok(ChildrenPage {
            parent: node.stat,
            children,
            more,
        })
    }

    /// Whether `token` is the create revision of the node now at `path`; also returns that
    /// node's create revision (0 when there is none).
    pub fn check_fence(&self, path: &NodePath, token: FencingToken) -> (bool, FencingToken) {
        match self.nodes.get(path) {
            Some(node) => {
                let current = FencingToken(node.stat.create_revision.0);
                (current == token, current)
            }
            None => (false, FencingToken(0)),
        }
    }

    /// Moves to `revision` without changing the tree (for log entries that carry no command).
    pub fn advance(&mut self, revision: Revision) {
        assert!(
            revision > self.revision,
            "revision {revision} after {}",
            self.revision
        );
        self.revision = revision;
    }

    /// Applies a plain `command` (one without a write id) at `revision`, which must be above
    /// the current revision.
    pub fn apply(&mut self, revision: Revision, command: &Command) -> Applied {
        self.apply_plain(revision, command)
    }

    /// The first revision of log entry `index`: the index itself, unless batches before it
    /// already used that many revisions, then the next one. Without batches every entry's
    /// revision is its index, as it was before batches existed.
    pub fn entry_revision(&self, index: u64) -> Revision {
        Revision(index.max(self.revision.0 + 1))
    }

    /// Moves past log entry `index`, which carries no command (blank, membership): it takes a
    /// revision of its own, so the revision is never below the last applied index.
    pub fn pass_entry(&mut self, index: u64) {
        let revision = self.entry_revision(index);
        self.advance(revision);
    }

    /// Applies the proposal of log entry `index`, returning each write's revision and what
    /// it did: one write for a plain proposal, one per item, in order, for a batch. Each
    /// item is applied as an entry of its own would be, at the revision after the last.
    pub fn apply_entry(&mut self, index: u64, proposal: &Proposal) -> Vec<(Revision, Applied)> {
        let Command::Batch(items) = &proposal.command else {
            let revision = self.entry_revision(index);
            return vec![(revision, self.apply_proposal(revision, proposal))];
        };
        let mut applied = Vec::with_capacity(items.len());
        for item in items {
            let revision = self.entry_revision(index);
            let write = self.apply_once(revision, item.write_id.as_ref(), &item.command);
            applied.push((revision, write));
        }
        if applied.is_empty() {
            self.pass_entry(index);
        }
        applied
    }

    /// Applies `proposal` at `revision`: its command, at most once per write id (a repeat
    /// gets the first outcome again and changes nothing).
    pub fn apply_proposal(&mut self, revision: Revision, proposal: &Proposal) -> Applied {
        self.apply_once(revision, proposal.write_id.as_ref(), &proposal.command)
    }

    fn apply_once(
        &mut self,
        revision: Revision,
        write_id: Option<&WriteId>,
        command: &Command,
    ) -> Applied {
        let Some(id) = write_id else {
            return self.apply_plain(revision, command);
        };
        if let Some(outcome) = self.remembered(id) {
            self.advance(revision);
            return Applied {
                outcome,
                events: Vec::new(),
                sessions: Vec::new(),
            };
        }
        let applied = self.apply_plain(revision, command);
        self.remember(id, revision, &applied.outcome);
        applied
    }

    /// What an earlier write with `id` returned, or a refusal if `id` is stale; `None` when
    /// the write is new.
    fn remembered(&self, id: &WriteId) -> Option<Result<Output, FsmError>> {
        let record = self.writers.get(&id.client)?;
        if id.sequence < record.answered_below {
            return Some(Err(FsmError::StaleWriteId {
                client: id.client.clone(),
                sequence: id.sequence,
                answered_below: record.answered_below,
            }));
        }
        record
            .results
            .get(&id.sequence)
            .map(OutcomeRecord::to_outcome)
    }

    /// Records the outcome of a new write, forgetting what the client no longer needs and,
    /// beyond the bounds, the oldest outcomes and the least recent client.
    fn remember(&mut self, id: &WriteId, revision: Revision, outcome: &Result<Output, FsmError>) {
        // `writers_bytes` moves by what this write adds and lets go, so a write costs the
        // outcomes it forgets rather than a pass over every outcome the client has.
        let mut added = 0;
        let record = self.writers.entry(id.client.clone()).or_insert_with(|| {
            added += WRITER_RECORD_BYTES;
            WriterRecord {
                answered_below: 0,
                results: BTreeMap::new(),
                last_revision: revision,
                last_clock_ms: 0,
            }
        });
        record.answered_below = record.answered_below.max(id.answered_below);
        let needed = record.results.split_off(&record.answered_below);
        let mut freed = outcomes_bytes(std::mem::replace(&mut record.results, needed).values());
        let remembered = OutcomeRecord::remembered(outcome, revision);
        added += outcomes_bytes([&remembered]);
        // A new write's sequence is not remembered (`remembered` would have answered it); a
        // replaced outcome is still counted out, so the count stays exact whoever calls this.
        if let Some(replaced) = record.results.insert(id.sequence, remembered) {
            freed += outcomes_bytes([&replaced]);
        }
        while record.results.len() > WRITER_RESULTS_MAX {
            if let Some((_, oldest)) = record.results.pop_first() {
                freed += outcomes_bytes([&oldest]);
            }
        }
        record.last_revision = revision;
        record.last_clock_ms = self.clock_ms;
        self.writers_bytes = self.writers_bytes + added - freed;
        while self.writers.len() > WRITERS_MAX || self.writers_bytes > WRITERS_BYTES_MAX {
            let least_recent = self
                .writers
                .iter()
                .filter(|(client, _)| **client != id.client)
                .min_by_key(|(_, record)| record.last_revision)
                .map(|(client, _)| client.clone());
            let Some(least_recent) = least_recent else {
                break;
            };
            self.forget_writer(&least_recent);
        }
    }

    fn forget_writer(&mut self, client: &str) {
        if let Some(record) = self.writers.remove(client) {
            self.writers_bytes -= record.bytes();
        }
    }

    fn apply_plain(&mut self, revision: Revision, command: &Command) -> Applied {
        self.advance(revision);
        let mut change = Change {
            namespace: self,
            revision,
            undo: Vec::new(),
            events: Vec::new(),
            sessions: Vec::new(),
            children_event: BTreeMap::new(),
        };
        let outcome = match command {
            Command::Create(create) => change.create(create),
            Command::Set(set) => change.set(set),
            Command::Delete(delete) => change.delete(delete),
            Command::Txn(txn) => change.txn(txn),
            Command::OpenSession(open) => Ok(change.open_session(open)),
            Command::CloseSession(close) => change.close_session(close),
            Command::CheckpointSessions(checkpoint) => Ok(change.checkpoint(checkpoint)),
            // `apply_entry` takes batches apart, and they cannot nest (`BatchItem`).
            Command::Batch(_) => Err(FsmError::InvalidArgument {
                reason: "a batch is applied by apply_entry, not as one write".into(),
            }),
        };
        let applied = match outcome {
            Ok(output) => Applied {
                outcome: Ok(output),
                events: change.events,
                sessions: change.sessions,
            },
            Err(error) => {
                change.rollback();
                Applied {
                    outcome: Err(error),
                    events: Vec::new(),
                    sessions: Vec::new(),
                }
            }
        };
        if let Command::CheckpointSessions(checkpoint) = command {
            self.advance_clock(checkpoint);
        }
        applied
    }

    /// Advances the replicated clock and forgets the clients that wrote nothing within the
    /// retention: their retries are long over, since a client gives up on a write well within it.
    fn advance_clock(&mut self, checkpoint: &CheckpointCommand) {
        self.clock_ms = self.clock_ms.saturating_add(checkpoint.elapsed_ms);
        let clock_ms = self.clock_ms;
        let idle: Vec<String> = self
            .writers
            .iter()
            .filter(|(_, record)| {
                clock_ms.saturating_sub(record.last_clock_ms) > checkpoint.write_id_retention_ms
            })
            .map(|(client, _)| client.clone())
            .collect();
        for client in idle {
            self.forget_writer(&client);
        }
    }

    /// Leader milliseconds accounted for by full session checkpoints so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Checks every structural invariant; a violation means the replica diverged.
    pub fn validate(&self) -> Result<(), String> {
        let root = self
            .nodes
            .get(&NodePath::root())
            .ok_or("the root is missing")?;
        if root.stat.kind != NodeKind::Persistent {
            return Err("the root is not persistent".into());
        }
        let mut owned: BTreeMap<SessionId, BTreeSet<NodePath>> = BTreeMap::new();
        for (path, node) in &self.nodes {
            self.validate_node(path, node)?;
            if node.stat.kind == NodeKind::Ephemeral {
                owned
                    .entry(node.stat.ephemeral_owner)
                    .or_default()
                    .insert(path.clone());
            }
        }
        let data_bytes: u64 = self
            .nodes
            .iter()
            .map(|(path, node)| node_bytes(path, node.data.len()))
            .sum();
        if data_bytes != self.data_bytes {
            return Err(format!(
                "data_bytes {} but the nodes hold {data_bytes}",
                self.data_bytes
            ));
        }
        for (session, record) in &self.sessions {
            let expected = owned.remove(session).unwrap_or_default();
            if record.ephemerals != expected {
                return Err(format!(
                    "session {session}: owner list disagrees with the tree"
                ));
            }
        }
        Ok(())
    }

    /// The invariants of one node: counts, revisions, children, ownership, its parent's list.
    fn validate_node(&self, path: &NodePath, node: &Node) -> Result<(), String> {
        if node.stat.num_children != node.children.len() as u64 {
            return Err(format!(
                "{path}: num_children {} but {} children",
                node.stat.num_children,
                node.children.len()
            ));
        }
        if node.stat.data_length != node.data.len() as u64 {
            return Err(format!(
                "{path}: data_length {} but {} bytes",
                node.stat.data_length,
                node.data.len()
            ));
        }
        if node.stat.mod_revision > self.revision {
            return Err(format!(
                "{path}: mod_revision {} above {}",
                node.stat.mod_revision, self.revision
            ));
        }
        if node.stat.create_revision > node.stat.mod_revision {
            return Err(format!("{path}: create_revision above mod_revision"));
        }
        for name in &node.children {
            let child = path
                .child(name)
                .map_err(|rule| format!("{path}: child {name:?}: {rule}"))?;
            if !self.nodes.contains_key(&child) {
                return Err(format!("{path}: lists missing child {name}"));
            }
        }
        match node.stat.kind {
            NodeKind::Ephemeral => {
                if !node.children.is_empty() {
                    return Err(format!("{path}: ephemeral node has children"));
                }
                if !self.sessions.contains_key(&node.stat.ephemeral_owner) {
                    return Err(format!(
                        "{path}: owner {} is not a live session",
                        node.stat.ephemeral_owner
                    ));
                }
            }
            NodeKind::Persistent | NodeKind::Container => {
                if node.stat.ephemeral_owner != SessionId(0) {
                    return Err(format!("{path}: non-ephemeral node has an owner"));
                }
            }
        }
        if let Some(parent) = path.parent() {
            let parent_node = self
                .nodes
                .get(&parent)
                .ok_or_else(|| format!("{path}: parent is missing"))?;
            if !parent_node.children.contains(path.name()) {
                return Err(format!("{path}: not listed by its parent"));
            }
        }
        Ok(())
    }
}

impl Change<'_> {
    fn node(&self, path: &NodePath) -> Result<&Node, FsmError> {
        self.namespace
            .nodes
            .get(path)
            .map(Arc::as_ref)
            .ok_or_else(|| FsmError::NoNode { path: path.clone() })
    }

    fn create(&mut self, create: &CreateCommand) -> Result<Output, FsmError> {
        let (parent, path) = self.create_target(create)?;
        if create.make_parents {
            for ancestor in path.ancestors() {
                if !self.namespace.nodes.contains_key(&ancestor) {
                    self.check_parent_accepts(&ancestor)?;
                    let node = Node::new(
                        Vec::new(),
                        NodeKind::Persistent,
                        SessionId(0),
                        self.revision,
                    );
                    self.insert(ancestor, node);
                }
            }
        }
        let (path, parent) = match (create.sequential, path) {
            (true, _) => {
                // The suffix comes from the parent, which may only now exist.
                let parent_node = self.node(&parent).map_err(|_| FsmError::NoParent {
                    parent: parent.clone(),
                })?;
                let sequence = parent_node.next_sequence;
                let text = sequential_name(&create.path, sequence);
                let path =
                    NodePath::parse(&text).map_err(|rule| FsmError::invalid_path(&text, rule))?;
                self.touch_meta(&parent, |_, next_sequence| *next_sequence += 1);
                (path, parent)
            }
            (false, path) => (path, parent),
        };
        if self.namespace.nodes.contains_key(&path) {
            return Err(FsmError::NodeExists { path });
        }
        self.check_parent_accepts(&path)?;
        let owner = match create.kind {
            NodeKind::Ephemeral => {
                if !self.namespace.sessions.contains_key(&create.session) {
                    return Err(FsmError::SessionExpired {
                        session: create.session,
                    });
                }
                create.session
            }
            NodeKind::Persistent | NodeKind::Container => {
                if create.session != SessionId(0) {
                    return Err(FsmError::InvalidArgument {
                        reason: "a session may only own ephemeral nodes".into(),
                    });
                }
                SessionId(0)
            }
        };
        debug_assert!(parent == path.parent().expect("a created path is not the root"));
        let node = Node::new(create.data.clone(), create.kind, owner, self.revision);
        let stat = node.stat;
        self.insert(path.clone(), node);
        Ok(Output::Created { path, stat })
    }

    /// The parent and (for non-sequential creates) the final path of a create.
    fn create_target(&self, create: &CreateCommand) -> Result<(NodePath, NodePath), FsmError> {
        if create.sequential {
            // Validate the shape with a sample suffix; the real suffix is chosen later.
            let sample = sequential_name(&create.path, 0);
            let path = NodePath::parse(&sample)
                .map_err(|rule| FsmError::invalid_path(&create.path, rule))?;
            let parent = path.parent().expect("a sequential path has a parent");
            Ok((parent, path))
        } else {
            let path = NodePath::parse(&create.path)
                .map_err(|rule| FsmError::invalid_path(&create.path, rule))?;
            let Some(parent) = path.parent() else {
                return Err(FsmError::NodeExists { path });
            };
            Ok((parent, path))
        }
    }

    fn check_parent_accepts(&self, path: &NodePath) -> Result<(), FsmError> {
        let parent = path.parent().expect("checked paths are not the root");
        match self.namespace.nodes.get(&parent) {
            None => Err(FsmError::NoParent { parent }),
            Some(node) if node.stat.kind == NodeKind::Ephemeral => {
                Err(FsmError::EphemeralParent { parent })
            }
            Some(_) => Ok(()),
        }
    }

    fn set(&mut self, set: &SetCommand) -> Result<Output, FsmError> {
        let path =
            NodePath::parse(&set.path).map_err(|rule| FsmError::invalid_path(&set.path, rule))?;
        let node = self.node(&path)?;
        check_version(&path, node, set.expected_version)?;
        self.set_data(&path, set.data.clone());
        Ok(Output::Set {
            stat: self.node(&path)?.stat,
        })
    }

    fn delete(&mut self, delete: &DeleteCommand) -> Result<Output, FsmError> {
        let path = NodePath::parse(&delete.path)
            .map_err(|rule| FsmError::invalid_path(&delete.path, rule))?;
        if path.is_root() {
            return Err(FsmError::RootReadOnly);
        }
        let node = self.node(&path)?;
        check_version(&path, node, delete.expected_version)?;
        if !node.children.is_empty() && !delete.recursive {
            return Err(FsmError::NotEmpty { path });
        }
        let mut subtree = vec![path.clone()];
        let prefix = format!("{path}/");
        subtree.extend(
            self.namespace
                .nodes
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(candidate, _)| candidate.as_str().starts_with(&prefix))
                .map(|(candidate, _)| candidate.clone()),
        );
        // Descendants sort after their ancestors, so reverse order removes leaves first.
        for doomed in subtree.iter().rev() {
            self.remove(doomed, DeleteReason::Deleted);
        }
        self.collapse_empty_containers(path.parent().expect("not the root"));
        Ok(Output::Deleted {
            count: subtree.len() as u64,
        })
    }

    fn open_session(&mut self, open: &OpenSessionCommand) -> Output {
        let session = SessionId(self.revision.0);
        let record = SessionRecord {
            ttl_ms: open.ttl_ms,
            remaining_ms: open.ttl_ms,
            ephemerals: BTreeSet::new(),
            owner: open.owner.clone(),
        };
        let previous = self.namespace.sessions.insert(session, record);
        assert!(
            previous.is_none(),
            "session ids are revisions, never reused"
        );
        self.undo.push(Undo::SessionOpened { session });
        self.sessions.push(SessionChange::Opened {
            session,
            ttl_ms: open.ttl_ms,
        });
        Output::SessionOpened {
            session,
            ttl_ms: open.ttl_ms,
        }
    }

    fn close_session(&mut self, close: &CloseSessionCommand) -> Result<Output, FsmError> {
        let Some(record) = self.namespace.sessions.get(&close.session) else {
            return Err(FsmError::SessionExpired {
                session: close.session,
            });
        };
        let reason = match close.end {
            SessionEnd::Closed => DeleteReason::SessionClosed,
            SessionEnd::Expired => DeleteReason::SessionExpired,
        };
        // Ephemeral nodes have no children, so each goes alone; in path order, for
        // deterministic events.
        let doomed: Vec<NodePath> = record.ephemerals.iter().cloned().collect();
        for path in &doomed {
            self.remove(path, reason);
            self.collapse_empty_containers(path.parent().expect("an ephemeral is not the root"));
        }
        let record = self
            .namespace
            .sessions
            .remove(&close.session)
            .expect("checked above");
        self.undo.push(Undo::SessionClosed {
            session: close.session,
            record,
        });
        self.sessions.push(SessionChange::Closed {
            session: close.session,
        });
        Ok(Output::SessionClosed {
            deleted: doomed.len() as u64,
        })
    }

    fn checkpoint(&mut self, checkpoint: &CheckpointCommand) -> Output {
        for (session, remaining_ms) in &checkpoint.remaining {
            if let Some(record) = self.namespace.sessions.get_mut(session) {
                self.undo.push(Undo::SessionRemaining {
                    session: *session,
                    remaining_ms: record.remaining_ms,
                });
                record.remaining_ms = (*remaining_ms).min(record.ttl_ms);
                self.sessions.push(SessionChange::Renewed {
                    session: *session,
                    remaining_ms: record.remaining_ms,
                });
            }
        }
        Output::Checkpointed
    }

    fn txn(&mut self, txn: &TxnCommand) -> Result<Output, FsmError> {
        for fence in &txn.fences {
            self.check_fence(fence)?;
        }
        let mut succeeded = true;
        for compare in &txn.compares {
            // Evaluate every compare so a malformed one is reported even after a false one.
            if !self.evaluate(compare)? {
                succeeded = false;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::with_capacity(branch.len());
        let mut read_bytes: u64 = 0;
        for (op_index, op) in branch.iter().enumerate() {
            let result = match op {
                TxnOp::Create(create) => self.create(create),
                TxnOp::Set(set) => self.set(set),
                TxnOp::Delete(delete) => self.delete(delete),
                TxnOp::Get { path } => self.read(path),
            };
            if let Ok(Output::Got { data, .. }) = &result {
                read_bytes += data.len() as u64;
                if read_bytes > TXN_READ_BYTES_MAX {
                    return Err(FsmError::LimitExceeded {
                        what: "bytes of node data one txn reads".into(),
                        size: read_bytes,
                        limit: TXN_READ_BYTES_MAX,
                    });
                }
            }
            match result {
                Ok(output) => results.push(output),
                Err(source) => {
                    return Err(FsmError::TxnOpFailed {
                        op_index,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(Output::Txn { succeeded, results })
    }

    fn read(&self, path: &str) -> Result<Output, FsmError> {
        let path = NodePath::parse(path).map_err(|rule| FsmError::invalid_path(path, rule))?;
        let node = self.node(&path)?;
        Ok(Output::Got {
            data: node.data.clone(),
            stat: node.stat,
        })
    }

    fn check_fence(&self, fence: &Fence) -> Result<(), FsmError> {
        let path = NodePath::parse(&fence.path)
            .map_err(|rule| FsmError::invalid_path(&fence.path, rule))?;
        let (current, holder) = self.namespace.check_fence(&path, fence.token);
        if current {
            Ok(())
        } else {
            Err(FsmError::FenceRejected {
                path,
                token: fence.token,
                current: holder,
            })
        }
    }

    fn evaluate(&self, compare: &Compare) -> Result<bool, FsmError> {
        let path = NodePath::parse(&compare.path)
            .map_err(|rule| FsmError::invalid_path(&compare.path, rule))?;
        let node = self.namespace.nodes.get(&path);
        if let CompareTarget::Exists(expected) = compare.target {
            return match compare.op {
                CompareOp::Equal => Ok(node.is_some() == expected),
                CompareOp::NotEqual => Ok(node.is_some() != expected),
                CompareOp::Less | CompareOp::Greater => Err(FsmError::InvalidArgument {
                    reason: format!("compare on {path}: existence takes only EQUAL or NOT_EQUAL"),
                }),
            };
        }
        let Some(node) = node else {
            return Ok(false);
        };
        let ordering = match &compare.target {
            CompareTarget::Exists(_) => unreachable!("handled above"),
            CompareTarget::Version(version) => node.stat.version.cmp(version),
            CompareTarget::CreateRevision(revision) => node.stat.create_revision.cmp(revision),
            CompareTarget::ModRevision(revision) => node.stat.mod_revision.cmp(revision),
            CompareTarget::Value(value) => node.data.as_slice().cmp(value.as_slice()),
        };
        Ok(match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Less => ordering.is_lt(),
            CompareOp::Greater => ordering.is_gt(),
        })
    }

    // --- primitives: every mutation of the tree goes through these and is journalled ---

    fn insert(&mut self, path: NodePath, node: Node) {
        let parent = path.parent().expect("the root is never inserted");
        let name = path.name().to_owned();
        if node.stat.kind == NodeKind::Ephemeral {
            let session = node.stat.ephemeral_owner;
            let record = self
                .namespace
                .sessions
                .get_mut(&session)
                .expect("owner checked live");
            record.ephemerals.insert(path.clone());
            self.undo.push(Undo::OwnerLinked {
                session,
                path: path.clone(),
            });
        }
        self.push_event(&path, EventKind::Created, node.stat, &node.data);
        self.namespace.data_bytes += node_bytes(&path, node.data.len());
        let previous = self.namespace.nodes.insert(path.clone(), Arc::new(node));
        assert!(previous.is_none(), "insert over existing node {path}");
        self.undo.push(Undo::Inserted { path });
        self.link(&parent, name);
    }

    fn remove(&mut self, path: &NodePath, reason: DeleteReason) {
        let parent = path.parent().expect("the root is never removed");
        let node = self
            .namespace
            .nodes
            .remove(path)
            .expect("removed node exists");
        assert!(
            node.children.is_empty(),
            "removing {path} which still has children"
        );
        self.namespace.data_bytes -= node_bytes(path, node.data.len());
        if node.stat.kind == NodeKind::Ephemeral {
            let session = node.stat.ephemeral_owner;
            if let Some(record) = self.namespace.sessions.get_mut(&session) {
                record.ephemerals.remove(path);
                self.undo.push(Undo::OwnerUnlinked {
                    session,
                    path: path.clone(),
                });
            }
        }
        self.push_event(path, EventKind::Deleted(reason), node.stat, &node.data);
        self.undo.push(Undo::Removed {
            path: path.clone(),
            node,
        });
        self.unlink(&parent, path.name().to_owned());
    }

    /// Removes `path` and its ancestors while each is an empty container.
    fn collapse_empty_containers(&mut self, mut path: NodePath) {
        loop {
            let Some(node) = self.namespace.nodes.get(&path) else {
                return;
            };
            if path.is_root() || node.stat.kind != NodeKind::Container || !node.children.is_empty()
            {
                return;
            }
            self.remove(&path, DeleteReason::ContainerEmpty);
            path = path.parent().expect("not the root");
        }
    }

    fn link(&mut self, parent: &NodePath, name: String) {
        let revision = self.revision;
        self.touch_meta(parent, |stat, _| {
            stat.num_children += 1;
            stat.cversion += 1;
            stat.children_revision = revision;
        });
        let node = self.namespace.node_mut(parent).expect("parent exists");
        assert!(
            node.children.insert(name.clone()),
            "{parent} already lists {name}"
        );
        self.undo.push(Undo::Linked {
            parent: parent.clone(),
            name,
        });
        self.push_children_event(parent);
    }

    fn unlink(&mut self, parent: &NodePath, name: String) {
        let revision = self.revision;
        self.touch_meta(parent, |stat, _| {
            stat.num_children -= 1;
            stat.cversion += 1;
            stat.children_revision = revision;
        });
        let node = self.namespace.node_mut(parent).expect("parent exists");
        assert!(node.children.remove(&name), "{parent} does not list {name}");
        self.undo.push(Undo::Unlinked {
            parent: parent.clone(),
            name,
        });
        self.push_children_event(parent);
    }

    fn set_data(&mut self, path: &NodePath, data: Vec<u8>) {
        let revision = self.revision;
        self.touch_meta(path, |stat, _| {
            stat.version += 1;
            stat.mod_revision = revision;
            stat.data_length = data.len() as u64;
        });
        let new_bytes = data.len() as u64;
        let node = self.namespace.node_mut(path).expect("node exists");
        let old = std::mem::replace(&mut node.data, data);
        let stat = node.stat;
        let data = node.data.clone();
        self.namespace.data_bytes = self.namespace.data_bytes + new_bytes - old.len() as u64;
        self.undo.push(Undo::Data {
            path: path.clone(),
            data: old,
        });
        self.push_event(path, EventKind::DataChanged, stat, &data);
    }

    /// Changes a node's stat or sequence counter, journalling the old values.
    fn touch_meta(&mut self, path: &NodePath, edit: impl FnOnce(&mut NodeStat, &mut u64)) {
        let node = self.namespace.node_mut(path).expect("touched node exists");
        self.undo.push(Undo::Meta {
            path: path.clone(),
            stat: node.stat,
            next_sequence: node.next_sequence,
        });
        edit(&mut node.stat, &mut node.next_sequence);
    }

    fn push_event(&mut self, path: &NodePath, kind: EventKind, stat: NodeStat, data: &[u8]) {
        self.events.push(WatchEvent {
            revision: self.revision,
            path: path.clone(),
            kind,
            stat,
            data: data.to_vec(),
        });
    }

    /// One ChildrenChanged per parent per command, carrying the parent's final stat.
    fn push_children_event(&mut self, parent: &NodePath) {
        let stat = self
            .namespace
            .nodes
            .get(parent)
            .expect("parent exists")
            .stat;
        match self.children_event.get(parent) {
            Some(&index) => self.events[index].stat = stat,
            None => {
                self.children_event
                    .insert(parent.clone(), self.events.len());
                self.push_event(parent, EventKind::ChildrenChanged, stat, &[]);
            }
        }
    }

    fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            let nodes = &mut self.namespace.nodes;
            let data_bytes = &mut self.namespace.data_bytes;
            match undo {
                Undo::Inserted { path } => {
                    let node = nodes.remove(&path).expect("inserted node exists");
                    *data_bytes -= node_bytes(&path, node.data.len());
                }
                Undo::Removed { path, node } => {
                    *data_bytes += node_bytes(&path, node.data.len());
                    nodes.insert(path, node);
                }
                Undo::Meta {
                    path,
                    stat,
                    next_sequence,
                } => {
                    let node = nodes.get_mut(&path).expect("touched node exists");
                    let node = Arc::make_mut(node);
                    node.stat = stat;
                    node.next_sequence = next_sequence;
                }
                Undo::Data { path, data } => {
                    let node = nodes.get_mut(&path).expect("changed node exists");
                    let node = Arc::make_mut(node);
                    *data_bytes = *data_bytes + data.len() as u64 - node.data.len() as u64;
                    node.data = data;
                }
                Undo::Linked { parent, name } => {
                    let node = nodes.get_mut(&parent).expect("parent exists");
                    Arc::make_mut(node).children.remove(&name);
                }
                Undo::Unlinked { parent, name } => {
                    let node = nodes.get_mut(&parent).expect("parent exists");
                    Arc::make_mut(node).children.insert(name);
                }
                Undo::OwnerLinked { session, path } => {
                    if let Some(record) = self.namespace.sessions.get_mut(&session) {
                        record.ephemerals.remove(&path);
                    }
                }
                Undo::OwnerUnlinked { session, path } => {
                    if let Some(record) = self.namespace.sessions.get_mut(&session) {
                        record.ephemerals.insert(path);
                    }
                }
                Undo::SessionOpened { session } => {
                    self.namespace.sessions.remove(&session);
                }
                Undo::SessionClosed { session, record } => {
                    self.namespace.sessions.insert(session, record);
                }
                Undo::SessionRemaining {
                    session,
                    remaining_ms,
                } => {
                    if let Some(record) = self.namespace.sessions.get_mut(&session) {
                        record.remaining_ms = remaining_ms;
                    }
                }
            }
        }
        self.events.clear();
        self.sessions.clear();
    }
}

fn check_version(path: &NodePath, node: &Node, expected: Option<u64>) -> Result<(), FsmError> {
    match expected {
        Some(expected) if expected != node.stat.version => Err(FsmError::BadVersion {
            path: path.clone(),
            expected,
            actual: node.stat.version,
        }),
        _ => Ok(()),
    }
}

/// The name of a sequential node: the requested prefix and a zero-padded counter.
fn sequential_name(prefix: &str, sequence: u64) -> String {
    format!("{prefix}{sequence:010}")
}
