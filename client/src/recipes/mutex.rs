//! `Mutex`: a FIFO-fair distributed lock (ZooKeeper's lock recipe) on a directory of
//! ephemeral sequential `lock-` nodes; the lowest holds, each waiter watches its predecessor.
//!
//! Invariant: `acquire` reports success only after the re-check of `recipes` (own node present
//! with its token after the last wait, then the session safe); any node of an abandoned
//! attempt is deleted.

use std::time::Duration;

use super::guard::LockGuard;
use super::queue::{Queue, Rule};
use super::record::default_holder;
use super::role::Role;
use super::wait::Patience;
use crate::client::Client;
use crate::error::Error;
use crate::session::{Session, SessionView};

/// A distributed mutual-exclusion lock named by a path such as `/locks/db`.
///
/// Acquiring creates an ephemeral sequential node `{name}/lock-NNNNNNNNNN` owned by the
/// session; the lowest node holds the lock and the others queue in arrival order (FIFO),
/// each watching only its immediate predecessor. The fencing token is the node's create
/// revision. Every acquisition is cancel-safe: a timed-out, failed or dropped attempt deletes
/// its node. Not reentrant: a second acquisition through the same session queues behind the
/// first.
///
/// The directory `{name}` (and its ancestors) is created as a persistent node if missing, and
/// stays. An [`crate::recipes::RwLock`] of the same name treats this mutex as a writer.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, HeldNode, Mutex};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let mutex = Mutex::new(&client, &session, "/locks/db").with_holder("backup job on host-7");
/// let guard = mutex.acquire().await?;
/// println!("holding {} with token {}", guard.path(), guard.token());
/// // ... work, checking guard.is_safe() and passing guard.token() downstream ...
/// guard.release().await?;
///
/// match mutex.try_acquire().await? {
///     Some(guard) => guard.release().await?,
///     None => println!("someone else holds it"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Mutex {
    client: Client,
    session: SessionView,
    name: String,
    holder: String,
}

impl Mutex {
    /// A mutex named `name` (a path; not the root), acquired on behalf of `session`.
    /// Keep the session alive while holding the lock.
    pub fn new(client: &Client, session: &Session, name: impl Into<String>) -> Mutex {
        Mutex {
            client: client.clone(),
            session: session.view(),
            name: name.into(),
            holder: default_holder(),
        }
    }

    /// Describes the holder in its node, for listings (default `pid:{process id}`).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Mutex {
        self.holder = holder.into();
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits as long as it takes (while the session is safe) and acquires the lock.
    ///
    /// Fails with [`Error::SessionExpired`] or [`Error::SessionUnsafe`] if the session is
    /// lost while waiting, and with [`Error::LockLost`] if the node vanished (an
    /// administrator deleted it, say).
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let acquired = LockGuard::acquire(&self.queue(), Patience::Forever).await?;
        Ok(acquired.expect("waiting without a deadline ends in success or an error"))
    }

    /// Acquires the lock if it is free now; `None` (and no node left behind) if it is held.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(), Patience::Try).await
    }

    /// Acquires the lock within `timeout`; `None` (and no node left behind) if it was not
    /// free by then.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(), Patience::after(timeout)).await
    }

    fn queue(&self) -> Queue<'_> {
        Queue {
            client: &self.client,
            session: &self.session,
            name: &self.name,
            role: Role::Lock,
            rule: Rule::Exclusive,
            payload: self.holder.as_bytes(),
        }
    }
}
