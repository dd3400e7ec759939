//! Hand-made peer messages for the hostile-input tests (`coord-peer-probe`): each is what a
//! forger or a broken member could send, and each must be refused or survived without harm.
//! Nothing in the server sends them.

use std::collections::{BTreeMap, BTreeSet};

use coord_proto::v1::peer::PeerMessage;
use openraft::raft::AppendEntriesRequest;
use openraft::{EntryPayload, Membership};
use openraft_legacy::network_v1::InstallSnapshotRequest;

use super::admission::TERM_MAX;
use super::forward_batch::WRITES_PER_BATCH_MAX;
use super::leader::{WriteBatchCall, WriteCall};
use super::types::{CommittedLeaderId, LogId, StoredMembership, Vote};
use super::types::{Entry, Member, TypeConfig};
use super::wire::{encode_peer, MessageKind, VoteCall};
use crate::fsm::{BatchItem, Command, Proposal, SetCommand, BATCH_ITEMS_MAX};

/// The forged messages the probe can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A vote request at term `u64::MAX` (openraft overflows at its next election).
    VoteImpossibleTerm,
    /// A vote request from a member the cluster does not have.
    VoteUnknownCandidate,
    /// An AppendEntries from a leader at term `u64::MAX`.
    AppendImpossibleTerm,
    /// An AppendEntries whose entries skip an index.
    AppendWithGap,
    /// An AppendEntries whose entry is of a later term than its leader.
    AppendFutureTerm,
    /// An AppendEntries carrying a 100 MiB value.
    AppendOversize,
    /// A snapshot chunk at an offset of 2^50 bytes.
    SnapshotHugeOffset,
    /// A forwarded write of a 100 MiB value.
    ForwardOversize,
    /// Forwarded writes, one more in a batch than a follower sends.
    ForwardOversizeBatch,
    /// An AppendEntries whose entry is a batch holding a batch (which no leader writes).
    AppendNestedBatch,
    /// An AppendEntries whose entry is a batch of more than `BATCH_ITEMS_MAX` writes.
    AppendOversizeBatch,
    /// A payload that decodes as nothing.
    Garbage,
}

impl Probe {
    pub const ALL: [Probe; 12] = [
        Probe::VoteImpossibleTerm,
        Probe::VoteUnknownCandidate,
        Probe::AppendImpossibleTerm,
        Probe::AppendWithGap,
        Probe::AppendFutureTerm,
        Probe::AppendOversize,
        Probe::SnapshotHugeOffset,
        Probe::ForwardOversize,
        Probe::ForwardOversizeBatch,
        Probe::AppendNestedBatch,
        Probe::AppendOversizeBatch,
        Probe::Garbage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Probe::VoteImpossibleTerm => "vote-impossible-term",
            Probe::VoteUnknownCandidate => "vote-unknown-candidate",
            Probe::AppendImpossibleTerm => "append-impossible-term",
            Probe::AppendWithGap => "append-with-gap",
            Probe::AppendFutureTerm => "append-future-term",
            Probe::AppendOversize => "append-oversize",
            Probe::SnapshotHugeOffset => "snapshot-huge-offset",
            Probe::ForwardOversize => "forward-oversize",
            Probe::ForwardOversizeBatch => "forward-oversize-batch",
            Probe::AppendNestedBatch => "append-nested-batch",
            Probe::AppendOversizeBatch => "append-oversize-batch",
            Probe::Garbage => "garbage",
        }
    }

    pub fn from_name(name: &str) -> Option<Probe> {
        Probe::ALL.into_iter().find(|probe| probe.name() == name)
    }
}

/// The RPC a probe goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMethod {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId { term, node_id: 1 }, index)
}

fn huge_set() -> Proposal {
    Proposal::from(Command::Set(SetCommand {
        path: "/forged".into(),
        data: vec![0; 100 << 20],
        expected_version: None,
    }))
}

fn append(vote: Vote, entries: Vec<Entry>) -> PeerMessage {
    let request = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(1, 1)),
        entries,
        leader_commit: None,
    };
    encode_peer(MessageKind::AppendEntries, &request)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn forged_item() -> BatchItem {
    BatchItem {
        write_id: None,
        command: Command::Set(SetCommand {
            path: "/forged".into(),
            data: b"x".to_vec(),
            expected_version: None,
        }),
    }
}

