//! `Http2Channel`: a lazily connecting HTTP/2 channel driven through hyper's `SendRequest`
//! directly, for Coord's client and for members calling each other.
//!
//! tonic's `Channel` puts a `tower::buffer` worker task between a caller and the connection:
//! every call is handed to that task, which hands it to the connection's task. On a member's
//! peer calls that was one more task to wake on every AppendEntries, forward and read index
//! (1.4 of the 20 wake-ups per write across a cluster and its client, `perf record -e
//! sched:sched_wakeup`); on a client, one more on every call. Here the caller hands its request
//! to the connection's task itself. Measured on a client (`coord-bench writes --clients 1`,
//! December 2026): its CPU per write 10 to 18 % lower, though its context switches rose (the
//! connection's task now runs on whichever worker is free rather than beside the buffer's).
//!
//! Invariants:
//! - at most one connection at a time, opened by the first call that finds none open (calls
//!   that arrive meanwhile wait for it), and again by the first call after it closed;
//! - a call that could not connect fails `UNAVAILABLE` with the connector's own wording ("tcp
//!   connect error", or the TLS handshake's) and the `ConnectError` as its source: such a call
//!   certainly never reached the other side. Every other failure is hyper's, mapped by tonic
//!   as for its own channel;
//! - every request goes to the channel's origin (scheme and authority), whatever its URI says;
//! - a channel made with `Http2Channel::counting` adds one to its counter for each connection
//!   it opened (the HTTP/2 handshake done), never for a failed attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{Request, Response, Uri};
use tonic::codegen::Service;

use crate::{ConnectError, TcpConnector, TlsConnector};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's byte stream, plaintext or TLS.
trait ChannelIo: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> ChannelIo for T {}

/// How a channel's connections are opened.
#[derive(Clone)]
pub enum ChannelConnector {
    Tcp(TcpConnector),
    Tls(TlsConnector),
}

impl ChannelConnector {
    async fn connect(&self, uri: Uri) -> Result<Box<dyn ChannelIo>, ConnectError> {
        Ok(match self {
            ChannelConnector::Tcp(connector) => Box::new(connector.clone().call(uri).await?),
            ChannelConnector::Tls(connector) => Box::new(connector.clone().call(uri).await?),
        })
    }
}

/// The HTTP/2 settings of a channel's connections (hyper's defaults where `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Http2Settings {
    /// Each stream's initial flow-control window.
    pub stream_window_bytes: Option<u32>,
    /// The connection's initial flow-control window.
    pub connection_window_bytes: Option<u32>,
    /// Pings every `interval`, idle or not; no answer within `timeout` closes the connection
    /// and fails every call on it.
    pub keep_alive: Option<KeepAlive>,
}

/// HTTP/2 keep-alive pings (see `Http2Settings::keep_alive`).
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// Time between pings.
    pub interval: Duration,
    /// How long a ping may go unanswered.
    pub timeout: Duration,
}

/// A lazily connecting channel to one origin (see the module documentation). Clones share it.
#[derive(Clone)]
pub struct Http2Channel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `http(s)://host:port` of the other side.
    origin: Uri,
    connector: ChannelConnector,
    settings: Http2Settings,
    /// The open connection's sender, if any.
    open: Mutex<Option<SendRequest<Body>>>,
    /// Held while a connection is being opened, so that only one is.
    opening: tokio::sync::Mutex<()>,
    /// Counts the connections opened, when the owner wants them counted.
    opened: Option<Arc<AtomicU64>>,
}

impl Http2Channel {
    /// A channel to `origin` that connects on its first call.
    pub fn new(origin: Uri, connector: ChannelConnector, settings: Http2Settings) -> Http2Channel {
        Http2Channel::with_counter(origin, connector, settings, None)
    }

    /// A channel like `new`'s that adds one to `opened` for each connection it opens: channels
    /// given the same counter add up to how often they (re)connected.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use coord_tls::{ChannelConnector, Http2Channel, Http2Settings, TcpConnector};
    ///
    /// let opened = Arc::new(AtomicU64::new(0));
    /// let connector = ChannelConnector::Tcp(TcpConnector::new(Duration::from_secs(1)));
    /// let origin = "http://127.0.0.1:2379".parse().unwrap();
    /// let settings = Http2Settings::default();
    /// let _channel = Http2Channel::counting(origin, connector, settings, opened.clone());
    /// // Nothing is dialled before the first call.
    /// assert_eq!(opened.load(Ordering::Relaxed), 0);
    /// ```
    pub fn counting(
        origin: Uri,
        connector: ChannelConnector,
        settings: Http2Settings,
        opened: Arc<AtomicU64>,
    ) -> Http2Channel {
        Http2Channel::with_counter(origin, connector, settings, Some(opened))
    }

