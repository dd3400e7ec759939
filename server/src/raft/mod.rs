//! Consensus: openraft 0.9 behind Coord's own types.
//!
//! Owns the openraft configuration, the storage and state machine adapters, and the peer
//! network. Everything outside this module talks to `Consensus` in Coord's terms (commands,
//! revisions, consistency levels, member ids), so that moving to another openraft release is a
//! change inside this module only.
//!
//! ```text
//!  grpc ──write(Command)──► Consensus ──client_write──► openraft core ──append──► LogStorage (RocksDB, fsync)
//!                                                              │ commit
//!                                                              ▼
//!  grpc ◄──ProposalResult───────────────────────────── StateMachine::apply ──► fsm::Namespace
//!  grpc ──read_barrier(Consistency)──► ensure_linearizable / wait for applied revision
//!  grpc ──Replica::read(|state| ..)──► the applied Namespace (RwLock, no await while held)
//! ```
//!
//! Invariant: a write is acknowledged only after openraft has committed it, which needs the
//! entry durable on a majority (one member here: its own synced RocksDB batch).

mod log_storage;
mod network;
mod proposal;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use thiserror::Error;

pub use network::{decode_peer, encode_peer, PeerNetwork, PEER_MESSAGE_BYTES_MAX};
pub use proposal::{Proposal, ProposalResult};
pub use state_machine::{Replica, ReplicaState};

use crate::fsm::{Command, FsmError, Output, Revision};
use crate::storage::{LogDb, SnapshotFile, StorageFault};
use log_storage::LogStorage;
use state_machine::StateMachine;

/// A member as the Raft membership records it: its peer address.
pub type Member = BasicNode;

openraft::declare_raft_types!(
    /// Coord's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        Node = Member,
);

pub type Entry = openraft::Entry<TypeConfig>;

/// The identity of a member (openraft's `NodeId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
    MinRevision(Revision),
}

/// Timing and snapshot settings for consensus.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub member_id: MemberId,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub snapshot_keep_entries: u64,
    /// Longest wait for a write to commit or a read barrier to pass.
    pub request_timeout: Duration,
}

#[derive(Debug, Error)]
pub enum ConsensusError {
    /// No leader is known (election in progress, or no quorum). Nothing was applied.
    #[error("no leader is known right now{}", hint(*.leader_hint))]
    NoLeader { leader_hint: Option<u64> },
    /// The request did not finish in time; for a write its outcome is unknown.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("the member is shutting down")]
    ShuttingDown,
    #[error("membership change refused: {reason}")]
    Membership { reason: String },
    #[error("consensus failed: {reason}")]
    Fatal { reason: String },
}

fn hint(leader: Option<u64>) -> String {
    match leader {
        Some(leader) => format!(" (last known leader: member {leader})"),
        None => String::new(),
    }
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageFault),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// What a response header reports about this member's view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterView {
    pub term: u64,
    pub leader: Option<u64>,
    pub member_id: u64,
}

/// One member's Raft node: the log, the state machine and the protocol.
pub struct Consensus {
    raft: Raft<TypeConfig>,
    replica: Arc<Replica>,
    config: ConsensusConfig,
}

