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
//! Any member accepts any request. A follower forwards writes and membership changes to the
//! leader it knows (one hop, over the peer port) and, for a linearizable read, asks the leader
//! for a read index, waits until it has applied that far, and answers from its own replica.
//!
//! Invariant: a write is acknowledged only after openraft has committed it, which needs the
//! entry durable on a majority of voters (each member's own synced RocksDB batch).
//! Invariant: a linearizable read is answered only at or after a read index confirmed by a
//! quorum after the read arrived.

mod directory;
mod forward;
mod history;
mod leases;
mod log_storage;
mod network;
mod proposal;
mod read_index;
mod sessions;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use directory::{MemberDirectory, PEER_SILENCE_MAX};
pub use forward::{ForwardReply, ForwardRequest, ForwardResult, Hello, ReadIndexResult};
pub use history::{Compacted, HistoryLimits};
pub use leases::LeaseView;
pub use network::{
    decode_peer, encode_peer, PeerCall, PeerClients, PeerNetwork, CLUSTER_ID_METADATA_KEY,
    PEER_MESSAGE_BYTES_MAX,
};
pub use proposal::{Proposal, ProposalResult};
pub use state_machine::{Replica, ReplicaState};

use crate::fsm::{Command, FsmError, Output, Revision};
use crate::storage::{LogDb, SnapshotFile, StorageFault};
use log_storage::LogStorage;
use read_index::ReadIndexBatcher;
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

/// Identity, timing and snapshot settings for consensus.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub member_id: MemberId,
    pub cluster_id: String,
    /// The client address other members and clients should use for this member.
    pub client_address: String,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot for followers that lag a little.
    pub snapshot_keep_entries: u64,
    /// Also build a snapshot once this many bytes of log were appended since the last one.
    pub snapshot_bytes: u64,
    /// Longest wait for a write to commit or a read barrier to pass.
    pub request_timeout: Duration,
    /// The local address outgoing peer connections are made from (`None`: the OS chooses).
    pub peer_source_address: Option<std::net::IpAddr>,
    /// How often the leader checkpoints every session's remaining time (renewals are
    /// checkpointed four times as often).
    pub session_checkpoint_interval: Duration,
    /// How long a client's write outcomes are remembered after its last write.
    pub write_id_retention: Duration,
    /// How many recent events (and bytes of them) watches can start from.
    pub watch_history: HistoryLimits,
}

/// Why consensus could not serve a request. Crosses the peer port, hence serializable.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ConsensusError {
    /// No leader is known (election in progress, or no quorum). Nothing was applied.
    #[error("no leader is known right now{}", hint(*.leader_hint))]
    NoLeader { leader_hint: Option<u64> },
    /// The request did not finish in time; for a write its outcome is unknown.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Forwarding to the leader failed in transit; for a write its outcome is unknown.
    #[error("the leader (member {leader}) could not be reached: {reason}")]
    LeaderUnreachable { leader: u64, reason: String },
    #[error("the member is shutting down")]
    ShuttingDown,
    /// The member stopped after the write was proposed; it may or may not have been applied.
    #[error("the write was interrupted ({reason}); it may or may not have been applied")]
    Interrupted { reason: String },
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
    directory: MemberDirectory,
    peers: PeerClients,
    read_index: ReadIndexBatcher,
    /// The leader's session deadlines (empty on other members).
    leases: std::sync::Mutex<leases::LeaseTable>,
    /// The task that asks for a snapshot when the log grows past `snapshot_bytes`.
    size_trigger: tokio::task::JoinHandle<()>,
}

/// Where a request must go when this member cannot run it itself.
enum Route {
    Local,
    Leader { id: u64, address: String },
    Nowhere { leader_hint: Option<u64> },
}

