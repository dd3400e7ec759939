//! `LogFlusher`: the log's appends, made durable behind openraft's back so that a leader sends
//! new entries to its followers while its own fsync runs, as Raft allows (§10.2.1 of Ongaro's
//! thesis) and etcd does.
//!
//! openraft 0.9's core waited for each append's flush before its next step, replication
//! included, so a leader paid its own fsync and then its followers' in series. Now
//! `LogStorage::append` queues the encoded entries here, starts a flush (on a leader, once the
//! sends of the entries are under way), and reports the append complete at once. Durability is
//! then enforced where it matters, at three gates:
//!
//! - a member applies an entry (and so answers the client, serves it to reads and watches) only
//!   once it is durable here (`StateMachine::apply` waits with `wait_through`): an
//!   acknowledged write is on the leader's disk, and openraft counted it committed only with
//!   followers whose answers were durable, so it is on a majority;
//! - a follower answers an AppendEntries only once the entries it matched are durable
//!   (`PeerService::append_entries` and, pipelined, `append_replies` call `flush_through`), so
//!   every follower's vote in the leader's quorum is a durable copy;
//! - a leader never tells followers a commit index beyond its own durable entries (`PeerLink`
//!   holds an AppendEntries until the leader's copy through its `leader_commit` is durable,
//!   for at most half the call's deadline, and caps `leader_commit` at what is durable then),
//!   so a follower applies only what is on a majority of disks even while the leader's own
//!   copy is still on its way down; the committed index a member stores is capped at its
//!   durable entries, so a restart never expects entries it did not keep.
//!
//! A membership entry is flushed before its append is reported, as before: a configuration
//! change must not be counted with a copy that is not yet on disk.
//!
//! Invariants: queued records are written in queue order (log order), each synced write
//! holds everything queued before it, so the durable prefix is always a prefix of the log;
//! `durable` only moves forward, except when `truncated` moves it back with the log. A failed
//! write is final: every later flush and wait fails with it, the state machine stops applying,
//! and the next append fails, so Raft stops on the storage fault as it did when the append
//! itself failed. A restarted member never resumes leading in its old term (openraft's
//! `enable_leader_restore` is off, `raft_config`): a leader killed before its own write could
//! otherwise come back without entries a follower holds and reuse their log ids.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::types::LogId;
use crate::storage::{LogDb, StorageFault};

/// Records queued for the next synced write.
#[derive(Default)]
struct Queue {
    records: Vec<(u64, Vec<u8>)>,
    /// The log id of the last record queued (or written); `None` for an empty log.
    last: Option<LogId>,
}

/// What is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Durable {
    /// The last log id whose entry, and every one before it, is on disk.
    through: Option<LogId>,
    /// The fault that stopped writing, for good.
    fault: Option<Arc<str>>,
}

/// How long each synced write takes, as `coord_disk_log_append_duration_seconds`.
type WriteTimer = Option<prometheus::Histogram>;

pub struct LogFlusher {
    log_db: LogDb,
    queue: Mutex<Queue>,
    /// Held for a whole synced write, so that writes go to disk one at a time, in order.
    writing: Mutex<()>,
    durable: watch::Sender<Durable>,
    write_seconds: WriteTimer,
    /// Whether a background flush (`flush_in_background`) is running or about to: at most one
    /// is, and it writes what is queued while it runs before it ends.
    flushing: AtomicBool,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn index_of(log_id: Option<LogId>) -> Option<u64> {
    log_id.map(|log_id| log_id.index)
}

impl LogFlusher {
    /// A flusher for `log_db`, whose entries through `on_disk` are already durable.
    pub fn new(log_db: LogDb, on_disk: Option<LogId>, write_seconds: WriteTimer) -> Self {
        LogFlusher {
            log_db,
            queue: Mutex::new(Queue {
                records: Vec::new(),
                last: on_disk,
            }),
            writing: Mutex::new(()),
            durable: watch::channel(Durable {
                through: on_disk,
                fault: None,
            })
            .0,
            write_seconds,
            flushing: AtomicBool::new(false),
        }
    }

    /// The last log id on disk, with everything before it.
    pub fn durable(&self) -> Option<LogId> {
        self.durable.borrow().through
    }

    /// The fault that stopped writing, if a write failed.
    pub fn fault(&self) -> Option<Arc<str>> {
        self.durable.borrow().fault.clone()
    }

    /// Whether the entries through `index` are on disk (and no write failed).
    pub fn is_durable_through(&self, index: u64) -> bool {
        let durable = self.durable.borrow();
        durable.fault.is_none() && index_of(durable.through).is_some_and(|at| at >= index)
    }

