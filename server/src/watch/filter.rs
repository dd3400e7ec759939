//! `WatchFilter`: which events one watch asked for: a path or a whole subtree, and optionally
//! only some kinds of event. Pure; the watch service applies it to the shared history.

use std::collections::BTreeSet;

use crate::fsm::{EventKind, NodePath, WatchEvent};

/// The kinds of event a watch can ask for (a deletion of any reason is `Deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventClass {
    Created,
    DataChanged,
    Deleted,
    ChildrenChanged,
}

impl EventClass {
    pub fn of(kind: &EventKind) -> EventClass {
        match kind {
            EventKind::Created => EventClass::Created,
            EventKind::DataChanged => EventClass::DataChanged,
            EventKind::Deleted(_) => EventClass::Deleted,
            EventKind::ChildrenChanged => EventClass::ChildrenChanged,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchFilter {
    pub path: NodePath,
    /// The whole subtree under `path`, not only `path` itself.
    pub recursive: bool,
    /// Empty: every kind.
    pub classes: BTreeSet<EventClass>,
}

impl WatchFilter {
    /// Whether `path` is one this filter watches (whatever the event's kind).
    pub fn covers(&self, path: &NodePath) -> bool {
        if !self.recursive {
            return *path == self.path;
        }
        self.path.is_root()
            || *path == self.path
            || path
                .as_str()
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    pub fn matches(&self, event: &WatchEvent) -> bool {
        self.covers(&event.path)
            && (self.classes.is_empty() || self.classes.contains(&EventClass::of(&event.kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> NodePath {
        NodePath::parse(text).unwrap()
    }

    fn filter(watched: &str, recursive: bool) -> WatchFilter {
        WatchFilter {
            path: path(watched),
            recursive,
            classes: BTreeSet::new(),
        }
    }

    #[test]
    fn a_recursive_filter_covers_the_subtree_and_not_a_sibling_sharing_a_prefix() {
        let subtree = filter("/app", true);
        assert!(subtree.covers(&path("/app")));
        assert!(subtree.covers(&path("/app/x/y")));
        assert!(!subtree.covers(&path("/apple")));
        assert!(!subtree.covers(&path("/")));
        assert!(filter("/", true).covers(&path("/anything")));
        let exact = filter("/app", false);
        assert!(exact.covers(&path("/app")));
        assert!(!exact.covers(&path("/app/x")));
    }
}