impl Consensus {
    /// Opens the member's storage under `data_dir` and starts Raft. A pristine member with
    /// `initialize` set founds the cluster with `initial_members`; every other member waits to
    /// be contacted by a leader. A restarted member recovers from its log and snapshot.
    pub async fn start(
        config: ConsensusConfig,
        data_dir: &Path,
        initial_members: BTreeMap<u64, Member>,
        initialize: bool,
    ) -> Result<Consensus, StartError> {
        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            max_in_snapshot_log_to_keep: config.snapshot_keep_entries,
            // Bounds one AppendEntries message: entries carry at most 8 MiB each.
            max_payload_entries: 64,
            // A slow disk or a loaded machine must not make a healthy leader look dead.
            install_snapshot_timeout: 30_000,
            ..Config::default()
        }
        .validate()
        .map_err(|error| StartError::Config(error.to_string()))?;
        let log_db = LogDb::open(&data_dir.join("log"))?;
        let state_machine = StateMachine::open(SnapshotFile::new(data_dir), config.watch_history)?;
        let replica = state_machine.replica();
        let network = PeerNetwork::new(
            config.member_id.0,
            config.cluster_id.clone(),
            config.peer_source_address,
        );
        let appended_bytes = Arc::new(AtomicU64::new(0));
        let raft = Raft::new(
            config.member_id.0,
            Arc::new(raft_config),
            network,
            LogStorage::new(log_db, appended_bytes.clone()),
            state_machine,
        )
        .await
        .map_err(|error| StartError::Raft(error.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| StartError::Raft(error.to_string()))?;
        if !initialized && initialize {
            tracing::info!(members = ?initial_members.keys().collect::<Vec<_>>(), "founding a new cluster");
            match raft.initialize(initial_members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(StartError::Raft(error.to_string())),
            }
        } else if !initialized {
            tracing::info!("new member: waiting for the leader to contact it");
        }
        let size_trigger = tokio::spawn(snapshot_on_size(
            raft.clone(),
            appended_bytes,
            config.snapshot_bytes,
        ));
        let peers = PeerClients::new(config.cluster_id.clone(), config.peer_source_address);
        let leases = std::sync::Mutex::new(leases::LeaseTable::new(config.election_timeout_max));
        Ok(Consensus {
            raft,
            replica,
            config,
            directory: MemberDirectory::default(),
            peers,
            read_index: ReadIndexBatcher::default(),
            leases,
            size_trigger,
        })
    }

