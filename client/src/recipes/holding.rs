//! `Holding`: a confirmed recipe node held by the caller (inside a `LockGuard`, `Leadership`
//! or `Participation`), with the monitor that says whether the holder may act.
//!
//! The monitor is a background task started at confirmation; it moves the holding's
//! `HoldState` by `HoldState::next` and publishes every change. It follows the session: a
//! suspension (keep-alives not acknowledged in time) suspends the holding; once the session is
//! confirmed alive again, a linearizable fence check of the node resumes it with the same
//! token, or finds it lost. It watches the node: a deletion (a watch from the revision after
//! the confirmation, re-opened after any failure, with a fence check to bridge a compacted
//! history) loses it. Expiry of the session, or a dropped `Session` past its `safe_until`,
//! loses it too. A loss is published once and for good.
//!
//! Invariants: `is_safe` is true only while the state is `Held` and the session is certainly
//! alive. Dropping a holding that was not released spawns a best-effort, fenced delete of its
//! node (the session's end removes it otherwise).

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cleanup::{delete_eventually, delete_own, spawn_detached};
use super::fence::Sequencer;
use super::hold_state::{HoldEvent, HoldState};
use super::lost_reason::LostReason;
use super::wait::{sleep_until_or_never, Backoff};
use crate::client::Client;
use crate::error::Error;
use crate::session::SessionView;
use crate::txn::Txn;
use crate::watch::{DeleteReason, EventFilter, EventKind, WatchOptions};

/// See the module documentation. Public in name only, so that the sealed supertrait of
/// `HeldNode` can return it; its module is private, so nothing outside the crate names it.
pub struct Holding {
    client: Client,
    session: SessionView,
    name: String,
    path: String,
    token: u64,
    /// As the monitor last published it; written only by the monitor.
    state: watch::Receiver<HoldState>,
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
        let (sender, state) = watch::channel(HoldState::Held);
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
            state,
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

    /// The state now: as published, moved by the session's state at this instant, so that a
    /// suspension (or expiry) shows before the monitor wakes up to publish it. A resumption
    /// never shows early: it waits for the monitor's confirmation of the node.
    pub(crate) fn state(&self) -> HoldState {
        let published = *self.state.borrow();
        published.next(HoldEvent::Session(self.session.state()))
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<HoldState> {
        self.state.clone()
    }

    pub(crate) fn is_safe(&self) -> bool {
        self.state() == HoldState::Held && self.session.is_safe()
    }

    /// Why the node was lost, if it was.
    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        match self.state() {
            HoldState::Lost(reason) => Some(reason),
            HoldState::Held | HoldState::Suspended => None,
        }
    }

    /// Resolves with the first state that `settled` accepts (the current one included).
    async fn first_state<T>(&self, settled: impl Fn(HoldState) -> Option<T>) -> T {
        let mut states = self.state.clone();
        loop {
            states.borrow_and_update();
            if let Some(value) = settled(self.state()) {
                return value;
            }
            let wake_at = (self.state() == HoldState::Held).then(|| self.session.suspend_at());
            tokio::select! {
                changed = states.changed() => {
                    if changed.is_err() {
                        // The monitor ended without a verdict, which only a panic can do:
                        // assume the worst rather than promise the node forever.
                        let lost = HoldState::Lost(LostReason::SessionUnsafe);
                        if let Some(value) = settled(lost) {
                            return value;
                        }
                        std::future::pending::<()>().await;
                    }
                }
                () = sleep_until_or_never(wake_at) => {}
            }
        }
    }

    pub(crate) async fn lost(&self) -> LostReason {
        self.first_state(|state| match state {
            HoldState::Lost(reason) => Some(reason),
            HoldState::Held | HoldState::Suspended => None,
        })
        .await
    }

    pub(crate) async fn suspended(&self) -> HoldState {
        self.first_state(|state| (state != HoldState::Held).then_some(state))
            .await
    }

    pub(crate) async fn resumed(&self) -> Result<(), LostReason> {
        self.first_state(|state| match state {
            HoldState::Held => Some(Ok(())),
            HoldState::Lost(reason) => Some(Err(reason)),
            HoldState::Suspended => None,
        })
        .await
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
            .field("state", &self.state())
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
    state: watch::Sender<HoldState>,
) {
    tokio::select! {
        // It publishes the loss it finds.
        () = follow_session(&client, &session, (&path, token), &state) => {}
        reason = node_lost(&client, &path, token, watch_from) => {
            let hold = state.borrow().next(HoldEvent::NodeGone(reason));
            state.send_replace(hold);
        }
    }
}

/// Moves the holding's state with the session's, confirming the node before a suspended
/// holding resumes; returns once it published a loss.
async fn follow_session(
    client: &Client,
    session: &SessionView,
    (path, token): (&str, u64),
    state: &watch::Sender<HoldState>,
) {
    let mut changes = session.watch_state();
    let mut backoff = Backoff::new();
    loop {
        changes.borrow_and_update();
        let mut hold = state.borrow().next(HoldEvent::Session(session.state()));
        if session.keep_alives_stopped() && !session.is_safe() {
            hold = hold.next(HoldEvent::KeepAlivesStopped);
        }
        let mut check_failed = false;
        if hold.awaits_confirmation(session.state()) {
            match client.check_fence(path, token).await {
                Ok(check) => {
                    hold = hold.next(HoldEvent::NodeConfirmed {
                        current: check.current,
                        session: session.state(),
                    });
                }
                Err(_) => check_failed = true,
            }
        }
        state.send_if_modified(|published| {
            let changes = *published != hold;
            *published = hold;
            changes
        });
        if let HoldState::Lost(_) = hold {
            return;
        }
        if check_failed {
            backoff.pause(None).await;
            continue;
        }
        backoff = Backoff::new();
        // Held: until the session suspends. Suspended: until it changes, or (keep-alives
        // stopped) until safe_until makes the loss certain.
        let wake_at = match hold {
            HoldState::Held => Some(session.suspend_at()),
            _ if session.keep_alives_stopped() => Some(session.safe_until()),
            _ => None,
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    sleep_until_or_never(wake_at).await;
                }
            }
            () = sleep_until_or_never(wake_at) => {}
        }
    }
}

/// Resolves when the node at `path` created at `token` is deleted at or after `from`.
async fn node_lost(client: &Client, path: &str, token: u64, mut from: u64) -> LostReason {
    let mut backoff = Backoff::new();
    loop {
        // Only a deletion matters; the node's own grant stamp and other data changes do not
        // travel.
        let options = WatchOptions {
            path: path.to_owned(),
            start_revision: from,
            kinds: vec![EventFilter::Deleted],
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
