//! `LostReason`: why a held recipe node can no longer be relied on.
//!
//! A leaf of the recipes, shared by the waits (a session lost while queueing) and the handles
//! (a node lost while held). Invariant: a reason, once reported, is final.

/// Why a held recipe node can no longer be relied on. Once a handle reports one, it never
/// becomes safe again: stop acting as the holder and acquire anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The cluster said the session expired or was closed; its nodes are deleted.
    SessionExpired,
    /// No keep-alive was acknowledged before the session's `safe_until`, and none can be: the
    /// `Session` was dropped (or closed) while the node was held, or (for an acquisition still
    /// waiting) the session passed `safe_until` while queueing. The cluster may have expired
    /// the session and handed the lock to someone else. A held node whose session merely
    /// cannot be confirmed is `Suspended` instead (see `HoldState`), not lost.
    SessionUnsafe,
    /// The node was deleted by someone else (an administrator, a recursive delete).
    NodeDeleted,
}
