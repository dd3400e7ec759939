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

use tokio::time::Instant;

use super::fence::Sequencer;
use super::holding::Holding;
use super::lost_reason::LostReason;

/// A handle on a recipe node that this process holds: a lock or permit ([`LockGuard`]),
/// leadership ([`Leadership`]) or a place inside a double barrier ([`Participation`]).
///
/// Holding means: the node at [`HeldNode::path`] existed with create revision
/// [`HeldNode::token`] after the recipe's last wait, and the session was certainly alive then.
/// That stays true while [`HeldNode::is_safe`] holds; [`HeldNode::lost`] resolves when it may
/// no longer. Bring the trait into scope to call these methods:
///
/// ```no_run
/// # async fn example(mutex: coord_client::Mutex) -> Result<(), coord_client::Error> {
/// use coord_client::HeldNode;
/// let guard = mutex.acquire().await?;
/// println!("{} holds {} with token {}", guard.path(), guard.name(), guard.token());
/// tokio::select! {
///     reason = guard.lost() => eprintln!("lost: {reason:?}"),
///     () = tokio::time::sleep_until(guard.safe_until()) => {}
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
    /// of the same name.
    fn token(&self) -> u64 {
        self.holding().token()
    }

    /// The session's `safe_until`: until then, the session cannot have expired on the server
    /// (given a bounded clock-rate drift); keep-alives move it forward.
    fn safe_until(&self) -> Instant {
        self.holding().safe_until()
    }

    /// Whether the node is certainly still held: not lost, and the session certainly alive.
    fn is_safe(&self) -> bool {
        self.holding().is_safe()
    }

    /// Why the node was lost, if [`HeldNode::lost`] has resolved.
    fn lost_reason(&self) -> Option<LostReason> {
        self.holding().lost_reason()
    }

    /// Resolves when the node may have been lost: the session expired, the session passed
    /// `safe_until` without a keep-alive acknowledged, or the node was deleted. Cancel-safe;
    /// may be awaited any number of times.
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
