//! Golden formats: the exact bytes of every log entry, snapshot and peer message variant this
//! build writes, compared with `golden_formats.txt`. A difference means the durable or wire
//! format changed: bump the format version (`consensus/wire.rs`, `fsm/snapshot.rs`), keep
//! reading the old one or refuse it by name, and only then re-bless with
//! `COORD_BLESS=1 cargo test -p coord-server golden`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::consensus::golden::{peer_sample, peer_samples, storage_samples, Sample};
use crate::consensus::{MemberId, MessageKind, PeerFeatures};
use crate::fsm::{
    BatchItem, CheckpointCommand, CloseSessionCommand, Command, Compare, CompareOp, CompareTarget,
    CreateCommand, DeleteCommand, Fence, FencingToken, FsmError, Namespace, NodeKind, NodePath,
    NodeStat, OpenSessionCommand, OutcomeRecord, Output, PathRule, Proposal, Revision, SessionEnd,
    SessionId, SetCommand, TxnCommand, TxnOp, WriteId,
};
use crate::membership::Hello;
use crate::sessions::{KeepAliveCall, LeaseView, ListSessionsCall};

const GOLDEN_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/golden_formats.txt");

fn path(text: &str) -> NodePath {
    NodePath::parse(text).unwrap()
}

fn stat() -> NodeStat {
    NodeStat {
        create_revision: Revision(3),
        mod_revision: Revision(4),
        version: 1,
        cversion: 2,
        num_children: 0,
        ephemeral_owner: SessionId(0),
        data_length: 2,
        kind: NodeKind::Persistent,
        children_revision: Revision(3),
    }
}

fn create(kind: NodeKind, session: u64) -> CreateCommand {
    CreateCommand {
        path: "/locks/l-".into(),
        data: b"v".to_vec(),
        kind,
        sequential: true,
        make_parents: true,
        session: SessionId(session),
    }
}

fn commands() -> Vec<(String, Command)> {
    let set = SetCommand {
        path: "/a".into(),
        data: b"xy".to_vec(),
        expected_version: Some(1),
    };
    let delete = DeleteCommand {
        path: "/a".into(),
        expected_version: None,
        recursive: true,
    };
    let targets = [
        CompareTarget::Exists(true),
        CompareTarget::Version(2),
        CompareTarget::CreateRevision(Revision(3)),
        CompareTarget::ModRevision(Revision(4)),
        CompareTarget::Value(b"v".to_vec()),
    ];
    let ops = [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ];
    let txn = TxnCommand {
        compares: targets
            .into_iter()
            .zip(ops.into_iter().cycle())
            .map(|(target, op)| Compare {
                path: "/a".into(),
                op,
                target,
            })
            .collect(),
        fences: vec![Fence {
            path: "/locks/l-0000000001".into(),
            token: FencingToken(9),
        }],
        success: vec![
            TxnOp::Create(create(NodeKind::Container, 0)),
            TxnOp::Set(set.clone()),
            TxnOp::Delete(delete.clone()),
            TxnOp::Get { path: "/a".into() },
        ],
        failure: vec![TxnOp::Get { path: "/b".into() }],
    };
    vec![
        (
            "create".into(),
            Command::Create(create(NodeKind::Ephemeral, 7)),
        ),
        ("set".into(), Command::Set(set)),
        ("delete".into(), Command::Delete(delete)),
        ("txn".into(), Command::Txn(txn)),
        (
            "open session".into(),
            Command::OpenSession(OpenSessionCommand {
                ttl_ms: 10_000,
                owner: "client-1".into(),
            }),
        ),
        (
            "close session".into(),
            Command::CloseSession(CloseSessionCommand {
                session: SessionId(7),
                end: SessionEnd::Expired,
            }),
        ),
        (
            "checkpoint".into(),
            Command::CheckpointSessions(CheckpointCommand {
                remaining: vec![(SessionId(7), 4_000)],
                elapsed_ms: 1_000,
                write_id_retention_ms: 600_000,
            }),
        ),
    ]
}

