//! `ClientTls`: the TLS side of outgoing connections: of a client to a member's client port,
//! and of a member to another's peer port (where its own certificate is its identity).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::error::TlsError;
use crate::pem::{certificates, private_key, trust_anchors};
use crate::reload::Reloading;
use crate::{provider, ALPN_H2};

/// The files of outgoing TLS connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA bundle the server's certificate must chain to.
    pub trusted_ca: PathBuf,
    /// This side's certificate chain and key, for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must hold, instead of the host dialled.
    pub server_name: Option<String>,
}

/// Outgoing TLS configuration, read again from its files when they change.
pub struct ClientTls {
    files: ClientTlsFiles,
    config: Reloading<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ClientTls {
    /// Reads the files; fails with what is wrong with them.
    pub fn load(what: &'static str, files: ClientTlsFiles) -> Result<ClientTls, TlsError> {
        let mut watched = vec![files.trusted_ca.clone()];
        if let Some((cert, key)) = &files.identity {
            watched.push(cert.clone());
            watched.push(key.clone());
        }
        let building = files.clone();
        let config = Reloading::new(what, watched, Box::new(move || build(&building)))?;
        Ok(ClientTls { files, config })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.files
    }
}

fn build(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = trust_anchors(&files.trusted_ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config {
            reason: error.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match &files.identity {
        Some((cert, key)) => {
            let chain = certificates("certificate file", cert)?;
            let private = private_key(key)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| TlsError::BadIdentity {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: error.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
