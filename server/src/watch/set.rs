//! `WatchSet`: the watches of one stream and where each stands in the history. Pure; the watch
//! service asks it which watches have something to read after each applied revision.
//!
//! A watch of one exact path that has read everything up to the stream's last delivery is
//! *current*: it is filed under its path, and its position is the set's (`current_to + 1`), not
//! its own. When new revisions are applied, only the current watches whose path the new events
//! touch must read; the others stay current by the set moving on. Every other watch (recursive,
//! behind, or just created) reads on each delivery and becomes current once it has caught up
//! with one exact path. So a write costs the stream a lookup per path it touched, not a read,
//! or even a look, per watch.
//!
//! Invariant: a current watch's events up to `current_to` were all delivered, and a read from
//! `current_to + 1` would find exactly the events of the paths that make it read again, so the
//! watches passed over are exactly those whose reads would have found nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio::time::Instant;

use super::filter::WatchFilter;
use crate::fsm::{NodePath, Revision};

/// One watch of a stream.
#[derive(Debug)]
pub struct ActiveWatch {
    pub filter: WatchFilter,
    pub once: bool,
    pub with_data: bool,
    /// The next revision to read, while the watch is not current (see the module docs).
    next: Revision,
    /// When something was last sent for this watch (for progress notifications).
    pub last_sent: Instant,
}

