//! `Client`: a handle to a Coord cluster over one or more endpoints.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::cluster_client::ClusterClient;
use coord_proto::v1::namespace_client::NamespaceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;
use crate::txn::{Txn, TxnResult};
use crate::types::{
    Child, ChildrenPage, Consistency, CreateOptions, Created, DeleteOptions, FenceCheck, Header,
    NodeData, Stat,
};
use crate::write_id::WriteIds;

/// Longest pause between retries; a leader election takes a few seconds, so retrying at least
/// every half second keeps the write gap close to the election time.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
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

/// How long past its budget an attempt waits for the server's own deadline answer.
const ATTEMPT_GRACE: Duration = Duration::from_millis(100);
/// Largest message the client accepts, in bytes.
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Longest wait for one call, retries included.
    pub request_timeout: Duration,
    /// On connecting, ask the cluster for its members and add their client addresses to the
    /// endpoints given, so the client can fail over to members it was not told about.
    /// Turn it off when members advertise addresses this client cannot or should not use
    /// (behind NAT, or a test's fault-injecting proxies).
    pub discover_members: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
            discover_members: true,
        }
    }
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the endpoint in use; moves on when an endpoint fails.
    current: AtomicUsize,
    options: ClientOptions,
    /// Ids that make every write exactly-once, so that writes can be retried.
    write_ids: WriteIds,
    /// Events delivered to this client's watches, recipes' included.
    watch_events: AtomicU64,
}

