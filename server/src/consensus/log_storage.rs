//! `LogStorage`: openraft's `RaftLogStorage` over `storage::LogDb`. A thin adapter: encoding,
//! decoding and error conversion, plus the `LogTail` that answers reads of the entries just
//! appended (replication and apply) from memory, and the `LogFlusher` that makes appends
//! durable.
//!
//! Invariants: `append` queues the batch with the flusher, starts its synced write when this
//! member leads the entries (a follower's are written by its AppendEntries answer), and reports
//! completion at once (a membership entry only once it is on disk); the three gates that keep
//! every durability promise are in `log_flush`. Reads that the tail cannot answer, truncation
//! and purging first write out what is queued, so the disk they work on holds what they need;
//! a read whose entries are already on disk writes nothing (the flusher writes the whole queue
//! whenever it writes). A member that led starts again as a follower (openraft's
//! `enable_leader_restore` is off).
//! The vote is written synced; the committed index is written unsynced, at most once per
//! `committed_save::SAVE_INTERVAL` and capped at the durable entries, because losing it only
//! means replaying a little more log on restart.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, RaftLogReader};

use super::committed_save::{CommittedSaver, COMMITTED_KEY};
use super::election::LastLogId;
use super::log_flush::LogFlusher;
use super::log_tail::{LogTail, TAIL_BYTES_MAX, TAIL_ENTRIES_MAX};
use super::types::{Entry, TypeConfig};
use super::types::{LogId, Vote};
use super::wire::{decode_log_entry, decode_log_meta, encode_log_entry, encode_log_meta};
use crate::storage::{LogDb, StorageFault};

const VOTE_KEY: &str = "vote";
const PURGED_KEY: &str = "purged";

#[derive(Clone)]
pub struct LogStorage {
    log_db: LogDb,
    /// Bytes appended since the last snapshot, for the size-based snapshot trigger.
    appended_bytes: Arc<AtomicU64>,
    /// The last log id held, for answering pre-votes.
    last_log_id: Arc<LastLogId>,
    /// The last entries appended, shared by every clone (the log readers of replication).
    tail: Arc<Mutex<LogTail>>,
    /// Writes the appended entries to disk.
    flusher: Arc<LogFlusher>,
    /// Stores the committed log id now and then.
    committed: Arc<CommittedSaver>,
    /// This member: entries it appends as their leader have their write started at once.
    member_id: u64,
}

impl LogStorage {
    /// The log in `log_db`; each synced write's duration goes to `write_seconds`
    /// (`coord_disk_log_append_duration_seconds`) when given.
    pub fn new(
        log_db: LogDb,
        member_id: u64,
        appended_bytes: Arc<AtomicU64>,
        last_log_id: Arc<LastLogId>,
        write_seconds: Option<prometheus::Histogram>,
    ) -> Result<LogStorage, io::Error> {
        let on_disk = LogStorage::read_last_log_id(&log_db)?.last_log_id;
        let flusher = Arc::new(LogFlusher::new(log_db.clone(), on_disk, write_seconds));
        let committed = Arc::new(CommittedSaver::new(log_db.clone(), flusher.clone()));
        Ok(LogStorage {
            log_db,
            appended_bytes,
            last_log_id,
            tail: Arc::new(Mutex::new(LogTail::new(TAIL_ENTRIES_MAX, TAIL_BYTES_MAX))),
            flusher,
            committed,
            member_id,
        })
    }

    /// Bytes appended since the last snapshot (the size trigger's count).
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    /// What makes this log's appends durable, for the gates outside the log (see `log_flush`).
    pub fn flusher(&self) -> Arc<LogFlusher> {
        self.flusher.clone()
    }

    /// What stores the committed log id, for writing the latest at shutdown.
    pub fn committed_saver(&self) -> Arc<CommittedSaver> {
        self.committed.clone()
    }

    /// Writes out everything queued (on this worker or the blocking pool, see `blocking`).
    async fn drained(&self) -> Result<(), io::Error> {
        self.written_through(u64::MAX).await
    }

    /// Makes the entries up to `index` durable before the disk is read: nothing to do (no
    /// thread taken) when they already are, and otherwise a write of everything queued.
    async fn written_through(&self, index: u64) -> Result<(), io::Error> {
        if self.flusher.is_durable_through(index) {
            return Ok(());
        }
        let flusher = self.flusher.clone();
        blocking(move || {
            flusher
                .flush_through(index)
                .map_err(|fault| write_fault_text(&fault))
        })
        .await
    }

