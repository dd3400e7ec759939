//! `Client`: a handle to a Coord cluster over one or more endpoints.
//!
//! Every unary call goes through `call_as`, which sends attempts along the routing rules of
//! `endpoints` (sticky to the member that answered last, a write to the leader it knows of, the
//! next endpoint at once on any "not here", a pause only after a whole round failed; a write's
//! answer says which member leads now) and decides after each failed attempt,
//! with the pure `decide_retry`, whether to try again and which error to report.
//!
//! ```text
//!  call_as ──► Endpoints::next ──► attempt (budget: 1 s, a write max(1 s, timeout / 4); doubled after each time-out)
//!     ▲             │ none left in this round: pause, new round
//!     │             ▼
//!     └── retry ◄── decide_retry ──► fail (error) / answered (value)
//! ```
//!
//! A retryable attempt unanswered for half a second asks the other members for their status;
//! when another one leads with a quorum, the attempt is abandoned and the call goes there
//! (`hung.rs`: a paused leader otherwise holds every call for its whole budget).
//!
//! Invariant: a write is retried only with its write id (the cluster applies it at most once),
//! and once an attempt may have been applied the call never reports "not applied".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::cluster_client::ClusterClient;
use coord_proto::v1::namespace_client::NamespaceClient;
use coord_proto::v1::watch_client::WatchClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::endpoints::{Credentials, Dial, Endpoints, Route, Target, Transport};
use crate::error::Error;
use crate::hung;
use crate::lock::lock;
use crate::txn::{Txn, TxnResult};
use crate::types::{
    Child, ChildrenPage, Consistency, CreateOptions, Created, DeleteOptions, FenceCheck, Header,
    NodeData, Stat,
};
use crate::watch_streams::WatchStreams;
use crate::write_id::WriteIds;

/// What a call may do when an attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// A read: retried on any failure that a retry may fix.
    Read,
    /// A write with a write id: retried like a read; never reported "not applied" after an
    /// attempt whose outcome is unknown.
    Write,
    /// Retried only when the cluster said it was not applied.
    Unsafe,
}

/// A member's answer to `AwaitTurn`: whether the turn came, checked at `revision`, and
/// whether the node had to wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TurnAnswer {
    pub(crate) granted: bool,
    pub(crate) revision: u64,
    pub(crate) waited: bool,
}

/// An answer that carries a response header (every write's does).
pub(crate) trait Headed {
    fn header(&self) -> Option<&pb::ResponseHeader>;
}

macro_rules! headed {
    ($($answer:ty),* $(,)?) => {
        $(impl Headed for $answer {
            fn header(&self) -> Option<&pb::ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

headed!(
    pb::CreateResponse,
    pb::SetResponse,
    pb::DeleteResponse,
    pb::TxnResponse,
    pb::SessionOpenResponse,
    pb::SessionCloseResponse,
);

/// How long past its budget an attempt waits for the server's own deadline answer.
const ATTEMPT_GRACE: Duration = Duration::from_millis(100);
/// The least time worth starting another attempt with.
const ATTEMPT_BUDGET_MIN: Duration = Duration::from_millis(10);
/// Largest message the client accepts, in bytes.
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How often a client that discovers members asks for the member list again (etcd's
/// auto-sync), so that it can fail over to members added since it connected.
pub const AUTO_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two member-list refreshes that writes asked for (a write's answer named
/// a leader whose endpoint the client does not know), however often they ask.
const SYNC_SOON_GAP: Duration = Duration::from_secs(1);

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Longest wait for one call, retries included.
    pub request_timeout: Duration,
    /// Ask the cluster for its members, on connecting and then every [`AUTO_SYNC_INTERVAL`]
    /// (auto-sync), and use their client addresses as endpoints after the ones given, so the
    /// client can fail over to members it was not told about (members that advertise an empty
    /// or unspecified address, such as `0.0.0.0`, are skipped; a learned member that leaves
    /// the cluster is dropped, the endpoints given never are).
    /// Turn it off when members advertise addresses this client cannot or should not use
    /// (behind NAT, or a test's fault-injecting proxies).
    pub discover_members: bool,
    /// Connect over TLS (to every endpoint, given and discovered), checking the members'
    /// certificates against a CA and, if the members require it, presenting a certificate.
    /// `None`: plaintext.
    pub tls: Option<TlsOptions>,
    /// A bearer token (from `coordctl auth token issue`) that names this client's user, for
    /// clients without a certificate. Sent with every request; use it only over TLS.
    pub token: Option<String>,
}

/// How a [`Client`] connects over TLS: the files of etcdctl's `--cacert`, `--cert` and `--key`.
/// The files are read when the client connects and again when they change.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use coord_client::{Client, ClientOptions, TlsOptions};
/// let options = ClientOptions {
///     tls: Some(TlsOptions {
///         ca_file: "/etc/coord/ca.pem".into(),
///         cert_file: Some("/etc/coord/alice.pem".into()),
///         key_file: Some("/etc/coord/alice-key.pem".into()),
///         server_name: None,
///     }),
///     ..ClientOptions::default()
/// };
/// let client = Client::connect_with(["coord-0.example:7400"], options).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA bundle (PEM) the members' certificates must chain to.
    pub ca_file: std::path::PathBuf,
    /// This client's certificate (PEM), for members that check client certificates; its
    /// subject's common name is the client's user name.
    pub cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
    /// The name the members' certificates must hold, instead of the host dialled.
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Reads the files into a configuration; an error names the file and the problem.
    pub(crate) fn load(&self) -> Result<std::sync::Arc<coord_tls::ClientTls>, Error> {
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidArgument {
                    message: "a client certificate needs both its file and its key file".into(),
                })
            }
        };
        let files = coord_tls::ClientTlsFiles {
            trusted_ca: self.ca_file.clone(),
            identity,
            server_name: self.server_name.clone(),
        };
        coord_tls::ClientTls::load("client", files)
            .map(std::sync::Arc::new)
            .map_err(|error| Error::InvalidArgument {
                message: error.to_string(),
            })
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
            discover_members: true,
            tls: None,
            token: None,
        }
    }
}

