//! `Holding`: a confirmed recipe node held by the caller (inside a `LockGuard`, `Leadership`
//! or `Participation`), with the monitor that says when it is lost.
//!
//! The monitor is a background task started at confirmation. It resolves the loss signal,
//! once and for good, on the first of: the session expires; the session passes its
//! `safe_until` (no keep-alive acknowledged in time, so the cluster may have expired it);
//! the node is deleted (a watch on it from the revision after the confirmation, re-opened
//! after any failure, with a linearizable fence check to bridge a compacted history).
//!
//! Invariants: `is_safe` is false once the loss signal resolved, and whenever the session
//! is not certainly alive. Dropping a holding that was not released spawns a best-effort,
//! fenced delete of its node (the session's end removes it otherwise).

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cleanup::{delete_eventually, delete_own, spawn_detached};
use super::fence::Sequencer;
use super::lost_reason::LostReason;
use super::wait::{session_lost, Backoff};
use crate::client::Client;
use crate::error::Error;
use crate::session::SessionView;
use crate::txn::Txn;
use crate::watch::{DeleteReason, EventKind, WatchOptions};

/// See the module documentation. Public in name only, so that the sealed supertrait of
/// `HeldNode` can return it; its module is private, so nothing outside the crate names it.
pub struct Holding {
    client: Client,
    session: SessionView,
    name: String,
    path: String,
    token: u64,
    /// `Some` once lost; written only by the monitor.
    lost: watch::Receiver<Option<LostReason>>,
    monitor: JoinHandle<()>,
    /// Whether the node was deleted by `release`, so the drop has nothing left to do.
    released: bool,
}

impl Holding {
    /// Starts holding the node at `path` (in recipe directory `name`), confirmed with create
    /// revision `token` at revision `watch_from - 1`.
    pub(crate) fn start(
        client: Client,
        session: SessionView,
        name: String,
        path: String,
        token: u64,
        watch_from: u64,
    ) -> Holding {
        let (sender, lost) = watch::channel(None);
        let monitor = tokio::spawn(monitor(
            client.clone(),
            session.clone(),
            path.clone(),
            token,
            watch_from,
            sender,
        ));
        Holding {
            client,
            session,
            name,
            path,
            token,
            lost,
            monitor,
            released: false,
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn safe_until(&self) -> Instant {
        self.session.safe_until()
    }

    pub(crate) fn is_safe(&self) -> bool {
        self.lost.borrow().is_none() && self.session.is_safe()
    }

    /// Why the node was lost, if it was.
    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        *self.lost.borrow()
    }

    pub(crate) async fn lost(&self) -> LostReason {
        let mut lost = self.lost.clone();
        loop {
            if let Some(reason) = *lost.borrow_and_update() {
                return reason;
            }
            if lost.changed().await.is_err() {
                // The monitor ended without a reason, which only a panic can do: assume the
                // worst rather than promise the node forever.
                return lost.borrow().unwrap_or(LostReason::SessionUnsafe);
            }
        }
    }

    pub(crate) fn sequencer(&self) -> Sequencer {
        Sequencer {
            name: self.name.clone(),
            path: self.path.clone(),
            token: self.token,
        }
    }

    pub(crate) fn fence(&self, txn: Txn) -> Txn {
        txn.fence(&self.path, self.token)
    }

    /// Formats the handle named `handle` that holds this node.
    pub(crate) fn debug_as(
        &self,
        handle: &str,
        formatter: &mut std::fmt::Formatter<'_>,
    ) -> std::fmt::Result {
        formatter
            .debug_struct(handle)
            .field("path", &self.path)
            .field("token", &self.token)
            .field("lost", &self.lost_reason())
            .finish()
    }

    /// Deletes the node if it is still this holding's; fine if it is already gone.
    pub(crate) async fn release(mut self) -> Result<(), Error> {
        self.monitor.abort();
        delete_own(&self.client, &self.path, self.token).await?;
        self.released = true;
        Ok(())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.monitor.abort();
        if !self.released {
            spawn_detached(delete_eventually(
                self.client.clone(),
                self.path.clone(),
                self.token,
            ));
        }
    }
}

async fn monitor(
    client: Client,
    session: SessionView,
    path: String,
    token: u64,
    watch_from: u64,
    lost: watch::Sender<Option<LostReason>>,
) {
    let reason = tokio::select! {
        reason = session_lost(&session) => reason,
        reason = node_lost(&client, &path, token, watch_from) => reason,
    };
    lost.send_replace(Some(reason));
}

/// Resolves when the node at `path` created at `token` is deleted at or after `from`.
async fn node_lost(client: &Client, path: &str, token: u64, mut from: u64) -> LostReason {
    let mut backoff = Backoff::new();
    loop {
        let options = WatchOptions {
            path: path.to_owned(),
            start_revision: from,
            ..WatchOptions::default()
        };
        if let Ok(mut watch) = client.watch(options).await {
            while let Some(Ok(event)) = watch.next().await {
                backoff = Backoff::new();
                if let EventKind::Deleted(reason) = event.kind {
                    return match reason {
                        DeleteReason::SessionExpired | DeleteReason::SessionClosed => {
                            LostReason::SessionExpired
                        }
                        DeleteReason::Deleted | DeleteReason::ContainerEmpty => {
                            LostReason::NodeDeleted
                        }
                    };
                }
                from = from.max(event.revision + 1);
            }
        }
        // The watch could not be opened, or ended (history compacted past `from`, say): ask
        // directly, and watch again from the revision of the answer. A node that is current
        // there was not deleted before, since a deleted node never comes back with its token.
        match client.check_fence(path, token).await {
            Ok(check) if !check.current => return LostReason::NodeDeleted,
            Ok(check) => from = from.max(check.header.revision + 1),
            Err(_) => {}
        }
        backoff.pause(None).await;
    }
}