/// A connection to a Coord cluster. Cheap to clone; clones share connections.
///
/// Reads are retried on other endpoints when one cannot be reached. Writes are retried only
/// when the cluster said they were not applied ([`Error::is_retryable`]); a write that fails
/// with [`Error::is_outcome_unknown`] may have been applied.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use coord_client::{Client, CreateOptions};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
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

    /// Like [`Client::connect`], with explicit options.
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
        let discover = options.discover_members;
        let client = Client::with_endpoints(endpoints, options)?;
        client.probe().await?;
        if !discover {
            return Ok(client);
        }
        // Members the caller did not name become fail-over targets after the named ones.
        let known = client.endpoints().to_vec();
        let discovered: Vec<String> = match client.member_list().await {
            Ok(members) => members
                .into_iter()
                .map(|member| member.client_address)
                .filter(|address| !address.is_empty() && !known.contains(address))
                .collect(),
            // Discovery is a convenience: the endpoints given still serve.
            Err(_) => Vec::new(),
        };
        if discovered.is_empty() {
            return Ok(client);
        }
        let current = client.inner.current.load(Ordering::Relaxed);
        let mut endpoints = known;
        endpoints.extend(discovered);
        let options = client.inner.options.clone();
        let discovered_client = Client::with_endpoints(endpoints, options)?;
        discovered_client
            .inner
            .current
            .store(current, Ordering::Relaxed);
        Ok(discovered_client)
    }

    /// A client over `endpoints` (connections are opened lazily).
    fn with_endpoints(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, Error> {
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let uri = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("http://{endpoint}")
            };
            let channel = Endpoint::from_shared(uri)
                .map_err(|error| Error::InvalidArgument {
                    message: format!("endpoint {endpoint:?}: {error}"),
                })?
                .connect_timeout(options.connect_timeout)
                .tcp_nodelay(true)
                .connect_lazy();
            channels.push(channel);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                channels,
                current: AtomicUsize::new(0),
                options,
                write_ids: WriteIds::new(),
                watch_events: AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The longest single attempt of an idempotent call.
    fn attempt_cap(&self) -> Duration {
        (self.inner.options.request_timeout / 4).max(Duration::from_secs(1))
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

    pub(crate) fn count_watch_event(&self) {
        self.inner.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    /// The ids that make this client's writes exactly-once.
    pub(crate) fn write_ids(&self) -> &WriteIds {
        &self.inner.write_ids
    }

    /// The endpoints this client uses: those it was given, then any members it discovered.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Finds an endpoint that answers.
    async fn probe(&self) -> Result<(), Error> {
        let mut last = String::new();
        for _ in 0..self.inner.endpoints.len() {
            let (index, channel) = self.channel();
            let mut cluster = ClusterClient::new(channel);
            let mut request = tonic::Request::new(pb::MemberListRequest {});
            request.set_timeout(self.inner.options.connect_timeout);
            match cluster.member_list(request).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    last = format!("{}: {}", self.inner.endpoints[index], status.message());
                    self.rotate(index);
                }
            }
        }
        Err(Error::Unreachable {
            endpoints: self.inner.endpoints.clone(),
            message: last,
        })
    }

    pub(crate) fn channel(&self) -> (usize, Channel) {
        let index = self.inner.current.load(Ordering::Relaxed) % self.inner.channels.len();
        (index, self.inner.channels[index].clone())
    }

    pub(crate) fn rotate(&self, failed: usize) {
        let next = (failed + 1) % self.inner.channels.len();
        let _ =
            self.inner
                .current
                .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `call` against the current endpoint, moving to the next endpoint and retrying with
    /// back-off while the failure allows it, until the request timeout.
    ///
    /// `idempotent` calls (reads, and writes that carry a write id) are retried even when the
    /// outcome of an attempt is unknown, and each attempt gets at most a quarter of the request
    /// timeout (at least a second), so that one member that swallows a request does not use up
    /// the whole budget. Every attempt is bounded here, not only by the server: a reply lost in
    /// the network would otherwise be awaited forever.
    pub(crate) async fn call<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, Error>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let kind = if idempotent {
            CallKind::Read
        } else {
            CallKind::Unsafe
        };
        self.call_as(kind, call).await
    }

    /// Like `call`, for a write that carries a write id: retried like a read, since the
    /// cluster applies it at most once; if any attempt may have been applied, a later attempt's
    /// "not applied" does not clear that, and the error says the outcome is unknown.
    pub(crate) async fn call_write<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.call_as(CallKind::Write, call).await
    }

    async fn call_as<T, F, Fut>(&self, kind: CallKind, call: F) -> Result<T, Error>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let idempotent = kind != CallKind::Unsafe;
        // Whether an earlier attempt of this write may have been applied.
        let mut uncertain = false;
        let started = tokio::time::Instant::now();
        let deadline = started + self.inner.options.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let (index, channel) = self.channel();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let budget = if idempotent {
                remaining.min(self.attempt_cap())
            } else {
                remaining
            }
            .max(Duration::from_millis(1));
            // A little beyond the budget, so that the server's own deadline answer can arrive.
            let attempt = tokio::time::timeout(budget + ATTEMPT_GRACE, call(channel, budget));
            let error = match attempt.await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => Error::from_status(&status, &self.inner.endpoints[index]),
                Err(_) => Error::Timeout {
                    message: format!(
                        "no answer from {} within {budget:?}",
                        self.inner.endpoints[index]
                    ),
                },
            };
            let time_left = tokio::time::Instant::now() + backoff < deadline;
            let decision = decide_retry(kind, uncertain, error, time_left, &self.inner.endpoints);
            uncertain = decision.uncertain;
            if decision.rotate {
                self.rotate(index);
            }
            if let Next::Fail(error) = decision.next {
                return Err(error);
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    fn namespace(channel: Channel) -> NamespaceClient<Channel> {
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

    /// The header of a cheap request: which revision, term and leader an endpoint knows.
    pub async fn header(&self) -> Result<Header, Error> {
        Ok(self.cluster_status().await?.header.into())
    }
}

/// What `call_as` does after a failed attempt, as `decide_retry` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RetryDecision {
    /// Move to the next endpoint: this one could not be reached, dropped the connection, or
    /// did not answer in time (a member partitioned away refuses nothing, it only stays
    /// silent).
    rotate: bool,
    /// Whether any attempt so far, this one included, may have been applied.
    uncertain: bool,
    /// Retry after a back-off, or fail with this error.
    next: Next,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    Retry,
    Fail(Error),
}

