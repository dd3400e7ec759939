//! `CommittedSaver`: stores the committed log id that openraft reports on every commit, at most
//! once per `SAVE_INTERVAL`, instead of once per commit.
//!
//! openraft calls `save_committed` on every member each time the commit index moves, before it
//! applies the entries. Each call was a RocksDB write (a memtable insert and a write system call
//! to its WAL) on the path from a quorum's answer to the client's reply: 4.5 % of the leader's
//! CPU samples under one sequential writer. The stored index only saves work at start-up (a
//! restarted member applies its log up to it before it hears from a leader; openraft's own
//! default stores nothing), so a stale one is safe: the member applies the rest once a leader
//! tells it the commit index, as it does for everything committed while it was down.
//!
//! Invariants:
//! - what is stored never exceeds the entries on this member's disk (`LogFlusher::durable`, read
//!   when it is written), so a restart never expects entries it did not keep;
//! - the latest value is written within about `SAVE_INTERVAL` of being reported (a timer task
//!   writes what a burst left behind, and what the cap held back once it is durable, trying for
//!   at most `HELD_BACK_WRITES_MAX` intervals), and at once by `write_latest` (shutdown,
//!   `read_committed`);
//! - the timer task holds the saver weakly: a member that stops does not keep its log open.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::log_flush::LogFlusher;
use super::types::LogId;
use super::wire::encode_log_meta;
use crate::storage::{LogDb, StorageFault};

/// The key the committed log id is stored under in the log's metadata.
pub const COMMITTED_KEY: &str = "committed";
/// Longest time between a commit and the write that stores it (bar a failed write).
pub const SAVE_INTERVAL: Duration = Duration::from_millis(50);
/// Writes a timer task makes while the cap holds the latest value back (a leader's own write
/// still under way), before it leaves the rest to the next commit.
const HELD_BACK_WRITES_MAX: usize = 20;

/// What a reported commit asks for, given when the last write was and whether a timer waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Write now: the last write is at least an interval old (or there was none).
    WriteNow,
    /// Start a timer that writes once the interval since the last write is over.
    WriteAfter(Duration),
    /// A timer already waits and will write the latest value.
    Nothing,
}

/// The decision for a commit reported at `now` (pure: no clock, no I/O).
pub fn next(last_write: Option<Instant>, timer_waiting: bool, now: Instant) -> Next {
    let due = match last_write {
        None => return Next::WriteNow,
        Some(last_write) => last_write + SAVE_INTERVAL,
    };
    if now >= due {
        Next::WriteNow
    } else if timer_waiting {
        Next::Nothing
    } else {
        Next::WriteAfter(due - now)
    }
}

#[derive(Default)]
struct State {
    /// The last committed log id reported.
    latest: Option<LogId>,
    /// What was last stored (after the cap).
    stored: Option<LogId>,
    last_write: Option<Instant>,
    timer_waiting: bool,
}

pub struct CommittedSaver {
    log_db: LogDb,
    flusher: Arc<LogFlusher>,
    state: Mutex<State>,
}

