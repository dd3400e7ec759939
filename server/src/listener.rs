//! `accept`: a port's TCP connections, handed to tonic, at most `--max-connections` at once.
//! A connection past the cap is accepted and closed at once, with a log line; an accept error
//! (such as running out of file descriptors) is logged and retried after a pause, never a
//! silent spin. Each connection is checked for the HTTP/2 preface as it arrives, so that
//! garbage on a port is logged with its sender instead of vanishing.
//!
//! While the member starts (loading a large snapshot can take minutes), `refuse_until` answers
//! every request on the accepted connections with a retryable "starting" status, so clients
//! move on at once instead of hanging on a port that accepts but never answers; once the
//! member is ready those connections are closed gracefully and the rest of the stream goes to
//! the real services.
//!
//! With TLS (`TlsPort`), each connection's handshake runs in a task of its own, so a slow or
//! silent sender never holds up the next accept; only connections whose handshake succeeded
//! reach the services, carrying the name in their certificate ([`ConnectionInfo`]).
//!
//! Invariant: the number of open connections a listener hands out never exceeds its cap (each
//! holds a semaphore permit until it is dropped).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use coord_tls::tokio_rustls::server::TlsStream;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::Status;

use crate::throttle::LogThrottle;
use crate::tls_port::{Handshake, TlsPort};

/// What every HTTP/2 connection starts with.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The bytes of a connection: plaintext, or TLS over TCP.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the services learn of the connection a request came on (tonic puts it in each
/// request's extensions; read it with [`remote_address`] and [`certificate_name`]).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: Option<SocketAddr>,
    /// The common name of the certificate the other side presented, verified against the
    /// port's CA; `None` without TLS or without a client certificate.
    pub certificate_name: Option<String>,
}

/// The address a request came from.
pub fn remote_address<T>(request: &tonic::Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|info| info.remote)
}

/// The verified certificate name of the connection a request came on.
pub fn certificate_name<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|info| info.certificate_name.as_deref())
}

/// One accepted connection, holding its place under the cap until dropped.
pub struct Connection {
    transport: Transport,
    info: ConnectionInfo,
    _permit: OwnedSemaphorePermit,
    /// How many bytes of the HTTP/2 preface have been checked; `None` once it was complete
    /// (or found wrong and logged).
    preface_checked: Option<usize>,
    role: &'static str,
    garbage: Arc<LogThrottle>,
}

/// The open connections of each port, with a cap.
pub struct Gate {
    role: &'static str,
    permits: Arc<Semaphore>,
    max: usize,
    refusals: LogThrottle,
    garbage: Arc<LogThrottle>,
}

impl Gate {
    pub fn new(role: &'static str, max: usize) -> Gate {
        Gate {
            role,
            permits: Arc::new(Semaphore::new(max)),
            max,
            refusals: LogThrottle::default(),
            garbage: Arc::new(LogThrottle::default()),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// How long a connection answered while starting may take to close once the member is ready.
const STARTING_CLOSE_MAX: Duration = Duration::from_secs(5);

/// Accepts `listener`'s connections under `gate` until the returned stream is dropped; with
/// `tls`, each one after a successful handshake.
pub fn accept(
    listener: TcpListener,
    gate: Arc<Gate>,
    tls: Option<Arc<TlsPort>>,
) -> impl Stream<Item = io::Result<Connection>> + Unpin + Send + 'static {
    let (accepted, stream) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(connection) => connection,
                Err(error) => {
                    gate.refusals.warn(|suppressed| {
                        tracing::warn!(role = gate.role, %error, suppressed, "accepting a connection failed; retrying");
                    });
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = gate.permits.clone().try_acquire_owned() else {
                gate.refusals.warn(|suppressed| {
                    tracing::warn!(role = gate.role, %from, max = gate.max, suppressed,
                        "connection refused: --max-connections are open");
                });
                drop(stream);
                continue;
            };
            // A gRPC reply is several small writes; Nagle would delay each after the first.
            let _ = stream.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                let connection =
                    Connection::new(Transport::Plain(stream), from, None, permit, &gate);
                if accepted.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            let (accepted, gate) = (accepted.clone(), gate.clone());
            tokio::spawn(async move {
                let transport = match tls.handshake(stream, from).await {
                    Handshake::Done { stream, name } => (Transport::Tls(stream), name),
                    Handshake::Plaintext(stream) => {
                        let connection =
                            Connection::new(Transport::Plain(stream), from, None, permit, &gate);
                        answer_once(connection, tls.plaintext_status()).await;
                        return;
                    }
                    Handshake::Refused => return,
                };
                let connection = Connection::new(transport.0, from, transport.1, permit, &gate);
                let _ = accepted.send(Ok(connection)).await;
            });
        }
    });
    ReceiverStream::new(stream)
}