    fn tail(&self) -> MutexGuard<'_, LogTail> {
        // Nothing panics while holding the lock.
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the last log id (or the purged one behind an empty log) from disk.
    fn read_last_log_id(log_db: &LogDb) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> =
            match log_db.get_meta(PURGED_KEY).map_err(read_fault)? {
                Some(bytes) => decode("purged log id", &bytes)?,
                None => None,
            };
        let last_log_id = match log_db.last().map_err(read_fault)? {
            Some((index, body)) => Some(decode_entry(index, &body)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }
}

fn read_fault(fault: StorageFault) -> io::Error {
    io::Error::other(format!("reading the log: {fault}"))
}

fn write_fault(fault: StorageFault) -> io::Error {
    write_fault_text(&fault.to_string())
}

fn write_fault_text(fault: &str) -> io::Error {
    io::Error::other(format!("writing the log: {fault}"))
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, io::Error> {
    decode_log_meta(what, bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, io::Error> {
    let entry = decode_log_entry(bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    if entry.log_id.index != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "log entry {} is stored under index {index}",
                entry.log_id.index
            ),
        ));
    }
    Ok(entry)
}

/// Runs a synced write that openraft's core waits for (a membership entry's) on this worker
/// thread itself when the runtime has another worker to go on with the rest, and as
/// [`blocking`] otherwise (one worker, or a current-thread runtime), so that a lone worker is
/// never held by a disk. `block_in_place` would hand this worker's queue to another thread, a
/// thread wake-up on the path of the write; when every append was written this way, in place
/// measured 897, 877, 783 writes/s from one writer against 814, 816, 724 (coord-bench, 3
/// release members, alternating). The cost: a task woken into this worker's own slot just
/// before waits for the fsync.
async fn on_this_worker<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, io::Error> + Send + 'static,
) -> Result<T, io::Error> {
    let runtime = tokio::runtime::Handle::current();
    if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        && runtime.metrics().num_workers() > 1
    {
        return work();
    }
    blocking(work).await
}

/// Runs a blocking RocksDB call so that it does not stall the runtime: in place on a
/// multi-threaded runtime (the worker's other tasks move to another worker), which saves the
/// two thread hand-offs of `spawn_blocking` on every append and log read; on another runtime
/// (unit tests) on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, io::Error> + Send + 'static,
) -> Result<T, io::Error> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(work);
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| io::Error::other(format!("storage task failed: {error}")))?
}

/// Starts the background flush of what is queued (`LogFlusher::flush_in_background`) once
/// this worker has run every task that is ready now; nothing to start while one is running,
/// since it writes these records too before it ends.
///
/// A leader's append wakes the replication streams that send its entries to the followers. Its
/// own synced write, handed to a blocking thread at once, got there first: the kernel runs a
/// thread woken after a long sleep ahead of the one that woke it, so the worker stopped while
/// that thread wrote, before a single AppendEntries left. `perf sched` of three members under
/// one writer showed the leader's worker preempted about once per write by its own write
/// threads. Deferred behind the ready tasks (`yield_now` waits until the worker's queue is
/// empty), the leader's write starts a little later and the followers' copies earlier, and
/// nothing waits for it unstarted: every gate that needs it durable starts it itself
/// (`LogFlusher::wait_through`).
fn flush_after_ready_tasks(flusher: Arc<LogFlusher>) {
    if flusher.is_flushing() {
        return;
    }
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        flusher.flush_in_background();
    });
}

/// Most bytes of log entries in one replication batch (at least one entry is always sent).
/// openraft gives each AppendEntries one heartbeat interval to arrive and be fsynced, so a
/// batch is bounded by bytes as well as by count (`max_payload_entries`).
pub const REPLICATION_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

