//! `TlsPort`: the TLS side of one of a member's ports. It runs each accepted connection's
//! handshake (bounded in time), reads the name in the other side's certificate, refuses peers
//! whose name is not allowed, and recognises a plaintext HTTP/2 client so that it can be told
//! in words that the port needs TLS.
//!
//! Every refusal is logged with the sender's address and the reason (rate-limited) and
//! counted, so that probing and misconfiguration show in the logs and in `counters`.
//!
//! Invariant: a connection reaches the services only after a completed handshake that the
//! port's current configuration accepted, and (when allowed names are set) with a
//! certificate naming one of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coord_tls::tokio_rustls::server::TlsStream;
use coord_tls::tokio_rustls::TlsAcceptor;
use coord_tls::{certificate_common_name, explain_server_error, ServerTls};
use tokio::net::TcpStream;

use crate::throttle::LogThrottle;

/// Longest time a connection may take to complete its handshake; a peer that opens
/// connections and sends nothing cannot hold them (and their `--max-connections` places).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every HTTP/2 connection in plaintext starts with (its first four bytes suffice).
const PLAINTEXT_HTTP2_START: &[u8] = b"PRI ";

/// How long to wait for a sender's first four bytes when fewer arrived in its first segment.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(100);

/// Whether the connection starts like plaintext HTTP/2. Looks at the first bytes without
/// taking them, so the TLS handshake still reads them.
async fn starts_plaintext(stream: &TcpStream) -> bool {
    let mut start = [0u8; 4];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
    loop {
        match stream.peek(&mut start).await {
            Ok(read) if read >= start.len() => return start == PLAINTEXT_HTTP2_START,
            // Closed, failed, or a prefix that already differs.
            Ok(0) | Err(_) => return false,
            Ok(read) if start[..read] != PLAINTEXT_HTTP2_START[..read] => return false,
            Ok(_) if tokio::time::Instant::now() >= deadline => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Refusals counted since the member started, by kind.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Handshakes that failed: no certificate, a certificate from another CA, expired, or
    /// not TLS at all.
    pub handshakes_failed: AtomicU64,
    /// Plaintext HTTP/2 clients told that the port needs TLS.
    pub plaintext_refused: AtomicU64,
    /// Peers with a valid certificate whose name is not allowed.
    pub names_refused: AtomicU64,
}

/// How an accepted connection went.
pub enum Handshake {
    /// TLS is up; `name` is the other side's certificate's common name, if it sent one.
    Done {
        stream: Box<TlsStream<TcpStream>>,
        name: Option<String>,
    },
    /// The other side speaks plaintext HTTP/2: answer it with [`TlsPort::plaintext_status`].
    Plaintext(TcpStream),
    /// Refused (and logged); the connection is to be closed.
    Refused,
}

/// The TLS of both client-facing and peer ports (`None`: plaintext), for status reports.
#[derive(Clone, Default)]
pub struct PortsTls {
    pub client: Option<std::sync::Arc<TlsPort>>,
    pub peer: Option<std::sync::Arc<TlsPort>>,
}

/// One port's TLS: configuration, allowed peer names, refusal log and counters.
pub struct TlsPort {
    role: &'static str,
    tls: ServerTls,
    /// Common names accepted on this port (empty: any certificate the CA signed).
    allowed_names: Vec<String>,
    refusals: LogThrottle,
    pub counters: TlsCounters,
}

impl TlsPort {
    pub fn new(role: &'static str, tls: ServerTls, allowed_names: Vec<String>) -> TlsPort {
        TlsPort {
            role,
            tls,
            allowed_names,
            refusals: LogThrottle::default(),
            counters: TlsCounters::default(),
        }
    }

    /// Whether connections without a certificate from the port's CA are refused.
    pub fn requires_certificates(&self) -> bool {
        self.tls.files().client_certificates == coord_tls::ClientCertificates::Required
    }

    /// The answer a plaintext client of this port gets.
    pub fn plaintext_status(&self) -> tonic::Status {
        tonic::Status::failed_precondition(format!(
            "this member's {} port requires TLS: connect with TLS (coordctl --cacert FILE, \
             and --cert/--key if client certificates are required)",
            self.role
        ))
    }

    /// Runs the handshake of a connection from `from`, within [`HANDSHAKE_TIMEOUT`].
    pub async fn handshake(&self, stream: TcpStream, from: SocketAddr) -> Handshake {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake_unbounded(stream, from)).await
        {
            Ok(handshake) => handshake,
            Err(_) => {
                self.refuse(
                    &self.counters.handshakes_failed,
                    from,
                    "no handshake within the time limit",
                );
                Handshake::Refused
            }
        }
    }

    async fn handshake_unbounded(&self, stream: TcpStream, from: SocketAddr) -> Handshake {
        if starts_plaintext(&stream).await {
            self.refuse(
                &self.counters.plaintext_refused,
                from,
                "plaintext HTTP/2 on a TLS port",
            );
            return Handshake::Plaintext(stream);
        }
        let acceptor = TlsAcceptor::from(self.tls.config());
        let stream = match acceptor.accept(stream).await {
            Ok(stream) => stream,
            Err(error) => {
                self.refuse(
                    &self.counters.handshakes_failed,
                    from,
                    &explain_server_error(&error),
                );
                return Handshake::Refused;
            }
        };
        let name = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate_common_name(leaf));
        if !self.allowed_names.is_empty()
            && !name
                .as_ref()
                .is_some_and(|name| self.allowed_names.contains(name))
        {
            let reason = format!(
                "certificate name {name:?} is not among the allowed names {:?}",
                self.allowed_names
            );
            self.refuse(&self.counters.names_refused, from, &reason);
            return Handshake::Refused;
        }
        Handshake::Done {
            stream: Box::new(stream),
            name,
        }
    }

    fn refuse(&self, counter: &AtomicU64, from: SocketAddr, reason: &str) {
        counter.fetch_add(1, Ordering::Relaxed);
        let role = self.role;
        self.refusals.warn(|suppressed| {
            tracing::warn!(role, %from, reason, suppressed, "TLS connection refused");
        });
    }
}
