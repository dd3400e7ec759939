//! `TestPki`: a certificate authority made for one test run, and the certificates it issues,
//! written as PEM files the way an operator's would be (generated with rcgen, never checked
//! in). Also the harness-wide TLS switch: with `COORD_TEST_TLS=1`, every member the harness
//! starts serves both ports over TLS (peer traffic mutual TLS) and every harness client
//! connects over TLS, so that whole suites can be run with TLS on.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coord_client::TlsOptions;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 2025 to 2099.
    Current,
    /// Expired long ago.
    Expired,
}

/// A CA and the directory its files go to.
pub struct TestPki {
    dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    ca_file: PathBuf,
}

impl TestPki {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        std::fs::create_dir_all(dir).expect("the PKI directory can be made");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("a self-signed CA");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, certificate.pem()).expect("the CA file can be written");
        TestPki {
            dir: dir.to_owned(),
            params,
            key,
            ca_file,
        }
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.clone()
    }

    /// Issues a certificate for `common_name`, valid for `names` (DNS names or IP addresses)
    /// as a server and as a client, into `dir/<file_name>.pem` and `dir/<file_name>-key.pem`.
    pub fn issue(
        &self,
        file_name: &str,
        common_name: &str,
        names: &[&str],
        validity: Validity,
    ) -> IssuedFiles {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (not_before, not_after) = match validity {
            Validity::Current => (
                rcgen::date_time_ymd(2025, 1, 1),
                rcgen::date_time_ymd(2099, 1, 1),
            ),
            Validity::Expired => (
                rcgen::date_time_ymd(2020, 1, 1),
                rcgen::date_time_ymd(2021, 1, 1),
            ),
        };
        params.not_before = not_before;
        params.not_after = not_after;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params
            .signed_by(&key, &issuer)
            .expect("a signed certificate");
        let files = IssuedFiles {
            cert: self.dir.join(format!("{file_name}.pem")),
            key: self.dir.join(format!("{file_name}-key.pem")),
        };
        write_atomically(&files.key, &key.serialize_pem());
        write_atomically(&files.cert, &certificate.pem());
        files
    }
}

/// Replaces `path`'s content in one rename, as cert-manager and `kubectl` do, so a reader
/// never sees half a file.
pub fn write_atomically(path: &Path, content: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).expect("a PEM file can be written");
    std::fs::rename(&temporary, path).expect("a PEM file can be renamed into place");
}

/// The name harness clients check member certificates for.
const HARNESS_SERVER_NAME: &str = "localhost";

/// The files of the harness-wide TLS (`COORD_TEST_TLS=1`).
pub struct HarnessTls {
    /// The directory of the files, handed to child processes as `COORD_TEST_TLS_DIR`.
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub member: IssuedFiles,
    pub client: IssuedFiles,
}

impl HarnessTls {
    /// The flags that make a member serve both ports over TLS with these files.
    pub fn server_args(&self) -> Vec<String> {
        let path = |path: &PathBuf| path.display().to_string();
        vec![
            "--cert-file".into(),
            path(&self.member.cert),
            "--key-file".into(),
            path(&self.member.key),
            "--trusted-ca-file".into(),
            path(&self.ca),
            "--peer-cert-file".into(),
            path(&self.member.cert),
            "--peer-key-file".into(),
            path(&self.member.key),
            "--peer-trusted-ca-file".into(),
            path(&self.ca),
        ]
    }

    /// Client TLS options with the harness client's certificate. Members behind the fault
    /// proxies listen on addresses of their own in 127/8 that no certificate can list ahead of
    /// time, so clients check for the name `localhost`, which the member certificate holds.
    pub fn client_options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca.clone(),
            cert_file: Some(self.client.cert.clone()),
            key_file: Some(self.client.key.clone()),
            server_name: Some(HARNESS_SERVER_NAME.to_owned()),
        }
    }
}

/// The harness-wide TLS files, made once per process, when `COORD_TEST_TLS=1`; child test
/// processes (`coord-locker`) find them through `COORD_TEST_TLS_DIR`.
pub fn harness_tls() -> Option<&'static HarnessTls> {
    static TLS: OnceLock<Option<HarnessTls>> = OnceLock::new();
    TLS.get_or_init(|| {
        if std::env::var("COORD_TEST_TLS").ok().as_deref() != Some("1") {
            return None;
        }
        let dir = match std::env::var_os("COORD_TEST_TLS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("coord-test-tls-{}", std::process::id()));
                let pki = TestPki::new(&dir, "harness");
                pki.issue(
                    "member",
                    "member",
                    &["127.0.0.1", "localhost"],
                    Validity::Current,
                );
                pki.issue("client", "root", &["localhost"], Validity::Current);
                dir
            }
        };
        Some(HarnessTls {
            ca: dir.join("harness-ca.pem"),
            dir: dir.clone(),
            member: IssuedFiles {
                cert: dir.join("member.pem"),
                key: dir.join("member-key.pem"),
            },
            client: IssuedFiles {
                cert: dir.join("client.pem"),
                key: dir.join("client-key.pem"),
            },
        })
    })
    .as_ref()
}

/// The TLS options every harness client uses: `None` unless `COORD_TEST_TLS=1`.
pub fn harness_client_tls() -> Option<TlsOptions> {
    harness_tls().map(HarnessTls::client_options)
}

/// A raw gRPC channel to a member's client port `host:port`, for tests that speak the wire API
/// directly: over TLS with the harness's client certificate when `COORD_TEST_TLS=1`.
pub async fn raw_channel(address: &str) -> tonic::transport::Channel {
    let timeout = std::time::Duration::from_secs(5);
    match harness_tls() {
        None => tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("a valid address")
            .connect_timeout(timeout)
            .connect()
            .await
            .expect("the member accepts a connection"),
        Some(tls) => {
            let files = coord_tls::ClientTlsFiles {
                trusted_ca: tls.ca.clone(),
                identity: Some((tls.client.cert.clone(), tls.client.key.clone())),
                server_name: Some(HARNESS_SERVER_NAME.to_owned()),
            };
            let client_tls = coord_tls::ClientTls::load("test client", files)
                .expect("the harness's certificates load");
            tonic::transport::Endpoint::from_shared(format!("https://{address}"))
                .expect("a valid address")
                .connect_with_connector(coord_tls::TlsConnector::new(
                    std::sync::Arc::new(client_tls),
                    timeout,
                ))
                .await
                .expect("the member accepts a TLS connection")
        }
    }
}
