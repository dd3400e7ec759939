//! `ServerTls`: the TLS side of one of a member's ports (client or peer): its certificate and
//! key, and whether and against which CA the other side's certificate is checked.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::error::TlsError;
use crate::pem::{certificates, private_key, trust_anchors};
use crate::reload::Reloading;
use crate::{provider, ALPN_H2};

/// Whether the other side of a connection must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// None is asked for (no CA given).
    Ignored,
    /// One is asked for and checked against the CA if presented; a connection without one is
    /// still accepted (it then has no certificate identity).
    Optional,
    /// A connection without a certificate from the CA is refused during the handshake.
    Required,
}

/// The files of one port's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The port's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// CA bundle that the other side's certificates must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Whether the other side must present a certificate.
    pub client_certificates: ClientCertificates,
}

/// One port's TLS configuration, read again from its files when they change.
pub struct ServerTls {
    files: ServerTlsFiles,
    config: Reloading<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Reads the files; fails with what is wrong with them.
    pub fn load(what: &'static str, files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        if files.client_certificates != ClientCertificates::Ignored && files.trusted_ca.is_none() {
            return Err(TlsError::Config {
                reason: format!(
                    "{what}: checking certificates of connecting clients needs a CA file"
                ),
            });
        }
        let mut watched = vec![files.cert.clone(), files.key.clone()];
        watched.extend(files.trusted_ca.clone());
        let building = files.clone();
        let config = Reloading::new(what, watched, Box::new(move || build(&building)))?;
        Ok(ServerTls { files, config })
    }

    /// The configuration for the next accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

fn build(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate file", &files.cert)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config {
            reason: error.to_string(),
        })?;
    let builder = match (&files.trusted_ca, files.client_certificates) {
        (Some(ca), ClientCertificates::Optional | ClientCertificates::Required) => {
            let roots = trust_anchors(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if files.client_certificates == ClientCertificates::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|error| TlsError::BadCa {
                path: ca.clone(),
                reason: error.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::BadIdentity {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: error.to_string(),
            })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
