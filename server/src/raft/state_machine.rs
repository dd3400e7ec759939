//! `StateMachine`: openraft's `RaftStateMachine` over the pure `fsm::Namespace`. A thin adapter:
//! it decodes entries, calls `Namespace::apply`, and persists and restores snapshots. No rule
//! of the namespace lives here.
//!
//! The applied state is shared with the read path through `Replica`: a `std::sync::RwLock`
//! (never held across an `.await`), written once per applied batch.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::history::{Compacted, EventHistory, HistoryLimits};
use super::proposal::ProposalResult;
use super::{Entry, Member, TypeConfig};
use crate::fsm::{Command, FsmError, Namespace, Output, Revision, SessionId, WatchEvent};
use crate::storage::{SnapshotFile, StorageFault};

/// The applied state, readable by the gRPC layer.
pub struct ReplicaState {
    pub namespace: Namespace,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, Member>,
    /// When each session would expire by the checkpoints applied here, on this member's clock:
    /// when the open or checkpoint was applied plus the time it records. Not replicated; a new
    /// leader builds its lease table from it, so the time between a checkpoint and a takeover
    /// counts against a dead session instead of being granted again.
    pub session_deadlines: HashMap<SessionId, Instant>,
}

impl ReplicaState {
    fn new(
        namespace: Namespace,
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, Member>,
    ) -> ReplicaState {
        let now = Instant::now();
        let session_deadlines = namespace
            .sessions()
            .iter()
            .map(|(session, record)| (*session, now + Duration::from_millis(record.remaining_ms)))
            .collect();
        ReplicaState {
            namespace,
            last_applied,
            membership,
            session_deadlines,
        }
    }

    /// Updates `session_deadlines` after `command` was applied at `now` with `outcome`.
    fn note_sessions(
        &mut self,
        command: &Command,
        outcome: &Result<Output, FsmError>,
        now: Instant,
    ) {
        let command = match command {
            Command::Once { command, .. } => command,
            plain => plain,
        };
        match (command, outcome) {
            (Command::OpenSession(_), Ok(Output::SessionOpened { session, ttl_ms })) => {
                self.session_deadlines
                    .insert(*session, now + Duration::from_millis(*ttl_ms));
            }
            (Command::CheckpointSessions(checkpoint), Ok(_)) => {
                for (session, remaining_ms) in &checkpoint.remaining {
                    if let Some(deadline) = self.session_deadlines.get_mut(session) {
                        *deadline = now + Duration::from_millis(*remaining_ms);
                    }
                }
            }
            (Command::CloseSession(close), Ok(_)) => {
                self.session_deadlines.remove(&close.session);
            }
            _ => {}
        }
    }
}

/// Shared between the state machine (writer) and readers.
pub struct Replica {
    state: RwLock<ReplicaState>,
    /// The last applied revision, for waiters (`min_revision` reads).
    applied_revision: watch::Sender<Revision>,
    /// Events of the recent revisions, which every watch stream reads.
    history: Mutex<EventHistory>,
}

impl Replica {
    /// Runs `read` against the current applied state.
    pub fn read<T>(&self, read: impl FnOnce(&ReplicaState) -> T) -> T {
        let state = self
            .state
            .read()
            .expect("a panic while applying stops the member");
        read(&state)
    }

    pub fn applied_revision(&self) -> watch::Receiver<Revision> {
        self.applied_revision.subscribe()
    }

    /// Up to `limit` events in `[from, to]` that `keep` selects (see `EventHistory::read`).
    pub fn read_events(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
        keep: impl FnMut(&WatchEvent) -> bool,
    ) -> Result<(Vec<WatchEvent>, Revision), Compacted> {
        self.history().read(from, to, limit, keep)
    }

    /// The oldest revision a watch can start at.
    pub fn first_event_revision(&self) -> Revision {
        self.history().first_revision()
    }

    fn history(&self) -> std::sync::MutexGuard<'_, EventHistory> {
        // Nothing panics while holding the lock.
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the snapshot file holds: openraft's metadata and the encoded namespace.
#[derive(Serialize, Deserialize)]
struct SnapshotEnvelope {
    meta: SnapshotMeta<u64, Member>,
    namespace: Vec<u8>,
}

pub struct StateMachine {
    replica: Arc<Replica>,
    snapshot_file: SnapshotFile,
}

fn snapshot_fault(fault: impl ToString) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, AnyError::error(fault.to_string())).into()
}

