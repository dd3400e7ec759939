//! Waiting for the recipes: for a watch event, for a session to become unsafe, for a deadline;
//! and retrying requests through transient failures while the session stays safe.
//!
//! Invariant: no wait outlives the session's safety. Every wait of a session-bound recipe ends
//! with an error as soon as the session has expired or passed its `safe_until`, so a recipe never
//! sleeps through the loss of what it is queueing for.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::lost_reason::LostReason;
use crate::client::{jittered, Client};
use crate::error::Error;
use crate::session::{SessionState, SessionView};
use crate::watch::WatchOptions;

/// First pause after a transient failure; it doubles up to `RETRY_PAUSE_MAX`.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Pause before listing again when a watch could not be opened.
const WATCH_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How long an acquisition may wait for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Not at all: give up if the turn has not come at the first listing.
    Try,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes (while the session is safe).
    Forever,
}

impl Patience {
    pub(crate) fn after(timeout: Duration) -> Patience {
        Patience::Until(Instant::now() + timeout)
    }

    /// The instant at which waiting stops, if any; `Try` waits for nothing, so it has none.
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Patience::Until(deadline) => Some(deadline),
            Patience::Try | Patience::Forever => None,
        }
    }
}

/// How a wait ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Something may have changed: list again. With the revision of the event that woke the
    /// waiter, when one did (a listing that reflects that revision sees the change); `None`
    /// after a compacted start, the end of the stream or a watch that could not be opened.
    Changed(Option<u64>),
    /// The deadline passed.
    TimedOut,
}

/// How a retried request ended, short of an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempted<T> {
    Done(T),
    TimedOut,
}

/// Whether a failure is worth retrying: nothing was applied, or the outcome is unknown (for a
/// read or a write with a write id, a retry is safe).
pub(crate) fn transient(error: &Error) -> bool {
    error.is_retryable()
        || error.is_outcome_unknown()
        || matches!(
            error,
            Error::ConnectionLost { .. } | Error::Unreachable { .. }
        )
}

/// The error for a session that can no longer be relied on.
pub(crate) fn session_error(session: &SessionView, reason: LostReason) -> Error {
    match reason {
        LostReason::SessionExpired => Error::SessionExpired {
            session: session.id(),
        },
        LostReason::SessionUnsafe | LostReason::NodeDeleted => Error::SessionUnsafe {
            session: session.id(),
        },
    }
}

/// `Ok` while the session is certainly alive.
pub(crate) fn check_session(session: &SessionView) -> Result<(), Error> {
    if session.state() == SessionState::Expired {
        return Err(session_error(session, LostReason::SessionExpired));
    }
    if !session.is_safe() {
        return Err(session_error(session, LostReason::SessionUnsafe));
    }
    Ok(())
}

/// Resolves when the session expires or passes its `safe_until` (which keep-alives move on).
pub(crate) async fn session_lost(session: &SessionView) -> LostReason {
    let mut states = session.watch_state();
    loop {
        if *states.borrow_and_update() == SessionState::Expired {
            return LostReason::SessionExpired;
        }
        let safe_until = session.safe_until();
        if Instant::now() >= safe_until {
            return LostReason::SessionUnsafe;
        }
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    // The view keeps the sender alive, so this does not happen; if it did,
                    // only the deadline would be left to watch.
                    tokio::time::sleep_until(safe_until).await;
                }
            }
            () = tokio::time::sleep_until(safe_until) => {}
        }
    }
}

