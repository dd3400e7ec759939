//! Samples of every message and record consensus encodes, for the golden-format test in
//! `golden_tests.rs` (test builds only). Each sample is encoded the way it is sent or stored,
//! and checked to decode back to the same value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{EntryPayload, Membership};
use openraft_legacy::network_v1::{InstallSnapshotRequest, InstallSnapshotResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ConsensusError;
use super::ids::MemberId;
use super::leader::{
    MembershipChange, StreamedBatch, StreamedReply, WriteBatchCall, WriteCall, Written,
};
use super::types::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
use super::types::{Entry, Member, TypeConfig};
use super::wire::{
    decode_log_entry, decode_log_meta, decode_peer, decode_snapshot_file, encode_log_entry,
    encode_log_meta, encode_peer, encode_snapshot_file, MessageKind, VoteCall,
};
use crate::fsm::{Command, OutcomeRecord, Output, Proposal, Revision};

/// A named encoding.
pub type Sample = (String, Vec<u8>);

/// `value` as a peer message payload of `kind`, checked to decode back to itself.
pub fn peer_sample<T: Serialize + DeserializeOwned + Debug>(
    name: &str,
    kind: MessageKind,
    value: &T,
) -> Sample {
    let message = encode_peer(kind, value);
    let decoded: T = decode_peer(&message, kind).expect("a sample decodes");
    assert_eq!(format!("{decoded:?}"), format!("{value:?}"), "{name}");
    (name.to_owned(), message.payload)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId { term, node_id: 1 }, index)
}

fn membership() -> Membership<u64, Member> {
    let nodes = BTreeMap::from([
        (
            1,
            Member {
                addr: "10.0.0.1:7401".into(),
            },
        ),
        (
            2,
            Member {
                addr: "10.0.0.2:7401".into(),
            },
        ),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2])], nodes).expect("a valid membership")
}

fn entry(index: u64, payload: openraft::alias::EntryPayloadOf<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(2, index),
        payload,
    }
}

/// Samples of the log entries, log metadata and the snapshot file, encoded as stored; the
/// normal entries carry `proposals`.
pub fn storage_samples(proposals: &[(String, Proposal)]) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut stored = vec![
        ("log entry blank".to_owned(), entry(5, EntryPayload::Blank)),
        (
            "log entry membership".to_owned(),
            entry(6, EntryPayload::Membership(membership())),
        ),
    ];
    for (name, proposal) in proposals {
        stored.push((
            format!("log entry {name}"),
            entry(7, EntryPayload::Normal(proposal.clone())),
        ));
    }
    for (name, entry) in stored {
        let bytes = encode_log_entry(&entry);
        let decoded = decode_log_entry(&bytes).expect("a sample decodes");
        assert_eq!(format!("{decoded:?}"), format!("{entry:?}"), "{name}");
        samples.push((name, bytes));
    }
    let vote = Vote::new_committed(3, 1);
    let bytes = encode_log_meta(&vote);
    assert_eq!(decode_log_meta::<Vote>("vote", &bytes), Ok(vote));
    samples.push(("log meta vote".to_owned(), bytes));
    let committed = Some(log_id(2, 9));
    let bytes = encode_log_meta(&committed);
    assert_eq!(
        decode_log_meta::<Option<LogId>>("committed", &bytes),
        Ok(committed)
    );
    samples.push(("log meta committed".to_owned(), bytes));
    let snapshot = super::state_machine::sample_snapshot_envelope(snapshot_meta());
    let bytes = encode_snapshot_file(&snapshot);
    let decoded: super::state_machine::SnapshotEnvelope =
        decode_snapshot_file(&bytes).expect("a sample decodes");
    assert_eq!(format!("{decoded:?}"), format!("{snapshot:?}"));
    samples.push(("snapshot file".to_owned(), bytes));
    samples
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 9)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), membership()),
    }
}