    fn with_counter(
        origin: Uri,
        connector: ChannelConnector,
        settings: Http2Settings,
        opened: Option<Arc<AtomicU64>>,
    ) -> Http2Channel {
        Http2Channel {
            shared: Arc::new(Shared {
                origin,
                connector,
                settings,
                open: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                opened,
            }),
        }
    }
}

impl Shared {
    fn open_sender(&self) -> Option<SendRequest<Body>> {
        // The slot holds a whole value after any panic.
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.as_ref().filter(|sender| !sender.is_closed()).cloned()
    }

    /// The open connection's sender, opening a connection first if none is open.
    async fn sender(&self) -> Result<SendRequest<Body>, tonic::Status> {
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let _opening = self.opening.lock().await;
        if let Some(sender) = self.open_sender() {
            return Ok(sender);
        }
        let io = self
            .connector
            .connect(self.origin.clone())
            .await
            .map_err(|error| {
                let mut status = tonic::Status::unavailable(error.to_string());
                status.set_source(Arc::new(error));
                status
            })?;
        let mut builder = Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some(bytes) = self.settings.stream_window_bytes {
            builder.initial_stream_window_size(bytes);
        }
        if let Some(bytes) = self.settings.connection_window_bytes {
            builder.initial_connection_window_size(bytes);
        }
        if let Some(keep_alive) = self.settings.keep_alive {
            builder
                .keep_alive_interval(keep_alive.interval)
                .keep_alive_timeout(keep_alive.timeout)
                .keep_alive_while_idle(true);
        }
        let (sender, connection) = builder.handshake::<_, Body>(io).await.map_err(|error| {
            tonic::Status::unavailable(format!("HTTP/2 with {}: {error}", self.origin))
        })?;
        tokio::spawn(async move {
            // Ends when either side closes the connection; the next call opens another.
            let _ = connection.await;
        });
        if let Some(opened) = &self.opened {
            opened.fetch_add(1, Ordering::Relaxed);
        }
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    /// `uri` with this channel's scheme and authority (tonic's generated clients give only
    /// the path).
    fn addressed(&self, uri: Uri) -> Result<Uri, BoxError> {
        let mut parts = uri.into_parts();
        parts.scheme = self.origin.scheme().cloned();
        parts.authority = self.origin.authority().cloned();
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        Ok(Uri::from_parts(parts)?)
    }
}

impl Service<Request<Body>> for Http2Channel {
    type Response = Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = shared.addressed(parts.uri)?;
            let mut sender = shared.sender().await?;
            sender.ready().await?;
            Ok(sender
                .send_request(Request::from_parts(parts, body))
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_to(origin: &str) -> Http2Channel {
        let connector = ChannelConnector::Tcp(TcpConnector::new(Duration::from_secs(1)));
        Http2Channel::new(origin.parse().unwrap(), connector, Http2Settings::default())
    }

    #[test]
    fn every_request_goes_to_the_origin() {
        let channel = channel_to("http://127.0.0.1:7400");
        let addressed = |uri: &str| channel.shared.addressed(uri.parse().unwrap()).unwrap();
        assert_eq!(
            addressed("/coord.v1.Namespace/Get"),
            "http://127.0.0.1:7400/coord.v1.Namespace/Get"
        );
        assert_eq!(
            addressed("https://elsewhere:1/coord.v1.Watch/Watch"),
            "http://127.0.0.1:7400/coord.v1.Watch/Watch"
        );
    }

    #[tokio::test]
    async fn a_call_that_cannot_connect_says_it_was_never_sent() {
        // A port nothing listens on: bound, then closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let mut channel = channel_to(&format!("http://{address}"));
        let request = Request::builder()
            .uri("/coord.v1.Namespace/Get")
            .body(Body::empty())
            .unwrap();
        let error = channel.call(request).await.unwrap_err();
        let status = error.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("tcp connect error"),
            "{}",
            status.message()
        );
        let source = std::error::Error::source(status).expect("the connector's error");
        assert!(
            source.downcast_ref::<ConnectError>().is_some(),
            "{source:?}"
        );
    }
}
