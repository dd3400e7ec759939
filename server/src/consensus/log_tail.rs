//! `LogTail`: the last entries appended to the log, kept decoded in memory. Right after an
//! append, openraft reads the same entries back: each replication stream to send them, and the
//! apply step once they commit. Served from here, those reads cost a clone, not a RocksDB
//! iterator, a checksum and a decode on a thread taken from the runtime. Pure; `LogStorage`
//! keeps it in step with the log.
//!
//! Invariant: the entries held are a contiguous suffix of the log (the last one held is the
//! log's last, queued entries included), so a read it can answer gives exactly what the log
//! holds. `LogStorage` records every append when it queues it for writing, and forgets a
//! truncated suffix or purged prefix before it changes the log. A read it cannot answer wholly
//! (an entry older than those held) goes to the log once everything queued is written.

use std::collections::VecDeque;

use super::types::Entry;

/// Entries held at most.
pub const TAIL_ENTRIES_MAX: usize = 1024;
/// Bytes (encoded) of the entries held at most.
pub const TAIL_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct LogTail {
    /// Each entry with its encoded size, in index order, with no gap.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
}

impl LogTail {
    pub fn new(entries_max: usize, bytes_max: usize) -> LogTail {
        LogTail {
            entries: VecDeque::new(),
            bytes: 0,
            entries_max,
            bytes_max,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    /// Records entries just written to the log (in order, with their encoded sizes). Entries
    /// that do not follow the last one held start the tail afresh.
    pub fn appended(&mut self, appended: Vec<(Entry, usize)>) {
        for (entry, size) in appended {
            if self
                .last_index()
                .is_some_and(|last| last + 1 != entry.log_id.index)
            {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > self.entries_max
            || (self.bytes > self.bytes_max && self.entries.len() > 1)
        {
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forgets the entries from `index` on (a conflicting suffix the log is about to drop).
    pub fn truncated(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries up to and including `index` (purged from the log).
    pub fn purged(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.drop_first();
        }
    }

    /// The entries with `start <= index < end`, stopping once those taken hold `bytes_max`
    /// bytes or more (the first is always taken), as the log would answer; `None` when that
    /// answer needs an entry older than those held (or nothing is held).
    pub fn get(&self, start: u64, end: u64, bytes_max: usize) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let mut taken = Vec::new();
        let mut bytes = 0;
        let offset = usize::try_from(start - first).ok()?;
        for (entry, size) in self.entries.iter().skip(offset) {
            if entry.log_id.index >= end || (!taken.is_empty() && bytes >= bytes_max) {
                break;
            }
            bytes += size;
            taken.push(entry.clone());
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::{CommittedLeaderId, LogId};
    use openraft::EntryPayload;

    fn entry(index: u64) -> (Entry, usize) {
        let entry = Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: EntryPayload::Blank,
        };
        (entry, 100)
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.log_id.index).collect()
    }

    fn tail(range: std::ops::RangeInclusive<u64>) -> LogTail {
        let mut tail = LogTail::new(8, 10_000);
        tail.appended(range.map(entry).collect());
        tail
    }

    #[test]
    fn a_read_within_the_tail_is_answered_and_one_before_it_is_not() {
        let tail = tail(5..=9);
        assert_eq!(indexes(&tail.get(6, 9, usize::MAX).unwrap()), [6, 7, 8]);
        assert_eq!(
            indexes(&tail.get(5, u64::MAX, usize::MAX).unwrap()),
            [5, 6, 7, 8, 9]
        );
        assert_eq!(tail.get(4, 7, usize::MAX), None);
        assert_eq!(
            indexes(&tail.get(10, u64::MAX, usize::MAX).unwrap()),
            [] as [u64; 0]
        );
        assert_eq!(LogTail::new(8, 10_000).get(1, 2, usize::MAX), None);
    }

    #[test]
    fn a_byte_bound_stops_a_read_as_the_log_does_but_never_before_the_first_entry() {
        let tail = tail(1..=6);
        assert_eq!(indexes(&tail.get(2, 7, 250).unwrap()), [2, 3, 4]);
        assert_eq!(indexes(&tail.get(2, 7, 1).unwrap()), [2]);
    }

    #[test]
    fn the_tail_is_bounded_by_entries_and_by_bytes_keeping_the_newest() {
        let tail = tail(1..=20);
        assert_eq!(
            indexes(&tail.get(13, 21, usize::MAX).unwrap()),
            [13, 14, 15, 16, 17, 18, 19, 20]
        );
        assert_eq!(tail.get(12, 21, usize::MAX), None);
        let mut small = LogTail::new(100, 250);
        small.appended((1..=5).map(entry).collect());
        assert_eq!(indexes(&small.get(4, 6, usize::MAX).unwrap()), [4, 5]);
        assert_eq!(small.get(3, 6, usize::MAX), None);
    }

    #[test]
    fn truncation_and_purging_forget_exactly_what_the_log_drops() {
        let mut tail = tail(1..=6);
        tail.truncated(4);
        assert_eq!(
            indexes(&tail.get(1, u64::MAX, usize::MAX).unwrap()),
            [1, 2, 3]
        );
        // The leader's entries replace the dropped suffix.
        tail.appended(vec![entry(4), entry(5)]);
        assert_eq!(
            indexes(&tail.get(3, u64::MAX, usize::MAX).unwrap()),
            [3, 4, 5]
        );
        tail.purged(3);
        assert_eq!(tail.get(3, u64::MAX, usize::MAX), None);
        assert_eq!(indexes(&tail.get(4, u64::MAX, usize::MAX).unwrap()), [4, 5]);
        tail.purged(9);
        assert_eq!(tail.get(10, u64::MAX, usize::MAX), None);
    }

    #[test]
    fn entries_that_do_not_follow_the_tail_start_it_afresh() {
        let mut tail = tail(1..=3);
        tail.appended(vec![entry(7), entry(8)]);
        assert_eq!(tail.get(3, u64::MAX, usize::MAX), None);
        assert_eq!(indexes(&tail.get(7, u64::MAX, usize::MAX).unwrap()), [7, 8]);
    }
}
