//! `TcpConnector`: opens plaintext connections for tonic channels, as `TlsConnector` opens TLS
//! ones: from a chosen local address, with `TCP_NODELAY`, within a connect timeout, and with
//! their writes gathered per flush (`Coalesce`). `Dial` is the TCP part both share.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tonic::codegen::http::Uri;

use crate::coalesce::Coalesce;
use crate::connector::ConnectError;

/// A plaintext connection the connector opened.
pub type TcpIo = TokioIo<Coalesce<TcpStream>>;

/// The host (without IPv6 brackets) and port of a channel's `uri`.
pub(crate) fn host_and_port(uri: &Uri) -> Result<(String, u16), ConnectError> {
    let bad = |reason: &str| ConnectError::BadAddress {
        uri: uri.to_string(),
        reason: reason.to_owned(),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    Ok((host.to_owned(), port))
}

/// How TCP connections are opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dial {
    pub connect_timeout: Duration,
    /// The local address to connect from (`None`: the OS chooses).
    pub local_address: Option<IpAddr>,
}

impl Dial {
    /// A TCP connection to `host:port`: each address the name resolves to in turn, the whole
    /// within `connect_timeout`.
    pub async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.tcp_untimed(host, port))
            .await
            .map_err(|_| ConnectError::Timeout {
                address: format!("{host}:{port}"),
                after: self.connect_timeout,
            })?
    }

    async fn tcp_untimed(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let address = format!("{host}:{port}");
        let failed = |source| ConnectError::Connect {
            address: address.clone(),
            source,
        };
        let mut last_error = None;
        for target in tokio::net::lookup_host((host, port))
            .await
            .map_err(failed)?
        {
            match self.tcp_to(target).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(failed(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
        })))
    }

    async fn tcp_to(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(local) = self.local_address {
            if local.is_ipv4() == target.is_ipv4() {
                socket.bind(SocketAddr::new(local, 0))?;
            }
        }
        let stream = socket.connect(target).await?;
        // A gRPC request is several small writes; Nagle would delay each after the first.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Opens plaintext connections (`http://` endpoints).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    dial: Dial,
}

impl TcpConnector {
    /// A connector that gives up on a connect after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> TcpConnector {
        TcpConnector {
            dial: Dial {
                connect_timeout,
                local_address: None,
            },
        }
    }

    /// Binds outgoing connections to `address` (a member's `--peer-source-address`).
    pub fn local_address(mut self, address: Option<IpAddr>) -> TcpConnector {
        self.dial.local_address = address;
        self
    }

    /// Connects to the host and port of `uri`.
    pub async fn connect(&self, uri: Uri) -> Result<TcpIo, ConnectError> {
        let (host, port) = host_and_port(&uri)?;
        let stream = self.dial.tcp(&host, port).await?;
        Ok(TokioIo::new(Coalesce::new(stream)))
    }
}

/// tonic's view of a connector (`Service<Uri>`) over its `connect(&self, Uri)`; shared by
/// `TcpConnector` and `TlsConnector`.
macro_rules! connector_service {
    ($connector:ty, $io:ty) => {
        impl tonic::codegen::Service<tonic::codegen::http::Uri> for $connector {
            type Response = $io;
            type Error = $crate::connector::ConnectError;
            type Future = std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<$io, $crate::connector::ConnectError>>
                        + Send,
                >,
            >;

            fn poll_ready(
                &mut self,
                _context: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), $crate::connector::ConnectError>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
                let connector = self.clone();
                Box::pin(async move { connector.connect(uri).await })
            }
        }
    };
}
pub(crate) use connector_service;

connector_service!(TcpConnector, TcpIo);