impl StateMachine {
    /// Restores the state from the snapshot file, if any. The log after it is replayed by
    /// openraft from the committed index.
    pub fn open(
        snapshot_file: SnapshotFile,
        history: HistoryLimits,
    ) -> Result<StateMachine, StorageFault> {
        let state = match snapshot_file.load()? {
            None => ReplicaState::new(Namespace::new(), None, StoredMembership::default()),
            Some(bytes) => {
                let corrupt = |reason: String| StorageFault::Corrupt {
                    location: "snapshot".into(),
                    reason,
                };
                let envelope: SnapshotEnvelope =
                    bincode::deserialize(&bytes).map_err(|error| corrupt(error.to_string()))?;
                let namespace = Namespace::from_snapshot(&envelope.namespace)
                    .map_err(|error| corrupt(error.to_string()))?;
                let applied_index = envelope.meta.last_log_id.map_or(0, |log_id| log_id.index);
                if namespace.revision() != Revision(applied_index) {
                    return Err(corrupt(format!(
                        "namespace is at revision {} but the snapshot covers index {applied_index}",
                        namespace.revision()
                    )));
                }
                ReplicaState::new(
                    namespace,
                    envelope.meta.last_log_id,
                    envelope.meta.last_membership,
                )
            }
        };
        let revision = state.namespace.revision();
        let replica = Replica {
            state: RwLock::new(state),
            applied_revision: watch::Sender::new(revision),
            history: Mutex::new(EventHistory::new(revision, history)),
        };
        Ok(StateMachine {
            replica: Arc::new(replica),
            snapshot_file,
        })
    }

    pub fn replica(&self) -> Arc<Replica> {
        self.replica.clone()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Member>), StorageError<u64>> {
        Ok(self
            .replica
            .read(|state| (state.last_applied, state.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut batch_events = Vec::new();
        let revision = {
            let mut state = self
                .replica
                .state
                .write()
                .expect("a panic while applying stops the member");
            for entry in entries {
                let revision = Revision(entry.log_id.index);
                // Only the founding membership entry sits at index 0, where the tree already is.
                let moves = entry.log_id.index > 0;
                let outcome = match entry.payload {
                    EntryPayload::Blank => {
                        if moves {
                            state.namespace.advance(revision);
                        }
                        None
                    }
                    EntryPayload::Membership(membership) => {
                        if moves {
                            state.namespace.advance(revision);
                        }
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        None
                    }
                    EntryPayload::Normal(proposal) => {
                        let applied = state.namespace.apply(revision, &proposal.command);
                        state.note_sessions(&proposal.command, &applied.outcome, Instant::now());
                        batch_events.extend(applied.events);
                        Some(applied.outcome)
                    }
                };
                state.last_applied = Some(entry.log_id);
                results.push(ProposalResult { revision, outcome });
            }
            state.namespace.revision()
        };
        // Into the history before the revision is published, so watchers find the events.
        self.replica.history().extend(batch_events);
        self.replica.applied_revision.send_replace(revision);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            replica: self.replica.clone(),
            snapshot_file: self.snapshot_file.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let namespace_bytes = snapshot.into_inner();
        let namespace = Namespace::from_snapshot(&namespace_bytes).map_err(snapshot_fault)?;
        let envelope = SnapshotEnvelope {
            meta: meta.clone(),
            namespace: namespace_bytes,
        };
        let bytes = bincode::serialize(&envelope).expect("encoding into memory cannot fail");
        let snapshot_file = self.snapshot_file.clone();
        tokio::task::spawn_blocking(move || snapshot_file.save(&bytes))
            .await
            .map_err(snapshot_fault)?
            .map_err(snapshot_fault)?;
        let revision = namespace.revision();
        {
            let mut state = self
                .replica
                .state
                .write()
                .expect("a panic while applying stops the member");
            *state = ReplicaState::new(namespace, meta.last_log_id, meta.last_membership.clone());
        }
        // The events before the snapshot never passed through here: watches resume after it.
        self.replica.history().reset(revision);
        self.replica.applied_revision.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let snapshot_file = self.snapshot_file.clone();
        let loaded = tokio::task::spawn_blocking(move || snapshot_file.load())
            .await
            .map_err(snapshot_fault)?
            .map_err(snapshot_fault)?;
        let Some(bytes) = loaded else { return Ok(None) };
        let envelope: SnapshotEnvelope = bincode::deserialize(&bytes).map_err(snapshot_fault)?;
        Ok(Some(Snapshot {
            meta: envelope.meta,
            snapshot: Box::new(Cursor::new(envelope.namespace)),
        }))
    }
}

/// Builds a snapshot off the apply path: the state is cloned under the read lock, then encoded
/// and written on a blocking thread while applying continues.
pub struct SnapshotBuilder {
    replica: Arc<Replica>,
    snapshot_file: SnapshotFile,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (namespace, last_applied, membership) = self.replica.read(|state| {
            (
                state.namespace.clone(),
                state.last_applied,
                state.membership.clone(),
            )
        });
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "0-0".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let snapshot_file = self.snapshot_file.clone();
        let envelope_meta = meta.clone();
        let namespace_bytes = tokio::task::spawn_blocking(move || {
            let namespace_bytes = namespace.to_snapshot();
            let envelope = SnapshotEnvelope {
                meta: envelope_meta,
                namespace: namespace_bytes,
            };
            let bytes = bincode::serialize(&envelope).expect("encoding into memory cannot fail");
            snapshot_file.save(&bytes)?;
            Ok::<_, StorageFault>(envelope.namespace)
        })
        .await
        .map_err(snapshot_fault)?
        .map_err(|fault| {
            StorageIOError::write_snapshot(None, AnyError::error(fault.to_string()))
        })?;
        tracing::info!(index = ?meta.last_log_id.map(|log_id| log_id.index), bytes = namespace_bytes.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(namespace_bytes)),
        })
    }
}
