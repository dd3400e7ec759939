//! Coordination recipes: mutex, read-write lock, semaphore, leader election, barrier and
//! double barrier, built on sessions, ephemeral sequential nodes and watches; plus fencing
//! helpers ([`TokenVerifier`], [`Sequencer`]) and introspection ([`list_locks`]).
//!
//! What it owns: the nodes its recipes create under a recipe *name* (a directory path such as
//! `/locks/db`), from their creation until they are handed to the caller inside a handle
//! ([`LockGuard`], [`Leadership`], [`Participation`], whose shared accessors are those of
//! [`HeldNode`]) or deleted.
//! What it must never do: report a lock, permit, leadership or barrier entry that it has not
//! just confirmed, or leave behind a node that nobody will delete.
//!
//! # Invariants
//!
//! - **Confirmed success.** After every wait a recipe checks its turn again: the member it
//!   waits on answers `AwaitTurn` from its applied tree (or, with a member that predates that
//!   call, the recipe lists its directory itself); it reports success only if that check found
//!   its own node with its token (the node's create revision) and granted the turn, and if the
//!   session is safe ([`crate::Session::is_safe`]) when checked after that read. Success therefore means:
//!   the node existed after the last wait, and the session cannot expire before `safe_until`.
//!   A failed check is a typed error ([`crate::Error::LockLost`],
//!   [`crate::Error::SessionExpired`], [`crate::Error::SessionUnsafe`]), never a success.
//!   (Jepsen found etcd's lock telling a waiter "locked" after its lease had expired.)
//! - **No orphan.** A node whose acquisition does not complete (try failed, timeout, error, or
//!   the future dropped) is deleted: inline when possible, otherwise by a task spawned from a
//!   drop guard. A create whose outcome is unknown is sent again with the *same* write id, which
//!   the cluster applies at most once and answers with the first outcome, so the recipe learns
//!   whether and where its node exists instead of guessing.
//! - **No herd.** A mutex, writer or candidate waits only on its immediate predecessor; a reader
//!   only on the last writer before it (the member files an `AwaitTurn` under that node, and a
//!   waiter that lists and watches watches it). A semaphore and a double barrier wait on their
//!   directory's child list: correctness needs a count, not one node (see their docs); a
//!   semaphore's waiters are then woken on the member, without a message each.
//! - **Tokens.** A holder's fencing token is its node's `create_revision`: strictly greater for
//!   every later holder of the same name, because revisions strictly increase.
//!
//! # Layout of a recipe directory
//!
//! ```text
//! /locks/db                      the directory: created persistent on first use (with its
//! │                              ancestors); a semaphore's records `permits=N`
//! ├── lock-0000000007            Mutex          (ephemeral, sequential)
//! ├── read-0000000008            RwLock reader
//! ├── write-0000000009           RwLock writer
//! ├── permit-0000000010          Semaphore      (in its own directory)
//! ├── candidate-0000000011       Election       (in its own directory)
//! ├── member-0000000012, ready   DoubleBarrier  (in its own directory)
//! ```
//!
//! A directory stays after its last node goes, so that the next acquisition costs one write,
//! not three (a container would vanish with each release and have to be created again);
//! delete it when the name is retired. A directory created beforehand as a container works
//! too: it goes with its last node, and the next acquisition recreates it as persistent.
//!
//! Waiters are ordered by the sequence suffix, which the parent assigns in commit order; the
//! lowest is served first (FIFO, so writers do not starve).
//! Every recipe node holds `"{unix_ms}\n{attempt}\n{payload}"`: the wall-clock time at which it
//! queued (rewritten with the grant time when it had to wait), a unique id of the creating
//! attempt (used to recognise the node after an unknown outcome), and the caller's payload (the
//! holder's description, or an election's value). The time is for people reading listings;
//! no decision depends on it.
//!
//! # Acquisition
//!
//! ```text
//!  create ephemeral sequential node ──(unknown outcome: resend the same write id)
//!        │
//!        ▼
//!  AwaitTurn on a member: it checks the turn at once and after each change
//!  of the waiter's predecessor (or directory), and answers when granted
//!  (or after 30 s, then asked again) ──► granted at revision R:
//!        │                               session safe? ─► handle + monitor
//!        │ UNIMPLEMENTED (an older member): the client's own loop below
//!        ▼
//!  list the directory (linearizable) at revision R ◄─────────────────┐
//!        │ own node missing, or another token ─► Err(LockLost)       │
//!        ├─ granted ───► session safe? ─► handle + monitor           │ event, Compacted,
//!        │               (if it waited and holds a second later:     │ or watch failure
//!        │               stamp the grant time, fenced)               │
//!        └─ not yet ───► watch the predecessor from R + 1, once ─────┘
//!                        (session lost ─► Err; deadline ─► delete node, None)
//! ```
//!
//! A handle's monitor (a background task) watches the session and the node, and moves the
//! handle's [`HoldState`]: `Suspended` (and `is_safe` false) as soon as the session cannot be
//! confirmed alive in time, `Held` again with the same token once it is confirmed and the node
//! is still there, `Lost` ([`HeldNode::lost`] resolves) when the session expires, the node is
//! deleted, or the [`crate::Session`] was dropped and its `safe_until` passed. Keep the
//! `Session` alive while holding anything: dropping it stops its keep-alives.

