//! `TurnWaiters`: the member's `AwaitTurn` waits, filed under the paths whose change can end
//! them (a waiter's nearest blocker and its own node, or a semaphore's directory). The apply
//! observer hands it the paths of each applied batch's events, and it wakes only the waits
//! filed under one of them: an applied write costs a lookup per event, not a wake-up per
//! waiting client.
//!
//! Invariant: a wait registered before it reads the tree is woken by every later applied
//! change of a path it is filed under (a `Notify` keeps the wake-up if the wait is not yet
//! asleep), so checking the tree after registering misses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::fsm::NodePath;

#[derive(Debug, Default)]
pub struct TurnWaiters {
    by_path: Mutex<HashMap<NodePath, HashMap<u64, Arc<Notify>>>>,
    /// Registrations alive, so that a batch with nobody waiting takes no lock.
    registered: AtomicUsize,
    next_id: AtomicU64,
}

/// A wait's place in `TurnWaiters`: filed under `paths` until dropped.
pub struct TurnRegistration {
    waiters: Arc<TurnWaiters>,
    id: u64,
    paths: Vec<NodePath>,
}

impl TurnRegistration {
    /// The paths this wait is filed under.
    pub fn paths(&self) -> &[NodePath] {
        &self.paths
    }
}

impl Drop for TurnRegistration {
    fn drop(&mut self) {
        let mut by_path = self.waiters.by_path();
        for path in &self.paths {
            if let Some(waits) = by_path.get_mut(path) {
                waits.remove(&self.id);
                if waits.is_empty() {
                    by_path.remove(path);
                }
            }
        }
        self.waiters.registered.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TurnWaiters {
    fn by_path(&self) -> MutexGuard<'_, HashMap<NodePath, HashMap<u64, Arc<Notify>>>> {
        // Nothing panics while holding the lock.
        self.by_path.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Files `wake` under each of `paths` until the registration is dropped.
    pub fn register(self: &Arc<Self>, paths: Vec<NodePath>, wake: Arc<Notify>) -> TurnRegistration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.registered.fetch_add(1, Ordering::Relaxed);
        let mut by_path = self.by_path();
        for path in &paths {
            by_path
                .entry(path.clone())
                .or_default()
                .insert(id, wake.clone());
        }
        drop(by_path);
        TurnRegistration {
            waiters: self.clone(),
            id,
            paths,
        }
    }

    /// Wakes every wait filed under one of `paths` (those an applied batch changed).
    pub fn touched<'a>(&self, paths: impl IntoIterator<Item = &'a NodePath>) {
        if self.registered.load(Ordering::Relaxed) == 0 {
            return;
        }
        let by_path = self.by_path();
        for path in paths {
            for wake in by_path.get(path).into_iter().flat_map(HashMap::values) {
                wake.notify_one();
            }
        }
    }

    /// Wakes every wait (the whole tree was replaced by a snapshot).
    pub fn wake_all(&self) {
        for wake in self.by_path().values().flat_map(HashMap::values) {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> NodePath {
        NodePath::parse(text).expect("a valid path")
    }

    /// Whether `wake` holds a wake-up (taking it).
    fn woken(wake: &Notify) -> bool {
        futures::FutureExt::now_or_never(wake.notified()).is_some()
    }

    #[test]
    fn only_waits_filed_under_a_touched_path_wake_and_a_drop_unfiles() {
        let waiters = Arc::new(TurnWaiters::default());
        let (first, second) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let one = waiters.register(vec![path("/q/lock-1"), path("/q/lock-2")], first.clone());
        let two = waiters.register(vec![path("/q/lock-2"), path("/q/lock-3")], second.clone());
        assert_eq!(waiters.registered.load(Ordering::Relaxed), 2);
        waiters.touched([&path("/q/lock-1"), &path("/q")]);
        assert!(woken(&first));
        assert!(!woken(&second));
        // A wake-up before the wait sleeps is kept for it.
        waiters.touched([&path("/q/lock-2")]);
        assert!(woken(&first) && woken(&second));
        assert_eq!(one.paths(), [path("/q/lock-1"), path("/q/lock-2")]);
        drop(one);
        waiters.touched([&path("/q/lock-1"), &path("/q/lock-2")]);
        assert!(!woken(&first));
        assert!(woken(&second));
        waiters.wake_all();
        assert!(woken(&second));
        drop(two);
        assert_eq!(waiters.registered.load(Ordering::Relaxed), 0);
        assert!(waiters.by_path().is_empty());
    }
}
