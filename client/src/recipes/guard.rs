//! `LockGuard`: a held mutex, read lock, write lock or semaphore permit.
//!
//! Invariant: a guard exists only for a node that was confirmed after its last wait (see the
//! module documentation of `recipes`); from then on its `HoldState` (of `HeldNode`: `state`,
//! `suspended`, `resumed`, `lost`, `is_safe`) says whether it may act.

use super::held_node::{sealed, HeldNode};
use super::holding::Holding;
use super::queue::Queue;
use super::wait::Patience;
use crate::error::Error;
use crate::txn::Txn;

/// A held lock or permit: a [`crate::recipes::Mutex`], a read or write lock of a
/// [`crate::recipes::RwLock`], or a permit of a [`crate::recipes::Semaphore`].
///
/// Holding it means: the node at [`HeldNode::path`] existed with create revision
/// [`HeldNode::token`] when the turn came, and the session was certainly alive. That stays
/// true while [`HeldNode::is_safe`] holds. It does not by itself stop a paused or slow holder
/// from acting after its session expired: give the token to whatever you protect (see
/// [`LockGuard::fence`] and [`crate::recipes::TokenVerifier`]).
///
/// Release it with [`LockGuard::release`]. Dropping it instead spawns a best-effort, fenced
/// delete of its node (on the current Tokio runtime, if any); the session's end releases it in
/// any case. Its accessors (`token`, `path`, `suspended`, `lost`, ...) are those of
/// [`HeldNode`].
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, HeldNode, Mutex, Op, Txn};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let guard = Mutex::new(&client, &session, "/locks/report").acquire().await?;
/// tokio::select! {
///     // Suspended (the session cannot be confirmed in time) or lost: stop writing.
///     state = guard.suspended() => eprintln!("stopped holding: {state:?}"),
///     result = async {
///         // Writes through Coord are refused once another holder has the lock.
///         client.txn(guard.fence(Txn::new().then(Op::set("/report/state", "done", None)))).await
///     } => { result?; }
/// }
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
pub struct LockGuard {
    holding: Holding,
}

impl LockGuard {
    /// Runs `queue`'s acquisition within `patience` and wraps the holding it returns: the
    /// acquisition of a `Mutex`, an `RwLock` reader or writer, or a `Semaphore` permit.
    pub(crate) async fn acquire(
        queue: &Queue<'_>,
        patience: Patience,
    ) -> Result<Option<LockGuard>, Error> {
        let acquired = queue.acquire(patience).await?;
        Ok(acquired.map(|acquired| LockGuard {
            holding: acquired.holding,
        }))
    }

    /// Adds this holder's fence to `txn`: the cluster refuses the whole txn with
    /// [`Error::FenceRejected`] unless this node still holds the lock.
    pub fn fence(&self, txn: Txn) -> Txn {
        self.holding.fence(txn)
    }

    /// Releases the lock: deletes this holder's node if it is still there (fine if already
    /// gone). On an error the drop retries in the background.
    pub async fn release(self) -> Result<(), Error> {
        self.holding.release().await
    }
}

impl sealed::Holder for LockGuard {
    fn holding(&self) -> &Holding {
        &self.holding
    }
}

impl HeldNode for LockGuard {}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.holding.debug_as("LockGuard", formatter)
    }
}
