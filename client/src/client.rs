//! `Client`: a handle to a Coord cluster over one or more endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Longest pause between retries; a leader election takes a few seconds, so retrying at least
/// every half second keeps the write gap close to the election time.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Largest message the client accepts, in bytes.
const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Longest wait for one call, retries included.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(15),
        }
    }
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the endpoint in use; moves on when an endpoint fails.
    current: AtomicUsize,
    options: ClientOptions,
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
        let client = Client {
            inner: Arc::new(Inner {
                endpoints,
                channels,
                current: AtomicUsize::new(0),
                options,
            }),
        };
        client.probe().await?;
        Ok(client)
    }

    /// The endpoints this client was given.
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
    pub(crate) async fn call<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, Error>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.inner.options.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let (index, channel) = self.channel();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let error = match call(channel, remaining.max(Duration::from_millis(1))).await {
                Ok(value) => return Ok(value),
                Err(status) => Error::from_status(&status, &self.inner.endpoints[index]),
            };
            let connection_failed = matches!(
                error,
                Error::ConnectionLost { .. } | Error::Unreachable { .. }
            );
            // A member that does not answer in time may be partitioned away (a black hole
            // refuses nothing): the next call tries another one.
            if connection_failed || matches!(error, Error::Timeout { .. }) {
                self.rotate(index);
            }
            let retry = error.is_retryable() || (idempotent && connection_failed);
            if !retry || tokio::time::Instant::now() + backoff >= deadline {
                return Err(match error {
                    Error::ConnectionLost { .. }
                        if self.inner.endpoints.len() > 1 && idempotent =>
                    {
                        Error::Unreachable {
                            endpoints: self.inner.endpoints.clone(),
                            message: error.to_string(),
                        }
                    }
                    other => other,
                });
            }
            tokio::time::sleep(backoff).await;
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
        let request = pb::CreateRequest {
            path: path.to_owned(),
            data: data.into(),
            kind: options.kind.to_pb(),
            sequential: options.sequential,
            make_parents: options.make_parents,
            session_id: options.session_id,
            write_id: None,
        };
        let response = self
            .call(false, |channel, timeout| {
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
        let request = pb::SetRequest {
            path: path.to_owned(),
            data: data.into(),
            expected_version,
            write_id: None,
        };
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { Client::namespace(channel).set(request).await }
            })
            .await?
            .into_inner();
        Ok(response.stat.into())
    }

    /// Deletes a node (and with `recursive`, its subtree); returns how many nodes went.
    pub async fn delete(&self, path: &str, options: DeleteOptions) -> Result<u64, Error> {
        let request = pb::DeleteRequest {
            path: path.to_owned(),
            expected_version: options.expected_version,
            recursive: options.recursive,
            write_id: None,
        };
        let response = self
            .call(false, |channel, timeout| {
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
        let request = txn.request;
        let response = self
            .call(false, |channel, timeout| {
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

pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