/// Answers every request on `connection` with `status` for a few seconds, then closes it.
async fn answer_once(connection: Connection, status: Status) {
    let (_closing, closed) = watch::channel(false);
    let _ = tokio::time::timeout(STARTING_CLOSE_MAX, answer_with(connection, status, closed)).await;
}

/// Answers every request on `incoming`'s connections with `status` until `ready` holds true
/// (or its sender is gone), then closes those connections gracefully (their clients reconnect)
/// and returns `incoming` for the real services.
pub async fn refuse_until<S>(mut incoming: S, status: Status, mut ready: watch::Receiver<bool>) -> S
where
    S: Stream<Item = io::Result<Connection>> + Unpin,
{
    let (closing, closed) = watch::channel(false);
    loop {
        tokio::select! {
            _ = ready.wait_for(|ready| *ready) => break,
            next = incoming.next() => match next {
                Some(Ok(connection)) => {
                    tokio::spawn(answer_with(connection, status.clone(), closed.clone()));
                }
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    let _ = closing.send(true);
    incoming
}

/// Serves one connection with `status` as the answer to every request, until `closing`.
async fn answer_with(connection: Connection, status: Status, mut closing: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |_request| {
        let response = status.clone().into_http::<tonic::body::Body>();
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let serving = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(connection), service);
    tokio::pin!(serving);
    let closed = async move {
        // The guard `wait_for` returns must not live across an await.
        let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
    };
    tokio::select! {
        _ = serving.as_mut() => {}
        () = closed => {
            serving.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(STARTING_CLOSE_MAX, serving).await;
        }
    }
}

impl Connection {
    fn new(
        transport: Transport,
        from: SocketAddr,
        certificate_name: Option<String>,
        permit: OwnedSemaphorePermit,
        gate: &Gate,
    ) -> Connection {
        Connection {
            transport,
            info: ConnectionInfo {
                remote: Some(from),
                certificate_name,
            },
            _permit: permit,
            preface_checked: Some(0),
            role: gate.role,
            garbage: gate.garbage.clone(),
        }
    }

    /// Checks the bytes just read against the HTTP/2 preface; logs a sender that sends else.
    fn check_preface(&mut self, read: &[u8]) {
        let Some(checked) = self.preface_checked else {
            return;
        };
        let expected = &HTTP2_PREFACE[checked..];
        let length = read.len().min(expected.len());
        if read[..length] != expected[..length] {
            let from = self.info.remote;
            let start = String::from_utf8_lossy(&read[..read.len().min(16)]).into_owned();
            let role = self.role;
            self.garbage.warn(|suppressed| {
                tracing::warn!(role, ?from, first_bytes = ?start, suppressed,
                    "a connection sent something other than HTTP/2; it will be closed");
            });
            self.preface_checked = None;
        } else if checked + length == HTTP2_PREFACE.len() {
            self.preface_checked = None;
        } else {
            self.preface_checked = Some(checked + length);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_read(context, buf),
            Transport::Tls(stream) => Pin::new(stream).poll_read(context, buf),
        };
        // Only the first bytes are checked; after them a read costs nothing more here.
        if let (Poll::Ready(Ok(())), Some(_)) = (&polled, self.preface_checked) {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                self.check_preface(read);
            }
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write(context, data),
            Transport::Tls(stream) => Pin::new(stream).poll_write(context, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(context),
            Transport::Tls(stream) => Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Transport::Tls(stream) => Pin::new(stream).poll_shutdown(context),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            Transport::Tls(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use coord_proto::v1::namespace_client::NamespaceClient;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_starting_every_request_gets_the_refusal_and_then_the_stream_is_handed_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let incoming = accept(listener, Arc::new(Gate::new("client", 16)), None);
        let (ready, ready_receiver) = watch::channel(false);
        let refusing = tokio::spawn(refuse_until(
            incoming,
            Status::unavailable("member 1 is starting"),
            ready_receiver,
        ));
        let mut client = NamespaceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let refused = client
            .get(coord_proto::v1::GetRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert_eq!(refused.message(), "member 1 is starting");
        ready.send(true).unwrap();
        let mut incoming = tokio::time::timeout(Duration::from_secs(5), refusing)
            .await
            .expect("handed on once ready")
            .unwrap();
        // New connections now go to whoever holds the stream.
        let _raw = tokio::net::TcpStream::connect(address).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("a new connection arrives");
        assert!(matches!(next, Some(Ok(_))));
    }
}
