//! `EventHistory`: the watch events of the most recently applied revisions on this member,
//! bounded by count and bytes; every watch stream reads from it (there are no per-watcher
//! queues, so a slow watcher costs no memory: it falls behind and, once the history has moved
//! past it, is cancelled and resumes from its last revision).
//!
//! Invariants:
//! - Events are appended in revision order, all of one revision together, before the member
//!   publishes that revision as applied; so a reader that saw revision R applied finds every
//!   event up to R here, unless they were evicted.
//! - `first_revision` is the lowest revision whose events are all retained: a watch may start
//!   at any revision from it on; older starts are `Compacted`. Eviction removes whole revisions.
//! - The history lives in memory: a restart or an installed snapshot starts it afresh after the
//!   applied revision.

use std::collections::VecDeque;

use crate::fsm::{Revision, WatchEvent};

/// Retention bounds of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub events_max: usize,
    pub bytes_max: usize,
}

#[derive(Debug)]
pub struct EventHistory {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    first_revision: Revision,
    limits: HistoryLimits,
}

/// A start revision older than the history; `oldest` is the oldest one available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub oldest: Revision,
}

fn size_of(event: &WatchEvent) -> usize {
    // Path, data and a fixed allowance for the stat and bookkeeping.
    event.path.as_str().len() + event.data.len() + 96
}

impl EventHistory {
    /// An empty history that serves watches starting after `applied`.
    pub fn new(applied: Revision, limits: HistoryLimits) -> EventHistory {
        EventHistory {
            events: VecDeque::new(),
            bytes: 0,
            first_revision: Revision(applied.0 + 1),
            limits,
        }
    }

    /// Starts afresh after `applied` (an installed snapshot).
    pub fn reset(&mut self, applied: Revision) {
        *self = EventHistory::new(applied, self.limits);
    }

    pub fn first_revision(&self) -> Revision {
        self.first_revision
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the events of newly applied revisions (in order), then evicts whole revisions
    /// from the front while over a bound.
    pub fn extend(&mut self, events: impl IntoIterator<Item = WatchEvent>) {
        for event in events {
            debug_assert!(self
                .events
                .back()
                .is_none_or(|last| last.revision <= event.revision));
            self.bytes += size_of(&event);
            self.events.push_back(event);
        }
        while self.events.len() > self.limits.events_max || self.bytes > self.limits.bytes_max {
            let Some(front) = self.events.front().map(|event| event.revision) else {
                break;
            };
            while self
                .events
                .front()
                .is_some_and(|event| event.revision == front)
            {
                let event = self.events.pop_front().expect("checked non-empty");
                self.bytes -= size_of(&event);
            }
            self.first_revision = Revision(front.0 + 1);
        }
    }

    /// Up to `limit` events with revision in `[from, to]` for which `keep` holds, in order,
    /// and the revision the scan got to (the next one to ask for is that plus one); or
    /// `Compacted` if `from` is older than the history.
    pub fn read(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
        mut keep: impl FnMut(&WatchEvent) -> bool,
    ) -> Result<(Vec<WatchEvent>, Revision), Compacted> {
        if from < self.first_revision {
            return Err(Compacted {
                oldest: self.first_revision,
            });
        }
        let start = self.events.partition_point(|event| event.revision < from);
        let mut found = Vec::new();
        let mut reached = to;
        for event in self.events.range(start..) {
            if event.revision > to {
                break;
            }
            // Stop at a revision boundary once the limit is reached, so that one revision's
            // events are never split across two reads.
            if found.len() >= limit
                && found
                    .last()
                    .is_some_and(|last: &WatchEvent| last.revision != event.revision)
            {
                reached = Revision(event.revision.0 - 1);
                break;
            }
            if keep(event) {
                found.push(event.clone());
            }
        }
        Ok((found, reached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::{EventKind, Node, NodeKind, NodePath, SessionId};

    fn event(revision: u64, path: &str, data: &[u8]) -> WatchEvent {
        WatchEvent {
            revision: Revision(revision),
            path: NodePath::parse(path).unwrap(),
            kind: EventKind::DataChanged,
            stat: Node::new(
                Vec::new(),
                NodeKind::Persistent,
                SessionId(0),
                Revision(revision),
            )
            .stat,
            data: data.to_vec(),
        }
    }

    const ROOMY: HistoryLimits = HistoryLimits {
        events_max: 1000,
        bytes_max: 1 << 20,
    };

    #[test]
    fn reads_return_events_in_range_and_where_the_scan_got_to() {
        let mut history = EventHistory::new(Revision(4), ROOMY);
        history.extend([
            event(5, "/a", b""),
            event(5, "/b", b""),
            event(7, "/a", b""),
        ]);
        let (events, reached) = history
            .read(Revision(5), Revision(9), 100, |_| true)
            .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(reached, Revision(9));
        let (only_a, _) = history
            .read(Revision(6), Revision(9), 100, |event| {
                event.path.as_str() == "/a"
            })
            .unwrap();
        assert_eq!(only_a, vec![event(7, "/a", b"")]);
        assert_eq!(
            history.read(Revision(4), Revision(9), 100, |_| true),
            Err(Compacted {
                oldest: Revision(5)
            })
        );
    }

    #[test]
    fn a_limited_read_never_splits_a_revision() {
        let mut history = EventHistory::new(Revision(0), ROOMY);
        history.extend([
            event(1, "/a", b""),
            event(2, "/a", b""),
            event(2, "/b", b""),
            event(3, "/c", b""),
        ]);
        let (events, reached) = history.read(Revision(1), Revision(3), 2, |_| true).unwrap();
        assert_eq!(events.len(), 3, "both events of revision 2 come together");
        assert_eq!(reached, Revision(2));
        let (rest, reached) = history.read(Revision(3), Revision(3), 2, |_| true).unwrap();
        assert_eq!(rest, vec![event(3, "/c", b"")]);
        assert_eq!(reached, Revision(3));
    }

    #[test]
    fn eviction_removes_whole_revisions_and_moves_the_first_revision() {
        let limits = HistoryLimits {
            events_max: 3,
            bytes_max: 1 << 20,
        };
        let mut history = EventHistory::new(Revision(0), limits);
        history.extend([
            event(1, "/a", b""),
            event(2, "/a", b""),
            event(2, "/b", b""),
        ]);
        assert_eq!(history.first_revision(), Revision(1));
        history.extend([event(3, "/a", b"")]);
        assert_eq!(history.first_revision(), Revision(2));
        assert_eq!(history.len(), 3);
        history.extend([event(4, "/a", b"")]);
        assert_eq!(
            history.first_revision(),
            Revision(3),
            "revision 2 went as a whole"
        );
        let by_bytes = HistoryLimits {
            events_max: 1000,
            bytes_max: 300,
        };
        let mut history = EventHistory::new(Revision(0), by_bytes);
        history.extend([event(1, "/a", &[0; 100]), event(2, "/a", &[0; 100])]);
        assert_eq!(history.first_revision(), Revision(2));
        assert!(history.bytes() <= 300);
        history.reset(Revision(10));
        assert_eq!((history.len(), history.first_revision()), (0, Revision(11)));
    }
}