    /// Queues encoded entries that follow those queued before, the last with id `last`.
    pub fn queue(&self, records: Vec<(u64, Vec<u8>)>, last: LogId) {
        let mut queue = locked(&self.queue);
        queue.records.extend(records);
        queue.last = Some(last);
    }

    /// Makes every queued entry with an index up to `index` durable (blocking): writes all that
    /// is queued in one synced batch, unless another call is already writing it, in which case
    /// it waits for that write. `Err` with the fault if a write failed, now or before.
    pub fn flush_through(&self, index: u64) -> Result<(), Arc<str>> {
        // Most calls (a follower's heartbeats, a leader's entries written meanwhile) find their
        // entries on disk: they must not wait for someone else's write to find that out.
        if self.is_durable_through(index) {
            return Ok(());
        }
        let _writing = locked(&self.writing);
        if let Some(fault) = self.fault() {
            return Err(fault);
        }
        if self.is_durable_through(index) {
            return Ok(());
        }
        let (records, last) = {
            let mut queue = locked(&self.queue);
            (std::mem::take(&mut queue.records), queue.last)
        };
        if records.is_empty() {
            return Ok(());
        }
        let timer = self
            .write_seconds
            .as_ref()
            .map(prometheus::Histogram::start_timer);
        let written = self.log_db.append(&records);
        if let Some(timer) = timer {
            timer.observe_duration();
        }
        match written {
            Ok(()) => {
                self.durable.send_modify(|durable| durable.through = last);
                Ok(())
            }
            Err(fault) => Err(self.record_fault(&fault)),
        }
    }

    /// Makes everything queued durable (blocking).
    pub fn drain(&self) -> Result<(), Arc<str>> {
        self.flush_through(u64::MAX)
    }

    /// Whether a background flush is running (or about to); records queued now are written
    /// by it before it ends.
    pub fn is_flushing(&self) -> bool {
        self.flushing.load(Ordering::SeqCst)
    }

    /// Writes everything queued on the blocking pool, unless a background flush is already
    /// under way: that one then writes these records too, after its current write, before it
    /// ends. So records queued while a write runs cost no thread of their own.
    ///
    /// Every append used to start a flush of its own on the blocking pool, and so did a wait
    /// that found its entries unwritten; all but one found the work done, after waiting on the
    /// write lock, and each woke a pool thread. Measured on three release members under 64
    /// writers (`coord-bench writes --clients 64 --value-bytes 256`, `perf stat` over 3 s):
    /// `futex` calls 0.32 to 0.11 per write, `sched_yield` 3,109 to 3, context switches 0.67
    /// to 0.48 per write; 27,234, 29,057 and 28,826 writes/s against 30,216, 31,804 and
    /// 29,839 alternating. A failure ends the flush; it is kept, and every gate reports it.
    pub fn flush_in_background(self: &Arc<Self>) {
        if self.flushing.swap(true, Ordering::SeqCst) {
            return;
        }
        let flusher = self.clone();
        tokio::task::spawn_blocking(move || flusher.flush_until_idle());
    }

