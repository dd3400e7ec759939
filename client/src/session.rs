//! `Session`: a server-side session that a background task keeps alive, and that owns the
//! ephemeral nodes created with it.
//!
//! Invariant: `safe_until` is conservative. It is the send time of the last acknowledged
//! keep-alive plus the TTL minus a drift margin, and the server acknowledges a keep-alive only
//! once no leader can expire the session before that keep-alive's arrival plus the TTL. So while
//! `Instant::now() < safe_until()`, the session cannot have expired on the server, given that
//! the two clocks' rates differ by less than the margin over one TTL.
//!
//! The state follows from the acknowledgments alone (`Liveness`, pure, time as an argument):
//!
//! ```text
//!   Connected ──(no ack for two keep-alive intervals, or safe_until passed)──► Suspended
//!       ▲                                                                       │
//!       └──────────────────(a keep-alive acknowledged)──────────────────────────┘
//!   either ──(the cluster says the session is gone)──► Expired (final)
//! ```
//!
//! Keep-alives go over one stream every third of the TTL, along the client's routing: a
//! stream that fails, ends, or leaves a keep-alive unanswered past the attempt's budget (half
//! an interval at first, at least half a second, at most a second; longer after each
//! time-out) moves to the next endpoint at once, so a failover costs a keep-alive a round trip
//! or two, within the two intervals before suspension.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::sessions_client::SessionsClient;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{with_timeout, Client};
use crate::endpoints::{Route, Target};
use crate::error::Error;
use crate::lock::lock;

/// What the client knows about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Keep-alives are acknowledged in time: the session is confirmed alive until
    /// `safe_until`, and the next acknowledgment is not overdue.
    Connected,
    /// The client cannot confirm the session in time: no keep-alive was acknowledged for two
    /// keep-alive intervals (two thirds of the TTL; keep-alives are failing), or `safe_until`
    /// passed. The session may well be alive on the server, but whatever depends on it must
    /// stop acting now. Back to `Connected` when a keep-alive is acknowledged again.
    Suspended,
    /// The cluster said the session is gone (it expired or was closed); its ephemeral nodes
    /// are deleted. Final.
    Expired,
}

/// The shortest interval between keep-alives, whatever the TTL.
const KEEPALIVE_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// The least a keep-alive stream's first attempt waits for an acknowledgment (the leader
/// acknowledges once a checkpoint recorded the keep-alive, a fraction of a second).
const KEEPALIVE_REPLY_WAIT_MIN: Duration = Duration::from_millis(500);

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

/// The acknowledgments a session's state follows from (see the module documentation). Pure:
/// the current time is an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Liveness {
    /// Until when the session certainly lives on the server.
    safe_until: Instant,
    /// When the state turns `Suspended` unless a keep-alive is acknowledged first: two
    /// keep-alive intervals after the last acknowledged one was sent, never after `safe_until`.
    suspend_at: Instant,
    /// The cluster said the session is gone.
    expired: bool,
}

impl Liveness {
    /// After the keep-alive (or open) sent at `sent_at` was acknowledged with `granted`.
    /// Earlier acknowledgments keep their promise, so neither deadline moves back.
    fn acknowledged(&mut self, sent_at: Instant, granted: Duration, timing: &Timing) {
        let safe_until = sent_at + granted.saturating_sub(timing.margin);
        self.safe_until = self.safe_until.max(safe_until);
        let suspend_at = (sent_at + timing.interval * 2).min(safe_until);
        self.suspend_at = self.suspend_at.max(suspend_at);
    }

    fn state_at(&self, now: Instant) -> SessionState {
        if self.expired {
            SessionState::Expired
        } else if now >= self.suspend_at {
            SessionState::Suspended
        } else {
            SessionState::Connected
        }
    }
}

/// A session's keep-alive rhythm.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Between keep-alives: a third of the TTL.
    interval: Duration,
    /// Subtracted from every grant to cover clock-rate drift.
    margin: Duration,
}

struct Shared {
    id: u64,
    ttl: Duration,
    timing: Timing,
    /// The last state published; `Liveness::state_at` is the truth at any instant.
    state: watch::Sender<SessionState>,
    liveness: Mutex<Liveness>,
    /// The `Session` was dropped or closed: no keep-alive will be sent again.
    keep_alives_stopped: AtomicBool,
}

