//! `DoubleBarrier`: ZooKeeper's double barrier. Participants `enter` and block until `count`
//! of them are in; they `leave` and block until all have left.
//!
//! Layout: under the barrier's directory (persistent, created on first use), each participant
//! is an ephemeral sequential `member-` node; the participant that first sees `count` members
//! creates the persistent marker `ready`, which lets every participant through (including late
//! arrivals of the same round). The last participant to see no members left deletes `ready`,
//! so the name can be used for another round. (A participant of the next round that arrives
//! before that deletion passes at once, as a late arrival of the old round; give each round
//! its own name where that matters.)
//!
//! Invariants: `enter` returns a `Participation` only after the re-check of `recipes` (its
//! member node present with its token, then the session safe); an abandoned `enter` deletes
//! its member node. A participant that crashes keeps its member node until its session
//! expires, so the others' `leave` completes only after that session's TTL.
//!
//! Herd trade-off: participants watch the directory's child list, so each arrival or departure
//! wakes every waiter, which lists the directory again. Barriers are small; this keeps the
//! recipe short and obviously correct.

use std::time::Duration;

use tokio::time::Instant;

use super::directory::{child_path, list_directory};
use super::held_node::{sealed, HeldNode};
use super::holding::Holding;
use super::queue::Queued;
use super::record::default_holder;
use super::role::Role;
use super::wait::{persist, wait_for_change, Attempted, Patience, Woken};
use crate::client::Client;
use crate::error::Error;
use crate::session::{Session, SessionView};
use crate::types::{CreateOptions, DeleteOptions};
use crate::watch::WatchOptions;

/// The marker that opens the barrier.
const READY: &str = "ready";

/// A double barrier named by a path such as `/barriers/stage-2`, for `count` participants.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, DoubleBarrier};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let barrier = DoubleBarrier::new(&client, &session, "/barriers/stage-2", 3);
/// let participation = barrier.enter().await?; // returns once three have entered
/// // ... the computation all three run together ...
/// participation.leave().await?; // returns once all three have left
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DoubleBarrier {
    client: Client,
    session: SessionView,
    name: String,
    count: u64,
    holder: String,
}

impl DoubleBarrier {
    /// A double barrier named `name` (a path; not the root) for `count` participants (at
    /// least one), entered on behalf of `session`.
    pub fn new(
        client: &Client,
        session: &Session,
        name: impl Into<String>,
        count: u64,
    ) -> DoubleBarrier {
        DoubleBarrier {
            client: client.clone(),
            session: session.view(),
            name: name.into(),
            count,
            holder: default_holder(),
        }
    }

    /// Describes the participant in its node, for listings (default `pid:{process id}`).
    pub fn with_holder(mut self, holder: impl Into<String>) -> DoubleBarrier {
        self.holder = holder.into();
        self
    }

    /// The barrier's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many participants it waits for.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Joins and waits until `count` participants have joined (or the barrier already opened
    /// for this round).
    pub async fn enter(&self) -> Result<Participation, Error> {
        let entered = self.enter_within(Patience::Forever).await?;
        Ok(entered.expect("waiting without a deadline ends in success or an error"))
    }

    /// Like [`DoubleBarrier::enter`], for at most `timeout`; `None` (and no node left behind)
    /// if the barrier did not open by then.
    pub async fn enter_timeout(&self, timeout: Duration) -> Result<Option<Participation>, Error> {
        self.enter_within(Patience::after(timeout)).await
    }

