//! The one lock-poisoning policy of the client and `coordctl`: a poisoned `std::sync::Mutex`
//! is used as it is (`PoisonError::into_inner`), never turned into a panic.
//!
//! Why this policy: every critical section here only reads or replaces plain values (a
//! deadline, a set of sequence numbers, the highest token per name) and calls nothing that can
//! panic halfway through an update, so the data behind a poisoned lock is still consistent;
//! and a library must not turn a panic in one of its caller's threads into a panic in every
//! later call. Every lock in this crate is taken through `lock`. `coordctl` takes no
//! `std::sync` lock of its own; if it ever does, it follows the same policy.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the guard of a poisoned lock as it is (see the module documentation).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