impl Shared {
    fn state_at(&self, now: Instant) -> SessionState {
        lock(&self.liveness).state_at(now)
    }

    /// Publishes the state at `now` to the watchers, if it changed.
    fn publish(&self, now: Instant) {
        let state = self.state_at(now);
        self.state.send_if_modified(|current| {
            // Expired is final.
            let changes = *current != state && *current != SessionState::Expired;
            if changes {
                *current = state;
            }
            changes
        });
    }

    fn acknowledge(&self, sent_at: Instant, granted: Duration) {
        lock(&self.liveness).acknowledged(sent_at, granted, &self.timing);
        self.publish(Instant::now());
    }

    fn expire(&self) {
        lock(&self.liveness).expired = true;
        self.publish(Instant::now());
    }

    fn stop_keep_alives(&self) {
        self.keep_alives_stopped.store(true, Ordering::Relaxed);
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

    /// What the client knows about the session now (see [`SessionState`]).
    pub fn state(&self) -> SessionState {
        self.shared.state_at(Instant::now())
    }

    /// A receiver that sees every change of state, suspensions and recoveries included.
    ///
    /// ```no_run
    /// # async fn example(session: coord_client::Session) {
    /// use coord_client::SessionState;
    /// let mut states = session.watch_state();
    /// while states.changed().await.is_ok() {
    ///     match *states.borrow_and_update() {
    ///         SessionState::Suspended => eprintln!("cannot confirm the session: pausing work"),
    ///         SessionState::Connected => eprintln!("session confirmed again: resuming"),
    ///         SessionState::Expired => break,
    ///     }
    /// }
    /// # }
    /// ```
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Until when the session certainly lives on the server (see the module invariant).
    pub fn safe_until(&self) -> Instant {
        lock(&self.shared.liveness).safe_until
    }

    /// Whether the session is certainly alive right now (it may be `Suspended` and still
    /// certainly alive: suspension comes before `safe_until`, so that holders can stop in
    /// time).
    pub fn is_safe(&self) -> bool {
        self.view().is_safe()
    }

    /// Ends the session now, deleting its ephemeral nodes; returns how many were deleted.
    pub async fn close(self) -> Result<u64, Error> {
        self.keeper.abort();
        self.shared.stop_keep_alives();
        let deleted = self.client.close_session(self.shared.id).await?;
        self.shared.expire();
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

    /// The state at this instant (the published one may lag by a timer's wake-up).
    pub(crate) fn state(&self) -> SessionState {
        self.shared.state_at(Instant::now())
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn safe_until(&self) -> Instant {
        lock(&self.shared.liveness).safe_until
    }

    /// When the state turns `Suspended` unless a keep-alive is acknowledged first.
    pub(crate) fn suspend_at(&self) -> Instant {
        lock(&self.shared.liveness).suspend_at
    }

    pub(crate) fn is_safe(&self) -> bool {
        let liveness = *lock(&self.shared.liveness);
        !liveness.expired && Instant::now() < liveness.safe_until
    }

    /// Whether keep-alives stopped for good (the `Session` was dropped or closed), so that a
    /// suspension can no longer end in recovery.
    pub(crate) fn keep_alives_stopped(&self) -> bool {
        self.shared.keep_alives_stopped.load(Ordering::Relaxed)
    }

    /// A view of a session that exists only in memory, for tests of code that watches one.
    #[cfg(test)]
    pub(crate) fn detached(id: u64, state: SessionState, safe_until: Instant) -> SessionView {
        let (sender, _) = watch::channel(state);
        let view = SessionView {
            shared: Arc::new(Shared {
                id,
                ttl: Duration::from_secs(10),
                timing: Timing {
                    interval: Duration::from_secs(3),
                    margin: Duration::from_secs(1),
                },
                state: sender,
                liveness: Mutex::new(Liveness {
                    safe_until,
                    suspend_at: safe_until,
                    expired: false,
                }),
                keep_alives_stopped: AtomicBool::new(false),
            }),
        };
        view.set_state(state);
        view
    }

    /// Moves a detached view to `state`, as acknowledgments (or their absence) would.
    #[cfg(test)]
    pub(crate) fn set_state(&self, state: SessionState) {
        {
            let mut liveness = lock(&self.shared.liveness);
            match state {
                SessionState::Connected => liveness.suspend_at = liveness.safe_until,
                SessionState::Suspended => liveness.suspend_at = Instant::now(),
                SessionState::Expired => liveness.expired = true,
            }
        }
        self.shared.publish(Instant::now());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
        self.shared.stop_keep_alives();
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
        let timing = Timing {
            interval: (ttl / 3).max(KEEPALIVE_INTERVAL_MIN),
            margin,
        };
        let mut liveness = Liveness {
            safe_until: sent_at,
            suspend_at: sent_at,
            expired: false,
        };
        liveness.acknowledged(sent_at, ttl, &timing);
        let (state, _) = watch::channel(liveness.state_at(Instant::now()));
        let shared = Arc::new(Shared {
            id: response.session_id,
            ttl,
            timing,
            state,
            liveness: Mutex::new(liveness),
            keep_alives_stopped: AtomicBool::new(false),
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

/// Keeps the session alive until the cluster says it is gone (see the module documentation):
/// `renew` sends the keep-alives, `mark_suspension` publishes the suspension when none was
/// acknowledged in time.
async fn keep_alive(client: Client, shared: Arc<Shared>) {
    tokio::select! {
        () = renew(&client, &shared) => {}
        () = mark_suspension(&shared) => {}
    }
}

/// Publishes the state whenever it changes with time alone (Connected to Suspended at
/// `suspend_at`); acknowledgments publish their own changes.
async fn mark_suspension(shared: &Shared) {
    let mut changes = shared.state.subscribe();
    loop {
        let now = Instant::now();
        shared.publish(now);
        changes.borrow_and_update();
        let suspend_at = lock(&shared.liveness).suspend_at;
        if now < suspend_at {
            tokio::time::sleep_until(suspend_at).await;
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

/// How a keep-alive stream ended.
enum StreamEnd {
    /// The cluster said the session is gone.
    Expired,
    /// The stream failed: `not_here` when the endpoint should be avoided (it failed, stayed
    /// silent, or knows no leader), with the leader it named, if any.
    Failed {
        not_here: bool,
        leader_hint: Option<u64>,
    },
}

/// Sends keep-alives along the client's routing, a stream at a time, until the cluster says
/// the session is gone.
async fn renew(client: &Client, shared: &Shared) {
    let endpoints = client.routing();
    let mut route = Route::new();
    loop {
        let Some(target) = endpoints.next(&mut route) else {
            tokio::time::sleep(route.start_round()).await;
            continue;
        };
        match keep_alive_over(client, shared, &target, &mut route).await {
            StreamEnd::Expired => {
                shared.expire();
                return;
            }
            StreamEnd::Failed {
                not_here,
                leader_hint,
            } => {
                if not_here {
                    endpoints.failed(&target.address);
                }
                if let Some(leader) = leader_hint {
                    route.redirect(leader);
                }
            }
        }
    }
}

/// Sends keep-alives every interval over one stream to `target`, each acknowledged within the
/// route's budget, until the stream fails or the session is gone. An acknowledgment starts the
/// route afresh, so the next failure moves on without a pause.
async fn keep_alive_over(
    client: &Client,
    shared: &Shared,
    target: &Target,
    route: &mut Route,
) -> StreamEnd {
    let silent = StreamEnd::Failed {
        not_here: true,
        leader_hint: None,
    };
    let (requests, outbound) = mpsc::channel(1);
    // Short enough that a failover lands within the two intervals before suspension.
    let first_wait = (shared.timing.interval / 2).max(KEEPALIVE_REPLY_WAIT_MIN);
    let budget = route.budget_first_at_most(first_wait);
    let mut sessions = SessionsClient::new(target.channel.clone());
    let opened = sessions.keep_alive(ReceiverStream::new(outbound));
    let mut replies = match tokio::time::timeout(budget, opened).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return failed_with(&status, &target.address),
        Err(_) => {
            route.timed_out();
            return silent;
        }
    };
    loop {
        let sent_at = Instant::now();
        let request = pb::KeepAliveRequest {
            session_id: shared.id,
        };
        let exchange = async {
            requests.send(request).await.ok()?;
            Some(replies.message().await)
        };
        let wait = route.budget_first_at_most(first_wait);
        let reply = match tokio::time::timeout(wait, exchange).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return silent,
            Err(_) => {
                route.timed_out();
                return silent;
            }
        };
        match reply {
            Ok(Some(reply)) if reply.ttl_ms == 0 => return StreamEnd::Expired,
            Ok(Some(reply)) => {
                shared.acknowledge(sent_at, Duration::from_millis(reply.ttl_ms));
                client.routing().answered(&target.address);
                *route = Route::new();
            }
            Ok(None) => return silent,
            Err(status) => return failed_with(&status, &target.address),
        }
        tokio::time::sleep_until(sent_at + shared.timing.interval).await;
    }
}

/// How a keep-alive stream that failed with `status` ended.
fn failed_with(status: &tonic::Status, endpoint: &str) -> StreamEnd {
    match Error::from_status(status, endpoint) {
        Error::SessionExpired { .. } => StreamEnd::Expired,
        Error::Unavailable {
            leader_hint: Some(leader),
            ..
        } => StreamEnd::Failed {
            not_here: false,
            leader_hint: Some(leader),
        },
        _ => StreamEnd::Failed {
            not_here: true,
            leader_hint: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            interval: Duration::from_secs(3),
            margin: Duration::from_secs(1),
        }
    }

    fn opened(at: Instant) -> Liveness {
        let mut liveness = Liveness {
            safe_until: at,
            suspend_at: at,
            expired: false,
        };
        liveness.acknowledged(at, Duration::from_secs(10), &timing());
        liveness
    }

    #[test]
    fn a_session_suspends_two_intervals_after_its_last_acknowledgment_and_recovers() {
        let start = Instant::now();
        let mut liveness = opened(start);
        let seconds = |n: u64| start + Duration::from_secs(n);
        assert_eq!(liveness.safe_until, seconds(9));
        assert_eq!(liveness.suspend_at, seconds(6));
        assert_eq!(liveness.state_at(seconds(5)), SessionState::Connected);
        // Keep-alives failing: suspended before safe_until, so holders can stop in time.
        assert_eq!(liveness.state_at(seconds(6)), SessionState::Suspended);
        assert_eq!(liveness.state_at(seconds(20)), SessionState::Suspended);
        // An acknowledgment, even after safe_until, confirms the session alive again.
        liveness.acknowledged(seconds(12), Duration::from_secs(10), &timing());
        assert_eq!(liveness.state_at(seconds(13)), SessionState::Connected);
        assert_eq!(liveness.safe_until, seconds(21));
        assert_eq!(liveness.suspend_at, seconds(18));
    }

    #[test]
    fn deadlines_never_move_back_and_suspension_never_comes_after_safe_until() {
        let start = Instant::now();
        let mut liveness = opened(start);
        // A late reply to an older keep-alive promises less: the earlier promise stands.
        liveness.acknowledged(start, Duration::from_secs(2), &timing());
        assert_eq!(liveness.safe_until, start + Duration::from_secs(9));
        assert_eq!(liveness.suspend_at, start + Duration::from_secs(6));
        // A drift margin larger than a third of the TTL: safe_until comes first.
        let wide = Timing {
            interval: Duration::from_secs(3),
            margin: Duration::from_secs(5),
        };
        let mut liveness = Liveness {
            safe_until: start,
            suspend_at: start,
            expired: false,
        };
        liveness.acknowledged(start, Duration::from_secs(10), &wide);
        assert_eq!(liveness.suspend_at, liveness.safe_until);
        assert_eq!(liveness.safe_until, start + Duration::from_secs(5));
    }

    #[test]
    fn expiry_is_final() {
        let start = Instant::now();
        let mut liveness = opened(start);
        liveness.expired = true;
        assert_eq!(liveness.state_at(start), SessionState::Expired);
        liveness.acknowledged(start, Duration::from_secs(10), &timing());
        assert_eq!(liveness.state_at(start), SessionState::Expired);
    }
}