fn proposals() -> Vec<(String, Proposal)> {
    let mut proposals: Vec<(String, Proposal)> = commands()
        .into_iter()
        .map(|(name, command)| (name, Proposal::from(command)))
        .collect();
    let write_id = WriteId {
        client: "client-1".into(),
        sequence: 5,
        answered_below: 4,
    };
    let (_, set) = &commands()[1];
    proposals.push((
        "set once".into(),
        Proposal::once(write_id.clone(), set.clone()),
    ));
    let (_, delete) = &commands()[2];
    let batch = Command::Batch(vec![
        BatchItem {
            write_id: Some(write_id),
            command: set.clone(),
        },
        BatchItem {
            write_id: None,
            command: delete.clone(),
        },
    ]);
    proposals.push(("batch".into(), Proposal::from(batch)));
    proposals
}

fn errors() -> Vec<FsmError> {
    vec![
        FsmError::InvalidPath {
            path: "a".into(),
            rule: PathRule::NotAbsolute,
        },
        FsmError::InvalidArgument {
            reason: "bad".into(),
        },
        FsmError::NodeExists { path: path("/a") },
        FsmError::NoNode { path: path("/a") },
        FsmError::BadVersion {
            path: path("/a"),
            expected: 1,
            actual: 2,
        },
        FsmError::NotEmpty { path: path("/a") },
        FsmError::NoParent { parent: path("/a") },
        FsmError::EphemeralParent { parent: path("/a") },
        FsmError::SessionExpired {
            session: SessionId(7),
        },
        FsmError::FenceRejected {
            path: path("/a"),
            token: FencingToken(3),
            current: FencingToken(4),
        },
        FsmError::TooLarge {
            path: "/a".into(),
            size: 10,
            limit: 5,
        },
        FsmError::LimitExceeded {
            what: "ops".into(),
            size: 10,
            limit: 5,
        },
        FsmError::RootReadOnly,
        FsmError::StaleWriteId {
            client: "c".into(),
            sequence: 1,
            answered_below: 2,
        },
        FsmError::ResultNotRetained {
            succeeded: true,
            revision: Revision(9),
        },
        FsmError::NoSpace { used: 10, quota: 5 },
    ]
}

fn outputs() -> Vec<Output> {
    vec![
        Output::Created {
            path: path("/a"),
            stat: stat(),
        },
        Output::Set { stat: stat() },
        Output::Deleted { count: 3 },
        Output::Got {
            data: b"xy".to_vec(),
            stat: stat(),
        },
        Output::SessionOpened {
            session: SessionId(7),
            ttl_ms: 10_000,
        },
        Output::SessionClosed { deleted: 2 },
        Output::Checkpointed,
    ]
}

fn outcome_samples() -> Vec<Sample> {
    let mut outcomes: Vec<(String, OutcomeRecord)> = outputs()
        .into_iter()
        .enumerate()
        .map(|(index, output)| (format!("outcome done {index}"), OutcomeRecord::Done(output)))
        .collect();
    outcomes.push((
        "outcome txn".into(),
        OutcomeRecord::Txn {
            succeeded: true,
            results: outputs().into_iter().take(4).collect(),
        },
    ));
    for (index, error) in errors().into_iter().enumerate() {
        outcomes.push((
            format!("outcome refused {index}"),
            OutcomeRecord::Refused(error),
        ));
    }
    outcomes.push((
        "outcome txn op failed".into(),
        OutcomeRecord::TxnOpFailed {
            op_index: 2,
            error: FsmError::NoNode { path: path("/a") },
        },
    ));
    outcomes.push((
        "outcome txn reads not retained".into(),
        OutcomeRecord::TxnReadsNotRetained {
            succeeded: false,
            revision: Revision(9),
        },
    ));
    outcomes
        .iter()
        .map(|(name, outcome)| peer_sample(name, MessageKind::Write, outcome))
        .collect()
}