    pub fn member_id(&self) -> MemberId {
        self.config.member_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    pub fn directory(&self) -> &MemberDirectory {
        &self.directory
    }

    /// The openraft handle, for the peer service in `grpc/` only.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// This member's identity, as sent in `Peer.Hello`.
    pub fn hello(&self) -> Hello {
        Hello {
            cluster_id: self.config.cluster_id.clone(),
            member_id: self.config.member_id.0,
            client_address: self.config.client_address.clone(),
        }
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

    /// Where leader-only work goes right now.
    fn route(&self) -> Route {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        match metrics.current_leader {
            Some(leader)
                if leader == self.config.member_id.0 && metrics.state == ServerState::Leader =>
            {
                Route::Local
            }
            Some(leader) => match metrics.membership_config.membership().get_node(&leader) {
                Some(member) if leader != self.config.member_id.0 => Route::Leader {
                    id: leader,
                    address: member.addr.clone(),
                },
                _ => Route::Nowhere {
                    leader_hint: Some(leader),
                },
            },
            None => Route::Nowhere { leader_hint: None },
        }
    }

    /// Sends leader-only work to the leader, once.
    async fn forward(&self, leader: u64, address: &str, request: &ForwardRequest) -> ForwardResult {
        let timeout = self.config.request_timeout;
        let reply: Result<ForwardResult, String> = self
            .peers
            .call(address, PeerCall::Forward, request, timeout)
            .await;
        reply.unwrap_or_else(|reason| Err(ConsensusError::LeaderUnreachable { leader, reason }))
    }

    /// Proposes `command` (on the leader, forwarding if needed) and waits until it is committed
    /// and applied on the leader. Returns the revision and the namespace's verdict.
    pub async fn write(
        &self,
        command: Command,
    ) -> Result<(Revision, Result<Output, FsmError>), ConsensusError> {
        let request = ForwardRequest::Write(command);
        match self.route() {
            Route::Local => self.run_forwarded(request).await,
            Route::Leader { id, address } => self.forward(id, &address, &request).await,
            Route::Nowhere { leader_hint } => Err(ConsensusError::NoLeader { leader_hint }),
        }
        .map(|reply| match reply {
            ForwardReply::Written { revision, outcome } => (revision, outcome),
            _ => unreachable!("a write is answered with Written"),
        })
    }

    /// Runs leader-only work here; answers `NoLeader` if this member is not the leader (a
    /// forwarded request is never forwarded again).
    pub async fn run_forwarded(&self, request: ForwardRequest) -> ForwardResult {
        let timeout = self.config.request_timeout;
        match request {
            ForwardRequest::Write(command) => {
                let written =
                    tokio::time::timeout(timeout, self.raft.client_write(Proposal { command }))
                        .await
                        .map_err(|_| ConsensusError::Timeout {
                            what: "write".into(),
                            timeout,
                        })?;
                let response = written.map_err(client_write_error)?;
                let result = response.data;
                let outcome = result
                    .outcome
                    .expect("a normal entry always has an outcome");
                Ok(ForwardReply::Written {
                    revision: result.revision,
                    outcome,
                })
            }
            ForwardRequest::KeepAlive { session } => self.keep_alive_here(session).await,
            ForwardRequest::ListSessions => self.list_sessions_here(),
            ForwardRequest::AddLearner { id, peer_address } => {
                let adding = self
                    .raft
                    .add_learner(id, Member { addr: peer_address }, false);
                membership_changed("add learner", timeout, adding).await
            }
            ForwardRequest::Promote { id } => {
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                membership_changed(
                    "promote",
                    timeout,
                    self.raft.change_membership(change, false),
                )
                .await
            }
            ForwardRequest::Remove { id } => {
                let membership = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .clone();
                if membership.get_node(&id).is_none() {
                    return Err(ConsensusError::Membership {
                        reason: format!("member {id} is not in the cluster"),
                    });
                }
                let voters: BTreeSet<u64> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                membership_changed(
                    "remove",
                    timeout,
                    self.raft.change_membership(change, false),
                )
                .await
            }
        }
    }

    /// A membership change, run on the leader.
    pub async fn change_membership(&self, request: ForwardRequest) -> Result<(), ConsensusError> {
        match self.route() {
            Route::Local => self.run_forwarded(request).await,
            Route::Leader { id, address } => self.forward(id, &address, &request).await,
            Route::Nowhere { leader_hint } => Err(ConsensusError::NoLeader { leader_hint }),
        }
        .map(|_| ())
    }

    /// On the leader: an index that every linearizable read starting now must see, confirmed
    /// by a quorum; concurrent callers share one confirmation round.
    pub async fn leader_read_index(&self) -> ReadIndexResult {
        let timeout = self.config.request_timeout;
        self.read_index
            .read_index(|| async {
                let confirmed = tokio::time::timeout(timeout, self.raft.get_read_log_id())
                    .await
                    .map_err(|_| ConsensusError::Timeout {
                        what: "leadership confirmation".into(),
                        timeout,
                    })?;
                match confirmed {
                    Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                        Err(ConsensusError::NoLeader {
                            leader_hint: forward.leader_id,
                        })
                    }
                    Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                        Err(ConsensusError::NoLeader { leader_hint: None })
                    }
                    Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal.to_string())),
                }
            })
            .await
    }

    /// Waits until a read at `consistency` may be answered from the local replica.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ConsensusError> {
        let index = match consistency {
            Consistency::Serializable => return Ok(()),
            Consistency::MinRevision(revision) => revision.0,
            Consistency::Linearizable => match self.route() {
                Route::Local => self.leader_read_index().await?,
                Route::Leader { id, address } => {
                    let timeout = self.config.request_timeout;
                    let reply: Result<ReadIndexResult, String> = self
                        .peers
                        .call(&address, PeerCall::ReadIndex, &(), timeout)
                        .await;
                    reply.unwrap_or_else(|reason| {
                        Err(ConsensusError::LeaderUnreachable { leader: id, reason })
                    })?
                }
                Route::Nowhere { leader_hint } => {
                    return Err(ConsensusError::NoLeader { leader_hint })
                }
            },
        };
        self.wait_applied(Revision(index)).await
    }

    /// Waits (bounded) until the local replica has applied `revision`.
    async fn wait_applied(&self, revision: Revision) -> Result<(), ConsensusError> {
        let timeout = self.config.request_timeout;
        let mut applied = self.replica.applied_revision();
        let reached =
            tokio::time::timeout(timeout, applied.wait_for(|current| *current >= revision))
                .await
                .map_err(|_| ConsensusError::Timeout {
                    what: format!("catching up to revision {revision}"),
                    timeout,
                })?;
        reached
            .map(|_| ())
            .map_err(|_| ConsensusError::ShuttingDown)
    }

    /// Exchanges identities with every other member once; records who answered.
    pub async fn greet_peers(&self) {
        let members: Vec<(u64, String)> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.config.member_id.0)
                .map(|(id, member)| (*id, member.addr.clone()))
                .collect()
        };
        let hello = self.hello();
        let timeout = Duration::from_secs(1);
        let greetings = members.into_iter().map(|(id, address)| {
            let hello = &hello;
            async move {
                let reply: Result<Hello, String> = self.peers.call(&address, PeerCall::Hello, hello, timeout).await;
                match reply {
                    Ok(reply) if reply.cluster_id != self.config.cluster_id => {
                        tracing::error!(member = id, %address, theirs = %reply.cluster_id, ours = %self.config.cluster_id,
                            "peer belongs to another cluster");
                    }
                    Ok(reply) if reply.member_id != id => {
                        tracing::error!(expected = id, found = reply.member_id, %address, "peer address answers as another member");
                    }
                    Ok(reply) => self.directory.heard_from(id, reply.client_address),
                    Err(reason) => tracing::debug!(member = id, %reason, "peer did not answer hello"),
                }
            }
        });
        futures::future::join_all(greetings).await;
    }

    /// Resolves once this member has been removed from the cluster's membership.
    pub async fn removed(&self) {
        let me = self.config.member_id.0;
        let mut applied = self.replica.applied_revision();
        let mut was_member = false;
        loop {
            // The applied membership is a committed one: an uncommitted change that drops this
            // member (and might still be truncated) does not stop it. A pristine member is not
            // in any membership yet, so it waits to be added first.
            let is_member = self
                .replica
                .read(|state| state.membership.membership().get_node(&me).is_some());
            if is_member {
                was_member = true;
            } else if was_member {
                return;
            }
            if applied.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
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
        self.size_trigger.abort();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown reported an error");
        }
    }
}