/// The client's retry decision after an attempt of a `kind` call failed with `error`.
/// `uncertain` says whether an earlier attempt may have been applied; `time_left` whether a
/// back-off still ends before the call's deadline; `endpoints` are the client's, for the error
/// that names them. Pure: no clock, no I/O, so every case is unit-tested.
///
/// - A failure the cluster reports as not applied (`is_retryable`) is retried for every kind;
///   a lost connection or unknown outcome only for idempotent calls (reads, and writes whose
///   write id the cluster applies at most once).
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
    let rotate = connection_failed || matches!(error, Error::Timeout { .. });
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
        rotate,
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

    fn decision(rotate: bool, uncertain: bool, next: Next) -> RetryDecision {
        RetryDecision {
            rotate,
            uncertain,
            next,
        }
    }

    #[test]
    fn a_read_retries_a_lost_connection_on_the_next_endpoint() {
        let retried = decide_retry(CallKind::Read, false, lost(), true, &endpoints());
        assert_eq!(retried, decision(true, true, Next::Retry));
        let timed_out = Error::Timeout {
            message: "no answer".into(),
        };
        let retried = decide_retry(CallKind::Read, false, timed_out, true, &endpoints());
        assert_eq!(retried, decision(true, true, Next::Retry));
    }

    #[test]
    fn a_read_out_of_time_reports_every_endpoint_unreachable() {
        let failed = decide_retry(CallKind::Read, false, lost(), false, &endpoints());
        let unreachable = Error::Unreachable {
            endpoints: endpoints(),
            message: lost().to_string(),
        };
        assert_eq!(failed, decision(true, true, Next::Fail(unreachable)));
        // With one endpoint there is nothing else to name: the connection failure stands.
        let one = ["10.0.0.1:7400".to_owned()];
        let failed = decide_retry(CallKind::Read, false, lost(), false, &one);
        assert_eq!(failed, decision(true, true, Next::Fail(lost())));
    }

    #[test]
    fn rejections_are_final_and_keep_the_endpoint() {
        for kind in [CallKind::Read, CallKind::Write, CallKind::Unsafe] {
            let no_node = Error::NoNode { path: "/a".into() };
            let failed = decide_retry(kind, false, no_node.clone(), true, &endpoints());
            assert_eq!(
                failed,
                decision(false, false, Next::Fail(no_node)),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn an_unsafe_call_is_retried_only_when_not_applied() {
        let failed = decide_retry(CallKind::Unsafe, false, lost(), true, &endpoints());
        assert_eq!(failed, decision(true, true, Next::Fail(lost())));
        let retried = decide_retry(CallKind::Unsafe, false, unavailable(), true, &endpoints());
        assert_eq!(retried, decision(false, false, Next::Retry));
        let refused = Error::Unreachable {
            endpoints: vec!["10.0.0.1:7400".into()],
            message: "tcp connect error".into(),
        };
        let retried = decide_retry(CallKind::Unsafe, false, refused, true, &endpoints());
        assert_eq!(retried, decision(true, false, Next::Retry));
    }

    #[test]
    fn a_write_that_may_have_been_applied_stays_outcome_unknown() {
        let retried = decide_retry(CallKind::Write, false, lost(), true, &endpoints());
        assert_eq!(retried, decision(true, true, Next::Retry));
        // The next attempt hears "not applied", too late to try again: still unknown.
        let failed = decide_retry(CallKind::Write, true, unavailable(), false, &endpoints());
        let unknown = Error::Timeout {
            message: "an attempt may have been applied; the last one ended: unavailable: no \
                      leader"
                .into(),
        };
        assert_eq!(failed, decision(false, true, Next::Fail(unknown)));
        // Without an uncertain attempt, "not applied" is the answer.
        let failed = decide_retry(CallKind::Write, false, unavailable(), false, &endpoints());
        assert_eq!(failed, decision(false, false, Next::Fail(unavailable())));
        // A rejection after an uncertain attempt is reported as it is.
        let no_node = Error::NoNode { path: "/a".into() };
        let failed = decide_retry(CallKind::Write, true, no_node.clone(), true, &endpoints());
        assert_eq!(failed, decision(false, true, Next::Fail(no_node)));
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
