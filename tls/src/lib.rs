//! TLS for Coord: the certificates and keys of a member's two ports and of clients, read from
//! PEM files and read again when those files change; the connectors that open TLS and
//! plaintext connections, each request's HTTP/2 frames gathered into one write (`Coalesce`);
//! the HTTP/2 channel clients and members call over (`Http2Channel`); the identity a
//! certificate names; and plain-language explanations of the common handshake failures.
//!
//! Only rustls with the ring provider is used: no OpenSSL and no second crypto provider.
//! Every configuration offers ALPN `h2`, since both ports speak gRPC over HTTP/2.
//!
//! Invariant: a configuration in use was built whole from one reading of its files; a file
//! that is missing, half written or not matching its key never replaces a working one (the
//! old one stays, and the failure is logged once per change of the files).

mod channel;
mod client;
mod coalesce;
mod connector;
mod error;
mod explain;
mod identity;
mod pem;
mod reload;
mod server;
mod tcp;

pub use channel::{ChannelConnector, Http2Channel, Http2Settings, KeepAlive};
pub use client::{ClientTls, ClientTlsFiles};
pub use coalesce::Coalesce;
pub use connector::{ConnectError, TlsConnector, TlsIo, HANDSHAKE_FAILED};
pub use error::TlsError;
pub use explain::{explain_alert_text, explain_client_error, explain_server_error};
pub use identity::certificate_common_name;
pub use reload::RELOAD_CHECK_INTERVAL;
pub use server::{ClientCertificates, ServerTls, ServerTlsFiles};
pub use tcp::{TcpConnector, TcpIo};

/// The rustls objects callers need, so that they use the same rustls as this crate.
pub use rustls;
pub use rustls_pki_types as pki_types;
pub use tokio_rustls;

/// The crypto provider every Coord configuration uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol both ports speak.
const ALPN_H2: &[u8] = b"h2";
