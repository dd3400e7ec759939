//! Bad input over real gRPC: each mistake gets a typed error naming what was wrong, nothing is
//! changed, and the member keeps serving the next request.

use coord_client::{Client, Compare, CompareOp, CreateOptions, DeleteOptions, Error, Op, Txn};
use coord_proto::v1 as pb;
use coord_proto::v1::namespace_client::NamespaceClient;
use coord_tests::ServerProcess;

/// Asserts the member still serves a write and a read after a rejected request.
async fn still_serving(client: &Client, step: &str) {
    let path = format!(
        "/alive-{}",
        step.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    client
        .create(&path, "ok", &CreateOptions::default())
        .await
        .unwrap_or_else(|error| panic!("after {step}: {error}"));
    assert_eq!(client.get(&path).await.unwrap().data, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mistake_is_a_typed_error_and_the_member_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_single(dir.path(), &[]);
    let client = server.client().await;
    let persistent = CreateOptions::default();

    // Each path rule, named in the message.
    let long_path = format!("/{}", "x".repeat(5000));
    let deep_path = "/a".repeat(300);
    let cases: [(&str, &str); 8] = [
        ("", "empty"),
        ("relative/path", "must start with '/'"),
        ("/trailing/", "must not end with '/'"),
        ("/double//slash", "empty segment"),
        ("/dot/./segment", "'.' or '..'"),
        ("/control\u{1}char", "control characters"),
        (&long_path, "longer than 4096 bytes"),
        (&deep_path, "more than 256 segments"),
    ];
    for (path, rule) in cases {
        match client.create(path, "", &persistent).await {
            Err(Error::InvalidPath {
                path: reported,
                message,
            }) => {
                // Long paths come back abbreviated, never as a protocol error.
                let shown = reported.split('…').next().unwrap();
                assert!(
                    path.starts_with(shown) && (reported == path || path.len() > 256),
                    "{reported:?}"
                );
                assert!(
                    message.contains(rule),
                    "{message:?} should name the rule {rule:?}"
                );
            }
            other => panic!("create {path:?}: expected InvalidPath, got {other:?}"),
        }
        assert!(
            matches!(client.get(path).await, Err(Error::InvalidPath { .. })),
            "get {path:?}"
        );
        still_serving(&client, rule).await;
    }

    // Data over the 1 MiB default limit.
    let too_big = vec![7u8; 1024 * 1024 + 1];
    match client.create("/big", too_big.clone(), &persistent).await {
        Err(Error::TooLarge { path, size, limit }) => {
            assert_eq!(
                (path.as_str(), size, limit),
                ("/big", 1024 * 1024 + 1, 1024 * 1024)
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    client
        .create("/big", vec![7u8; 1024 * 1024], &persistent)
        .await
        .expect("exactly the limit is accepted");
    assert!(matches!(
        client.set("/big", too_big, None).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(
        client.get("/big").await.unwrap().data.len(),
        1024 * 1024,
        "rejected set changed nothing"
    );
    still_serving(&client, "too large").await;

    // Missing parent, existing node, missing node.
    assert_eq!(
        client
            .create("/missing/child", "", &persistent)
            .await
            .unwrap_err(),
        Error::NoParent {
            parent: "/missing".into()
        }
    );
    assert_eq!(
        client.create("/big", "", &persistent).await.unwrap_err(),
        Error::NodeExists {
            path: "/big".into()
        }
    );
    assert_eq!(
        client.get("/nothing").await.unwrap_err(),
        Error::NoNode {
            path: "/nothing".into()
        }
    );
    assert_eq!(
        client.set("/nothing", "x", None).await.unwrap_err(),
        Error::NoNode {
            path: "/nothing".into()
        }
    );

    // Wrong version on set and delete.
    client
        .create("/versioned", "v0", &persistent)
        .await
        .unwrap();
    assert_eq!(
        client.set("/versioned", "v1", Some(5)).await.unwrap_err(),
        Error::BadVersion {
            path: "/versioned".into(),
            expected: 5,
            actual: 0
        }
    );
    let delete_v3 = DeleteOptions {
        expected_version: Some(3),
        recursive: false,
    };
    assert!(matches!(
        client.delete("/versioned", delete_v3).await,
        Err(Error::BadVersion { .. })
    ));
    assert_eq!(client.get("/versioned").await.unwrap().data, b"v0");

    // Delete of a non-empty node, and of the root.
    client
        .create(
            "/parent/child",
            "",
            &CreateOptions {
                make_parents: true,
                ..persistent.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .delete("/parent", DeleteOptions::default())
            .await
            .unwrap_err(),
        Error::NotEmpty {
            path: "/parent".into()
        }
    );
    assert_eq!(
        client
            .delete(
                "/",
                DeleteOptions {
                    recursive: true,
                    ..DeleteOptions::default()
                }
            )
            .await
            .unwrap_err(),
        Error::RootReadOnly
    );
    assert!(client.exists("/parent/child").await.unwrap().is_some());
    still_serving(&client, "versions").await;

    // Malformed txns: an existence compare with an ordering, a failing operation (all or
    // nothing), and raw wire messages with missing or unknown fields.
    let ordering_on_existence = Txn::new()
        .when(Compare::exists("/versioned"))
        .then(Op::get("/versioned"));
    let mut bad_compare = ordering_on_existence.clone();
    bad_compare = bad_compare.when(Compare::version("/versioned", CompareOp::Equal, 0));
    assert!(client.txn(bad_compare).await.unwrap().succeeded);
    let half_applied = Txn::new()
        .then(Op::set("/versioned", "changed", None))
        .then(Op::create("/versioned", "", &persistent));
    match client.txn(half_applied).await {
        Err(Error::TxnOpFailed {
            op_index: 1,
            source,
        }) => assert_eq!(
            *source,
            Error::NodeExists {
                path: "/versioned".into()
            }
        ),
        other => panic!("expected TxnOpFailed at 1, got {other:?}"),
    }
    assert_eq!(
        client.get("/versioned").await.unwrap().data,
        b"v0",
        "a failed txn applies nothing"
    );

    let mut raw = NamespaceClient::connect(format!("http://{}", server.client_address()))
        .await
        .unwrap();
    let existence_with_less = pb::TxnRequest {
        compares: vec![pb::Compare {
            path: "/versioned".into(),
            op: pb::CompareOp::Less as i32,
            target: Some(pb::compare::Target::Exists(true)),
        }],
        ..pb::TxnRequest::default()
    };
    let no_target = pb::TxnRequest {
        compares: vec![pb::Compare {
            path: "/versioned".into(),
            op: 0,
            target: None,
        }],
        ..pb::TxnRequest::default()
    };
    let empty_op = pb::TxnRequest {
        success: vec![pb::TxnOp { op: None }],
        ..pb::TxnRequest::default()
    };
    let unknown_kind = pb::TxnRequest {
        success: vec![pb::TxnOp {
            op: Some(pb::txn_op::Op::Create(pb::TxnCreate {
                path: "/k".into(),
                kind: 42,
                ..pb::TxnCreate::default()
            })),
        }],
        ..pb::TxnRequest::default()
    };
    let too_many_ops = pb::TxnRequest {
        success: (0..200)
            .map(|_| pb::TxnOp {
                op: Some(pb::txn_op::Op::Get(pb::TxnGet { path: "/".into() })),
            })
            .collect(),
        ..pb::TxnRequest::default()
    };
    for (name, request, expected) in [
        (
            "existence with LESS",
            existence_with_less,
            "existence takes only EQUAL or NOT_EQUAL",
        ),
        (
            "compare without target",
            no_target,
            "compare 0: no target set",
        ),
        (
            "operation without kind",
            empty_op,
            "txn operation 0: no operation set",
        ),
        ("unknown node kind", unknown_kind, "unknown node kind 42"),
        ("too many operations", too_many_ops, "over the limit of 128"),
    ] {
        let status = raw.txn(request).await.expect_err(name);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{name}: {status:?}"
        );
        assert!(
            status.message().contains(expected),
            "{name}: {:?} should contain {expected:?}",
            status.message()
        );
        let code = status
            .metadata()
            .get(coord_proto::ERROR_CODE_METADATA_KEY)
            .expect("machine-readable code");
        assert!(
            code.to_str().unwrap().starts_with("ERROR_CODE_"),
            "{name}: {code:?}"
        );
        still_serving(&client, name).await;
    }

    // An unknown consistency level and a forged page token.
    let bad_read = pb::GetRequest {
        path: "/".into(),
        read: Some(pb::ReadOptions {
            consistency: 9,
            min_revision: 0,
        }),
    };
    assert_eq!(
        raw.get(bad_read).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let forged = pb::ChildrenRequest {
        path: "/".into(),
        page_token: "bogus".into(),
        ..pb::ChildrenRequest::default()
    };
    assert_eq!(
        raw.children(forged).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    still_serving(&client, "raw reads").await;
}
