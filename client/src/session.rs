//! `Session`: a server-side session that a background task keeps alive, and that owns the
//! ephemeral nodes created with it.
//!
//! Invariant: `safe_until` is conservative. It is the send time of the last acknowledged
//! keep-alive plus the TTL minus a drift margin, and the server acknowledges a keep-alive only
//! once no leader can expire the session before that keep-alive's arrival plus the TTL. So while
//! `Instant::now() < safe_until()`, the session cannot have expired on the server, given that
//! the two clocks' rates differ by less than the margin over one TTL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::sessions_client::SessionsClient;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{with_timeout, Client};
use crate::error::Error;
use crate::lock::lock;

/// What the client knows about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The last keep-alive was acknowledged and `safe_until` is in the future.
    Connected,
    /// The last keep-alive failed or went unanswered: the session may still be alive on the
    /// server, but nothing that depends on it is safe after `safe_until`.
    Suspended,
    /// The cluster said the session is gone (it expired or was closed); its ephemeral nodes
    /// are deleted. Final.
    Expired,
}

/// How a session is opened.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Requested TTL; the server clamps it to its bounds and `Session::ttl` tells the result.
    pub ttl: Duration,
    /// Subtracted from every local deadline to cover clock-rate drift between this machine and
    /// the leader's; `None` means a tenth of the TTL, at least 50 ms.
    pub drift_margin: Option<Duration>,
}

impl SessionOptions {
    /// Options that request `ttl` and use the default drift margin.
    pub fn with_ttl(ttl: Duration) -> SessionOptions {
        SessionOptions {
            ttl,
            drift_margin: None,
        }
    }
}

/// An admin's view of one session (`Client::list_sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub id: u64,
    /// The TTL the server granted: how long the session lives without a keep-alive.
    pub ttl: Duration,
    /// Left before the leader expires it without another keep-alive.
    pub remaining: Duration,
    /// Since the leader last heard a keep-alive; `None` if the current leader has not yet.
    pub last_keepalive_age: Option<Duration>,
    /// The paths of the ephemeral nodes it owns, deleted when it ends.
    pub ephemeral_nodes: Vec<String>,
}

struct Shared {
    id: u64,
    ttl: Duration,
    margin: Duration,
    state: watch::Sender<SessionState>,
    safe_until: Mutex<Instant>,
}

impl Shared {
    fn set_state(&self, state: SessionState) {
        self.state.send_if_modified(|current| {
            // Expired is final.
            let changes = *current != state && *current != SessionState::Expired;
            if changes {
                *current = state;
            }
            changes
        });
    }
}

/// A session kept alive by a background task until it is closed or dropped.
///
/// Dropping a `Session` stops the keep-alives without closing it: the server then expires it
/// (and deletes its ephemeral nodes) after its TTL. Call [`Session::close`] to end it at once.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, CreateOptions, NodeKind};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let options = CreateOptions {
///     kind: NodeKind::Ephemeral,
///     session_id: session.id(),
///     ..CreateOptions::default()
/// };
/// client.create("/workers/me", "10.0.0.7", &options).await?;
/// // ... the node exists while the session lives ...
/// session.close().await?; // deletes /workers/me
/// # Ok(())
/// # }
/// ```
pub struct Session {
    shared: Arc<Shared>,
    client: Client,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    /// The session id, to put in `CreateOptions::session_id` for ephemeral nodes.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// What the client knows about the session now, as the keep-alive task last saw it.
    pub fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every change of state.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Until when the session certainly lives on the server (see the module invariant).
    pub fn safe_until(&self) -> Instant {
        *lock(&self.shared.safe_until)
    }

    /// Whether the session is certainly alive right now.
    pub fn is_safe(&self) -> bool {
        self.state() != SessionState::Expired && Instant::now() < self.safe_until()
    }

    /// Ends the session now, deleting its ephemeral nodes; returns how many were deleted.
    pub async fn close(self) -> Result<u64, Error> {
        self.keeper.abort();
        let deleted = self.client.close_session(self.shared.id).await?;
        self.shared.set_state(SessionState::Expired);
        Ok(deleted)
    }
}

impl Session {
    /// A cheap handle on this session's liveness, kept by recipes and their guards so that
    /// they need not borrow the `Session`.
    pub(crate) fn view(&self) -> SessionView {
        SessionView {
            shared: self.shared.clone(),
        }
    }
}

/// A read-only handle on a session's liveness: its id, state and `safe_until`.
///
/// It does not keep the session alive: once the [`Session`] is dropped its keep-alives stop,
/// `safe_until` no longer moves, and [`SessionView::is_safe`] turns false after it.
#[derive(Clone)]
pub(crate) struct SessionView {
    shared: Arc<Shared>,
}

impl SessionView {
    pub(crate) fn id(&self) -> u64 {
        self.shared.id
    }

    pub(crate) fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn safe_until(&self) -> Instant {
        *lock(&self.shared.safe_until)
    }

    pub(crate) fn is_safe(&self) -> bool {
        self.state() != SessionState::Expired && Instant::now() < self.safe_until()
    }

