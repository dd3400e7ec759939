//! `PeerChannel`: the HTTP/2 connection this member's calls to one peer go over, driven
//! through hyper's `SendRequest` directly.
//!
//! tonic's `Channel` puts a `tower::buffer` worker task between a caller and the connection:
//! every call is handed to that task, which hands it to the connection's task. On the path of
//! every AppendEntries, forward and read-index call, that was one more task to wake (1.4 of
//! the 20 wake-ups per write across a cluster and its client, `perf record -e
//! sched:sched_wakeup`). Here the caller hands its request to the connection's task itself.
//!
//! Invariants:
//! - at most one connection at a time, opened by the first call that finds none open (calls
//!   that arrive meanwhile wait for it), and again by the first call after it closed;
//! - a call that could not connect fails `UNAVAILABLE` with the connector's own wording ("tcp
//!   connect error", or the TLS handshake's), which `PeerCallError::never_sent` reads: such a
//!   call certainly never reached the peer. Every other failure is hyper's, mapped by tonic as
//!   for its own channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use coord_tls::{ConnectError, TcpConnector, TlsConnector};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, Uri};
use tonic::codegen::Service;

/// HTTP/2 flow-control windows of peer connections: a replication batch of a few MiB crosses
/// in a few round trips rather than hundreds of 64 KiB windows.
pub const PEER_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const PEER_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's byte stream, plaintext or TLS.
trait PeerIo: hyper::rt::Read + hyper::rt::Write + Unpin + Send {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send> PeerIo for T {}

/// How connections to the peer are opened.
#[derive(Clone)]
pub enum PeerConnector {
    Tcp(TcpConnector),
    Tls(TlsConnector),
}

impl PeerConnector {
    async fn connect(&self, uri: Uri) -> Result<Box<dyn PeerIo>, ConnectError> {
        Ok(match self {
            PeerConnector::Tcp(connector) => Box::new(connector.clone().call(uri).await?),
            PeerConnector::Tls(connector) => Box::new(connector.clone().call(uri).await?),
        })
    }
}

/// A lazily connecting channel to one peer (see the module documentation). Clones share it.
#[derive(Clone)]
pub struct PeerChannel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `http(s)://host:port` of the peer.
    origin: Uri,
    connector: PeerConnector,
    /// The open connection's sender, if any.
    open: Mutex<Option<SendRequest<Body>>>,
    /// Held while a connection is being opened, so that only one is.
    opening: tokio::sync::Mutex<()>,
}

impl PeerChannel {
    pub fn new(origin: Uri, connector: PeerConnector) -> PeerChannel {
        PeerChannel {
            shared: Arc::new(Shared {
                origin,
                connector,
                open: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
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
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(PEER_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW_BYTES)
            .handshake::<_, Body>(io)
            .await
            .map_err(|error| {
                tonic::Status::unavailable(format!("HTTP/2 with {}: {error}", self.origin))
            })?;
        tokio::spawn(async move {
            // Ends when the peer or this member closes the connection; the next call opens
            // another.
            let _ = connection.await;
        });
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }
}

impl Service<Request<Body>> for PeerChannel {
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
            let mut sender = shared.sender().await?;
            sender.ready().await?;
            Ok(sender.send_request(request).await?)
        })
    }
}