impl ActiveWatch {
    pub fn new(filter: WatchFilter, once: bool, with_data: bool, next: Revision) -> ActiveWatch {
        ActiveWatch {
            filter,
            once,
            with_data,
            next,
            last_sent: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
pub struct WatchSet {
    all: BTreeMap<u64, ActiveWatch>,
    /// Current watches by their path.
    current: HashMap<NodePath, BTreeSet<u64>>,
    /// Every watch that is not current.
    others: BTreeSet<u64>,
    /// The revision current watches have read up to (`None` before the first delivery).
    current_to: Option<Revision>,
}

impl WatchSet {
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.all.contains_key(&id)
    }

    pub fn get(&self, id: u64) -> Option<&ActiveWatch> {
        self.all.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut ActiveWatch> {
        self.all.get_mut(&id)
    }

    /// Adds a watch that reads from its own `next` on.
    pub fn insert(&mut self, id: u64, watch: ActiveWatch) {
        self.remove(id);
        self.all.insert(id, watch);
        self.others.insert(id);
    }

    /// Removes a watch; false if there was none with `id`.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(watch) = self.all.remove(&id) else {
            return false;
        };
        if !self.others.remove(&id) {
            if let Some(ids) = self.current.get_mut(&watch.filter.path) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.current.remove(&watch.filter.path);
                }
            }
        }
        true
    }

    /// The next revision watch `id` reads.
    pub fn next_of(&self, id: u64) -> Option<Revision> {
        let watch = self.all.get(&id)?;
        if self.others.contains(&id) {
            return Some(watch.next);
        }
        self.current_from()
    }

    /// Where the next delivery would read from for current watches: the range whose touched
    /// paths `due` needs (`None` before the first delivery).
    pub fn current_from(&self) -> Option<Revision> {
        self.current_to.map(|to| Revision(to.0 + 1))
    }

    /// The watches with something to read up to `applied`, given the paths the events after
    /// `current_to` touch (`None`: unknown, so every current watch reads). Current watches
    /// whose path was not touched are then current to `applied`.
    pub fn due(&mut self, touched: Option<&HashSet<NodePath>>, applied: Revision) -> Vec<u64> {
        if let Some(from) = self.current_from() {
            let woken: Vec<u64> = match touched {
                Some(paths) => paths
                    .iter()
                    .filter_map(|path| self.current.remove(path))
                    .flatten()
                    .collect(),
                None => self.current.drain().flat_map(|(_, ids)| ids).collect(),
            };
            for id in woken {
                if let Some(watch) = self.all.get_mut(&id) {
                    watch.next = from;
                    self.others.insert(id);
                }
            }
        }
        if self.current_to.is_none_or(|to| to < applied) {
            self.current_to = Some(applied);
        }
        self.others
            .iter()
            .copied()
            .filter(|id| self.all.get(id).is_some_and(|watch| watch.next <= applied))
            .collect()
    }

    /// Records that watch `id` read (and delivered) everything up to `reached`.
    pub fn reached(&mut self, id: u64, reached: Revision) {
        if let Some(watch) = self.all.get_mut(&id) {
            if self.others.contains(&id) {
                watch.next = Revision(reached.0 + 1);
            }
        }
    }

    /// Makes current every exact-path watch that has caught up with `current_to`.
    pub fn settle(&mut self) {
        let Some(from) = self.current_from() else {
            return;
        };
        let caught_up: Vec<u64> = self
            .others
            .iter()
            .copied()
            .filter(|id| {
                self.all
                    .get(id)
                    .is_some_and(|watch| !watch.filter.recursive && watch.next == from)
            })
            .collect();
        for id in caught_up {
            self.others.remove(&id);
            if let Some(watch) = self.all.get(&id) {
                self.current
                    .entry(watch.filter.path.clone())
                    .or_default()
                    .insert(id);
            }
        }
    }

    /// Ids and positions (the revision each is current to) of the watches nothing was sent
    /// for since `since`.
    pub fn idle_since(&self, since: Instant) -> Vec<(u64, Revision)> {
        self.all
            .iter()
            .filter(|(_, watch)| watch.last_sent <= since)
            .filter_map(|(id, _)| {
                let next = self.next_of(*id)?;
                Some((*id, Revision(next.0.saturating_sub(1))))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(path: &str, next: u64) -> ActiveWatch {
        let filter = WatchFilter {
            path: NodePath::parse(path).unwrap(),
            recursive: false,
            classes: Default::default(),
        };
        ActiveWatch::new(filter, false, false, Revision(next))
    }

    fn paths(texts: &[&str]) -> HashSet<NodePath> {
        texts
            .iter()
            .map(|text| NodePath::parse(text).unwrap())
            .collect()
    }

    /// One delivery as the service runs it: every due watch reads up to `applied`.
    fn deliver(set: &mut WatchSet, touched: &[&str], applied: u64) -> Vec<u64> {
        let due = set.due(Some(&paths(touched)), Revision(applied));
        for id in &due {
            set.reached(*id, Revision(applied));
        }
        set.settle();
        due
    }

    #[test]
    fn only_watches_of_touched_paths_read_once_current() {
        let mut set = WatchSet::default();
        set.insert(1, exact("/a", 6));
        set.insert(2, exact("/b", 6));
        // The first delivery reads for every watch; then both are current.
        assert_eq!(deliver(&mut set, &[], 5), Vec::<u64>::new());
        assert_eq!(set.next_of(1), Some(Revision(6)));
        assert_eq!(deliver(&mut set, &["/a"], 6), vec![1]);
        assert_eq!(deliver(&mut set, &["/c"], 9), Vec::<u64>::new());
        assert_eq!(
            (set.next_of(1), set.next_of(2)),
            (Some(Revision(10)), Some(Revision(10)))
        );
        assert_eq!(deliver(&mut set, &["/a", "/b"], 10), vec![1, 2]);
    }

    #[test]
    fn an_unknown_range_makes_every_current_watch_read() {
        let mut set = WatchSet::default();
        set.insert(1, exact("/a", 1));
        set.insert(2, exact("/b", 1));
        deliver(&mut set, &[], 3);
        assert_eq!(set.due(None, Revision(5)), vec![1, 2]);
        assert_eq!(
            set.next_of(1),
            Some(Revision(4)),
            "it reads from where it was current"
        );
    }

    #[test]
    fn recursive_and_lagging_watches_read_on_every_delivery() {
        let mut set = WatchSet::default();
        let mut subtree = exact("/a", 4);
        subtree.filter.recursive = true;
        set.insert(1, subtree);
        set.insert(2, exact("/b", 2));
        assert_eq!(set.due(Some(&paths(&[])), Revision(4)), vec![1, 2]);
        // Watch 2 read only up to 3 (a bounded read): it stays behind, then catches up.
        set.reached(1, Revision(4));
        set.reached(2, Revision(3));
        set.settle();
        assert_eq!(set.due(Some(&paths(&[])), Revision(4)), vec![2]);
        set.reached(2, Revision(4));
        set.settle();
        assert_eq!(deliver(&mut set, &["/z"], 6), vec![1]);
        assert_eq!(set.next_of(2), Some(Revision(7)));
    }

    #[test]
    fn a_new_watch_starting_later_waits_for_its_start() {
        let mut set = WatchSet::default();
        deliver(&mut set, &[], 5);
        set.insert(1, exact("/a", 9));
        assert_eq!(deliver(&mut set, &["/a"], 7), Vec::<u64>::new());
        assert_eq!(set.next_of(1), Some(Revision(9)));
        assert_eq!(deliver(&mut set, &[], 9), vec![1]);
        assert_eq!(deliver(&mut set, &["/a"], 10), vec![1]);
    }

    #[test]
    fn removing_a_watch_takes_it_out_of_its_path() {
        let mut set = WatchSet::default();
        set.insert(1, exact("/a", 1));
        set.insert(2, exact("/a", 1));
        deliver(&mut set, &[], 1);
        assert!(set.remove(1));
        assert!(!set.remove(1));
        assert_eq!(deliver(&mut set, &["/a"], 2), vec![2]);
        assert!(set.remove(2));
        assert!(set.is_empty());
        assert!(set.current.is_empty() && set.others.is_empty());
    }

    #[test]
    fn idle_watches_report_the_revision_they_are_current_to() {
        let mut set = WatchSet::default();
        set.insert(1, exact("/a", 1));
        set.insert(2, exact("/b", 1));
        deliver(&mut set, &[], 7);
        set.get_mut(2).unwrap().last_sent = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(set.idle_since(Instant::now()), vec![(1, Revision(7))]);
    }
}