    /// A view of a session that exists only in memory, for tests of code that watches one.
    #[cfg(test)]
    pub(crate) fn detached(id: u64, state: SessionState, safe_until: Instant) -> SessionView {
        let (sender, _) = watch::channel(state);
        SessionView {
            shared: Arc::new(Shared {
                id,
                ttl: Duration::from_secs(10),
                margin: Duration::from_secs(1),
                state: sender,
                safe_until: Mutex::new(safe_until),
            }),
        }
    }

    /// Moves a detached view to `state`, as the keep-alive task would.
    #[cfg(test)]
    pub(crate) fn set_state(&self, state: SessionState) {
        self.shared.set_state(state);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Client {
    /// Opens a session with `ttl` (clamped by the server) and keeps it alive in the background.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session, Error> {
        self.open_session_with(SessionOptions::with_ttl(ttl)).await
    }

    /// Like [`Client::open_session`], with explicit options.
    pub async fn open_session_with(&self, options: SessionOptions) -> Result<Session, Error> {
        let (write_id, _in_flight) = self.write_ids().issue();
        let requested = u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX);
        let sent_at = Instant::now();
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(
                    pb::SessionOpenRequest {
                        ttl_ms: requested,
                        write_id: Some(write_id.clone()),
                    },
                    timeout,
                );
                async move { SessionsClient::new(channel).open(request).await }
            })
            .await?
            .into_inner();
        let ttl = Duration::from_millis(response.ttl_ms);
        let margin = options
            .drift_margin
            .unwrap_or_else(|| (ttl / 10).max(Duration::from_millis(50)));
        let (state, _) = watch::channel(SessionState::Connected);
        let shared = Arc::new(Shared {
            id: response.session_id,
            ttl,
            margin,
            state,
            safe_until: Mutex::new(sent_at + ttl.saturating_sub(margin)),
        });
        let keeper = tokio::spawn(keep_alive(self.clone(), shared.clone()));
        Ok(Session {
            shared,
            client: self.clone(),
            keeper,
        })
    }

    /// Closes session `id` (anyone's: this is also the administrator's force-close).
    pub async fn close_session(&self, id: u64) -> Result<u64, Error> {
        let (write_id, _in_flight) = self.write_ids().issue();
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(
                    pb::SessionCloseRequest {
                        session_id: id,
                        write_id: Some(write_id.clone()),
                    },
                    timeout,
                );
                async move { SessionsClient::new(channel).close(request).await }
            })
            .await?
            .into_inner();
        Ok(response.deleted)
    }

    /// Every session, as the leader sees it.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(pb::SessionListRequest {}, timeout);
                async move { SessionsClient::new(channel).list(request).await }
            })
            .await?
            .into_inner();
        Ok(response
            .sessions
            .into_iter()
            .map(|info| SessionInfo {
                id: info.session_id,
                ttl: Duration::from_millis(info.ttl_ms),
                remaining: Duration::from_millis(info.remaining_ms),
                last_keepalive_age: info.last_keepalive_age_ms.map(Duration::from_millis),
                ephemeral_nodes: info.ephemeral_nodes,
            })
            .collect())
    }
}

/// Sends keep-alives every third of the TTL over one stream, moving to another endpoint when
/// the stream fails, until the server says the session is gone.
async fn keep_alive(client: Client, shared: Arc<Shared>) {
    let interval = (shared.ttl / 3).max(Duration::from_millis(50));
    // The server answers once a checkpoint recorded the keep-alive, which takes a fraction of
    // its checkpoint interval; a reply later than this counts as a failure.
    let reply_wait = interval.max(Duration::from_secs(1));
    let mut backoff = Duration::from_millis(20);
    loop {
        let (index, channel) = client.channel();
        let (requests, outbound) = mpsc::channel(1);
        let opened = SessionsClient::new(channel)
            .keep_alive(ReceiverStream::new(outbound))
            .await;
        if let Ok(response) = opened {
            let mut replies = response.into_inner();
            loop {
                let sent_at = Instant::now();
                let request = pb::KeepAliveRequest {
                    session_id: shared.id,
                };
                if requests.send(request).await.is_err() {
                    break;
                }
                let reply = tokio::time::timeout(reply_wait, replies.message()).await;
                match reply {
                    Ok(Ok(Some(reply))) if reply.ttl_ms == 0 => {
                        shared.set_state(SessionState::Expired);
                        return;
                    }
                    Ok(Ok(Some(reply))) => {
                        let ttl = Duration::from_millis(reply.ttl_ms);
                        *lock(&shared.safe_until) = sent_at + ttl.saturating_sub(shared.margin);
                        shared.set_state(SessionState::Connected);
                        backoff = Duration::from_millis(20);
                    }
                    // The stream ended, failed, or the reply is overdue.
                    _ => break,
                }
                tokio::time::sleep_until(sent_at + interval).await;
            }
        }
        shared.set_state(SessionState::Suspended);
        client.rotate(index);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}
