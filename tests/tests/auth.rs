//! Authentication and authorization on a real member: the bootstrap (a root user, then
//! enable), tokens and certificate identities, and one check per permission: read without
//! write, no read outside the grant, a recursive watch that never shows another prefix's
//! events, a txn refused whole, sessions closed only by their owner or an admin, membership
//! changed only by an admin, the reserved subtree out of reach, revoked tokens refused.

use std::time::Duration;

use coord_client::{
    AuthChange, Client, ClientOptions, CreateOptions, DeleteOptions, Error, Op, TlsOptions, Txn,
    WatchOptions,
};
use coord_tests::pki::{TestPki, Validity};
use coord_tests::ServerProcess;

const WAIT: Duration = Duration::from_secs(10);

fn options(token: Option<&str>, tls: Option<TlsOptions>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        discover_members: false,
        tls,
        token: token.map(str::to_owned),
    }
}

async fn client(server: &ServerProcess, token: Option<&str>) -> Client {
    Client::connect_with([server.client_address()], options(token, None))
        .await
        .expect("the member answers")
}

async fn change(client: &Client, change: AuthChange) -> coord_client::AuthStatusResponse {
    client
        .auth_change(change.clone())
        .await
        .unwrap_or_else(|error| panic!("{change:?}: {error}"))
}

/// Adds the user `root` holding the built-in `root` role (admin on `/`).
async fn add_root(client: &Client) {
    change(
        client,
        AuthChange::UserAdd {
            user: "root".into(),
        },
    )
    .await;
    let granted = AuthChange::GrantRole {
        user: "root".into(),
        role: "root".into(),
    };
    change(client, granted).await;
}

/// Adds `user` with a role of its own holding `permissions` on `prefix`; returns its token.
async fn user_with(admin: &Client, user: &str, prefix: &str, permissions: &[&str]) -> String {
    let role = format!("{user}-role");
    change(admin, AuthChange::UserAdd { user: user.into() }).await;
    change(admin, AuthChange::RoleAdd { role: role.clone() }).await;
    change(
        admin,
        AuthChange::Grant {
            role: role.clone(),
            prefix: prefix.into(),
            permissions: permissions.iter().map(|name| (*name).to_owned()).collect(),
        },
    )
    .await;
    change(
        admin,
        AuthChange::GrantRole {
            user: user.into(),
            role,
        },
    )
    .await;
    change(
        admin,
        AuthChange::TokenIssue {
            user: user.into(),
            description: format!("{user}'s test token"),
        },
    )
    .await
    .issued_token
}

fn assert_denied<T: std::fmt::Debug>(outcome: Result<T, Error>, permission: &str, path: &str) {
    match outcome {
        Err(Error::PermissionDenied { message, .. }) => assert!(
            message.contains(permission) && message.contains(path),
            "{message:?} should name {permission} on {path}"
        ),
        other => panic!("expected a denial of {permission} on {path}, got {other:?}"),
    }
}

/// A member with auth enabled: root (admin), alice (read on /app), bob (read, write, create
/// on /app), and /app/x and /other/y created before enabling.
struct Secured {
    server: ServerProcess,
    root: Client,
    alice: Client,
    alice_token: String,
    bob: Client,
    /// The member's directory: last, so it is removed after the member died.
    _dir: tempfile::TempDir,
}