/// Asks openraft for a snapshot whenever more than `limit` bytes of log were appended since the
/// last request (openraft 0.9's own policy counts entries only; large entries need this too).
async fn snapshot_on_size(raft: Raft<TypeConfig>, appended_bytes: Arc<AtomicU64>, limit: u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        if appended_bytes.load(Ordering::Relaxed) < limit {
            continue;
        }
        appended_bytes.store(0, Ordering::Relaxed);
        tracing::info!(
            limit,
            "log grew past the snapshot size threshold; building a snapshot"
        );
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Waits (bounded) for a membership change to commit.
async fn membership_changed(
    what: &str,
    timeout: Duration,
    change: impl std::future::Future<
        Output = Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<u64, ClientWriteError<u64, Member>>,
        >,
    >,
) -> ForwardResult {
    let changed =
        tokio::time::timeout(timeout, change)
            .await
            .map_err(|_| ConsensusError::Timeout {
                what: what.to_owned(),
                timeout,
            })?;
    changed
        .map(|_| ForwardReply::MembershipChanged)
        .map_err(client_write_error)
}

fn client_write_error(error: RaftError<u64, ClientWriteError<u64, Member>>) -> ConsensusError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ConsensusError::NoLeader {
                leader_hint: forward.leader_id,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            ConsensusError::Membership {
                reason: error.to_string(),
            }
        }
        // The entry may already be in the log and commit later: the outcome is unknown.
        RaftError::Fatal(fatal) => ConsensusError::Interrupted {
            reason: fatal.to_string(),
        },
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