impl RaftLogReader<TypeConfig> for LogStorage {
    /// The stored vote, as saved. A member that led comes back as a follower all the same:
    /// openraft demotes its vote in memory at start-up (`enable_leader_restore` is off, see
    /// `raft_config`).
    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let log_db = self.log_db.clone();
        blocking(
            move || match log_db.get_meta(VOTE_KEY).map_err(read_fault)? {
                Some(bytes) => Ok(Some(decode("vote", &bytes)?)),
                None => Ok(None),
            },
        )
        .await
    }

    /// Entries from `start`, stopping before `end` or once `REPLICATION_BATCH_BYTES_MAX` bytes
    /// are gathered; never empty for a non-empty range.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        if let Some(entries) = self.tail().get(start, end, REPLICATION_BATCH_BYTES_MAX) {
            return Ok(entries);
        }
        self.written_through(end.saturating_sub(1)).await?;
        let log_db = self.log_db.clone();
        blocking(move || {
            let records = log_db
                .read_range_bytes(start, end, REPLICATION_BATCH_BYTES_MAX)
                .map_err(read_fault)?;
            records
                .iter()
                .map(|(index, body)| decode_entry(*index, body))
                .collect()
        })
        .await
    }

    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&end) => end.saturating_add(1),
            Bound::Excluded(&end) => end,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.tail().get(start, end, usize::MAX) {
            return Ok(entries);
        }
        self.written_through(end.saturating_sub(1)).await?;
        let log_db = self.log_db.clone();
        blocking(move || {
            let records = log_db.read_range(start, end).map_err(read_fault)?;
            records
                .iter()
                .map(|(index, body)| decode_entry(*index, body))
                .collect()
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStorage {
    type LogReader = LogStorage;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        self.drained().await?;
        let log_db = self.log_db.clone();
        let state = blocking(move || LogStorage::read_last_log_id(&log_db)).await?;
        self.last_log_id.set(state.last_log_id);
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> LogStorage {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let log_db = self.log_db.clone();
        let bytes = encode_log_meta(vote);
        blocking(move || {
            log_db
                .put_meta(VOTE_KEY, &bytes)
                .map_err(|fault| io::Error::other(format!("writing the vote: {fault}")))
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Stored now and then (`committed_save`), capped at the durable entries: a leader
        // counts its own copy before it is on disk, and a restart must not expect entries that
        // never got there.
        self.committed.save(committed).map_err(write_fault)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.committed.write_latest().map_err(write_fault)?;
        let log_db = self.log_db.clone();
        blocking(
            move || match log_db.get_meta(COMMITTED_KEY).map_err(read_fault)? {
                Some(bytes) => decode("committed log id", &bytes),
                None => Ok(None),
            },
        )
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        if let Some(fault) = self.flusher.fault() {
            // An earlier write failed: stop Raft now, as a failed append always did.
            let error = write_fault_text(&fault);
            callback.io_completed(Err(io::Error::other(error.to_string())));
            return Err(error);
        }
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|entry| entry.log_id) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let membership = entries
            .iter()
            .any(|entry| matches!(entry.payload, EntryPayload::Membership(_)));
        let records: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|entry| (entry.log_id.index, encode_log_entry(entry)))
            .collect();
        let sizes: Vec<usize> = records.iter().map(|(_, body)| body.len()).collect();
        let bytes: usize = sizes.iter().sum();
        self.appended_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        // Readable (replication, apply) from the tail before it is on disk.
        self.tail()
            .appended(entries.into_iter().zip(sizes).collect());
        self.last_log_id.set(Some(last));
        self.flusher.queue(records, last);
        let flusher = self.flusher.clone();
        if membership {
            let flushed = on_this_worker(move || {
                flusher
                    .flush_through(last.index)
                    .map_err(|fault| write_fault_text(&fault))
            })
            .await;
            return match flushed {
                Ok(()) => {
                    callback.io_completed(Ok(()));
                    Ok(())
                }
                Err(error) => {
                    callback.io_completed(Err(io::Error::other(error.to_string())));
                    Err(error)
                }
            };
        }
        // A leader's own entries: their write runs while they are sent to the followers, and
        // starts once they are on their way (`flush_after_ready_tasks`). A follower's are
        // written by the AppendEntries answer that waits for them (the apply gate writes any
        // left over).
        // A failure is kept by the flusher and stops the member at the next gate (see
        // `log_flush`).
        if last.leader_id.node_id == self.member_id {
            flush_after_ready_tasks(flusher);
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    /// Removes the entries after `last_log_id` (all of them for `None`).
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.drained().await?;
        self.tail().truncated(from);
        let log_db = self.log_db.clone();
        let state = blocking(move || {
            log_db.truncate_from(from).map_err(write_fault)?;
            LogStorage::read_last_log_id(&log_db)
        })
        .await?;
        self.flusher.truncated(state.last_log_id);
        self.last_log_id.set(state.last_log_id);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.drained().await?;
        self.tail().purged(log_id.index);
        let log_db = self.log_db.clone();
        let bytes = encode_log_meta(&Some(log_id));
        blocking(move || {
            log_db
                .purge_through(log_id.index, PURGED_KEY, &bytes)
                .map_err(write_fault)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use openraft::testing::log::{StoreBuilder, Suite};

    use super::*;
    use crate::consensus::state_machine::{ApplyObserver, StateMachine};
    use crate::consensus::timings::RaftTimings;
    use crate::consensus::types::StorageError;
    use crate::fsm::{Namespace, Revision, SessionChange, WatchEvent};
    use crate::storage::SnapshotFile;

    struct Unobserved;

    impl ApplyObserver for Unobserved {
        fn applied(&self, _: Revision, _: Vec<WatchEvent>, _: Vec<SessionChange>, _: Instant) {}
        fn restored(&self, _: &Namespace, _: Instant) {}
    }

    /// A log and a state machine in a new temporary directory, which lives as long as they do.
    struct InTempDir;

    impl StoreBuilder<TypeConfig, LogStorage, StateMachine, tempfile::TempDir> for InTempDir {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStorage, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let log_db = LogDb::open(&dir.path().join("log"), &dir.path().join("log-segments"))
                .expect("the log opens");
            let log = LogStorage::new(
                log_db,
                1,
                Arc::new(AtomicU64::new(0)),
                Arc::new(LastLogId::default()),
                None,
            )
            .expect("the log opens");
            let timings = RaftTimings::new().expect("the metrics register");
            let state_machine =
                StateMachine::open(SnapshotFile::new(dir.path()), Arc::new(Unobserved), timings)
                    .expect("the state machine opens")
                    .over_log(log.flusher(), log.appended_bytes());
            Ok((dir, log, state_machine))
        }
    }

    /// openraft's own conformance suite for a log store and a state machine: the log state
    /// after appends, truncation and purge, the vote and committed index read back, entries
    /// applied and membership tracked, snapshots built and installed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_and_state_machine_pass_openraft_s_storage_suite() {
        Suite::test_all(InTempDir)
            .await
            .expect("openraft's storage suite passes");
    }

    /// Through the store: a leader's committed vote is read back after a restart as it was
    /// saved (openraft demotes it in memory, `raft_config`), so the stored vote never goes back.
    #[tokio::test]
    async fn a_stored_leadership_is_read_back_as_saved() {
        let (dir, mut log, _) = InTempDir.build().await.expect("the stores open");
        log.save_vote(&Vote::new_committed(3, 1))
            .await
            .expect("the vote is saved");
        drop(log);
        let log_db = LogDb::open(&dir.path().join("log"), &dir.path().join("log-segments"))
            .expect("the log opens again");
        let mut log = LogStorage::new(
            log_db,
            1,
            Arc::new(AtomicU64::new(0)),
            Arc::new(LastLogId::default()),
            None,
        )
        .expect("the log reopens");
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(3, 1))
        );
    }

    #[tokio::test]
    async fn every_snapshot_built_restarts_the_size_trigger_s_count() {
        use openraft::storage::RaftStateMachine;
        use openraft::RaftSnapshotBuilder;
        let (_dir, log, mut state_machine) = InTempDir.build().await.expect("the stores open");
        log.appended_bytes().store(5 << 20, Ordering::Relaxed);
        let mut builder = state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("a snapshot is built");
        assert_eq!(log.appended_bytes().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_leader_s_write_starts_after_the_tasks_its_append_woke() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let (_directory, log_db) = crate::consensus::log_flush::tests::temporary_log();
        let appending = Arc::new(LogFlusher::new(log_db, None, None));
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = order.clone();
        // On the lone worker, as an append is: the write is deferred first, then three tasks
        // become ready (the replication streams), each holding the worker for a while. Handed
        // to the blocking pool at once, the write would be done while the first one held the
        // worker, and the later ones would find the entry durable.
        let appended = runtime.spawn(async move {
            let entry = crate::consensus::log_flush::tests::log_id(1);
            appending.queue(vec![(1, vec![1])], entry);
            flush_after_ready_tasks(appending.clone());
            for stream in 1..=3 {
                let (sent, flusher) = (log.clone(), appending.clone());
                tokio::spawn(async move {
                    std::thread::sleep(Duration::from_millis(20));
                    let durable = flusher.is_durable_through(1);
                    sent.lock()
                        .unwrap()
                        .push(format!("send {stream}, durable {durable}"));
                });
            }
            // Looked for, not waited for with `wait_through`, which would start the write.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !appending.is_durable_through(1) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            appending.is_durable_through(1)
        });
        let written = runtime.block_on(appended).expect("the task does not panic");
        assert!(written, "the write never ran");
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 3, "{order:?}");
        assert!(
            order.iter().all(|sent| sent.ends_with("durable false")),
            "{order:?}"
        );
    }

    #[test]
    fn a_lone_worker_is_never_held_by_an_append() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime starts");
        // Spawned, so that it runs on the lone worker as the log store's appends do (`block_on`
        // below only waits for it, on this test's thread). The work waits for a task spawned
        // just before it: run elsewhere, the task runs on the worker meanwhile; run on the lone
        // worker, it would wait until it gave up.
        let on_the_worker = runtime.spawn(async {
            let (sender, receiver) = mpsc::channel();
            let spawned = tokio::spawn(async move { sender.send(()) });
            let ran =
                on_this_worker(move || Ok(receiver.recv_timeout(Duration::from_secs(10)).is_ok()))
                    .await
                    .expect("the work does not fail");
            let _ = spawned.await;
            ran
        });
        let ran = runtime
            .block_on(on_the_worker)
            .expect("the task does not panic");
        assert!(
            ran,
            "the spawned task did not run while the append's work waited"
        );
    }
}