struct Inner {
    endpoints: Endpoints,
    options: ClientOptions,
    /// Ids that make every write exactly-once, so that writes can be retried.
    write_ids: WriteIds,
    /// Events delivered to this client's watches, recipes' included.
    watch_events: AtomicU64,
    /// The streams this client's watches share.
    watch_streams: WatchStreams,
    /// The auto-sync task. It holds only a `Weak` reference between syncs, and is aborted when
    /// the last handle goes, so no task outlives the client.
    auto_sync: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Wakes the auto-sync task before its interval is up.
    sync_soon: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.auto_sync).take() {
            task.abort();
        }
    }
}

/// A connection to a Coord cluster. Cheap to clone; clones share connections.
///
/// Every call goes to the member that answered last, but a write goes to the leader when the
/// client knows which endpoint it answers on (it saves the member forwarding it). Any answer
/// that means "not here" (the connection was refused or reset, no answer within the attempt's
/// budget, no leader known, the member is starting, shutting down or no longer a member)
/// moves the call to the next endpoint at once, and later calls try that endpoint only after the others for a few
/// seconds. The first attempt gets a second (each attempt after a time-out twice as long), so
/// with `A,B,C` and `A` dead, paused or cut off, a call answers from `B` or `C` within about a
/// second. Calls pause (50 ms, doubling up to 500 ms) only after every endpoint failed once.
///
/// Reads, and writes (which carry a write id, so the cluster applies each at most once), are
/// retried on failures of unknown outcome until the request timeout; membership changes only
/// when the cluster said they were not applied ([`Error::is_retryable`]). A write that fails
/// with [`Error::is_outcome_unknown`] may have been applied.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use coord_client::{Client, CreateOptions};
/// let client = Client::connect(["10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"]).await?;
/// client.create("/services", "", &CreateOptions::default()).await?;
/// let node = client.get("/services").await?;
/// println!("version {} at revision {}", node.stat.version, node.header.revision);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to a cluster given `host:port` endpoints; succeeds once one endpoint answers.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::connect_with(endpoints, ClientOptions::default()).await
    }

    /// Like [`Client::connect`], with explicit options. With `discover_members`, the members
    /// the answering endpoint lists become endpoints too, and a background task (ended when
    /// the last clone of the client is dropped) refreshes them every [`AUTO_SYNC_INTERVAL`],
    /// and sooner (at most once a second) when a write's answer names a leader whose endpoint
    /// the client does not know yet.
    pub async fn connect_with<I, S>(endpoints: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|endpoint| endpoint.as_ref().trim().to_owned())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument {
                message: "no endpoints given".into(),
            });
        }
        let client = Client {
            inner: Arc::new(Inner {
                endpoints: Endpoints::new(
                    endpoints,
                    Dial {
                        connect_timeout: options.connect_timeout,
                        tls: options.tls.as_ref().map(TlsOptions::load).transpose()?,
                        credentials: Credentials::new(options.token.as_deref())?,
                    },
                )?,
                options,
                write_ids: WriteIds::new(),
                watch_events: AtomicU64::new(0),
                watch_streams: WatchStreams::default(),
                auto_sync: std::sync::Mutex::new(None),
                sync_soon: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        let members = client.probe().await?;
        if client.inner.options.discover_members {
            client.inner.endpoints.learn(&members);
            let soon = client.inner.sync_soon.clone();
            let task = tokio::spawn(auto_sync(Arc::downgrade(&client.inner), soon));
            *lock(&client.inner.auto_sync) = Some(task);
        }
        Ok(client)
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The routing of this client's attempts, for its streams (watches, keep-alives).
    pub(crate) fn routing(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// The id this client's writes carry; the cluster applies each of its writes at most once,
    /// so the client retries writes whose outcome it did not learn.
    pub fn client_id(&self) -> &str {
        self.inner.write_ids.client_id()
    }

    /// How many watch events this client (and its clones) has received so far, over every
    /// watch, including those that locks and elections open to wait. A diagnostic: it shows,
    /// for instance, that a lock release wakes only the next waiter.
    pub fn watch_events_received(&self) -> u64 {
        self.inner.watch_events.load(Ordering::Relaxed)
    }

    /// The streams this client's watches share.
    pub(crate) fn watch_streams(&self) -> &WatchStreams {
        &self.inner.watch_streams
    }

    pub(crate) fn count_watch_event(&self) {
        self.inner.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    /// The ids that make this client's writes exactly-once.
    pub(crate) fn write_ids(&self) -> &WriteIds {
        &self.inner.write_ids
    }

    /// The endpoints this client uses now: those it was given, then the members it discovered
    /// (see [`ClientOptions::discover_members`]).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.addresses()
    }

    /// Finds an endpoint that answers, trying each once (a second at first, twice as long after
    /// each time-out, at most the connect timeout); returns the members it lists.
    async fn probe(&self) -> Result<Vec<pb::Member>, Error> {
        let endpoints = &self.inner.endpoints;
        let mut route = Route::new();
        let mut last = String::new();
        // A TLS or authentication failure is a configuration mistake that waiting does not
        // fix: reported as such when no endpoint answered.
        let mut refusal = None;
        while let Some(target) = endpoints.next(&mut route) {
            let budget = route.budget().min(self.inner.options.connect_timeout);
            let request = with_timeout(pb::MemberListRequest {}, budget);
            let mut cluster = ClusterClient::new(target.channel.clone());
            match tokio::time::timeout(budget + ATTEMPT_GRACE, cluster.member_list(request)).await {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    endpoints.answered(&target.address);
                    if let Some(header) = &response.header {
                        endpoints.heard(&target.address, header.member_id, header.leader_id);
                    }
                    return Ok(response.members);
                }
                // "ENDPOINT: MESSAGE", which coordctl reads to spot a peer port given for a
                // client port (UNIMPLEMENTED comes with an empty message).
                Ok(Err(status)) => {
                    last = format!("{}: {}", target.address, status.message());
                    let error = Error::from_status(&status, &target.address);
                    if matches!(
                        error,
                        Error::Tls { .. }
                            | Error::Unauthenticated { .. }
                            | Error::PermissionDenied { .. }
                    ) {
                        refusal = Some(error);
                    }
                }
                Err(_) => {
                    route.timed_out();
                    last = format!("{}: no answer within {budget:?}", target.address);
                }
            }
            endpoints.failed(&target.address);
        }
        if let Some(error) = refusal {
            return Err(error);
        }
        Err(Error::Unreachable {
            endpoints: endpoints.addresses(),
            message: last,
        })
    }

    /// Runs `call` along the endpoints until it succeeds, fails for good, or the request
    /// timeout passes (see the module documentation).
    ///
    /// `idempotent` calls (reads, and writes that carry a write id) are retried even when the
    /// outcome of an attempt is unknown, each attempt bounded by its route's budget; other
    /// calls only when the cluster said the attempt was not applied, and their one attempt may
    /// use the whole remaining time (an attempt that timed out cannot be repeated). Every
    /// attempt is bounded here, not only by the server: a reply lost in the network would
    /// otherwise be awaited forever.
    pub(crate) async fn call<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, Error>
    where
        F: Fn(Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let kind = if idempotent {
            CallKind::Read
        } else {
            CallKind::Unsafe
        };
        Ok(self.call_as(kind, Duration::ZERO, call).await?.0)
    }

    /// Like `call` for a read, for a request that the server holds up to `wait` before it
    /// answers (`AwaitTurn`): each attempt's budget and the call's time-out are longer by
    /// `wait`, and an attempt that goes unanswered is not taken for a hung member.
    pub(crate) async fn call_waiting<T, F, Fut>(&self, wait: Duration, call: F) -> Result<T, Error>
    where
        F: Fn(Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        Ok(self.call_as(CallKind::Read, wait, call).await?.0)
    }

    /// Like `call`, for a write that carries a write id: retried like a read, since the
    /// cluster applies it at most once; if any attempt may have been applied, a later attempt's
    /// "not applied" does not clear that, and the error says the outcome is unknown. It goes
    /// to the leader's endpoint when the client knows it (`endpoints.rs`), and the answer's
    /// header tells which member leads now.
    pub(crate) async fn call_write<M, F, Fut>(&self, call: F) -> Result<tonic::Response<M>, Error>
    where
        M: Headed,
        F: Fn(Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<M>, tonic::Status>>,
    {
        let (response, address) = self.call_as(CallKind::Write, Duration::ZERO, call).await?;
        if let Some(header) = response.get_ref().header() {
            let endpoints = &self.inner.endpoints;
            if endpoints.heard(&address, header.member_id, header.leader_id) {
                // Without auto-sync nobody waits on it, and the permit stays unused.
                self.inner.sync_soon.notify_one();
            }
        }
        Ok(response)
    }

    /// Runs `call` as `kind`, for a request the server may hold for `wait` (see
    /// `call_waiting`); returns its answer and the endpoint that gave it.
    async fn call_as<T, F, Fut>(
        &self,
        kind: CallKind,
        wait: Duration,
        call: F,
    ) -> Result<(T, String), Error>
    where
        F: Fn(Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let endpoints = &self.inner.endpoints;
        let deadline = Instant::now() + self.inner.options.request_timeout + wait;
        // A write's attempt gets longer than a read's: resending a large write that is merely
        // slow would double its load (the cluster applies it once, but appends it twice).
        let mut route = match kind {
            CallKind::Write => Route::for_write(self.inner.options.request_timeout),
            _ => Route::new(),
        }
        .held_for(wait);
        // Whether an earlier attempt of this write may have been applied.
        let mut uncertain = false;
        loop {
            let Some(target) = endpoints.next(&mut route) else {
                tokio::time::sleep(route.start_round()).await;
                continue;
            };
            let error = match self
                .attempt(kind, &target, &mut route, deadline, &call)
                .await
            {
                Ok(value) => {
                    if kind == CallKind::Write {
                        endpoints.answered_write(&target.address);
                    } else {
                        endpoints.answered(&target.address);
                    }
                    return Ok((value, target.address));
                }
                Err(error) => error,
            };
            let pause = endpoints.pause_before_next(&route);
            let time_left = Instant::now() + pause + ATTEMPT_BUDGET_MIN < deadline;
            let decision = decide_retry(kind, uncertain, error, time_left, &endpoints.addresses());
            uncertain = decision.uncertain;
            match decision.endpoint {
                Verdict::Answered => endpoints.answered(&target.address),
                Verdict::NotHere => endpoints.failed(&target.address),
                Verdict::Redirect { leader } => {
                    endpoints.leader_is(leader);
                    route.redirect(leader);
                }
            }
            if let Next::Fail(error) = decision.next {
                return Err(error);
            }
        }
    }

    /// One attempt of `call` on `target`, within the route's budget (the whole time left for
    /// an unsafe call, which first checks with a cheap request that an endpoint that has not
    /// answered lately is alive, so that a silent member does not take the whole budget).
    async fn attempt<T, F, Fut>(
        &self,
        kind: CallKind,
        target: &Target,
        route: &mut Route,
        deadline: Instant,
        call: &F,
    ) -> Result<T, Error>
    where
        F: Fn(Transport, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        if kind == CallKind::Unsafe && !self.inner.endpoints.answered_recently(&target.address) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            self.check_alive(target, route, remaining).await?;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = match kind {
            CallKind::Unsafe => remaining,
            CallKind::Read | CallKind::Write => route.budget().min(remaining),
        }
        .max(ATTEMPT_BUDGET_MIN);
        // A little beyond the budget, so that the server's own deadline answer can arrive.
        let attempt =
            tokio::time::timeout(budget + ATTEMPT_GRACE, call(target.channel.clone(), budget));
        let answer = match kind {
            // An attempt the server holds on purpose is not a hung member's.
            CallKind::Unsafe => attempt.await,
            CallKind::Read | CallKind::Write if route.held() => attempt.await,
            // A retryable attempt is given up when its member hangs and another leads
            // (`hung.rs`).
            CallKind::Read | CallKind::Write => tokio::select! {
                answer = attempt => answer,
                leader = self.leader_elsewhere(target) => {
                    route.redirect(leader);
                    return Err(Error::Timeout {
                        message: format!(
                            "{} stopped answering and member {leader} leads now; the attempt \
                             was abandoned",
                            target.address
                        ),
                    });
                }
            },
        };
        let error = match answer {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => Error::from_status(&status, &target.address),
            Err(_) => Error::Timeout {
                message: format!("no answer from {} within {budget:?}", target.address),
            },
        };
        if matches!(error, Error::Timeout { .. }) {
            route.timed_out();
        }
        Err(error)
    }

    /// Resolves with the member to go to once an attempt on `target` has gone unanswered for
    /// `hung::SUSPECT_AFTER` and another member says it leads with a quorum; never otherwise.
    async fn leader_elsewhere(&self, target: &Target) -> u64 {
        tokio::time::sleep(hung::SUSPECT_AFTER).await;
        let endpoints = &self.inner.endpoints;
        loop {
            let mut asks = tokio::task::JoinSet::new();
            for other in endpoints.others(&target.address) {
                asks.spawn(async move {
                    let request = with_timeout(pb::ClusterStatusRequest {}, hung::POLL_EVERY);
                    let mut cluster = ClusterClient::new(other.channel);
                    let status = tokio::time::timeout(hung::POLL_EVERY, cluster.status(request));
                    let status = status.await.ok()?.ok()?.into_inner();
                    let member = status.header.map_or(0, |header| header.member_id);
                    Some((
                        other.address,
                        hung::Seen {
                            member,
                            leader: status.leader_id,
                            leader_has_quorum: status.leader_has_quorum,
                        },
                    ))
                });
            }
            // Decided by the first member that leads: others may hang too.
            let mut seen = Vec::new();
            while let Some(answer) = asks.join_next().await {
                if let Ok(Some((address, answer))) = answer {
                    endpoints.identify(&address, answer.member);
                    seen.push(answer);
                }
                let target_id = endpoints.member_of(&target.address);
                if let Some(leader) = hung::moved_on(target_id, &seen) {
                    return leader;
                }
            }
            tokio::time::sleep(hung::POLL_EVERY).await;
        }
    }

    /// Asks `target` for its status within the route's budget; any failure becomes a "not
    /// applied" `Unavailable` (nothing else was sent).
    async fn check_alive(
        &self,
        target: &Target,
        route: &mut Route,
        remaining: Duration,
    ) -> Result<(), Error> {
        let budget = route.budget().min(remaining).max(ATTEMPT_BUDGET_MIN);
        let request = with_timeout(pb::ClusterStatusRequest {}, budget);
        let mut cluster = ClusterClient::new(target.channel.clone());
        let failure =
            match tokio::time::timeout(budget + ATTEMPT_GRACE, cluster.status(request)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(status)) => Error::from_status(&status, &target.address).to_string(),
                Err(_) => {
                    route.timed_out();
                    format!("no answer within {budget:?}")
                }
            };
        Err(Error::Unavailable {
            message: format!(
                "{} did not answer a status check: {failure}",
                target.address
            ),
            leader_hint: None,
        })
    }

    fn namespace(channel: Transport) -> NamespaceClient<Transport> {
        NamespaceClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Creates a node.
    pub async fn create(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        options: &CreateOptions,
    ) -> Result<Created, Error> {
        let (write_id, _in_flight) = self.inner.write_ids.issue();
        self.create_as(path, data.into(), options, write_id).await
    }

    /// Creates a node with a write id the caller issued (and keeps in flight), so that the
    /// caller can send the same create again after an unknown outcome and learn what the
    /// first one did: the cluster applies a write id at most once and answers a repeat with
    /// the first outcome.
    pub(crate) async fn create_as(
        &self,
        path: &str,
        data: Vec<u8>,
        options: &CreateOptions,
        write_id: pb::WriteId,
    ) -> Result<Created, Error> {
        let request = pb::CreateRequest {
            path: path.to_owned(),
            data,
            kind: options.kind.to_pb(),
            sequential: options.sequential,
            make_parents: options.make_parents,
            session_id: options.session_id,
            write_id: Some(write_id),
        };
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).create(request).await }
            })
            .await?
            .into_inner();
        Ok(Created {
            path: response.path,
            stat: response.stat.into(),
            header: response.header.into(),
        })
    }

    /// Reads a node with a linearizable read.
    pub async fn get(&self, path: &str) -> Result<NodeData, Error> {
        self.get_with(path, Consistency::Linearizable).await
    }

    /// Reads a node at the given consistency.
    pub async fn get_with(&self, path: &str, consistency: Consistency) -> Result<NodeData, Error> {
        let request = pb::GetRequest {
            path: path.to_owned(),
            read: Some(consistency.to_pb()),
        };
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).get(request).await }
            })
            .await?
            .into_inner();
        Ok(NodeData {
            data: response.data,
            stat: response.stat.into(),
            header: response.header.into(),
        })
    }

    /// Replaces a node's data, if `expected_version` is `None` or equals its version.
    pub async fn set(
        &self,
        path: &str,
        data: impl Into<Vec<u8>>,
        expected_version: Option<u64>,
    ) -> Result<Stat, Error> {
        let (write_id, _in_flight) = self.inner.write_ids.issue();
        let request = pb::SetRequest {
            path: path.to_owned(),
            data: data.into(),
            expected_version,
            write_id: Some(write_id),
        };
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).set(request).await }
            })
            .await?
            .into_inner();
        Ok(response.stat.into())
    }

    /// Deletes a node (and with `recursive`, its subtree); returns how many nodes went.
    pub async fn delete(&self, path: &str, options: DeleteOptions) -> Result<u64, Error> {
        let (write_id, _in_flight) = self.inner.write_ids.issue();
        let request = pb::DeleteRequest {
            path: path.to_owned(),
            expected_version: options.expected_version,
            recursive: options.recursive,
            write_id: Some(write_id),
        };
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).delete(request).await }
            })
            .await?
            .into_inner();
        Ok(response.deleted)
    }

    /// The node's stat, or `None` when it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        let request = pb::ExistsRequest {
            path: path.to_owned(),
            read: Some(Consistency::Linearizable.to_pb()),
        };
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).exists(request).await }
            })
            .await?
            .into_inner();
        Ok(response.exists.then(|| response.stat.into()))
    }

    /// One page of a node's children in name order.
    pub async fn children_page(
        &self,
        path: &str,
        page_size: u32,
        page_token: Option<&str>,
        with_stats: bool,
        consistency: Consistency,
    ) -> Result<ChildrenPage, Error> {
        let request = pb::ChildrenRequest {
            path: path.to_owned(),
            read: Some(consistency.to_pb()),
            page_size,
            page_token: page_token.unwrap_or_default().to_owned(),
            with_stats,
        };
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).children(request).await }
            })
            .await?
            .into_inner();
        Ok(ChildrenPage {
            children: response
                .children
                .into_iter()
                .map(|child| Child {
                    name: child.name,
                    stat: child.stat.map(|stat| Some(stat).into()),
                })
                .collect(),
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
            stat: response.stat.into(),
            header: response.header.into(),
        })
    }

    /// All children names of a node, fetched page by page.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .children_page(path, 0, token.as_deref(), false, Consistency::Linearizable)
                .await?;
            names.extend(page.children.into_iter().map(|child| child.name));
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(names),
            }
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, Error> {
        let mut request = txn.request;
        let (write_id, _in_flight) = self.inner.write_ids.issue();
        request.write_id = Some(write_id);
        let response = self
            .call_write(|channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).txn(request).await }
            })
            .await?
            .into_inner();
        Ok(TxnResult::from_pb(response))
    }

    /// Asks a member to answer once the queue turn of `ask.name` in `ask.directory` comes
    /// (`AwaitTurn`, see the proto), holding the request up to `wait`. `None` when the member
    /// predates `AwaitTurn`: list and watch instead.
    pub(crate) async fn await_turn(
        &self,
        ask: &pb::AwaitTurnRequest,
        wait: Duration,
    ) -> Result<Option<TurnAnswer>, Error> {
        let request = pb::AwaitTurnRequest {
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            ..ask.clone()
        };
        let response = self
            .call_waiting(wait, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move {
                    match WatchClient::new(channel).await_turn(request).await {
                        Ok(response) => Ok(Some(response.into_inner())),
                        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
                        Err(status) => Err(status),
                    }
                }
            })
            .await?;
        Ok(response.map(|response| TurnAnswer {
            granted: response.granted,
            revision: response.header.map_or(0, |header| header.revision),
            waited: response.waited,
        }))
    }

    /// Asks whether `token` is still the create revision of the node at `path`.
    pub async fn check_fence(&self, path: &str, token: u64) -> Result<FenceCheck, Error> {
        let request = pb::CheckFenceRequest {
            path: path.to_owned(),
            token,
            read: Some(Consistency::Linearizable.to_pb()),
        };
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).check_fence(request).await }
            })
            .await?
            .into_inner();
        Ok(FenceCheck {
            current: response.current,
            current_token: response.current_token,
            header: response.header.into(),
        })
    }

    /// The answering member's view of the cluster.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Error> {
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(pb::ClusterStatusRequest {}, timeout);
                async move { ClusterClient::new(channel).status(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// The cluster's members as the answering member knows them.
    pub async fn member_list(&self) -> Result<Vec<pb::Member>, Error> {
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(pb::MemberListRequest {}, timeout);
                async move { ClusterClient::new(channel).member_list(request).await }
            })
            .await?;
        Ok(response.into_inner().members)
    }

    /// Adds a learner: it receives the log but does not vote until promoted.
    pub async fn member_add(&self, id: u64, peer_address: &str) -> Result<Vec<pb::Member>, Error> {
        let request = pb::MemberAddRequest {
            id,
            peer_address: peer_address.to_owned(),
        };
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { ClusterClient::new(channel).member_add(request).await }
            })
            .await?;
        Ok(response.into_inner().members)
    }

    /// Makes a learner a voter.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<pb::Member>, Error> {
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(pb::MemberPromoteRequest { id }, timeout);
                async move { ClusterClient::new(channel).member_promote(request).await }
            })
            .await?;
        Ok(response.into_inner().members)
    }

    /// Removes a member (voter or learner); a removed member stops itself.
    pub async fn member_remove(&self, id: u64) -> Result<Vec<pb::Member>, Error> {
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(pb::MemberRemoveRequest { id }, timeout);
                async move { ClusterClient::new(channel).member_remove(request).await }
            })
            .await?;
        Ok(response.into_inner().members)
    }

    /// Hands leadership to voter `target_id` (0: the most caught-up voter other than the
    /// leader): the leader stops taking writes, waits until the target holds its whole log and
    /// asks it to start an election at once, so writes pause for about a round trip instead of
    /// an election timeout. Use it before restarting the leader. Returns the leader after the
    /// move and its term.
    ///
    /// Not idempotent: retried only when the cluster said it was not applied.
    ///
    /// ```no_run
    /// # async fn example(client: coord_client::Client) -> Result<(), coord_client::Error> {
    /// let (leader, term) = client.member_move_leader(0).await?;
    /// println!("member {leader} leads in term {term}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_move_leader(&self, target_id: u64) -> Result<(u64, u64), Error> {
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(pb::MemberMoveLeaderRequest { target_id }, timeout);
                async move {
                    ClusterClient::new(channel)
                        .member_move_leader(request)
                        .await
                }
            })
            .await?
            .into_inner();
        Ok((response.leader_id, response.term))
    }

    /// The header of a cheap request: which revision, term and leader an endpoint knows.
    pub async fn header(&self) -> Result<Header, Error> {
        Ok(self.cluster_status().await?.header.into())
    }
}

