//! `accept`: a port's TCP connections, handed to tonic, at most `--max-connections` at once.
//! A connection past the cap is accepted and closed at once, with a log line; an accept error
//! (such as running out of file descriptors) is logged and retried after a pause, never a
//! silent spin. Each connection is checked for the HTTP/2 preface as it arrives, so that
//! garbage on a port is logged with its sender instead of vanishing.
//!
//! Invariant: the number of open connections a listener hands out never exceeds its cap (each
//! holds a semaphore permit until it is dropped).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::throttle::LogThrottle;

/// What every HTTP/2 connection starts with.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// One accepted connection, holding its place under the cap until dropped.
pub struct Connection {
    stream: TcpStream,
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

/// Accepts `listener`'s connections under `gate` until the returned stream is dropped.
pub fn accept(
    listener: TcpListener,
    gate: Arc<Gate>,
) -> impl Stream<Item = io::Result<Connection>> {
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
            let connection = Connection {
                stream,
                _permit: permit,
                preface_checked: Some(0),
                role: gate.role,
                garbage: gate.garbage.clone(),
            };
            if accepted.send(Ok(connection)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(stream)
}

impl Connection {
    /// Checks the bytes just read against the HTTP/2 preface; logs a sender that sends else.
    fn check_preface(&mut self, read: &[u8]) {
        let Some(checked) = self.preface_checked else {
            return;
        };
        let expected = &HTTP2_PREFACE[checked..];
        let length = read.len().min(expected.len());
        if read[..length] != expected[..length] {
            let from = self.stream.peer_addr().ok();
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
        let polled = Pin::new(&mut self.stream).poll_read(context, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled()[before..].to_vec();
            if !read.is_empty() {
                self.check_preface(&read);
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
        Pin::new(&mut self.stream).poll_write(context, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
