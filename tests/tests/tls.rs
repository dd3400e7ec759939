//! TLS on both ports, with certificates made in the test: a cluster whose members talk mutual
//! TLS forms and serves TLS clients; a member with a certificate from another CA is refused and
//! logged; client certificates are enforced when required; the common mistakes (plaintext
//! client, wrong CA, expired certificate, wrong name) give a typed error that says what to
//! change; a rotated server certificate is used without a restart.

use std::path::Path;
use std::time::Duration;

use coord_client::{Client, ClientOptions, CreateOptions, Error, TlsOptions};
use coord_tests::pki::{IssuedFiles, TestPki, Validity};
use coord_tests::{eventually, ServerProcess};

const WAIT: Duration = Duration::from_secs(30);

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// Flags serving both ports with `member`'s certificate, trusting `ca`, requiring client
/// certificates when `require_clients`.
fn tls_args(member: &IssuedFiles, ca: &Path, require_clients: bool) -> Vec<String> {
    let mut args = vec![
        "--cert-file".to_owned(),
        path(&member.cert),
        "--key-file".to_owned(),
        path(&member.key),
        "--trusted-ca-file".to_owned(),
        path(ca),
        "--peer-cert-file".to_owned(),
        path(&member.cert),
        "--peer-key-file".to_owned(),
        path(&member.key),
        "--peer-trusted-ca-file".to_owned(),
        path(ca),
    ];
    if require_clients {
        args.push("--client-cert-auth".to_owned());
    }
    args
}

fn client_tls(ca: &Path, identity: Option<&IssuedFiles>) -> TlsOptions {
    TlsOptions {
        ca_file: ca.to_owned(),
        cert_file: identity.map(|files| files.cert.clone()),
        key_file: identity.map(|files| files.key.clone()),
        server_name: None,
    }
}

fn options(tls: Option<TlsOptions>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        discover_members: false,
        tls,
        token: None,
    }
}

/// What a first call through a client with `tls` to `address` fails with.
async fn first_error(address: &str, tls: Option<TlsOptions>) -> Error {
    match Client::connect_with([address], options(tls)).await {
        Err(error) => error,
        Ok(client) => client
            .get("/")
            .await
            .expect_err("the connection must be refused"),
    }
}

