//! `TlsError`: why a TLS configuration could not be built from its files. Each message names
//! the file and what to change.

use std::path::PathBuf;

use thiserror::Error;

/// Why certificates, keys or a CA bundle could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM: {reason}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("key file {path} holds no private key (expected PKCS#8, PKCS#1 or SEC1 PEM)")]
    NoKey { path: PathBuf },
    #[error("CA file {path}: certificate not usable as a trust anchor: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not make a usable identity: {reason}")]
    BadIdentity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration refused: {reason}")]
    Config { reason: String },
}
