//! `HeldNode`: the accessors every handle on a held recipe node shares ([`LockGuard`],
//! [`Leadership`], [`Participation`]), written once as default methods over the handle's
//! `Holding`.
//!
//! The trait is sealed: only this crate's handles implement it, because its guarantees (a
//! confirmed node, a monitor that reports its loss) come from how the recipes build a
//! `Holding`, which nobody outside can do.
//!
//! [`LockGuard`]: crate::recipes::LockGuard
//! [`Leadership`]: crate::recipes::Leadership
//! [`Participation`]: crate::recipes::Participation

use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

use super::fence::Sequencer;
use super::hold_state::HoldState;
use super::holding::Holding;
use super::lost_reason::LostReason;

/// A handle on a recipe node that this process holds: a lock or permit ([`LockGuard`]),
/// leadership ([`Leadership`]) or a place inside a double barrier ([`Participation`]).
///
/// Holding means: the node at [`HeldNode::path`] existed with create revision
/// [`HeldNode::token`] after the recipe's last wait, and the session was certainly alive then.
/// From then on the handle is in one of three states ([`HoldState`]):
///
/// - `Held`: act as the holder; [`HeldNode::is_safe`] is true;
/// - `Suspended`: the session cannot be confirmed alive in time (no keep-alive acknowledged
///   for two thirds of the TTL, say during a partition): stop acting now, since the cluster
///   may expire the session soon. [`HeldNode::suspended`] resolves. If a keep-alive is
///   acknowledged again and the node is still there, the handle is `Held` again with the
///   same token ([`HeldNode::resumed`] resolves);
/// - `Lost`: the session expired or the node is gone; final. [`HeldNode::lost`] resolves.
///
/// Bring the trait into scope to call these methods:
///
/// ```no_run
/// # async fn example(mutex: coord_client::Mutex) -> Result<(), coord_client::Error> {
/// use coord_client::{HeldNode, HoldState};
/// let guard = mutex.acquire().await?;
/// println!("{} holds {} with token {}", guard.path(), guard.name(), guard.token());
/// loop {
///     // Work while held; pause while suspended; stop for good once lost.
///     tokio::select! {
///         state = guard.suspended() => {
///             if let HoldState::Lost(reason) = state {
///                 eprintln!("lost: {reason:?}");
///                 break;
///             }
///             eprintln!("suspended: pausing until the session is confirmed");
///             if let Err(reason) = guard.resumed().await {
///                 eprintln!("lost while suspended: {reason:?}");
///                 break;
///             }
///             eprintln!("resumed with the same token {}", guard.token());
///         }
///         () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
///             // ... one bounded step of work, passing guard.token() downstream ...
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
///
/// [`LockGuard`]: crate::recipes::LockGuard
/// [`Leadership`]: crate::recipes::Leadership
/// [`Participation`]: crate::recipes::Participation
pub trait HeldNode: sealed::Holder {
    /// The recipe's name (its directory), as given to the recipe.
    fn name(&self) -> &str {
        self.holding().name()
    }

    /// The path of this holder's node.
    fn path(&self) -> &str {
        self.holding().path()
    }

    /// The fencing token: the node's create revision, strictly greater for every later holder
    /// of the same name. It does not change across a suspension and resumption.
    fn token(&self) -> u64 {
        self.holding().token()
    }

    /// The session's `safe_until`: until then, the session cannot have expired on the server
    /// (given a bounded clock-rate drift); keep-alives move it forward. Suspension comes
    /// before it, leaving the holder time to stop.
    fn safe_until(&self) -> Instant {
        self.holding().safe_until()
    }

    /// The state now: `Held`, `Suspended` or `Lost`.
    fn state(&self) -> HoldState {
        self.holding().state()
    }

    /// A receiver that sees every change of state, as the handle's monitor publishes it.
    fn watch_state(&self) -> watch::Receiver<HoldState> {
        self.holding().watch_state()
    }

    /// Whether the holder may act now: `Held`, and the session certainly alive.
    fn is_safe(&self) -> bool {
        self.holding().is_safe()
    }

    /// Whether the handle is suspended now (not lost: it may resume).
    fn is_suspended(&self) -> bool {
        self.state() == HoldState::Suspended
    }

    /// Why the node was lost, if it was.
    fn lost_reason(&self) -> Option<LostReason> {
        self.holding().lost_reason()
    }

    /// Resolves as soon as the holder must stop acting: with `Suspended`, or with `Lost` if
    /// the loss comes first (at once if the handle is not `Held` now). Cancel-safe; may be
    /// awaited any number of times.
    fn suspended(&self) -> impl Future<Output = HoldState> + Send {
        self.holding().suspended()
    }

    /// Resolves when the handle is `Held` (at once if it is), or with the reason once it is
    /// lost. Cancel-safe.
    fn resumed(&self) -> impl Future<Output = Result<(), LostReason>> + Send {
        self.holding().resumed()
    }

    /// Resolves when the node is lost for good: the cluster expired (or closed) the session,
    /// the node was deleted, or the `Session` was dropped and its `safe_until` passed. Not on a
    /// suspension (see [`HeldNode::suspended`]). Cancel-safe; may be awaited any number of
    /// times.
    fn lost(&self) -> impl Future<Output = LostReason> + Send {
        self.holding().lost()
    }

    /// The name, path and token to hand to a downstream resource.
    fn sequencer(&self) -> Sequencer {
        self.holding().sequencer()
    }
}

/// The supertrait that seals [`HeldNode`]: public in name so the trait can require it, but in
/// a module nobody outside the crate can reach.
pub(crate) mod sealed {
    use super::Holding;

    /// Gives [`super::HeldNode`]'s default methods the handle's holding.
    pub trait Holder {
        /// The held node behind the handle.
        fn holding(&self) -> &Holding;
    }
}