/// Refreshes the endpoints of the client behind `inner` from its member list every
/// `AUTO_SYNC_INTERVAL`, or once `soon` is notified (at most every `SYNC_SOON_GAP`), until
/// the client is gone. Between refreshes it holds only the weak reference, so it never keeps
/// the client alive; the client's drop also aborts it.
async fn auto_sync(inner: Weak<Inner>, soon: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(AUTO_SYNC_INTERVAL) => {}
            () = soon.notified() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner };
        // A failed refresh changes nothing: the endpoints known still serve.
        if let Ok(members) = client.member_list().await {
            client.inner.endpoints.learn(&members);
        }
        drop(client);
        tokio::time::sleep(SYNC_SOON_GAP).await;
    }
}

/// What `call_as` does after a failed attempt, as `decide_retry` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RetryDecision {
    /// What the failure says about the endpoint that was tried.
    endpoint: Verdict,
    /// Whether any attempt so far, this one included, may have been applied.
    uncertain: bool,
    /// Retry (on the next endpoint at once; after a pause if every endpoint was tried in
    /// this round), or fail with this error.
    next: Next,
}

/// What a failed attempt says about the endpoint it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The endpoint served the request (a rejection is an answer): keep using it.
    Answered,
    /// "Not here": the endpoint could not be reached, dropped the connection, did not answer
    /// in time (a member partitioned away or paused refuses nothing, it only stays silent),
    /// knows no leader, is starting or shutting down, failed, or is no longer a member. Move
    /// to the next endpoint at once and avoid this one for a while.
    NotHere,
    /// The member knows no leader it can reach but named one: try that member's endpoint next.
    Redirect {
        /// The member id it named.
        leader: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Retry,
    Fail(Error),
}

