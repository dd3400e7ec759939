//! `Barrier`: ZooKeeper's barrier. While the barrier node exists, `wait` blocks; removing the
//! node releases every waiter.
//!
//! Invariant: `wait` returns only after a linearizable read found the node missing, and it
//! watches before it reads, so a removal right after the read is still seen.
//! A barrier holds nothing on anyone's behalf (its node is persistent and no session owns
//! it), so it has no token, `lost` signal or `safe_until`.

use std::time::Duration;

use tokio::time::Instant;

use super::directory::check_name;
use super::wait::{persist, sleep_until_or_never, Attempted};
use crate::client::Client;
use crate::error::Error;
use crate::types::{CreateOptions, DeleteOptions};
use crate::watch::WatchOptions;

/// A barrier at a path such as `/barriers/deploy-42`: a coordinator [`Barrier::set`]s it,
/// workers [`Barrier::wait`] until it is [`Barrier::remove`]d.
///
/// Waiting retries through failures of the cluster for as long as it takes (or until the
/// timeout of [`Barrier::wait_timeout`]); it fails only on errors a retry cannot fix.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use coord_client::{Barrier, Client};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let barrier = Barrier::new(&client, "/barriers/deploy-42");
/// barrier.set().await?;
/// // ... elsewhere, workers block here ...
/// # let workers = async { barrier.wait().await };
/// // ... until the coordinator lifts it:
/// barrier.remove().await?;
/// # workers.await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Barrier {
    client: Client,
    path: String,
}

impl Barrier {
    /// A barrier at `path` (not the root).
    pub fn new(client: &Client, path: impl Into<String>) -> Barrier {
        Barrier {
            client: client.clone(),
            path: path.into(),
        }
    }

    /// The barrier node's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Raises the barrier: creates its node (and missing ancestors); fine if it exists.
    pub async fn set(&self) -> Result<(), Error> {
        check_name(&self.path)?;
        let options = CreateOptions {
            make_parents: true,
            ..CreateOptions::default()
        };
        match self.client.create(&self.path, "", &options).await {
            Ok(_) | Err(Error::NodeExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Lifts the barrier: deletes its node, releasing every waiter; fine if it is gone.
    pub async fn remove(&self) -> Result<(), Error> {
        check_name(&self.path)?;
        match self
            .client
            .delete(&self.path, DeleteOptions::default())
            .await
        {
            Ok(_) | Err(Error::NoNode { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Whether the barrier is up (a linearizable read).
    pub async fn is_set(&self) -> Result<bool, Error> {
        Ok(self.client.exists(&self.path).await?.is_some())
    }

    /// Waits until the barrier is not set.
    pub async fn wait(&self) -> Result<(), Error> {
        let lifted = self.wait_within(None).await?;
        debug_assert!(lifted, "waiting without a deadline ends when lifted");
        Ok(())
    }

    /// Waits until the barrier is not set, for at most `timeout`; `false` if it still was.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.wait_within(Some(Instant::now() + timeout)).await
    }

    async fn wait_within(&self, deadline: Option<Instant>) -> Result<bool, Error> {
        check_name(&self.path)?;
        let options = WatchOptions {
            path: self.path.clone(),
            once: true,
            ..WatchOptions::default()
        };
        loop {
            // Watch first, then read: whatever happens after the read reaches the watch.
            let watched = persist(None, deadline, || self.client.watch(options.clone())).await?;
            let Attempted::Done(mut watch) = watched else {
                return Ok(false);
            };
            match persist(None, deadline, || self.client.exists(&self.path)).await? {
                Attempted::Done(None) => return Ok(true),
                Attempted::Done(Some(_)) => {}
                Attempted::TimedOut => return Ok(false),
            }
            tokio::select! {
                // Any event (or the watch's end): read again.
                _ = watch.next() => {}
                () = sleep_until_or_never(deadline) => return Ok(false),
            }
        }
    }
}