    async fn enter_within(&self, patience: Patience) -> Result<Option<Participation>, Error> {
        if self.count == 0 {
            return Err(Error::InvalidArgument {
                message: format!(
                    "double barrier {} needs at least one participant",
                    self.name
                ),
            });
        }
        let queued = Queued::enqueue(
            &self.client,
            &self.session,
            &self.name,
            Role::Member,
            self.holder.as_bytes(),
            patience,
        )
        .await?;
        let Some(mut queued) = queued else {
            return Ok(None);
        };
        let seen_at = loop {
            let Some((listing, _)) = queued.list().await? else {
                return Ok(None);
            };
            if listing.has_other(READY) {
                break listing.revision;
            }
            let members = listing
                .entries
                .iter()
                .filter(|entry| entry.role == Role::Member)
                .count();
            if u64::try_from(members).unwrap_or(u64::MAX) >= self.count {
                let deadline = queued.deadline();
                let opened = persist(Some(&self.session), deadline, || self.open()).await?;
                if opened == Attempted::TimedOut {
                    queued.abandon().await;
                    return Ok(None);
                }
                break listing.revision;
            }
            let options = WatchOptions {
                path: self.name.clone(),
                start_revision: listing.revision + 1,
                once: true,
                ..WatchOptions::default()
            };
            if !queued.wait(options).await? {
                return Ok(None);
            }
        };
        // The grant time is not stamped: a participant's node shows when it arrived.
        let acquired = queued.hand_over(seen_at, false).await?;
        Ok(Some(Participation {
            holding: acquired.holding,
        }))
    }

    /// Creates the `ready` marker; fine if another participant did.
    async fn open(&self) -> Result<(), Error> {
        let path = child_path(&self.name, READY);
        match self
            .client
            .create(&path, "", &CreateOptions::default())
            .await
        {
            Ok(_) | Err(Error::NodeExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A participant inside a [`DoubleBarrier`], from `enter` until `leave`.
///
/// Its member node is ephemeral: [`HeldNode::suspended`] says when it may be gone, and
/// [`HeldNode::lost`] when it is. Dropping it without leaving spawns a best-effort delete of
/// the node (leaving without waiting for the others).
///
/// ```no_run
/// # async fn example(barrier: coord_client::DoubleBarrier) -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// let participation = barrier.enter().await?;
/// if !participation.leave_timeout(Duration::from_secs(30)).await? {
///     println!("others are still inside");
/// }
/// # Ok(())
/// # }
/// ```
pub struct Participation {
    holding: Holding,
}

impl Participation {
    /// Deletes this participant's node and waits until every participant has left. A crashed
    /// participant leaves when its session expires, up to its TTL later.
    pub async fn leave(self) -> Result<(), Error> {
        let left = self.leave_within(None).await?;
        debug_assert!(left, "waiting without a deadline ends when everyone left");
        Ok(())
    }

    /// Like [`Participation::leave`], waiting at most `timeout` for the others; `false` if some
    /// were still inside (this participant has left either way).
    pub async fn leave_timeout(self, timeout: Duration) -> Result<bool, Error> {
        self.leave_within(Some(Instant::now() + timeout)).await
    }

    async fn leave_within(self, deadline: Option<Instant>) -> Result<bool, Error> {
        let client = self.holding.client().clone();
        let name = self.holding.name().to_owned();
        self.holding.release().await?;
        loop {
            let listing = match persist(None, deadline, || list_directory(&client, &name)).await {
                Ok(Attempted::Done(listing)) => listing,
                Ok(Attempted::TimedOut) => return Ok(false),
                // Someone deleted the whole barrier: nobody is left inside.
                Err(Error::NoNode { .. }) => return Ok(true),
                Err(error) => return Err(error),
            };
            if listing
                .entries
                .iter()
                .all(|entry| entry.role != Role::Member)
            {
                let closed = persist(None, deadline, || close(&client, &name)).await?;
                return Ok(closed != Attempted::TimedOut);
            }
            // Leaving holds nothing, so no session is watched here.
            let options = WatchOptions {
                path: name.clone(),
                start_revision: listing.revision + 1,
                once: true,
                ..WatchOptions::default()
            };
            if wait_for_change(&client, None, options, deadline).await? == Woken::TimedOut {
                return Ok(false);
            }
        }
    }
}

impl sealed::Holder for Participation {
    fn holding(&self) -> &Holding {
        &self.holding
    }
}

impl HeldNode for Participation {}

impl std::fmt::Debug for Participation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.holding.debug_as("Participation", formatter)
    }
}

/// Deletes the `ready` marker once everyone has left, so the next round waits again; fine if
/// another leaver did.
async fn close(client: &Client, name: &str) -> Result<(), Error> {
    let path = child_path(name, READY);
    match client.delete(&path, DeleteOptions::default()).await {
        Ok(_) | Err(Error::NoNode { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}