impl CommittedSaver {
    pub fn new(log_db: LogDb, flusher: Arc<LogFlusher>) -> Self {
        CommittedSaver {
            log_db,
            flusher,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `committed`; writes it now when the last write is an interval old, and
    /// otherwise leaves it to a timer task (started here, on the current runtime, if none
    /// waits). `Err` only for a write made now.
    pub fn save(self: &Arc<Self>, committed: Option<LogId>) -> Result<(), StorageFault> {
        let mut state = self.state();
        state.latest = committed;
        match next(state.last_write, state.timer_waiting, Instant::now()) {
            Next::WriteNow => {
                self.write(&mut state)?;
                if state.stored < state.latest && !state.timer_waiting {
                    // Held back by the cap: the timer stores the rest once it is durable.
                    self.start_timer(&mut state, SAVE_INTERVAL);
                }
                Ok(())
            }
            Next::WriteAfter(delay) => {
                self.start_timer(&mut state, delay);
                Ok(())
            }
            Next::Nothing => Ok(()),
        }
    }

    /// Starts the timer task, on the current runtime, to write after `delay`.
    fn start_timer(self: &Arc<Self>, state: &mut State, delay: Duration) {
        state.timer_waiting = true;
        tokio::spawn(write_after(Arc::downgrade(self), delay));
    }

    /// Writes the latest value reported, if it is not stored yet.
    pub fn write_latest(&self) -> Result<(), StorageFault> {
        let mut state = self.state();
        self.write(&mut state)
    }

    /// Stores the latest value, capped at the durable entries (unsynced: a memtable insert and
    /// a write to the page cache, too short to hand the runtime's worker to another thread).
    fn write(&self, state: &mut State) -> Result<(), StorageFault> {
        let capped = state.latest.min(self.flusher.durable());
        state.last_write = Some(Instant::now());
        if capped == state.stored {
            return Ok(());
        }
        self.log_db
            .put_meta_relaxed(COMMITTED_KEY, &encode_log_meta(&capped))?;
        state.stored = capped;
        Ok(())
    }
}

/// The timer task: after `delay`, stores what was reported meanwhile, unless the member has
/// stopped. A value the cap held back (the leader's own write still under way) is tried again
/// after another interval, at most `HELD_BACK_WRITES_MAX` times: a member whose committed index
/// runs ahead of its log for longer (a follower that installed a snapshot and has no entries
/// after it) must not wake every interval while idle.
async fn write_after(saver: Weak<CommittedSaver>, mut delay: Duration) {
    for writes in 1..=HELD_BACK_WRITES_MAX {
        tokio::time::sleep(delay).await;
        let Some(saver) = saver.upgrade() else {
            return;
        };
        let mut state = saver.state();
        if let Err(fault) = saver.write(&mut state) {
            // The log's own writes go to the same disk and stop the member if it fails.
            tracing::warn!(%fault, "the committed log id could not be stored");
        }
        let held_back = state.stored < state.latest && saver.flusher.fault().is_none();
        if !held_back || writes == HELD_BACK_WRITES_MAX {
            state.timer_waiting = false;
            return;
        }
        delay = SAVE_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::log_flush::tests::log_id;
    use crate::consensus::wire::decode_log_meta;

    /// A saver over a new log whose entries through `durable` are on disk.
    fn saver(directory: &tempfile::TempDir, durable: u64) -> (Arc<CommittedSaver>, LogDb) {
        let log_db = LogDb::open(
            &directory.path().join("db"),
            &directory.path().join("segments"),
        )
        .unwrap();
        let flusher = Arc::new(LogFlusher::new(log_db.clone(), Some(log_id(durable)), None));
        (
            Arc::new(CommittedSaver::new(log_db.clone(), flusher)),
            log_db,
        )
    }

    fn stored(log_db: &LogDb) -> Option<u64> {
        let bytes = log_db.get_meta(COMMITTED_KEY).unwrap()?;
        let committed: Option<LogId> = decode_log_meta("committed log id", &bytes).unwrap();
        committed.map(|log_id| log_id.index)
    }

    /// Writes entries `indexes` to the saver's log, durably.
    fn write_entries(saver: &CommittedSaver, indexes: std::ops::RangeInclusive<u64>) {
        let last = *indexes.end();
        let records = indexes.map(|index| (index, vec![index as u8])).collect();
        saver.flusher.queue(records, log_id(last));
        saver.flusher.flush_through(last).unwrap();
    }

    /// What is stored once it is `index`, or after 10 s (a timer's write is awaited).
    async fn stored_once(log_db: &LogDb, index: u64) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stored(log_db) != Some(index) && Instant::now() < deadline {
            tokio::time::sleep(SAVE_INTERVAL / 5).await;
        }
        stored(log_db)
    }

    #[tokio::test]
    async fn a_burst_of_commits_is_stored_by_one_later_write() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 10);
        saver.save(Some(log_id(3))).unwrap();
        assert_eq!(stored(&log_db), Some(3), "the first is written at once");
        saver.save(Some(log_id(5))).unwrap();
        saver.save(Some(log_id(7))).unwrap();
        assert_eq!(stored(&log_db), Some(3), "the next wait for the timer");
        assert_eq!(
            stored_once(&log_db, 7).await,
            Some(7),
            "the timer stores the latest"
        );
    }

    #[tokio::test]
    async fn the_stored_index_never_passes_the_durable_entries() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 4);
        saver.save(Some(log_id(9))).unwrap();
        assert_eq!(stored(&log_db), Some(4));
        saver.write_latest().unwrap();
        assert_eq!(stored(&log_db), Some(4));
    }

    #[tokio::test]
    async fn a_held_back_value_is_stored_once_its_entries_are_durable() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 4);
        saver.save(Some(log_id(3))).unwrap();
        saver.save(Some(log_id(9))).unwrap();
        write_entries(&saver, 5..=9);
        assert_eq!(stored_once(&log_db, 9).await, Some(9));
    }

    #[tokio::test]
    async fn a_value_held_back_at_a_write_made_at_once_is_stored_later() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 4);
        saver.save(Some(log_id(9))).unwrap();
        assert_eq!(stored(&log_db), Some(4), "capped at the durable entries");
        write_entries(&saver, 5..=9);
        assert_eq!(stored_once(&log_db, 9).await, Some(9));
    }

    #[tokio::test]
    async fn the_latest_is_written_at_once_when_asked() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 10);
        saver.save(Some(log_id(1))).unwrap();
        saver.save(Some(log_id(2))).unwrap();
        saver.write_latest().unwrap();
        assert_eq!(stored(&log_db), Some(2));
    }

    #[tokio::test]
    async fn a_stopped_member_s_timer_writes_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let (saver, log_db) = saver(&directory, 10);
        saver.save(Some(log_id(1))).unwrap();
        saver.save(Some(log_id(2))).unwrap();
        drop(saver);
        tokio::time::sleep(SAVE_INTERVAL * 3).await;
        assert_eq!(stored(&log_db), Some(1));
    }

    #[test]
    fn the_first_commit_is_written_at_once() {
        let now = Instant::now();
        assert_eq!(next(None, false, now), Next::WriteNow);
    }

    #[test]
    fn commits_within_an_interval_of_a_write_wait_for_one_timer() {
        let written = Instant::now();
        let soon = written + Duration::from_millis(10);
        assert_eq!(
            next(Some(written), false, soon),
            Next::WriteAfter(SAVE_INTERVAL - Duration::from_millis(10))
        );
        assert_eq!(next(Some(written), true, soon), Next::Nothing);
    }

    #[test]
    fn a_commit_an_interval_after_the_last_write_is_written_at_once() {
        let written = Instant::now();
        assert_eq!(
            next(Some(written), true, written + SAVE_INTERVAL),
            Next::WriteNow
        );
        assert_eq!(
            next(Some(written), false, written + SAVE_INTERVAL * 3),
            Next::WriteNow
        );
    }
}