/// The forwarded write of `ForwardOversize`, or the batch of `ForwardOversizeBatch`.
fn forged_forward(probe: Probe) -> PeerMessage {
    if probe == Probe::ForwardOversize {
        let call = WriteCall {
            proposal: huge_set(),
        };
        return encode_peer(MessageKind::Write, &call);
    }
    let small = WriteCall {
        proposal: Proposal::from(forged_item().command),
    };
    let batch = WriteBatchCall {
        writes: vec![small; WRITES_PER_BATCH_MAX + 1],
    };
    encode_peer(MessageKind::WriteBatch, &batch)
}

/// The batch entry of `AppendNestedBatch` (a batch holding a batch) or `AppendOversizeBatch`.
fn forged_batch(probe: Probe) -> Entry {
    let items = if probe == Probe::AppendNestedBatch {
        let nested = BatchItem {
            write_id: None,
            command: Command::Batch(vec![forged_item()]),
        };
        vec![forged_item(), nested]
    } else {
        vec![forged_item(); BATCH_ITEMS_MAX + 1]
    };
    Entry {
        log_id: log_id(1, 2),
        payload: EntryPayload::Normal(Proposal::from(Command::Batch(items))),
    }
}

/// The message `probe` sends, and where; `term` is a plausible current term of the target.
pub fn forge(probe: Probe, term: u64) -> (ProbeMethod, PeerMessage) {
    let leader = |term: u64| Vote::new_committed(term, 1);
    match probe {
        Probe::VoteImpossibleTerm => {
            let vote = VoteCall {
                vote: Vote::new(u64::MAX, 1),
                last_log_id: Some(log_id(1, 1)),
            };
            (ProbeMethod::Vote, encode_peer(MessageKind::Vote, &vote))
        }
        Probe::VoteUnknownCandidate => {
            let vote = VoteCall {
                vote: Vote::new(term + 1, 99),
                last_log_id: Some(log_id(term, 1 << 40)),
            };
            (ProbeMethod::Vote, encode_peer(MessageKind::Vote, &vote))
        }
        Probe::AppendImpossibleTerm => (
            ProbeMethod::AppendEntries,
            append(leader(u64::MAX), Vec::new()),
        ),
        Probe::AppendWithGap => (
            ProbeMethod::AppendEntries,
            append(leader(term), vec![entry(1, 2), entry(1, 4)]),
        ),
        Probe::AppendFutureTerm => (
            ProbeMethod::AppendEntries,
            append(leader(term), vec![entry(TERM_MAX - 1, 2)]),
        ),
        Probe::AppendOversize => {
            let entry = Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Normal(huge_set()),
            };
            (
                ProbeMethod::AppendEntries,
                append(leader(term), vec![entry]),
            )
        }
        Probe::SnapshotHugeOffset => {
            let nodes = BTreeMap::from([(1, Member { addr: "x:1".into() })]);
            let request = InstallSnapshotRequest::<TypeConfig> {
                vote: leader(term),
                meta: openraft_legacy::network_v1::SnapshotMeta {
                    last_log_id: Some(log_id(1, 5)),
                    last_membership: StoredMembership::new(
                        Some(log_id(1, 1)),
                        Membership::new(vec![BTreeSet::from([1])], nodes)
                            .expect("a valid membership"),
                    ),
                    snapshot_id: "forged".into(),
                },
                offset: 1 << 50,
                data: vec![1; 16],
                done: false,
            };
            (
                ProbeMethod::InstallSnapshot,
                encode_peer(MessageKind::InstallSnapshot, &request),
            )
        }
        Probe::ForwardOversize | Probe::ForwardOversizeBatch => {
            (ProbeMethod::Forward, forged_forward(probe))
        }
        Probe::AppendNestedBatch | Probe::AppendOversizeBatch => (
            ProbeMethod::AppendEntries,
            append(leader(term), vec![forged_batch(probe)]),
        ),
        Probe::Garbage => (
            ProbeMethod::AppendEntries,
            PeerMessage {
                payload: vec![0xff; 64],
                format: super::wire::PEER_FORMAT,
                kind: MessageKind::AppendEntries.code(),
            },
        ),
    }
}
