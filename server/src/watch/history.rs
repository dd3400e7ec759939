//! `EventHistory`: the watch events of the most recently applied revisions on this member,
//! bounded by count and bytes; every watch stream reads from it (there are no per-watcher
//! queues, so a slow watcher costs no memory: it falls behind and, once the history has moved
//! past it, is cancelled and resumes from its last revision).
//!
//! A revision whose events alone exceed either bound (a recursive delete of more nodes than
//! `--watch-history-events`, a txn deleting more data than `--watch-history-bytes`) is kept
//! compactly, as an `ElidedRevision`:
//! the few paths (or subtrees) that cover all its events. A watch whose filter meets them is
//! cancelled `Compacted` at that revision (it re-reads and resumes after it); every other watch
//! reads past it, so one large write never cancels the watches of unrelated paths.
//!
//! Invariants:
//! - Entries are appended in revision order, all of one revision together, before the member
//!   publishes that revision as applied; so a reader that saw revision R applied finds every
//!   event up to R here (or R's elided record), unless they were evicted.
//! - `first_revision` is the lowest revision whose entries are all retained: a watch may start
//!   at any revision from it on; older starts are `Compacted`. Eviction removes whole revisions.
//! - The history lives in memory: a restart or an installed snapshot starts it afresh after the
//!   applied revision.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::filter::WatchFilter;
use crate::fsm::{NodePath, Revision, WatchEvent};

/// Retention bounds of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub events_max: usize,
    pub bytes_max: usize,
}

/// Most paths that describe an elided revision.
const SCOPE_PATHS_MAX: usize = 16;
/// Most entries whose room the history sets aside when it starts (136 bytes each: at most
/// about 136 MiB of address space, 13.6 MB at the default 100,000 events, touched only as
/// entries arrive). Up to this bound the history never grows its buffer: growing meant copying
/// every entry held into new memory while the applier held the lock, several milliseconds when
/// the default 100,000 events were first reached, and a few percent of a busy member's CPU
/// until then (`perf`, `coord-bench writes --clients 64`).
const RESERVED_ENTRIES_MAX: usize = 1 << 20;

/// A revision too large to keep event by event: where it changed, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElidedRevision {
    pub revision: Revision,
    /// Each path, and whether its whole subtree is meant; together they cover every event.
    pub scope: Vec<(NodePath, bool)>,
    pub events: usize,
}

impl ElidedRevision {
    /// Whether some event of this revision could match `filter`.
    pub fn meets(&self, filter: &WatchFilter) -> bool {
        self.scope.iter().any(|(path, subtree)| {
            if *subtree {
                filter.covers(path) || is_within(&filter.path, path)
            } else {
                filter.covers(path)
            }
        })
    }

    fn bytes(&self) -> usize {
        96 + self
            .scope
            .iter()
            .map(|(path, _)| path.as_str().len() + 8)
            .sum::<usize>()
    }
}