mod barrier;
mod cleanup;
mod directory;
mod double_barrier;
mod election;
mod fence;
mod guard;
mod held_node;
mod hold_state;
mod holding;
mod listing;
mod lost_reason;
mod mutex;
mod pending;
mod queue;
mod record;
mod role;
mod rwlock;
mod semaphore;
mod wait;

pub use barrier::Barrier;
pub use double_barrier::{DoubleBarrier, Participation};
pub use election::{Election, LeaderChanges, LeaderInfo, Leadership};
pub use fence::{admit, Sequencer, StaleToken, TokenVerifier};
pub use guard::LockGuard;
pub use held_node::HeldNode;
pub use hold_state::HoldState;
pub use listing::{list_elections, list_locks, ElectionInfo, LockInfo, LockKind, Participant};
pub use lost_reason::LostReason;
pub use mutex::Mutex;
pub use role::Role;
pub use rwlock::RwLock;
pub use semaphore::Semaphore;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use std::time::Duration;

    fn send<T: Send>(_: T) {}

    fn send_sync<T: Send + Sync>() {}

    /// Recipes, their futures and their handles can move between tasks (`tokio::spawn`).
    #[allow(dead_code, reason = "type-checked, never run")]
    fn recipes_work_across_tasks(
        client: &Client,
        recipes: (
            &Mutex,
            &RwLock,
            &Semaphore,
            &Election,
            &Barrier,
            &DoubleBarrier,
        ),
        handles: (LockGuard, Leadership, Participation),
    ) {
        let (mutex, rwlock, semaphore, election, barrier, double_barrier) = recipes;
        send(mutex.acquire());
        send(mutex.try_acquire());
        send(mutex.acquire_timeout(Duration::ZERO));
        send(rwlock.read());
        send(rwlock.write());
        send(semaphore.acquire());
        send(election.campaign("value"));
        send(Election::leader(client, "/e"));
        send(barrier.wait());
        send(double_barrier.enter());
        send(list_locks(client, "/"));
        send(list_elections(client, "/"));
        let (guard, mut leadership, participation) = handles;
        send(guard.lost());
        send(guard.suspended());
        send(guard.resumed());
        send(leadership.proclaim("value"));
        send(leadership.lost());
        send(participation.leave());
        send(guard.release());
        send(leadership.resign());
        send_sync::<LockGuard>();
        send_sync::<Leadership>();
        send_sync::<Participation>();
        send_sync::<LeaderChanges>();
        send_sync::<Mutex>();
        send_sync::<TokenVerifier>();
    }
}