impl Consensus {
    /// Opens the member's storage under `data_dir` and starts Raft. A pristine member is
    /// initialised with `initial_members`; a restarted one recovers from its log and snapshot.
    pub async fn start(
        config: ConsensusConfig,
        data_dir: &Path,
        initial_members: BTreeMap<u64, Member>,
    ) -> Result<Consensus, StartError> {
        let raft_config = Config {
            cluster_name: "coord".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            max_in_snapshot_log_to_keep: config.snapshot_keep_entries,
            // Bounds one AppendEntries message: entries carry at most 8 MiB each.
            max_payload_entries: 64,
            ..Config::default()
        }
        .validate()
        .map_err(|error| StartError::Config(error.to_string()))?;
        let log_db = LogDb::open(&data_dir.join("log"))?;
        let state_machine = StateMachine::open(SnapshotFile::new(data_dir))?;
        let replica = state_machine.replica();
        let network = PeerNetwork::new(config.member_id.0);
        let raft = Raft::new(
            config.member_id.0,
            Arc::new(raft_config),
            network,
            LogStorage::new(log_db),
            state_machine,
        )
        .await
        .map_err(|error| StartError::Raft(error.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| StartError::Raft(error.to_string()))?;
        if !initialized {
            tracing::info!(members = ?initial_members.keys().collect::<Vec<_>>(), "initialising a new cluster");
            match raft.initialize(initial_members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(StartError::Raft(error.to_string())),
            }
        }
        Ok(Consensus {
            raft,
            replica,
            config,
        })
    }

    pub fn member_id(&self) -> MemberId {
        self.config.member_id
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The openraft handle, for the peer service in `grpc/` only.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn view(&self) -> ClusterView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        ClusterView {
            term: metrics.current_term,
            leader: metrics.current_leader,
            member_id: self.config.member_id.0,
        }
    }

    /// Proposes `command` and waits until it is committed and applied here.
    /// Returns the revision it was applied at and the namespace's verdict.
    pub async fn write(
        &self,
        command: Command,
    ) -> Result<(Revision, Result<Output, FsmError>), ConsensusError> {
        let timeout = self.config.request_timeout;
        let written = tokio::time::timeout(timeout, self.raft.client_write(Proposal { command }))
            .await
            .map_err(|_| ConsensusError::Timeout {
                what: "write",
                timeout,
            })?;
        match written {
            Ok(response) => {
                let result = response.data;
                let outcome = result
                    .outcome
                    .expect("a normal entry always has an outcome");
                Ok((result.revision, outcome))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ConsensusError::NoLeader {
                    leader_hint: forward.leader_id,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(ConsensusError::Membership {
                    reason: error.to_string(),
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal.to_string())),
        }
    }

    /// Waits until a read at `consistency` may be answered from the local replica.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ConsensusError> {
        let timeout = self.config.request_timeout;
        match consistency {
            Consistency::Serializable => Ok(()),
            Consistency::Linearizable => {
                let confirmed = tokio::time::timeout(timeout, self.raft.ensure_linearizable())
                    .await
                    .map_err(|_| ConsensusError::Timeout {
                        what: "linearizable read",
                        timeout,
                    })?;
                match confirmed {
                    Ok(_) => Ok(()),
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                        Err(ConsensusError::NoLeader {
                            leader_hint: forward.leader_id,
                        })
                    }
                    Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                        Err(ConsensusError::NoLeader {
                            leader_hint: Some(self.config.member_id.0),
                        })
                    }
                    Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal.to_string())),
                }
            }
            Consistency::MinRevision(revision) => {
                let mut applied = self.replica.applied_revision();
                let reached =
                    tokio::time::timeout(timeout, applied.wait_for(|current| *current >= revision))
                        .await
                        .map_err(|_| ConsensusError::Timeout {
                            what: "wait for min_revision",
                            timeout,
                        })?;
                reached
                    .map(|_| ())
                    .map_err(|_| ConsensusError::ShuttingDown)
            }
        }
    }

    /// Waits until this member knows a leader, or `timeout` passes.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let found = tokio::time::timeout(
            timeout,
            metrics.wait_for(|metrics| metrics.current_leader.is_some()),
        )
        .await;
        match found {
            Ok(Ok(metrics)) => metrics.current_leader,
            _ => None,
        }
    }

    pub fn status(&self) -> ConsensusStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| MemberState {
                id: *id,
                peer_address: member.addr.clone(),
                voter: voters.contains(id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id).copied().flatten())
                    .map(|log_id| log_id.index),
            })
            .collect();
        ConsensusStatus {
            member_id: self.config.member_id.0,
            leader: metrics.current_leader,
            term: metrics.current_term,
            is_leader: metrics.state == ServerState::Leader,
            role: metrics.state,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            snapshot_index: metrics.snapshot.map_or(0, |log_id| log_id.index),
            purged_index: metrics.purged.map_or(0, |log_id| log_id.index),
            members,
        }
    }

    /// Stops Raft; storage is closed when the last handle is dropped.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown reported an error");
        }
    }
}

fn fatal_error(reason: String) -> ConsensusError {
    if reason.contains("stopped") || reason.contains("Stopped") {
        ConsensusError::ShuttingDown
    } else {
        ConsensusError::Fatal { reason }
    }
}

/// A snapshot of this member's Raft state, for `coordctl cluster status`.
#[derive(Debug, Clone)]
pub struct ConsensusStatus {
    pub member_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub is_leader: bool,
    pub role: ServerState,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberState>,
}

#[derive(Debug, Clone)]
pub struct MemberState {
    pub id: u64,
    pub peer_address: String,
    pub voter: bool,
    /// Known on the leader only.
    pub matched_index: Option<u64>,
}
