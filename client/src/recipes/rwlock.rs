//! `RwLock`: a FIFO read-write lock on a directory of ephemeral sequential `read-` and
//! `write-` nodes (ZooKeeper's shared-lock recipe).
//!
//! Invariants: a reader holds when no writer (or mutex) node precedes it and watches only the
//! last writer before it; a writer holds when it is first and watches only its immediate
//! predecessor. Arrival order is served, so a stream of readers cannot starve a writer.
//! Success is reported only after the re-check of `recipes`.

use std::time::Duration;

use super::guard::LockGuard;
use super::queue::{Queue, Rule};
use super::record::default_holder;
use super::role::Role;
use super::wait::Patience;
use crate::client::Client;
use crate::error::Error;
use crate::session::{Session, SessionView};

/// A distributed read-write lock named by a path such as `/locks/catalog`.
///
/// Many readers may hold it together; a writer holds it alone. Both kinds queue in arrival
/// order: a reader that arrives after a waiting writer waits for that writer. Guards are
/// [`LockGuard`]s, as for [`crate::recipes::Mutex`] (which counts as a writer here). A read
/// guard's token fences like any other, but readers overlap, so do not feed read tokens to a
/// [`crate::recipes::TokenVerifier`] that expects one holder at a time.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, RwLock};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let lock = RwLock::new(&client, &session, "/locks/catalog");
/// let reader = lock.read().await?;
/// // ... read, while other readers may too ...
/// reader.release().await?;
/// if let Some(writer) = lock.write_timeout(Duration::from_secs(5)).await? {
///     // ... write alone, fencing writes with writer.token() ...
///     writer.release().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RwLock {
    client: Client,
    session: SessionView,
    name: String,
    holder: String,
}

impl RwLock {
    /// A read-write lock named `name` (a path; not the root), taken on behalf of `session`.
    pub fn new(client: &Client, session: &Session, name: impl Into<String>) -> RwLock {
        RwLock {
            client: client.clone(),
            session: session.view(),
            name: name.into(),
            holder: default_holder(),
        }
    }

    /// Describes the holder in its node, for listings (default `pid:{process id}`).
    pub fn with_holder(mut self, holder: impl Into<String>) -> RwLock {
        self.holder = holder.into();
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for and takes a read lock (shared).
    pub async fn read(&self) -> Result<LockGuard, Error> {
        let acquired = LockGuard::acquire(&self.queue(Role::Read), Patience::Forever).await?;
        Ok(acquired.expect("waiting without a deadline ends in success or an error"))
    }

    /// Takes a read lock if no writer holds or waits before it; `None` otherwise.
    pub async fn try_read(&self) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(Role::Read), Patience::Try).await
    }

    /// Takes a read lock within `timeout`; `None` if it was not granted by then.
    pub async fn read_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(Role::Read), Patience::after(timeout)).await
    }

    /// Waits for and takes the write lock (exclusive).
    pub async fn write(&self) -> Result<LockGuard, Error> {
        let acquired = LockGuard::acquire(&self.queue(Role::Write), Patience::Forever).await?;
        Ok(acquired.expect("waiting without a deadline ends in success or an error"))
    }

    /// Takes the write lock if nobody holds or waits for the lock; `None` otherwise.
    pub async fn try_write(&self) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(Role::Write), Patience::Try).await
    }

    /// Takes the write lock within `timeout`; `None` if it was not granted by then.
    pub async fn write_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        LockGuard::acquire(&self.queue(Role::Write), Patience::after(timeout)).await
    }

    fn queue(&self, role: Role) -> Queue<'_> {
        Queue {
            client: &self.client,
            session: &self.session,
            name: &self.name,
            role,
            rule: if role == Role::Read {
                Rule::Shared
            } else {
                Rule::Exclusive
            },
            payload: self.holder.as_bytes(),
        }
    }
}