/// What `error` says about the endpoint that answered with it.
fn verdict(error: &Error) -> Verdict {
    match error {
        Error::Unavailable {
            leader_hint: Some(leader),
            ..
        } => Verdict::Redirect { leader: *leader },
        Error::Unavailable { .. }
        | Error::NotAMember { .. }
        | Error::Unreachable { .. }
        | Error::ConnectionLost { .. }
        | Error::Timeout { .. }
        | Error::Interrupted { .. }
        | Error::Internal { .. } => Verdict::NotHere,
        _ => Verdict::Answered,
    }
}

/// The client's retry decision after an attempt of a `kind` call failed with `error`.
/// `uncertain` says whether an earlier attempt may have been applied; `time_left` whether
/// another attempt (after the pause, if the round is over) still starts before the call's
/// deadline; `endpoints` are the client's, for the error that names them. Pure: no clock, no
/// I/O, so every case is unit-tested.
///
/// - Every retry goes to another endpoint (see `Verdict`); only a rejection keeps it.
/// - A failure the cluster reports as not applied (`is_retryable`: no leader, unavailable,
///   not a member, refused connection) is retried for every kind; a lost connection or
///   unknown outcome only for idempotent calls (reads, and writes whose write id the cluster
///   applies at most once).
/// - A write that may have been applied stays "outcome unknown" (`Timeout`) whatever a later
///   attempt heard: the later attempt carries the same write id, so the write was not applied
///   twice, but the first may have been.
/// - A read that lost its connection on the last attempt of a client with several endpoints
///   reports them all unreachable.
fn decide_retry(
    kind: CallKind,
    uncertain: bool,
    error: Error,
    time_left: bool,
    endpoints: &[String],
) -> RetryDecision {
    let idempotent = kind != CallKind::Unsafe;
    let connection_failed = matches!(
        error,
        Error::ConnectionLost { .. } | Error::Unreachable { .. }
    );
    let uncertain = uncertain || error.is_outcome_unknown();
    let endpoint = verdict(&error);
    let retry =
        error.is_retryable() || (idempotent && (connection_failed || error.is_outcome_unknown()));
    let next = if retry && time_left {
        Next::Retry
    } else {
        Next::Fail(match error {
            error
                if kind == CallKind::Write
                    && uncertain
                    && (error.is_retryable() || error.is_outcome_unknown()) =>
            {
                Error::Timeout {
                    message: format!(
                        "an attempt may have been applied; the last one ended: {error}"
                    ),
                }
            }
            Error::ConnectionLost { .. } if endpoints.len() > 1 && kind == CallKind::Read => {
                Error::Unreachable {
                    endpoints: endpoints.to_vec(),
                    message: error.to_string(),
                }
            }
            other => other,
        })
    };
    RetryDecision {
        endpoint,
        uncertain,
        next,
    }
}

pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A pause between half of `pause` and all of it, drawn afresh each time, so that clients
/// that failed together (a leader died under all of them) do not retry in lockstep.
pub(crate) fn jittered(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` is keyed differently, so its hash of nothing is a fresh random number;
    // that is plenty for spreading retries and needs no extra dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    pause.mul_f64(0.5 + fraction / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Answered, NotHere};

    fn endpoints() -> Vec<String> {
        vec!["10.0.0.1:7400".to_owned(), "10.0.0.2:7400".to_owned()]
    }

    fn lost() -> Error {
        Error::ConnectionLost {
            endpoint: "10.0.0.1:7400".into(),
            message: "connection reset".into(),
        }
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "no leader".into(),
            leader_hint: None,
        }
    }

    fn decision(endpoint: Verdict, uncertain: bool, next: Next) -> RetryDecision {
        RetryDecision {
            endpoint,
            uncertain,
            next,
        }
    }

    #[test]
    fn a_read_retries_a_lost_connection_on_the_next_endpoint() {
        let retried = decide_retry(CallKind::Read, false, lost(), true, &endpoints());
        assert_eq!(retried, decision(NotHere, true, Next::Retry));
        let timed_out = Error::Timeout {
            message: "no answer".into(),
        };
        let retried = decide_retry(CallKind::Read, false, timed_out, true, &endpoints());
        assert_eq!(retried, decision(NotHere, true, Next::Retry));
    }

    #[test]
    fn a_read_out_of_time_reports_every_endpoint_unreachable() {
        let failed = decide_retry(CallKind::Read, false, lost(), false, &endpoints());
        let unreachable = Error::Unreachable {
            endpoints: endpoints(),
            message: lost().to_string(),
        };
        assert_eq!(failed, decision(NotHere, true, Next::Fail(unreachable)));
        // With one endpoint there is nothing else to name: the connection failure stands.
        let one = ["10.0.0.1:7400".to_owned()];
        let failed = decide_retry(CallKind::Read, false, lost(), false, &one);
        assert_eq!(failed, decision(NotHere, true, Next::Fail(lost())));
    }

    #[test]
    fn rejections_are_final_and_keep_the_endpoint() {
        for kind in [CallKind::Read, CallKind::Write, CallKind::Unsafe] {
            let no_node = Error::NoNode { path: "/a".into() };
            let failed = decide_retry(kind, false, no_node.clone(), true, &endpoints());
            assert_eq!(
                failed,
                decision(Answered, false, Next::Fail(no_node)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn an_unsafe_call_is_retried_only_when_not_applied() {
        let failed = decide_retry(CallKind::Unsafe, false, lost(), true, &endpoints());
        assert_eq!(failed, decision(NotHere, true, Next::Fail(lost())));
        let retried = decide_retry(CallKind::Unsafe, false, unavailable(), true, &endpoints());
        assert_eq!(retried, decision(NotHere, false, Next::Retry));
        let refused = Error::Unreachable {
            endpoints: vec!["10.0.0.1:7400".into()],
            message: "tcp connect error".into(),
        };
        let retried = decide_retry(CallKind::Unsafe, false, refused, true, &endpoints());
        assert_eq!(retried, decision(NotHere, false, Next::Retry));
    }

    #[test]
    fn a_write_that_may_have_been_applied_stays_outcome_unknown() {
        let retried = decide_retry(CallKind::Write, false, lost(), true, &endpoints());
        assert_eq!(retried, decision(NotHere, true, Next::Retry));
        // The next attempt hears "not applied", too late to try again: still unknown.
        let failed = decide_retry(CallKind::Write, true, unavailable(), false, &endpoints());
        let unknown = Error::Timeout {
            message: "an attempt may have been applied; the last one ended: unavailable: no \
                      leader"
                .into(),
        };
        assert_eq!(failed, decision(NotHere, true, Next::Fail(unknown)));
        // Without an uncertain attempt, "not applied" is the answer.
        let failed = decide_retry(CallKind::Write, false, unavailable(), false, &endpoints());
        assert_eq!(failed, decision(NotHere, false, Next::Fail(unavailable())));
        // A rejection after an uncertain attempt is reported as it is.
        let no_node = Error::NoNode { path: "/a".into() };
        let failed = decide_retry(CallKind::Write, true, no_node.clone(), true, &endpoints());
        assert_eq!(failed, decision(Answered, true, Next::Fail(no_node)));
    }

    #[test]
    fn a_member_that_is_not_here_moves_every_kind_of_call_on_at_once() {
        let not_a_member = Error::NotAMember {
            endpoint: "10.0.0.1:7400".into(),
            message: "removed".into(),
        };
        let starting = Error::Unavailable {
            message: "starting".into(),
            leader_hint: None,
        };
        for kind in [CallKind::Read, CallKind::Write, CallKind::Unsafe] {
            for error in [not_a_member.clone(), starting.clone()] {
                let retried = decide_retry(kind, false, error, true, &endpoints());
                assert_eq!(retried, decision(NotHere, false, Next::Retry), "{kind:?}");
            }
        }
        // Out of time, a removed member is reported as it is: nothing was applied.
        let failed = decide_retry(CallKind::Unsafe, false, not_a_member.clone(), false, &[]);
        assert_eq!(failed, decision(NotHere, false, Next::Fail(not_a_member)));
    }

    #[test]
    fn a_member_that_names_the_leader_sends_the_next_attempt_there() {
        let no_leader_here = Error::Unavailable {
            message: "not the leader yet".into(),
            leader_hint: Some(3),
        };
        let retried = decide_retry(CallKind::Write, false, no_leader_here, true, &endpoints());
        assert_eq!(
            retried,
            decision(Verdict::Redirect { leader: 3 }, false, Next::Retry)
        );
    }

    #[test]
    fn a_silent_or_failing_member_moves_reads_on_but_fails_an_unsafe_call() {
        let silent = Error::Timeout {
            message: "no answer from 10.0.0.1:7400 within 1s".into(),
        };
        let internal = Error::Internal {
            message: "disk".into(),
        };
        for error in [silent.clone(), internal] {
            let retried = decide_retry(CallKind::Read, false, error, true, &endpoints());
            assert_eq!(retried, decision(NotHere, true, Next::Retry));
        }
        // A membership change that may have been applied cannot be sent again.
        let failed = decide_retry(CallKind::Unsafe, false, silent.clone(), true, &endpoints());
        assert_eq!(failed, decision(NotHere, true, Next::Fail(silent)));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_pause_and_varies() {
        let pause = Duration::from_millis(400);
        let pauses: Vec<Duration> = (0..200).map(|_| jittered(pause)).collect();
        assert!(pauses
            .iter()
            .all(|jittered| *jittered >= pause / 2 && *jittered <= pause));
        let distinct: std::collections::BTreeSet<Duration> = pauses.into_iter().collect();
        assert!(distinct.len() > 100, "{} distinct pauses", distinct.len());
    }
}