/// Starts members `1..=count` with one initial cluster; `args_of(id)` gives each its flags.
fn start_members(
    dir: &Path,
    count: u64,
    tls: &TlsOptions,
    args_of: impl Fn(u64) -> Vec<String>,
) -> Vec<ServerProcess> {
    let mut members: Vec<ServerProcess> = (1..=count)
        .map(|id| {
            let args = args_of(id);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut member = ServerProcess::prepare(id, dir, &args);
            member.client_tls = Some(tls.clone());
            member
        })
        .collect();
    let initial_cluster = members
        .iter()
        .map(|member| format!("{}={}", member.id, member.peer_address()))
        .collect::<Vec<_>>()
        .join(",");
    for member in &mut members {
        member.set_initial_cluster(&initial_cluster);
        member.start();
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_peer_mtls_forms_and_serves_tls_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let member = pki.issue(
        "member",
        "member",
        &["127.0.0.1", "localhost"],
        Validity::Current,
    );
    let alice = pki.issue("alice", "alice", &[], Validity::Current);
    let tls = client_tls(&pki.ca_file(), Some(&alice));
    let members = start_members(dir.path(), 3, &tls, |_| {
        tls_args(&member, &pki.ca_file(), true)
    });
    let client = members[0].client().await;
    client
        .create("/tls", "over mutual TLS", &CreateOptions::default())
        .await
        .expect("a write commits over TLS on every link");
    // Every member applies it: replication crossed the peer port's mutual TLS.
    for member in &members {
        let direct = member.client().await;
        let read = eventually("the write replicated", WAIT, || {
            let direct = direct.clone();
            async move {
                direct
                    .get_with("/tls", coord_client::Consistency::Serializable)
                    .await
                    .ok()
            }
        })
        .await;
        assert_eq!(read.data, b"over mutual TLS");
        assert!(member.log().contains("client_tls=true"), "{}", member.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_certificate_from_another_ca_is_refused_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let rogue = TestPki::new(&dir.path().join("rogue"), "rogue");
    let member = pki.issue("member", "member", &["127.0.0.1"], Validity::Current);
    let impostor = rogue.issue("impostor", "member", &["127.0.0.1"], Validity::Current);
    let tls = client_tls(&pki.ca_file(), Some(&member));
    // Member 3 trusts the cluster's CA but holds a certificate from another one.
    let members = start_members(dir.path(), 3, &tls, |id| {
        let certificate = if id == 3 { &impostor } else { &member };
        tls_args(certificate, &pki.ca_file(), false)
    });
    let client = members[0].client().await;
    client
        .create("/quorum", "", &CreateOptions::default())
        .await
        .expect("members 1 and 2 are a quorum");
    // The impostor is refused by whichever side checks its certificate: the leader dialling
    // it, or a member it dials.
    let refused = |log: &str| {
        log.contains("TLS connection refused")
            && log.contains("role=\"peer\"")
            && log.contains("certificate is not signed by a CA")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while ![members[0].log(), members[1].log()]
        .iter()
        .any(|log| refused(log))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "members 1 and 2 did not log the impostor's refusal:\n{}\n{}\n{}",
            members[0].log(),
            members[1].log(),
            members[2].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The impostor never received the cluster's data: the leader refused its certificate.
    let impostor_client = Client::connect_with(
        [members[2].client_address()],
        options(Some(client_tls(&pki.ca_file(), None))),
    )
    .await;
    let outcome = match impostor_client {
        Ok(client) => client
            .get_with("/quorum", coord_client::Consistency::Serializable)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(
        matches!(
            outcome,
            Err(Error::NoNode { .. }) | Err(Error::Tls { .. }) | Err(Error::NotAMember { .. })
        ),
        "the impostor must not hold the cluster's data: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_name_is_not_allowed_is_refused_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    // Every certificate is from the cluster's CA; member 3's names someone not allowed.
    let certificates: Vec<IssuedFiles> = ["member-1", "member-2", "intruder"]
        .iter()
        .map(|name| pki.issue(name, name, &["127.0.0.1"], Validity::Current))
        .collect();
    let tls = client_tls(&pki.ca_file(), Some(&certificates[0]));
    let members = start_members(dir.path(), 3, &tls, |id| {
        let index = usize::try_from(id - 1).unwrap();
        let mut args = tls_args(&certificates[index], &pki.ca_file(), false);
        args.extend([
            "--peer-cert-allowed-cn".to_owned(),
            "member-1,member-2,member-3".to_owned(),
        ]);
        args
    });
    let client = members[0].client().await;
    client
        .create("/named", "", &CreateOptions::default())
        .await
        .expect("members 1 and 2 are a quorum");
    let refused =
        |log: &str| log.contains("not among the allowed names") && log.contains("intruder");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !refused(&members[0].log()) && !refused(&members[1].log()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intruder's name was not refused:\n{}\n{}",
            members[0].log(),
            members[1].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It holds none of the cluster's data.
    let intruder = Client::connect_with(
        [members[2].client_address()],
        options(Some(client_tls(&pki.ca_file(), None))),
    )
    .await
    .expect("its client port still answers");
    let read = intruder
        .get_with("/named", coord_client::Consistency::Serializable)
        .await;
    // Never given the membership, it serves nothing (or, having no data, finds nothing).
    assert!(
        matches!(
            read,
            Err(Error::NoNode { .. }) | Err(Error::NotAMember { .. })
        ),
        "{read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_enforced_and_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let other = TestPki::new(&dir.path().join("other"), "other");
    let member = pki.issue("member", "member", &["127.0.0.1"], Validity::Current);
    let alice = pki.issue("alice", "alice", &[], Validity::Current);
    let stranger = other.issue("stranger", "alice", &[], Validity::Current);
    let expired = pki.issue("expired", "alice", &[], Validity::Expired);
    let args = tls_args(&member, &pki.ca_file(), true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start_single(dir.path(), &args);
    server.client_tls = Some(client_tls(&pki.ca_file(), Some(&alice)));
    server.client().await;
    let address = server.client_address();

    let cases: Vec<(&str, Option<TlsOptions>, &str)> = vec![
        ("plaintext client", None, "requires TLS"),
        (
            "no client certificate",
            Some(client_tls(&pki.ca_file(), None)),
            "requires a client certificate",
        ),
        (
            "client certificate from another CA",
            Some(client_tls(&pki.ca_file(), Some(&stranger))),
            "refused this client's certificate",
        ),
        (
            "expired client certificate",
            Some(client_tls(&pki.ca_file(), Some(&expired))),
            "expired",
        ),
        (
            "wrong CA for the server",
            Some(client_tls(&other.ca_file(), Some(&alice))),
            "not signed by a CA in --cacert",
        ),
        (
            "name the certificate does not hold",
            Some(TlsOptions {
                server_name: Some("coord.example".into()),
                ..client_tls(&pki.ca_file(), Some(&alice))
            }),
            "does not hold the name",
        ),
    ];
    for (case, tls, expected) in cases {
        // Refusals are logged at most once a second: each case gets its own line.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let error = first_error(&address, tls).await;
        match &error {
            Error::Tls { message, .. } => assert!(
                message.contains(expected),
                "{case}: {message:?} should say {expected:?}"
            ),
            other => panic!("{case}: expected a TLS error, got {other:?}"),
        }
    }
    let status = server.client().await.cluster_status().await.unwrap();
    let security = status.security.expect("the member reports its security");
    assert!(security.client_tls && security.client_certificates_required && security.peer_tls);
    assert_eq!(security.plaintext_refused, 1, "{security:?}");
    // No certificate, another CA's, expired: refused in the handshake (the wrong-CA and
    // wrong-name cases are refused by the client, which the member sees as a failed handshake).
    assert!(security.client_handshakes_refused >= 3, "{security:?}");
    let log = server.log();
    assert!(log.contains("TLS connection refused"), "{log}");
    assert!(log.contains("plaintext HTTP/2 on a TLS port"), "{log}");
    assert!(log.contains("presented no certificate"), "{log}");
    assert!(
        log.contains("client's certificate is not signed by a CA"),
        "{log}"
    );
    assert!(log.contains("client's certificate has expired"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_of_a_plaintext_member_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let error = first_error(
        &server.client_address(),
        Some(client_tls(&pki.ca_file(), None)),
    )
    .await;
    match error {
        Error::Tls { message, .. } => assert!(
            message.contains("did not answer in TLS") || message.contains("may be plaintext"),
            "{message}"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let old_ca = TestPki::new(&pki_dir.join("old"), "old");
    let new_ca = TestPki::new(&pki_dir.join("new"), "new");
    let member = old_ca.issue("member", "member", &["127.0.0.1"], Validity::Current);
    let args = [
        "--cert-file".to_owned(),
        path(&member.cert),
        "--key-file".to_owned(),
        path(&member.key),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::start_single(dir.path(), &args);
    server.client_tls = Some(client_tls(&old_ca.ca_file(), None));
    let before = server.client().await;
    let pid = server.pid();

    // The new certificate replaces the old files in place (one rename each), as cert-manager
    // does; the member's process stays the same.
    let rotated = new_ca.issue("rotated", "member", &["127.0.0.1"], Validity::Current);
    coord_tests::pki::write_atomically(
        &member.key,
        &std::fs::read_to_string(&rotated.key).unwrap(),
    );
    coord_tests::pki::write_atomically(
        &member.cert,
        &std::fs::read_to_string(&rotated.cert).unwrap(),
    );
    let address = server.client_address();
    eventually("new connections get the new certificate", WAIT, || {
        let address = address.clone();
        let tls = client_tls(&new_ca.ca_file(), None);
        async move {
            let client = Client::connect_with([address], options(Some(tls)))
                .await
                .ok()?;
            client.get("/").await.ok()
        }
    })
    .await;
    let error = first_error(&address, Some(client_tls(&old_ca.ca_file(), None))).await;
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    // A connection made before the rotation goes on working.
    before
        .get("/")
        .await
        .expect("the old connection still serves");
    assert_eq!(server.pid(), pid, "no restart");
    assert!(
        server.log().contains("TLS files changed"),
        "{}",
        server.log()
    );
}