/// Samples of openraft's messages and Coord's consensus calls, encoded as sent.
pub fn peer_samples() -> Vec<Sample> {
    let vote = Vote::new_committed(3, 1);
    let proposal = Proposal::from(Command::Delete(crate::fsm::DeleteCommand {
        path: "/a".into(),
        expected_version: Some(1),
        recursive: false,
    }));
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(2, 6)),
        entries: vec![entry(7, EntryPayload::Normal(proposal.clone()))],
        leader_commit: Some(log_id(2, 6)),
    };
    let install = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: openraft_legacy::network_v1::SnapshotMeta::new(snapshot_meta(), "2-9".into()),
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
    };
    let mut samples = vec![
        peer_sample("append entries", MessageKind::AppendEntries, &append),
        peer_sample(
            "append entries reply",
            MessageKind::AppendEntries,
            &Ok::<_, ConsensusError>(AppendEntriesResponse::<TypeConfig>::Success),
        ),
        peer_sample(
            "transfer vote",
            MessageKind::TransferVote,
            &VoteCall::from(VoteRequest::<TypeConfig>::new(vote, Some(log_id(2, 6)))),
        ),
        peer_sample("append stream", MessageKind::AppendStream, &append),
        peer_sample(
            "append stream reply",
            MessageKind::AppendStream,
            &Ok::<openraft::raft::StreamAppendResult<TypeConfig>, String>(Ok(Some(log_id(2, 7)))),
        ),
        peer_sample(
            "append stream conflict",
            MessageKind::AppendStream,
            &Ok::<openraft::raft::StreamAppendResult<TypeConfig>, String>(Err(
                openraft::raft::StreamAppendError::Conflict(log_id(2, 6)),
            )),
        ),
        peer_sample(
            "vote",
            MessageKind::Vote,
            &VoteCall::from(VoteRequest::<TypeConfig>::new(vote, Some(log_id(2, 6)))),
        ),
        peer_sample(
            "vote reply",
            MessageKind::Vote,
            &Ok::<_, ConsensusError>(VoteResponse::<TypeConfig>::new(
                vote,
                Some(log_id(2, 6)),
                true,
            )),
        ),
        peer_sample("install snapshot", MessageKind::InstallSnapshot, &install),
        peer_sample(
            "install snapshot reply",
            MessageKind::InstallSnapshot,
            &Ok::<_, ConsensusError>(InstallSnapshotResponse::<TypeConfig> { vote }),
        ),
        peer_sample("read index", MessageKind::ReadIndex, &()),
        peer_sample(
            "read index reply",
            MessageKind::ReadIndex,
            &Ok::<u64, ConsensusError>(42),
        ),
        peer_sample("write", MessageKind::Write, &WriteCall { proposal }),
        peer_sample(
            "write reply",
            MessageKind::Write,
            &Ok::<_, ConsensusError>(Written {
                revision: Revision(7),
                outcome: OutcomeRecord::Done(Output::Deleted { count: 1 }),
            }),
        ),
    ];
    let changes = [
        MembershipChange::AddLearner {
            id: MemberId(4),
            peer_address: "10.0.0.4:7401".into(),
        },
        MembershipChange::Promote { id: MemberId(4) },
        MembershipChange::Remove { id: MemberId(4) },
    ];
    for change in changes {
        let name = format!("membership {change:?}");
        samples.push(peer_sample(&name, MessageKind::Membership, &change));
    }
    samples.extend(election_samples());
    samples.extend(write_batch_samples());
    for (index, error) in consensus_errors().into_iter().enumerate() {
        let name = format!("consensus error {index}");
        let reply: Result<(), ConsensusError> = Err(error);
        samples.push(peer_sample(&name, MessageKind::Membership, &reply));
    }
    samples
}

/// Forwarded writes in a batch, and the reply answering each.
fn write_batch_samples() -> Vec<Sample> {
    let delete = |path: &str| WriteCall {
        proposal: Proposal::from(Command::Delete(crate::fsm::DeleteCommand {
            path: path.into(),
            expected_version: None,
            recursive: false,
        })),
    };
    let answers: Vec<Result<Written, ConsensusError>> = vec![
        Ok(Written {
            revision: Revision(8),
            outcome: OutcomeRecord::Done(Output::Deleted { count: 1 }),
        }),
        Err(ConsensusError::NoLeader {
            leader_hint: Some(MemberId(3)),
        }),
    ];
    vec![
        peer_sample(
            "write batch",
            MessageKind::WriteBatch,
            &WriteBatchCall {
                writes: vec![delete("/a"), delete("/b")],
            },
        ),
        peer_sample(
            "write batch reply",
            MessageKind::WriteBatch,
            &Ok::<_, ConsensusError>(answers.clone()),
        ),
        peer_sample(
            "forward stream batch",
            MessageKind::ForwardStream,
            &StreamedBatch {
                tag: 7,
                batch: WriteBatchCall {
                    writes: vec![delete("/a")],
                },
            },
        ),
        peer_sample(
            "forward stream reply",
            MessageKind::ForwardStream,
            &StreamedReply {
                tag: 7,
                reply: Ok(answers),
            },
        ),
        peer_sample(
            "forward stream refusal",
            MessageKind::ForwardStream,
            &StreamedReply {
                tag: 8,
                reply: Err(ConsensusError::NoLeader { leader_hint: None }),
            },
        ),
    ]
}