async fn session_lost_or_never(session: Option<&SessionView>) -> LostReason {
    match session {
        Some(session) => session_lost(session).await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for the first event of the watch `options` describes (give it `once` and a start
/// revision just after the listing it follows, so that nothing between is missed), or for a
/// sign that the caller should list again (history compacted, watch not opened).
/// Ends with an error when `session` is lost, and with `TimedOut` at `deadline`.
pub(crate) async fn wait_for_change(
    client: &Client,
    session: Option<&SessionView>,
    options: WatchOptions,
    deadline: Option<Instant>,
) -> Result<Woken, Error> {
    let change = async {
        match client.watch(options).await {
            Ok(mut watch) => match watch.next().await {
                Some(Ok(event)) => Ok(Some(event.revision)),
                Some(Err(error)) if !matches!(error, Error::Compacted { .. }) => Err(error),
                // A compacted start or the end of the stream: list again.
                _ => Ok(None),
            },
            Err(Error::Compacted { .. }) => Ok(None),
            Err(error) if transient(&error) => {
                tokio::time::sleep(WATCH_RETRY_PAUSE).await;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    };
    tokio::select! {
        changed = change => changed.map(Woken::Changed),
        reason = session_lost_or_never(session) => {
            let session = session.expect("only a session can be lost");
            Err(session_error(session, reason))
        }
        () = sleep_until_or_never(deadline) => Ok(Woken::TimedOut),
    }
}

/// Growing pauses between retries.
#[derive(Debug)]
pub(crate) struct Backoff {
    pause: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            pause: RETRY_PAUSE_MIN,
        }
    }

    /// Sleeps for the next pause; `false` (at once) if that would reach `deadline`.
    pub(crate) async fn pause(&mut self, deadline: Option<Instant>) -> bool {
        let wake = Instant::now() + jittered(self.pause);
        if deadline.is_some_and(|deadline| wake >= deadline) {
            return false;
        }
        tokio::time::sleep_until(wake).await;
        self.pause = (self.pause * 2).min(RETRY_PAUSE_MAX);
        true
    }
}

/// Runs `request` until it succeeds or fails for good, retrying transient failures with
/// back-off while `session` (if any) is safe and before `deadline` (if any).
pub(crate) async fn persist<T, F, Fut>(
    session: Option<&SessionView>,
    deadline: Option<Instant>,
    mut request: F,
) -> Result<Attempted<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new();
    loop {
        match request().await {
            Ok(value) => return Ok(Attempted::Done(value)),
            Err(error) if transient(&error) => {
                if let Some(session) = session {
                    check_session(session)?;
                }
            }
            Err(error) => return Err(error),
        }
        if !backoff.pause(deadline).await {
            return Ok(Attempted::TimedOut);
        }
    }
}

/// Like [`persist`] without a deadline: retries while `session` is safe.
pub(crate) async fn persist_while_safe<T, F, Fut>(
    session: &SessionView,
    request: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    match persist(Some(session), None, request).await? {
        Attempted::Done(value) => Ok(value),
        Attempted::TimedOut => unreachable!("persist times out only at a deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_expired_or_overdue_session_is_lost_at_once() {
        let expired = SessionView::detached(
            7,
            SessionState::Expired,
            Instant::now() + Duration::from_secs(60),
        );
        assert_eq!(session_lost(&expired).await, LostReason::SessionExpired);
        assert_eq!(
            check_session(&expired),
            Err(Error::SessionExpired { session: 7 })
        );
        let overdue = SessionView::detached(8, SessionState::Suspended, Instant::now());
        assert_eq!(session_lost(&overdue).await, LostReason::SessionUnsafe);
        assert_eq!(
            check_session(&overdue),
            Err(Error::SessionUnsafe { session: 8 })
        );
        let healthy = SessionView::detached(
            9,
            SessionState::Connected,
            Instant::now() + Duration::from_secs(60),
        );
        assert_eq!(check_session(&healthy), Ok(()));
    }

    #[tokio::test]
    async fn expiry_wakes_a_waiter() {
        let session = SessionView::detached(
            3,
            SessionState::Connected,
            Instant::now() + Duration::from_secs(600),
        );
        let waiter = {
            let session = session.clone();
            tokio::spawn(async move { session_lost(&session).await })
        };
        tokio::task::yield_now().await;
        session.set_state(SessionState::Expired);
        let reason = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter wakes on expiry")
            .expect("the waiter does not panic");
        assert_eq!(reason, LostReason::SessionExpired);
    }

    #[tokio::test]
    async fn persist_gives_up_on_rejections_and_at_the_deadline() {
        let rejected: Result<Attempted<()>, Error> = persist(None, None, || async {
            Err(Error::NoNode { path: "/a".into() })
        })
        .await;
        assert_eq!(rejected, Err(Error::NoNode { path: "/a".into() }));
        let deadline = Instant::now() + Duration::from_millis(120);
        let unavailable: Result<Attempted<()>, Error> = persist(None, Some(deadline), || async {
            Err(Error::Unavailable {
                message: "no leader".into(),
                leader_hint: None,
            })
        })
        .await;
        assert_eq!(unavailable, Ok(Attempted::TimedOut));
        let overdue = SessionView::detached(4, SessionState::Suspended, Instant::now());
        let unsafe_session: Result<Attempted<()>, Error> =
            persist(Some(&overdue), None, || async {
                Err(Error::Timeout {
                    message: "slow".into(),
                })
            })
            .await;
        assert_eq!(unsafe_session, Err(Error::SessionUnsafe { session: 4 }));
    }
}