/// Whether `path` is `root` or under it.
fn is_within(path: &NodePath, root: &NodePath) -> bool {
    root.is_root()
        || path == root
        || path
            .as_str()
            .strip_prefix(root.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

/// At most `SCOPE_PATHS_MAX` paths or subtrees covering every path of `paths`: the paths
/// themselves if few enough, else their ancestors at the deepest level that is few enough.
fn cover(paths: &BTreeSet<NodePath>) -> Vec<(NodePath, bool)> {
    let depth_of = |path: &NodePath| {
        if path.is_root() {
            0
        } else {
            path.as_str().matches('/').count()
        }
    };
    let deepest = paths.iter().map(depth_of).max().unwrap_or(0);
    for depth in (0..=deepest).rev() {
        // Each path's ancestor at `depth` (a subtree when it is a proper ancestor).
        let mut chosen: std::collections::BTreeMap<NodePath, bool> = Default::default();
        for path in paths {
            let mut ancestor = path.clone();
            while depth_of(&ancestor) > depth {
                ancestor = ancestor
                    .parent()
                    .expect("a path below the root has a parent");
            }
            let subtree = ancestor != *path;
            *chosen.entry(ancestor).or_insert(false) |= subtree;
        }
        // Leave out what a chosen subtree already covers.
        let covered = |path: &NodePath| {
            let mut above = path.parent();
            while let Some(ancestor) = above {
                if chosen.get(&ancestor) == Some(&true) {
                    return true;
                }
                above = ancestor.parent();
            }
            false
        };
        let scope: Vec<(NodePath, bool)> = chosen
            .iter()
            .filter(|(path, _)| !covered(path))
            .map(|(path, subtree)| (path.clone(), *subtree))
            .collect();
        if scope.len() <= SCOPE_PATHS_MAX {
            return scope;
        }
    }
    vec![(NodePath::root(), true)]
}

#[derive(Debug)]
enum Entry {
    Event(WatchEvent),
    Elided(ElidedRevision),
}

impl Entry {
    fn revision(&self) -> Revision {
        match self {
            Entry::Event(event) => event.revision,
            Entry::Elided(elided) => elided.revision,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Entry::Event(event) => size_of(event),
            Entry::Elided(elided) => elided.bytes(),
        }
    }
}

#[derive(Debug)]
pub struct EventHistory {
    entries: VecDeque<Entry>,
    bytes: usize,
    first_revision: Revision,
    limits: HistoryLimits,
}

/// What one read found: the matching events in order, the revision the scan got to (the next
/// read starts after it), and an elided revision the filter meets, if the scan stopped at one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub events: Vec<WatchEvent>,
    pub reached: Revision,
    pub elided: Option<ElidedRevision>,
}

/// The history of one member, shared by the state machine (which extends it before publishing
/// a revision as applied) and every watch stream (which reads it).
#[derive(Debug)]
pub struct History {
    inner: Mutex<EventHistory>,
}

impl History {
    pub fn new(limits: HistoryLimits) -> History {
        History {
            inner: Mutex::new(EventHistory::new(Revision(0), limits)),
        }
    }

    fn inner(&self) -> MutexGuard<'_, EventHistory> {
        // Nothing panics while holding the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// See `EventHistory::extend`.
    pub fn extend(&self, events: Vec<WatchEvent>) {
        self.inner().extend(events);
    }

    /// See `EventHistory::reset`.
    pub fn reset(&self, applied: Revision) {
        self.inner().reset(applied);
    }

    /// See `EventHistory::read`.
    pub fn read(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
        filter: &WatchFilter,
    ) -> Result<Read, Compacted> {
        self.inner().read(from, to, limit, filter)
    }

    /// The oldest revision a watch can start at.
    pub fn first_revision(&self) -> Revision {
        self.inner().first_revision()
    }

    /// See `EventHistory::paths_touched`.
    pub fn paths_touched(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
    ) -> Option<HashSet<NodePath>> {
        self.inner().paths_touched(from, to, limit)
    }
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
            entries: VecDeque::with_capacity(limits.events_max.min(RESERVED_ENTRIES_MAX)),
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
        self.entries.len()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the events of newly applied revisions (in order), a revision too large for the
    /// bounds as its `ElidedRevision`, evicting whole revisions from the front to stay within
    /// the bounds. Room is made before each revision goes in, so the history never holds more
    /// than `events_max` entries, even for a moment, and its buffer never has to grow.
    pub fn extend(&mut self, events: Vec<WatchEvent>) {
        let mut events = events.into_iter().peekable();
        while let Some(first) = events.next() {
            let revision = first.revision;
            debug_assert!(self
                .entries
                .back()
                .is_none_or(|last| last.revision() <= revision));
            let mut group = vec![first];
            while let Some(event) = events.next_if(|event| event.revision == revision) {
                group.push(event);
            }
            let bytes: usize = group.iter().map(size_of).sum();
            if group.len() > self.limits.events_max || bytes > self.limits.bytes_max {
                let paths: BTreeSet<NodePath> =
                    group.iter().map(|event| event.path.clone()).collect();
                let elided = Entry::Elided(ElidedRevision {
                    revision,
                    scope: cover(&paths),
                    events: group.len(),
                });
                self.evict(1, elided.bytes());
                self.push(elided);
            } else {
                self.evict(group.len(), bytes);
                for event in group {
                    self.push(Entry::Event(event));
                }
            }
        }
        // An elided revision larger than the bounds by itself does not stay either.
        self.evict(0, 0);
    }

    /// Evicts whole revisions from the front until `entries` more entries of `bytes` more
    /// bytes fit within the bounds (or nothing is left).
    fn evict(&mut self, entries: usize, bytes: usize) {
        while self.entries.len() + entries > self.limits.events_max
            || self.bytes + bytes > self.limits.bytes_max
        {
            let Some(front) = self.entries.front().map(Entry::revision) else {
                break;
            };
            while self
                .entries
                .front()
                .is_some_and(|entry| entry.revision() == front)
            {
                let entry = self.entries.pop_front().expect("checked non-empty");
                self.bytes -= entry.bytes();
            }
            self.first_revision = Revision(front.0 + 1);
        }
    }

    fn push(&mut self, entry: Entry) {
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
    }

    /// Up to `limit` events with revision in `[from, to]` that `filter` matches, in order, and
    /// the revision the scan got to; the scan stops before an elided revision that `filter`
    /// meets (returned with the read). `Compacted` if `from` is older than the history.
    pub fn read(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
        filter: &WatchFilter,
    ) -> Result<Read, Compacted> {
        if from < self.first_revision {
            return Err(Compacted {
                oldest: self.first_revision,
            });
        }
        let start = self
            .entries
            .partition_point(|entry| entry.revision() < from);
        let mut found: Vec<WatchEvent> = Vec::new();
        let mut reached = to;
        for entry in self.entries.range(start..) {
            let revision = entry.revision();
            if revision > to {
                break;
            }
            // Stop at a revision boundary once the limit is reached, so that one revision's
            // events are never split across two reads.
            if found.len() >= limit && found.last().is_some_and(|last| last.revision != revision) {
                reached = Revision(revision.0 - 1);
                break;
            }
            match entry {
                Entry::Event(event) => {
                    if filter.matches(event) {
                        found.push(event.clone());
                    }
                }
                Entry::Elided(elided) if elided.meets(filter) => {
                    return Ok(Read {
                        events: found,
                        reached: Revision(revision.0 - 1),
                        elided: Some(elided.clone()),
                    });
                }
                Entry::Elided(_) => {}
            }
        }
        Ok(Read {
            events: found,
            reached,
            elided: None,
        })
    }

    /// The paths of the events of revisions `from..=to`, so that a watch stream can pass over
    /// the watches of one exact path that none of them touch without reading for each: for such
    /// a watch `read` would find nothing and reach `to`. `None` when that cannot be told so
    /// simply: the range starts before the history, holds an elided revision, or touches more
    /// than `limit` paths.
    pub fn paths_touched(
        &self,
        from: Revision,
        to: Revision,
        limit: usize,
    ) -> Option<HashSet<NodePath>> {
        if from < self.first_revision {
            return None;
        }
        let start = self
            .entries
            .partition_point(|entry| entry.revision() < from);
        let mut paths = HashSet::new();
        for entry in self.entries.range(start..) {
            if entry.revision() > to {
                break;
            }
            match entry {
                Entry::Event(event) => {
                    paths.insert(event.path.clone());
                    if paths.len() > limit {
                        return None;
                    }
                }
                Entry::Elided(_) => return None,
            }
        }
        Some(paths)
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

    fn all() -> WatchFilter {
        WatchFilter {
            path: NodePath::root(),
            recursive: true,
            classes: Default::default(),
        }
    }

    fn only(path: &str) -> WatchFilter {
        WatchFilter {
            path: NodePath::parse(path).unwrap(),
            recursive: false,
            classes: Default::default(),
        }
    }

    fn under(path: &str) -> WatchFilter {
        WatchFilter {
            recursive: true,
            ..only(path)
        }
    }

    const ROOMY: HistoryLimits = HistoryLimits {
        events_max: 1000,
        bytes_max: 1 << 20,
    };

    #[test]
    fn reads_return_events_in_range_and_where_the_scan_got_to() {
        let mut history = EventHistory::new(Revision(4), ROOMY);
        history.extend(vec![
            event(5, "/a", b""),
            event(5, "/b", b""),
            event(7, "/a", b""),
        ]);
        let read = history.read(Revision(5), Revision(9), 100, &all()).unwrap();
        assert_eq!(read.events.len(), 3);
        assert_eq!(read.reached, Revision(9));
        let only_a = history
            .read(Revision(6), Revision(9), 100, &only("/a"))
            .unwrap();
        assert_eq!(only_a.events, vec![event(7, "/a", b"")]);
        assert_eq!(
            history.read(Revision(4), Revision(9), 100, &all()),
            Err(Compacted {
                oldest: Revision(5)
            })
        );
    }

    #[test]
    fn a_limited_read_never_splits_a_revision() {
        let mut history = EventHistory::new(Revision(0), ROOMY);
        history.extend(vec![
            event(1, "/a", b""),
            event(2, "/a", b""),
            event(2, "/b", b""),
            event(3, "/c", b""),
        ]);
        let read = history.read(Revision(1), Revision(3), 2, &all()).unwrap();
        assert_eq!(
            read.events.len(),
            3,
            "both events of revision 2 come together"
        );
        assert_eq!(read.reached, Revision(2));
        let rest = history.read(Revision(3), Revision(3), 2, &all()).unwrap();
        assert_eq!(rest.events, vec![event(3, "/c", b"")]);
        assert_eq!(rest.reached, Revision(3));
    }

    #[test]
    fn eviction_removes_whole_revisions_and_moves_the_first_revision() {
        let limits = HistoryLimits {
            events_max: 3,
            bytes_max: 1 << 20,
        };
        let mut history = EventHistory::new(Revision(0), limits);
        history.extend(vec![
            event(1, "/a", b""),
            event(2, "/a", b""),
            event(2, "/b", b""),
        ]);
        assert_eq!(history.first_revision(), Revision(1));
        history.extend(vec![event(3, "/a", b"")]);
        assert_eq!(history.first_revision(), Revision(2));
        assert_eq!(history.len(), 3);
        history.extend(vec![event(4, "/a", b"")]);
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
        history.extend(vec![event(1, "/a", &[0; 100]), event(2, "/a", &[0; 100])]);
        assert_eq!(history.first_revision(), Revision(2));
        assert!(history.bytes() <= 300);
        history.reset(Revision(10));
        assert_eq!((history.len(), history.first_revision()), (0, Revision(11)));
    }

    #[test]
    fn the_history_never_grows_its_buffer_past_the_bound() {
        let limits = HistoryLimits {
            events_max: 100,
            bytes_max: 1 << 20,
        };
        let mut history = EventHistory::new(Revision(0), limits);
        let reserved = history.entries.capacity();
        assert!(reserved >= 100);
        let mut revision = 0;
        for size in [1, 7, 3, 100, 1, 50, 99, 2].into_iter().cycle().take(200) {
            revision += 1;
            let group: Vec<WatchEvent> = (0..size)
                .map(|child| event(revision, &format!("/n{child}"), b""))
                .collect();
            history.extend(group);
            assert!(history.len() <= 100);
            let front = history.entries.front().map(Entry::revision);
            let back = history.entries.back().map(Entry::revision);
            assert_eq!(
                front,
                Some(history.first_revision()),
                "whole revisions are kept"
            );
            assert_eq!(
                back,
                Some(Revision(revision)),
                "the newest revision is kept"
            );
        }
        assert_eq!(
            history.entries.capacity(),
            reserved,
            "the buffer was never regrown"
        );
    }

    #[test]
    fn paths_touched_are_those_a_read_of_one_exact_path_would_find() {
        let mut history = EventHistory::new(Revision(4), ROOMY);
        history.extend(vec![
            event(5, "/a", b""),
            event(5, "/b", b""),
            event(7, "/c", b""),
        ]);
        let path = |text: &str| NodePath::parse(text).unwrap();
        let touched = history
            .paths_touched(Revision(6), Revision(9), 100)
            .unwrap();
        assert_eq!(touched, HashSet::from([path("/c")]));
        for watched in ["/a", "/b", "/c", "/d"] {
            let read = history
                .read(Revision(6), Revision(9), 100, &only(watched))
                .unwrap();
            assert_eq!(read.events.is_empty(), !touched.contains(&path(watched)));
            assert_eq!(read.reached, Revision(9));
        }
        assert_eq!(
            history
                .paths_touched(Revision(5), Revision(9), 100)
                .map(|paths| paths.len()),
            Some(3)
        );
        assert_eq!(history.paths_touched(Revision(5), Revision(9), 2), None);
        assert_eq!(history.paths_touched(Revision(4), Revision(9), 100), None);
        assert_eq!(
            history.paths_touched(Revision(8), Revision(9), 100),
            Some(HashSet::new())
        );
    }

    #[test]
    fn a_revision_larger_than_the_history_is_kept_as_its_scope_and_stops_only_watches_it_meets() {
        let limits = HistoryLimits {
            events_max: 10,
            bytes_max: 1 << 20,
        };
        let mut history = EventHistory::new(Revision(0), limits);
        history.extend(vec![event(1, "/other/x", b"before")]);
        // A recursive delete of /big: the root's children change, and 50 nodes go.
        let mut large = vec![event(2, "/", b"")];
        large.extend((0..50).map(|index| event(2, &format!("/big/n{index:02}"), b"")));
        history.extend(large);
        history.extend(vec![event(3, "/other/x", b"after")]);
        assert_eq!(history.first_revision(), Revision(1), "nothing was evicted");
        // A watch of an unrelated subtree reads past revision 2.
        let other = history
            .read(Revision(1), Revision(3), 100, &under("/other"))
            .unwrap();
        assert_eq!(other.events.len(), 2);
        assert_eq!((other.reached, other.elided), (Revision(3), None));
        // Watches that revision 2 touches stop before it, with what it covered.
        for filter in [under("/big"), only("/big/n07"), all(), only("/")] {
            let cut = history
                .read(Revision(1), Revision(3), 100, &filter)
                .unwrap();
            assert_eq!(cut.reached, Revision(1), "{filter:?}");
            let elided = cut.elided.expect("the watch meets revision 2");
            assert_eq!((elided.revision, elided.events), (Revision(2), 51));
        }
        // A range holding an elided revision does not tell its paths.
        assert_eq!(history.paths_touched(Revision(1), Revision(3), 100), None);
        assert!(history
            .paths_touched(Revision(3), Revision(3), 100)
            .is_some());
        // A child of the root that revision 2 did not touch is not cut either.
        let untouched = history
            .read(Revision(1), Revision(3), 100, &only("/other"))
            .unwrap();
        assert_eq!(untouched.elided, None);
    }

    #[test]
    fn the_scope_of_an_elided_revision_is_its_paths_or_their_ancestors() {
        let paths = |texts: &[&str]| -> BTreeSet<NodePath> {
            texts
                .iter()
                .map(|text| NodePath::parse(text).unwrap())
                .collect()
        };
        let few = cover(&paths(&["/a", "/b/c"]));
        assert_eq!(
            few,
            vec![
                (NodePath::parse("/a").unwrap(), false),
                (NodePath::parse("/b/c").unwrap(), false)
            ]
        );
        let many: Vec<String> = (0..100).map(|index| format!("/big/n{index}")).collect();
        let mut texts: Vec<&str> = many.iter().map(String::as_str).collect();
        texts.extend(["/", "/big", "/big-x"]);
        let scope = cover(&paths(&texts));
        assert_eq!(
            scope,
            vec![
                (NodePath::root(), false),
                (NodePath::parse("/big").unwrap(), true),
                (NodePath::parse("/big-x").unwrap(), false)
            ]
        );
    }
}
