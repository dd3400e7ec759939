//! `WatchBudget`: the member's watches against `--max-watches`, over all streams and waiting
//! `AwaitTurn`s, and `WatchCounters`, what the watch service counts for the metrics. Shared by
//! `watch_service.rs` and `await_turn.rs`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the watch service counts, shared with the metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Watches served now (`coord_watches_active`).
    pub active: AtomicUsize,
    /// Events delivered to watchers (`coord_watch_events_sent_total`).
    pub events_sent: AtomicU64,
    /// Watches cancelled because their watcher fell too far behind
    /// (`coord_watches_cancelled_too_slow_total`).
    pub cancelled_too_slow: AtomicU64,
    /// Wake-ups of waiting `AwaitTurn`s, each followed by a check of the turn
    /// (`coord_await_turn_wakeups_total`): one per hand-off when nothing herds.
    pub turn_wakeups: AtomicU64,
}

/// The watches this member serves over all streams, against `--max-watches`.
pub(super) struct WatchBudget {
    counters: Arc<WatchCounters>,
    pub(super) max: usize,
}

/// One watch's place in the budget, given back on drop (an `AwaitTurn` that waits holds one).
pub(super) struct BudgetPlace(Arc<WatchBudget>);

impl Drop for BudgetPlace {
    fn drop(&mut self) {
        self.0.give_back(1);
    }
}

impl WatchBudget {
    pub(super) fn new(max: usize) -> WatchBudget {
        WatchBudget {
            counters: Arc::new(WatchCounters::default()),
            max,
        }
    }

    pub(super) fn counters(&self) -> &WatchCounters {
        &self.counters
    }

    /// The counters, to share with the metrics.
    pub(super) fn shared_counters(&self) -> Arc<WatchCounters> {
        self.counters.clone()
    }

    /// Takes one place until the returned guard drops; `None` when the member serves its most.
    pub(super) fn place(self: &Arc<Self>) -> Option<BudgetPlace> {
        self.take().then(|| BudgetPlace(self.clone()))
    }

    /// Takes one watch's place; false when the member serves its most already.
    pub(super) fn take(&self) -> bool {
        self.counters
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |active| {
                (active < self.max).then_some(active + 1)
            })
            .is_ok()
    }

    pub(super) fn give_back(&self, watches: usize) {
        self.counters.active.fetch_sub(watches, Ordering::Relaxed);
    }
}