/// Pre-vote, hand-off and leadership move messages.
fn election_samples() -> Vec<Sample> {
    use super::election::{PreVote, PreVoteReply};
    use super::handoff::{MoveLeader, Moved, TimeoutNow};
    use super::ids::Term;
    vec![
        peer_sample(
            "pre-vote",
            MessageKind::PreVote,
            &PreVote {
                candidate: MemberId(2),
                last_log: Some((3, 17)),
            },
        ),
        peer_sample(
            "pre-vote reply",
            MessageKind::PreVote,
            &PreVoteReply {
                granted: true,
                removed: false,
            },
        ),
        peer_sample(
            "timeout now",
            MessageKind::TimeoutNow,
            &TimeoutNow {
                from: MemberId(1),
                term: Term(3),
            },
        ),
        peer_sample(
            "timeout now reply",
            MessageKind::TimeoutNow,
            &Ok::<(), ConsensusError>(()),
        ),
        peer_sample(
            "move leader",
            MessageKind::MoveLeader,
            &MoveLeader {
                target: Some(MemberId(3)),
            },
        ),
        peer_sample(
            "move leader reply",
            MessageKind::MoveLeader,
            &Ok::<_, ConsensusError>(Moved {
                leader: MemberId(3),
                term: Term(4),
            }),
        ),
        peer_sample(
            "join",
            MessageKind::Join,
            &super::join::JoinCall {
                change: MembershipChange::Promote { id: MemberId(5) },
                relayed: true,
            },
        ),
        peer_sample(
            "join reply",
            MessageKind::Join,
            &Ok::<_, ConsensusError>(super::join::MembershipView {
                voters: BTreeSet::from([MemberId(1), MemberId(2)]),
                learners: BTreeSet::from([MemberId(5)]),
            }),
        ),
    ]
}

fn consensus_errors() -> Vec<ConsensusError> {
    vec![
        ConsensusError::NoLeader {
            leader_hint: Some(MemberId(2)),
        },
        ConsensusError::Timeout {
            what: "write".into(),
            timeout: Duration::from_millis(1500),
        },
        ConsensusError::LeaderUnreachable {
            leader: MemberId(2),
            reason: "refused".into(),
        },
        ConsensusError::ShuttingDown,
        ConsensusError::Interrupted {
            reason: "stopped".into(),
        },
        ConsensusError::Membership {
            reason: "busy".into(),
        },
        ConsensusError::Fatal {
            reason: "disk".into(),
        },
        ConsensusError::NotAMember {
            member: MemberId(4),
        },
    ]
}

/// Decodes `bytes` as every stored record: a log entry, the log metadata and the snapshot file.
pub fn decode_stored(bytes: &[u8]) -> bool {
    let entry = decode_log_entry(bytes).is_ok();
    let vote = decode_log_meta::<Vote>("vote", bytes).is_ok();
    let committed = decode_log_meta::<Option<LogId>>("committed", bytes).is_ok();
    let snapshot = decode_snapshot_file::<super::state_machine::SnapshotEnvelope>(bytes).is_ok();
    entry || vote || committed || snapshot
}

/// Decodes `bytes` as each Raft message and, where it decodes, runs the admission checks on
/// it, as the peer service does.
pub fn decode_and_admit_raft_messages(bytes: &[u8]) {
    let admission = super::admission::Admission::default();
    let message = |kind| {
        let mut message = encode_peer(kind, &());
        message.payload = bytes.to_vec();
        message
    };
    if let Ok(append) = decode_peer::<AppendEntriesRequest<TypeConfig>>(
        &message(MessageKind::AppendEntries),
        MessageKind::AppendEntries,
    ) {
        let _ = admission.append(&append);
    }
    if let Ok(vote) =
        decode_peer::<VoteRequest<TypeConfig>>(&message(MessageKind::Vote), MessageKind::Vote)
    {
        let _ = admission.vote(&vote, |_| true);
    }
    if let Ok(chunk) = decode_peer::<InstallSnapshotRequest<TypeConfig>>(
        &message(MessageKind::InstallSnapshot),
        MessageKind::InstallSnapshot,
    ) {
        let _ = admission.snapshot(&chunk);
    }
}

/// The snapshot file sample as openraft 0.9 wrote it: its metadata named the snapshot ("2-9"),
/// where this build writes the name empty.
const SNAPSHOT_FILE_0_9: &str = "0100000001020000000000000001000000000000000900000000000000010100000000000000010000000000000001000000000000000100000000000000020000000000000001000000000000000200000000000000020000000000000001000000000000000d0000000000000031302e302e302e313a3734303102000000000000000d0000000000000031302e302e302e323a373430310300000000000000322d390300000000000000010203";

/// A member upgraded from openraft 0.9 reads the snapshot file it wrote before: the name is
/// read and dropped, and the rest is the same snapshot this build writes.
#[test]
fn a_snapshot_file_written_under_openraft_0_9_reads_back() {
    let bytes: Vec<u8> = (0..SNAPSHOT_FILE_0_9.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&SNAPSHOT_FILE_0_9[at..at + 2], 16).expect("hex"))
        .collect();
    let decoded: super::state_machine::SnapshotEnvelope =
        decode_snapshot_file(&bytes).expect("a 0.9 snapshot file decodes");
    let written = super::state_machine::sample_snapshot_envelope(snapshot_meta());
    assert_eq!(format!("{decoded:?}"), format!("{written:?}"));
}