async fn secured() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    server.client().await;
    let bootstrap = client(&server, None).await;
    // Enabling without a root user would lock everyone out: refused.
    match bootstrap.auth_change(AuthChange::Enable).await {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("root"), "{message}"),
        other => panic!("enabling without a root user must be refused: {other:?}"),
    }
    add_root(&bootstrap).await;
    let root_token = change(
        &bootstrap,
        AuthChange::TokenIssue {
            user: "root".into(),
            description: "bootstrap".into(),
        },
    )
    .await
    .issued_token;
    assert!(root_token.starts_with("coord_"), "{root_token}");
    let create = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    bootstrap.create("/app/x", "1", &create).await.unwrap();
    bootstrap.create("/other/y", "1", &create).await.unwrap();
    let alice_token = user_with(&bootstrap, "alice", "/app", &["read"]).await;
    let bob_token = user_with(&bootstrap, "bob", "/app", &["read", "write", "create"]).await;
    let enabled = change(&bootstrap, AuthChange::Enable).await;
    assert!(enabled.enabled);
    Secured {
        root: client(&server, Some(&root_token)).await,
        alice: client(&server, Some(&alice_token)).await,
        bob: client(&server, Some(&bob_token)).await,
        alice_token,
        server,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permission_is_enforced_on_reads_writes_and_txns() {
    let cluster = secured().await;
    let anonymous =
        Client::connect_with([cluster.server.client_address()], options(None, None)).await;
    let anonymous_read = match anonymous {
        Ok(client) => client.get("/app/x").await.map(|_| ()),
        Err(error) => Err(error),
    };
    assert!(
        matches!(anonymous_read, Err(Error::Unauthenticated { .. })),
        "{anonymous_read:?}"
    );

    // Read on /app: reads /app/x, may not write it, may not read /other.
    assert_eq!(cluster.alice.get("/app/x").await.unwrap().data, b"1");
    assert_eq!(cluster.alice.children("/app").await.unwrap(), ["x"]);
    assert_denied(
        cluster.alice.set("/app/x", "2", None).await,
        "write",
        "/app/x",
    );
    assert_denied(cluster.alice.get("/other/y").await, "read", "/other/y");
    assert_denied(cluster.alice.exists("/other/y").await, "read", "/other/y");
    // A sibling with a longer name is not under the grant.
    assert_denied(cluster.alice.get("/apple").await, "read", "/apple");
    // Neither may read the policy (token hashes live there), nor write it through the tree.
    assert_denied(
        cluster.alice.get("/_coord/auth").await,
        "admin",
        "/_coord/auth",
    );
    assert_denied(
        cluster.root.set("/_coord/auth", "{}", None).await,
        "write",
        "/_coord/auth",
    );
    let wipe = DeleteOptions {
        recursive: true,
        ..DeleteOptions::default()
    };
    assert_denied(
        cluster.root.delete("/_coord", wipe).await,
        "write",
        "/_coord",
    );
    let everything = cluster.root.delete("/", wipe).await;
    assert_eq!(
        everything,
        Err(Error::RootReadOnly),
        "the root, and so /_coord, stays"
    );

    // A txn with one forbidden part is refused whole: /app/x keeps its data.
    let mixed = Txn::new()
        .then(Op::set("/app/x", "from bob", None))
        .then(Op::set("/other/y", "from bob", None));
    assert_denied(cluster.bob.txn(mixed).await, "write", "/other/y");
    let compared = Txn::new()
        .when(coord_client::Compare::exists("/other/y"))
        .then(Op::set("/app/x", "from bob", None));
    assert_denied(cluster.bob.txn(compared).await, "read", "/other/y");
    assert_eq!(cluster.root.get("/app/x").await.unwrap().data, b"1");
    let allowed = Txn::new().then(Op::set("/app/x", "from bob", None));
    cluster
        .bob
        .txn(allowed)
        .await
        .expect("all of it is allowed");
    assert_eq!(cluster.alice.get("/app/x").await.unwrap().data, b"from bob");

    // Membership is an admin's.
    assert_denied(cluster.bob.member_add(9, "127.0.0.1:1").await, "admin", "/");
    assert_denied(cluster.bob.member_move_leader(0).await, "admin", "/");
    assert!(!cluster.bob.member_list().await.unwrap().is_empty());

    // A revoked token is refused at once.
    let status = cluster.root.auth_status().await.unwrap();
    let alice = status
        .users
        .iter()
        .find(|user| user.name == "alice")
        .unwrap();
    let token_id = alice.tokens[0].id.clone();
    assert!(cluster.alice_token.contains(&token_id));
    change(
        &cluster.root,
        AuthChange::TokenRevoke {
            user: "alice".into(),
            token_id,
        },
    )
    .await;
    assert!(
        matches!(
            cluster.alice.get("/app/x").await,
            Err(Error::Unauthenticated { .. })
        ),
        "a revoked token must be refused"
    );
    assert!(cluster.server.log().contains("request denied"));
    let security = cluster
        .root
        .cluster_status()
        .await
        .unwrap()
        .security
        .unwrap();
    assert!(
        security.auth_enabled && !security.client_tls,
        "{security:?}"
    );
    assert!(
        security.denied >= 8 && security.unauthenticated >= 2,
        "{security:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_watch_on_the_root_shows_only_readable_events() {
    let cluster = secured().await;
    let options = WatchOptions {
        path: "/".into(),
        recursive: true,
        ..WatchOptions::default()
    };
    let mut watch = cluster
        .alice
        .watch(options)
        .await
        .expect("a recursive watch is allowed");
    // A plain watch of a path alice may not read is refused.
    let refused = cluster
        .alice
        .watch(WatchOptions {
            path: "/other/y".into(),
            ..WatchOptions::default()
        })
        .await;
    let refused_watch = match refused {
        Err(error) => Some(error),
        Ok(mut watch) => tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("the refusal arrives")
            .and_then(Result::err),
    };
    assert!(
        refused_watch.is_some_and(|error| error.to_string().contains("lacks read")),
        "a watch of /other/y must be refused to alice"
    );
    // /other changes first, then /app: if /other's event were delivered it would come first.
    cluster.root.set("/other/y", "secret", None).await.unwrap();
    cluster
        .root
        .create("/other/z", "", &CreateOptions::default())
        .await
        .unwrap();
    cluster.root.set("/app/x", "public", None).await.unwrap();
    let event = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the /app event arrives")
        .expect("the watch is open")
        .expect("an event");
    assert_eq!(
        event.path, "/app/x",
        "the first event alice sees is /app's: {event:?}"
    );
    // Nothing of /other follows either.
    cluster
        .root
        .set("/other/y", "secret again", None)
        .await
        .unwrap();
    cluster
        .root
        .set("/app/x", "public again", None)
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the second /app event arrives")
        .expect("the watch is open")
        .expect("an event");
    assert_eq!(event.path, "/app/x", "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_closed_only_by_their_owner_or_an_admin() {
    let cluster = secured().await;
    let session = cluster
        .alice
        .open_session(Duration::from_secs(10))
        .await
        .expect("any user may open a session");
    let id = session.id();
    assert_denied(
        cluster.bob.close_session(id).await,
        "admin",
        &format!("session {id}"),
    );
    // bob may not hang an ephemeral node on alice's session either.
    let on_alices = CreateOptions {
        session_id: id,
        kind: coord_client::NodeKind::Ephemeral,
        ..CreateOptions::default()
    };
    assert_denied(
        cluster.bob.create("/app/bobs", "", &on_alices).await,
        "admin",
        &format!("session {id}"),
    );
    // bob sees only his own sessions; root sees alice's.
    assert!(cluster.bob.list_sessions().await.unwrap().is_empty());
    let all = cluster.root.list_sessions().await.unwrap();
    assert!(all.iter().any(|info| info.id == id), "{all:?}");
    cluster
        .root
        .close_session(id)
        .await
        .expect("an admin may close any session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let member = pki.issue("member", "member", &["127.0.0.1"], Validity::Current);
    let alice_files = pki.issue("alice", "alice", &[], Validity::Current);
    let root_files = pki.issue("root", "root", &[], Validity::Current);
    let args = [
        "--cert-file".to_owned(),
        member.cert.display().to_string(),
        "--key-file".to_owned(),
        member.key.display().to_string(),
        "--trusted-ca-file".to_owned(),
        pki.ca_file().display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls = |files: &coord_tests::pki::IssuedFiles| TlsOptions {
        ca_file: pki.ca_file(),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        server_name: None,
    };
    let mut server = ServerProcess::start_single(dir.path(), &args);
    server.client_tls = Some(tls(&root_files));
    server.client().await;
    let connect = |files| {
        let options = options(None, Some(tls(files)));
        Client::connect_with([server.client_address()], options)
    };
    let root = connect(&root_files).await.unwrap();
    add_root(&root).await;
    let create = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    root.create("/app/x", "1", &create).await.unwrap();
    user_with(&root, "alice", "/app", &["read"]).await;
    change(&root, AuthChange::Enable).await;
    let status = root.auth_status().await.unwrap();
    assert_eq!((status.caller.as_str(), status.admin), ("root", true));

    let alice = connect(&alice_files).await.unwrap();
    let whoami = alice.auth_status().await.unwrap();
    assert_eq!((whoami.caller.as_str(), whoami.admin), ("alice", false));
    assert!(whoami.users.is_empty(), "only an admin sees the policy");
    assert_eq!(alice.get("/app/x").await.unwrap().data, b"1");
    assert_denied(alice.set("/app/x", "2", None).await, "write", "/app/x");
    assert_denied(alice.auth_change(AuthChange::Disable).await, "admin", "/");
}