fn session_and_member_samples() -> Vec<Sample> {
    let view = LeaseView {
        session: SessionId(7),
        ttl_ms: 10_000,
        remaining_ms: 4_000,
        last_keepalive_age_ms: Some(100),
        ephemerals: vec!["/locks/l-0000000001".into()],
    };
    vec![
        peer_sample(
            "keep alive",
            MessageKind::KeepAlive,
            &KeepAliveCall {
                session: SessionId(7),
            },
        ),
        peer_sample(
            "keep alive reply",
            MessageKind::KeepAlive,
            &Ok::<u64, crate::consensus::ConsensusError>(10_000),
        ),
        peer_sample(
            "list sessions",
            MessageKind::ListSessions,
            &ListSessionsCall,
        ),
        peer_sample(
            "list sessions reply",
            MessageKind::ListSessions,
            &Ok::<_, crate::consensus::ConsensusError>(vec![view]),
        ),
        peer_sample(
            "hello",
            MessageKind::Hello,
            &Hello {
                cluster_id: "coord-0123".into(),
                member_id: MemberId(2),
                client_address: "10.0.0.2:7400".into(),
            },
        ),
        peer_sample("features", MessageKind::Features, &()),
        peer_sample(
            "features reply",
            MessageKind::Features,
            &PeerFeatures { command_set: 2 },
        ),
    ]
}

/// A small namespace with every kind of node, a session and a remembered write.
fn namespace_snapshot() -> Sample {
    let mut namespace = Namespace::new();
    let commands = [
        Command::OpenSession(OpenSessionCommand {
            ttl_ms: 10_000,
            owner: "client-1".into(),
        }),
        Command::Create(create(NodeKind::Ephemeral, 1)),
    ];
    for (index, command) in commands.iter().enumerate() {
        let applied = namespace.apply(Revision(index as u64 + 1), command);
        assert!(applied.outcome.is_ok(), "{applied:?}");
    }
    let once = Proposal::once(
        WriteId {
            client: "client-1".into(),
            sequence: 1,
            answered_below: 0,
        },
        Command::Set(SetCommand {
            path: "/locks".into(),
            data: b"x".to_vec(),
            expected_version: None,
        }),
    );
    assert!(namespace.apply_proposal(Revision(3), &once).outcome.is_ok());
    let bytes = namespace.to_snapshot();
    assert_eq!(Namespace::from_snapshot(&bytes).unwrap(), namespace);
    ("namespace snapshot".into(), bytes)
}

fn all_samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for (name, proposal) in proposals() {
        samples.push(peer_sample(
            &format!("proposal {name}"),
            MessageKind::Write,
            &proposal,
        ));
    }
    samples.extend(outcome_samples());
    samples.extend(session_and_member_samples());
    samples.extend(peer_samples());
    samples.extend(storage_samples(&proposals()));
    samples.push(namespace_snapshot());
    samples
}

fn render(samples: &[Sample]) -> String {
    let mut text = String::from(
        "# Golden formats: name, then the bytes in hex. Written by golden_tests.rs; see its doc.\n",
    );
    for (name, bytes) in samples {
        let hex: String = bytes.iter().fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        });
        let _ = writeln!(text, "{name}: {hex}");
    }
    text
}