    /// The background flush: writes what is queued until nothing is. A record queued after
    /// the last look found the flag down, so its caller started the next flush itself.
    fn flush_until_idle(&self) {
        loop {
            let drained = self.drain();
            self.flushing.store(false, Ordering::SeqCst);
            let more = drained.is_ok() && !locked(&self.queue).records.is_empty();
            // Someone else may have raised the flag meanwhile: their flush writes the rest.
            if !more || self.flushing.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    fn record_fault(&self, fault: &StorageFault) -> Arc<str> {
        tracing::error!(%fault, "writing the log failed: a storage fault; raft stops");
        let fault: Arc<str> = Arc::from(fault.to_string());
        self.durable
            .send_modify(|durable| durable.fault = Some(fault.clone()));
        fault
    }

    /// Resolves once every entry queued with an index up to `index` is durable (entries never
    /// queued are not waited for), starting their write if nothing has yet; `Err` with the
    /// fault if a write failed.
    pub async fn wait_through(self: &Arc<Self>, index: u64) -> Result<(), Arc<str>> {
        // The usual case on every apply: written meanwhile.
        if self.is_durable_through(index) {
            return Ok(());
        }
        let (target, unwritten) = {
            let queue = locked(&self.queue);
            match index_of(queue.last) {
                Some(last) => (last.min(index), !queue.records.is_empty()),
                None => return self.fault().map_or(Ok(()), Err),
            }
        };
        if unwritten && !self.is_durable_through(target) {
            self.flush_in_background();
        }
        let mut durable = self.durable.subscribe();
        let settled = durable
            .wait_for(|durable| {
                durable.fault.is_some() || index_of(durable.through).is_some_and(|at| at >= target)
            })
            .await;
        match settled {
            Ok(durable) => durable.fault.clone().map_or(Ok(()), Err),
            // The sender lives as long as `self`.
            Err(_) => Err(Arc::from("the log flusher is gone")),
        }
    }

    /// Records that the log now ends at `last` (a suffix was truncated durably, after
    /// everything queued was written).
    pub fn truncated(&self, last: Option<LogId>) {
        let _writing = locked(&self.writing);
        locked(&self.queue).last = last;
        self.durable.send_modify(|durable| durable.through = last);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::consensus::types::CommittedLeaderId;

    /// The log id at `index` in term 1 of member 1 (also for `committed_save`'s tests).
    pub(crate) fn log_id(index: u64) -> LogId {
        LogId::new(
            CommittedLeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    fn records(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|index| (index, vec![index as u8])).collect()
    }

    /// A log in a temporary directory, removed when the directory is dropped.
    pub(crate) fn temporary_log() -> (tempfile::TempDir, LogDb) {
        let directory = tempfile::tempdir().unwrap();
        let log_db = LogDb::open(
            &directory.path().join("db"),
            &directory.path().join("segments"),
        )
        .unwrap();
        (directory, log_db)
    }

    fn on_disk(log_db: &LogDb) -> Vec<u64> {
        let read = log_db.read_range(0, u64::MAX).unwrap();
        read.into_iter().map(|(index, _)| index).collect()
    }

    #[test]
    fn queued_entries_reach_the_disk_in_order_and_only_when_flushed() {
        let (_directory, log_db) = temporary_log();
        let flusher = LogFlusher::new(log_db.clone(), None, None);
        flusher.queue(records(1..=3), log_id(3));
        flusher.queue(records(4..=5), log_id(5));
        assert_eq!(flusher.durable(), None);
        assert!(on_disk(&log_db).is_empty());
        // One write takes everything queued, beyond the index asked for.
        flusher.flush_through(2).unwrap();
        assert_eq!(flusher.durable(), Some(log_id(5)));
        assert_eq!(on_disk(&log_db), [1, 2, 3, 4, 5]);
        // Nothing left: a flush is a no-op.
        flusher.flush_through(5).unwrap();
        flusher.drain().unwrap();
        // After a truncation the durable id moves back with the log.
        log_db.truncate_from(4).unwrap();
        flusher.truncated(Some(log_id(3)));
        assert_eq!(flusher.durable(), Some(log_id(3)));
        flusher.queue(records(4..=4), log_id(4));
        flusher.drain().unwrap();
        assert_eq!(on_disk(&log_db), [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_wait_ends_once_its_entries_are_written_and_never_waits_for_what_was_not_queued() {
        let (_directory, log_db) = temporary_log();
        let flusher = Arc::new(LogFlusher::new(log_db.clone(), Some(log_id(2)), None));
        // Already durable, or never queued (index 9 when the log ends at 2).
        flusher.wait_through(2).await.unwrap();
        flusher.wait_through(9).await.unwrap();
        // Queued and not yet written: the wait writes them.
        flusher.queue(records(3..=4), log_id(4));
        tokio::time::timeout(std::time::Duration::from_secs(10), flusher.wait_through(9))
            .await
            .expect("the wait ends once the entries are written")
            .unwrap();
        assert_eq!(flusher.durable(), Some(log_id(4)));
        assert_eq!(on_disk(&log_db), [3, 4]);
    }

    /// Appenders on several threads each queue entries and ask for a background flush, as a
    /// leader's appends do; nothing else writes. Every entry must reach the disk, in order,
    /// with no flush left running: a request that found a flush under way relies on it to
    /// write its entries, and one lost between its last look and its end would never be.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn background_flushes_write_every_queued_entry_and_none_is_left_running() {
        let (_directory, log_db) = temporary_log();
        let flusher = Arc::new(LogFlusher::new(log_db.clone(), None, None));
        let next = Arc::new(Mutex::new(1u64));
        let appenders: Vec<_> = (0..4)
            .map(|_| {
                let (flusher, next) = (flusher.clone(), next.clone());
                tokio::spawn(async move {
                    for _ in 0..50 {
                        {
                            // Queued in log order, as openraft appends.
                            let mut next = locked(&next);
                            flusher.queue(records(*next..=*next), log_id(*next));
                            *next += 1;
                        }
                        flusher.flush_in_background();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while flusher.durable() != Some(log_id(200)) || flusher.is_flushing() {
            assert!(
                std::time::Instant::now() < deadline,
                "durable through {:?}, a flush running: {}",
                flusher.durable(),
                flusher.is_flushing()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(on_disk(&log_db), (1..=200).collect::<Vec<_>>());
    }
}
