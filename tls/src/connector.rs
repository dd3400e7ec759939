//! `TlsConnector`: opens TCP then TLS connections for tonic channels (`Endpoint::
//! connect_with_connector`), with the configuration current at each connect, so a rotated
//! client certificate is used from the next connection on.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

use crate::client::ClientTls;
use crate::coalesce::Coalesce;
use crate::explain::explain_client_error;
use crate::tcp::{host_and_port, Dial};

/// A connection the connector opened.
pub type TlsIo = TokioIo<Coalesce<Prefetched>>;

/// A TLS stream whose first bytes were already read (to learn whether the server accepted
/// this client), handed back to the reader before the rest.
pub struct Prefetched {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    first: Vec<u8>,
    offset: usize,
}

impl tokio::io::AsyncRead for Prefetched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.offset < self.first.len() {
            let length = buf.remaining().min(self.first.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.first[start..start + length]);
            self.offset += length;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(context, buf)
    }
}

impl tokio::io::AsyncWrite for Prefetched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// The words every handshake failure's message starts with, so that callers that only see the
/// message (through tonic's status) can tell a TLS failure from a lost connection.
pub const HANDSHAKE_FAILED: &str = "TLS handshake with";

/// Why no connection was opened. Nothing was sent in any case.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("bad address {uri}: {reason}")]
    BadAddress { uri: String, reason: String },
    /// The same words as hyper's own connector, which callers already read as "never sent".
    #[error("tcp connect error: {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("tcp connect error: {address}: no connection within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("{HANDSHAKE_FAILED} {address} failed: {explanation}")]
    Handshake {
        address: String,
        explanation: String,
    },
    /// The connection ended or stalled during the handshake without a TLS error (the member
    /// stopped, restarted, or the network cut it): not a configuration mistake, so callers
    /// may go elsewhere or retry, as after a refused connection.
    #[error(
        "tcp connect error: {address}: the connection ended during the TLS handshake ({reason})"
    )]
    Interrupted { address: String, reason: String },
}

/// Whether a handshake failure is the connection going away rather than a TLS refusal.
fn interrupted(error: &std::io::Error) -> bool {
    let tls_error = error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>());
    !tls_error
        && matches!(
            error.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::TimedOut
        )
}

/// Opens TLS connections with a [`ClientTls`]'s current configuration.
#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    /// The TCP part: connect timeout and local address.
    dial: Dial,
    /// When set, failed handshakes are logged as warnings (at most one a second per
    /// connector), naming this role.
    log_refusals: Option<(
        &'static str,
        Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    )>,
    /// Common names the server's certificate must hold one of (empty: any the CA signed).
    allowed_names: Arc<Vec<String>>,
}

impl TlsConnector {
    /// A connector that gives up on a TCP connect after `connect_timeout` (and on the
    /// handshake after as long again).
    pub fn new(tls: Arc<ClientTls>, connect_timeout: Duration) -> TlsConnector {
        TlsConnector {
            tls,
            dial: Dial {
                connect_timeout,
                local_address: None,
            },
            log_refusals: None,
            allowed_names: Arc::default(),
        }
    }

    /// Accepts only servers whose certificate's subject common name is one of `names` (a
    /// member's `--peer-cert-allowed-cn`, checked both ways); empty: any the CA signed.
    pub fn allowed_names(mut self, names: Vec<String>) -> TlsConnector {
        self.allowed_names = Arc::new(names);
        self
    }

    /// Logs failed handshakes (a member dialling another: the refusal is the operator's to
    /// see, on the side that refused).
    pub fn log_refusals(mut self, role: &'static str) -> TlsConnector {
        self.log_refusals = Some((role, Arc::default()));
        self
    }

    fn refused(&self, address: &str, explanation: &str) {
        let Some((role, last)) = &self.log_refusals else {
            return;
        };
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|last| last.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        tracing::warn!(role, %address, reason = explanation, "TLS connection refused: handshake failed");
    }

    /// Binds outgoing connections to `address` (a member's `--peer-source-address`).
    pub fn local_address(mut self, address: Option<IpAddr>) -> TlsConnector {
        self.dial.local_address = address;
        self
    }

    /// Connects to the host and port of `uri`.
    pub async fn connect(&self, uri: Uri) -> Result<TlsIo, ConnectError> {
        let (host, port) = host_and_port(&uri)?;
        let address = format!("{host}:{port}");
        let name = self
            .tls
            .files()
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let name = ServerName::try_from(name).map_err(|error| ConnectError::BadAddress {
            uri: uri.to_string(),
            reason: error.to_string(),
        })?;
        let tcp = self.dial.tcp(&host, port).await?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.config());
        let handshake = tokio::time::timeout(
            self.dial.connect_timeout,
            Self::handshake(connector, name, tcp, &self.allowed_names),
        );
        match handshake.await {
            Ok(Ok(stream)) => Ok(TokioIo::new(Coalesce::new(stream))),
            Ok(Err(error)) if interrupted(&error) => Err(ConnectError::Interrupted {
                address,
                reason: error.to_string(),
            }),
            Ok(Err(error)) => {
                let explanation = explain_client_error(&error);
                self.refused(&address, &explanation);
                Err(ConnectError::Handshake {
                    address,
                    explanation,
                })
            }
            Err(_) => Err(ConnectError::Interrupted {
                address,
                reason: format!("no answer within {:?}", self.dial.connect_timeout),
            }),
        }
    }

    /// The TLS handshake, then the server's first bytes (an HTTP/2 server speaks first): with
    /// TLS 1.3 a server checks the client's certificate only after the client's side of the
    /// handshake is done, so its refusal arrives here, as an alert, where it can be explained.
    async fn handshake(
        connector: tokio_rustls::TlsConnector,
        name: ServerName<'static>,
        tcp: TcpStream,
        allowed_names: &[String],
    ) -> std::io::Result<Prefetched> {
        use tokio::io::AsyncReadExt;
        let mut stream = connector.connect(name, tcp).await?;
        if !allowed_names.is_empty() {
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::identity::certificate_common_name(leaf));
            if !presented
                .as_ref()
                .is_some_and(|name| allowed_names.contains(name))
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "the server's certificate name {presented:?} is not among the allowed \
                         names {allowed_names:?}"
                    ),
                ));
            }
        }
        let mut first = vec![0u8; 4096];
        let length = stream.read(&mut first).await?;
        if length == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection after the handshake",
            ));
        }
        first.truncate(length);
        Ok(Prefetched {
            stream,
            first,
            offset: 0,
        })
    }
}

crate::tcp::connector_service!(TlsConnector, TlsIo);
