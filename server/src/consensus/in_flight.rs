//! `InFlight`: the entries (or forwarded batches) a batcher has out at once, and when what it
//! holds leaves alone or gathers. Shared by `WriteBatcher` (a leader's log entries) and
//! `ForwardBatcher` (a follower's forwarded batches).
//!
//! Under load, writes arrive in bursts: the answers of one entry go out together, and their
//! clients' next writes come back together, decoded one after another in one turn of the
//! worker. A batcher that sent what it held whenever it had a turn free sent the first writes of
//! each burst one apiece, each taking a turn for a whole round, and left the rest to wait for one:
//! with 64 writers, 73 % of a leader's entries and of a follower's forwarded batches held a
//! single write. So:
//!
//! - with others out, a batcher first lets the rest of the burst reach its queue (`turn` yields
//!   once; tokio runs a yielded task after the worker's other ready tasks), then gathers;
//! - a write goes alone, by its own task and without a hand-off to the batcher, only while
//!   nothing is out (`alone`): a lone writer waits for nothing. Letting it go alone while one
//!   other was out too settled, at 64 writers, into most entries holding one write again (6,973
//!   of 8,821 in one run), each write's answer coming back while one entry was out.
//!
//! Invariant: at most `max` turns are held at once; a turn is given back when its permit drops.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Turns to send an entry or a batch (see the module documentation).
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
}

impl InFlight {
    /// At most `max` out at once.
    pub fn new(max: usize) -> InFlight {
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// How many turns are held now.
    pub fn out(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A turn for a write that goes alone, when nothing is `waiting` in the batcher's queue and
    /// nothing is out; `None` otherwise (the write queues).
    pub fn alone(&self, waiting: usize) -> Option<OwnedSemaphorePermit> {
        if waiting > 0 || self.out() > 0 {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits for a turn for what the batcher holds; with others out, yields once before
    /// returning, so that writes decoded in this turn of the worker join the batch.
    pub async fn turn(&self) -> OwnedSemaphorePermit {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if self.out() > 1 {
            tokio::task::yield_now().await;
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn a_write_goes_alone_only_while_nothing_waits_and_nothing_is_out() {
        let in_flight = InFlight::new(4);
        assert!(in_flight.alone(1).is_none(), "a write waits in the queue");
        let first = in_flight.alone(0).expect("nothing out");
        assert_eq!(in_flight.out(), 1);
        assert!(in_flight.alone(0).is_none(), "one out: it queues");
        drop(first);
        assert_eq!(in_flight.out(), 0, "a turn is given back with its permit");
        assert!(in_flight.alone(0).is_some());
    }

    /// Spawns a task (on the test's one thread it runs only once this one yields) and returns
    /// whether it has run.
    fn spawn_flag() -> Arc<AtomicBool> {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        ran
    }

    #[tokio::test]
    async fn a_batcher_with_others_out_lets_the_ready_tasks_run_first() {
        let in_flight = InFlight::new(4);
        let ran = spawn_flag();
        let first = in_flight.turn().await;
        assert!(
            !ran.load(Ordering::SeqCst),
            "nothing else out: the turn comes at once"
        );
        let _second = in_flight.turn().await;
        assert!(
            ran.load(Ordering::SeqCst),
            "one out: the ready task ran first"
        );
        drop(first);
    }
}