#[test]
fn every_durable_and_wire_format_is_pinned() {
    let samples = all_samples();
    let names: BTreeSet<&String> = samples.iter().map(|(name, _)| name).collect();
    assert_eq!(names.len(), samples.len(), "sample names are unique");
    let rendered = render(&samples);
    if std::env::var_os("COORD_BLESS").is_some() {
        std::fs::write(GOLDEN_FILE, &rendered).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(GOLDEN_FILE).unwrap_or_default();
    let differing: Vec<&str> = rendered
        .lines()
        .filter(|line| !golden.lines().any(|golden_line| golden_line == *line))
        .map(|line| line.split(':').next().unwrap_or(line))
        .collect();
    assert!(
        differing.is_empty() && golden.lines().count() == rendered.lines().count(),
        "the encoding of these samples changed (or they are new): {differing:?}; see the doc of \
         golden_tests.rs before re-blessing {GOLDEN_FILE}"
    );
}

/// Every decoder that reads bytes from a disk or a peer, on `bytes`: each must return a value
/// or an error, never panic (a panic aborts the member).
fn decode_everything(bytes: &[u8]) {
    use crate::consensus::{decode_peer, encode_peer, MembershipChange, WriteCall};
    let _ = crate::consensus::golden::decode_stored(bytes);
    let _ = Namespace::from_snapshot(bytes);
    for kind in [
        MessageKind::Write,
        MessageKind::Membership,
        MessageKind::KeepAlive,
        MessageKind::ListSessions,
        MessageKind::Hello,
        MessageKind::Features,
        MessageKind::ReadIndex,
        MessageKind::PreVote,
        MessageKind::TimeoutNow,
        MessageKind::MoveLeader,
        MessageKind::WriteBatch,
        MessageKind::ForwardStream,
    ] {
        let mut message = encode_peer(kind, &());
        message.payload = bytes.to_vec();
        let _ = decode_peer::<crate::consensus::PreVote>(&message, kind);
        let _ = decode_peer::<crate::consensus::PreVoteReply>(&message, kind);
        let _ = decode_peer::<crate::consensus::TimeoutNow>(&message, kind);
        let _ = decode_peer::<crate::consensus::MoveLeader>(&message, kind);
        let _ = decode_peer::<Result<crate::consensus::Moved, crate::consensus::ConsensusError>>(
            &message, kind,
        );
        let _ = decode_peer::<WriteCall>(&message, kind);
        let _ = decode_peer::<crate::consensus::WriteBatchCall>(&message, kind);
        let _ = decode_peer::<crate::consensus::StreamedBatch>(&message, kind);
        let _ = decode_peer::<crate::consensus::StreamedReply>(&message, kind);
        let _ = decode_peer::<
            Result<
                Vec<Result<crate::consensus::Written, crate::consensus::ConsensusError>>,
                crate::consensus::ConsensusError,
            >,
        >(&message, kind);
        let _ = decode_peer::<MembershipChange>(&message, kind);
        let _ = decode_peer::<KeepAliveCall>(&message, kind);
        let _ = decode_peer::<Hello>(&message, kind);
        let _ = decode_peer::<PeerFeatures>(&message, kind);
        let _ = decode_peer::<Result<crate::consensus::Written, crate::consensus::ConsensusError>>(
            &message, kind,
        );
        let _ =
            decode_peer::<Result<Vec<LeaseView>, crate::consensus::ConsensusError>>(&message, kind);
    }
    crate::consensus::golden::decode_and_admit_raft_messages(bytes);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Golden samples with bytes flipped, cut or added: decoders refuse or accept them, and
    /// never panic.
    #[test]
    fn mutated_formats_never_panic_a_decoder(
        sample in 0usize..1000,
        flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..8),
        cut in proptest::option::of(0usize..4096),
        extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
    ) {
        let samples = all_samples();
        let (_, bytes) = &samples[sample % samples.len()];
        let mut bytes = bytes.clone();
        for (position, value) in flips {
            if !bytes.is_empty() {
                let index = position % bytes.len();
                bytes[index] ^= value;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.min(bytes.len()));
        }
        bytes.extend(extra);
        decode_everything(&bytes);
    }

    /// Arbitrary bytes, likewise.
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
    ) {
        decode_everything(&bytes);
    }

    /// The path parser refuses or accepts any string, and what it accepts prints back as given.
    #[test]
    fn any_string_is_a_valid_path_or_a_named_refusal(text in ".{0,64}") {
        if let Ok(path) = NodePath::parse(&text) {
            proptest::prop_assert_eq!(path.as_str(), text.as_str());
        }
    }
}

/// Every committed fuzzing seed (`fuzz/corpus/*/seed-*`, see `fuzz/README.md`) through every
/// decoder, as a replay of the fuzz corpora in the normal test command.
#[test]
fn the_fuzzing_seeds_decode_without_a_panic() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut seeds = 0;
    for target in std::fs::read_dir(&corpus).unwrap() {
        for file in std::fs::read_dir(target.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("seed-"))
            {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            decode_everything(&bytes);
            // The peer_message target's inputs start with a selector byte.
            decode_everything(bytes.get(1..).unwrap_or_default());
            let _ = NodePath::parse(&String::from_utf8_lossy(&bytes));
            seeds += 1;
        }
    }
    assert!(seeds >= 20, "only {seeds} seeds under {}", corpus.display());
}
