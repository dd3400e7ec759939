//! Consensus: openraft 0.10 behind Coord's own types.
//!
//! Owns the openraft configuration, the storage and state machine adapters, the peer network and
//! the versioned formats of the log, the snapshot file and peer messages. Everything outside this
//! module talks to `Consensus` in Coord's terms (proposals, revisions, consistency levels,
//! `MemberId`, `Term`), so that moving to another openraft release is a change inside this module
//! (and the peer service, which hands openraft's messages through).
//!
//! ```text
//!  grpc ──write(Proposal)──► on_leader ──► client_write ──► openraft core ──append──► LogStorage
//!                                                                 │ commit        (RocksDB, fsync)
//!                                                                 ▼
//!  grpc ◄──(Revision, outcome)──────────────────────── StateMachine::apply ──► fsm::Namespace
//!                                                                 └──► ApplyObserver (watch
//!                                                                      history, session deadlines)
//!  grpc ──read_barrier(Consistency)──► read index (shared rounds) / wait for applied revision
//!  grpc ──Replica::read(|namespace| ..)──► the applied Namespace (RwLock, no await while held)
//! ```
//!
//! Any member accepts any request. Leader-only work goes through `on_leader` (`leader.rs`):
//! run here on the leader, forwarded once to the leader otherwise, or refused with `NoLeader`.
//! For a linearizable read a follower asks the leader for a read index, waits until it has
//! applied that far, and answers from its own replica.
//!
//! Invariant: a write is acknowledged only after openraft has committed it, which needs the
//! entry durable on a majority of voters (each member's own synced RocksDB batch).
//! Invariant: a linearizable read is answered only at or after a read index confirmed by a
//! quorum after the read arrived.

mod admission;
mod changes;
mod committed_save;
mod election;
mod error;
mod features;
mod forward_batch;
mod forward_stream;
mod gone;
mod handoff;
mod ids;
mod in_flight;
mod join;
mod leader;
mod log_flush;
mod log_storage;
mod log_tail;
mod network;
mod peer_channel;
mod peer_client;
mod probe;
mod proposal;
mod read_index;
mod state_machine;
mod status;
mod timings;
mod types;
mod wire;
mod write_batch;

#[cfg(test)]
pub mod golden;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{Fatal, InitializeError, LinearizableReadError, RaftError};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{ChangeMembers, Config, ReadPolicy, ServerState, SnapshotPolicy};
use openraft_legacy::network_v1::InstallSnapshotRequest;

pub use admission::{Refusal, LOG_INDEX_MAX, SNAPSHOT_BYTES_MAX, TERM_MAX};
pub use election::{PreVote, PreVoteReply};
use error::client_write_error;
pub use error::{ConsensusError, StartError};
pub use features::{FeatureBook, PeerFeatures, COMMAND_SET};
pub use forward_batch::WRITES_PER_BATCH_MAX;
pub use handoff::{MoveLeader, Moved, TimeoutNow};
pub use ids::{MemberId, Term};
pub use join::{JoinCall, MembershipView, PROMOTE_LAG_MAX};
pub use leader::{
    LeaderCall, MembershipChange, Route, StreamedBatch, StreamedReply, WriteBatchCall, WriteCall,
    Written,
};
pub use peer_channel::{PEER_CONNECTION_WINDOW_BYTES, PEER_STREAM_WINDOW_BYTES};
pub use peer_client::{
    peer_request, with_cluster_id, PeerCallError, PeerClients, PeerDialer, PeerMethod,
    CLUSTER_ID_METADATA_KEY, PEER_MESSAGE_BYTES_MAX,
};
pub use probe::{forge, Probe, ProbeMethod};
pub use state_machine::{ApplyObserver, CoordRaft, Replica};
pub use status::{ClusterView, ConsensusStatus, MemberState, Role};
pub use timings::RaftTimings;
use types::wait_for_metrics;
pub use types::{ConsensusConfig, Consistency, Entry, Member, TypeConfig};
pub use wire::{decode_peer, encode_peer, peer_kind, FormatError, MessageKind, VoteCall};

use crate::fsm::{Command, FsmError, Output, Proposal, Revision};
use crate::storage::{LogDb, SnapshotFile};
use admission::Admission;
use committed_save::CommittedSaver;
use election::{AckClock, ElectionTiming, Elector, LastLogId};
use forward_batch::{ForwardBatcher, WriteForwarder};
use forward_stream::ForwardStreams;
use gone::KnownLeader;
use handoff::HandOff;
use leader::Forwarder;
use log_flush::LogFlusher;
use log_storage::LogStorage;
use network::PeerNetwork;
use read_index::ReadIndexBatcher;
use state_machine::StateMachine;
use write_batch::WriteBatcher;

/// How long a member excluded from the applied membership must see nothing more applied
/// before it counts itself removed (see `Consensus::removed`).
const REMOVAL_CONFIRM: Duration = Duration::from_secs(3);

/// (term, leader) as `changes.rs` last noted them.
type LeaderSeen = tokio::sync::watch::Receiver<(u64, Option<u64>)>;

/// Whether this member's state machine has applied an entry of its current term (as a leader:
/// its leadership is established, a quorum has answered it).
fn applied_own_entry(metrics: &openraft::RaftMetrics<TypeConfig>) -> bool {
    metrics
        .last_applied
        .is_some_and(|log_id| log_id.leader_id.term == metrics.current_term)
}

/// A forward given up because another member leads now (`Consensus::forward_while_leading`).
#[derive(Debug, Clone, Copy)]
struct Deposed {
    /// The member that leads now (0: none named yet).
    leader: u64,
    term: u64,
}

impl Deposed {
    /// What the caller hears of the forward to `to`: its outcome is unknown.
    fn into_error(self, to: MemberId) -> ConsensusError {
        ConsensusError::LeaderUnreachable {
            leader: to,
            reason: format!("{self}; the request forwarded to member {to} was abandoned"),
        }
    }
}

impl std::fmt::Display for Deposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "member {} leads now (term {})", self.leader, self.term)
    }
}

/// One member's Raft node: the log, the state machine and the protocol.
pub struct Consensus {
    raft: CoordRaft,
    replica: Arc<Replica>,
    config: ConsensusConfig,
    peers: Arc<PeerClients>,
    read_index: ReadIndexBatcher,
    admission: Admission,
    /// The task that asks for a snapshot when the log grows past `snapshot_bytes`.
    size_trigger: tokio::task::JoinHandle<()>,
    /// The election timer and pre-vote (`election.rs`).
    elector: tokio::task::JoinHandle<()>,
    /// When peers last answered this member's AppendEntries, for the quorum check.
    acks: Arc<AckClock>,
    /// Set while this member stands for election at its leader's request (`handoff::stand`).
    standing: Arc<handoff::Standing>,
    last_log: Arc<LastLogId>,
    handoff: HandOff,
    /// Set once a majority of voters answered a pre-vote saying this member was removed.
    removed_by_peers: Arc<tokio::sync::watch::Sender<bool>>,
    /// How many times this member saw a new leader (`changes.rs` counts them).
    leader_changes: Arc<AtomicU64>,
    /// The last leader this member knew, for the fast failover check (`gone.rs`).
    known_leader: Arc<KnownLeader>,
    /// (term, leader) as `changes.rs` notes them: it changes only when they do, so a forward
    /// waiting for a new leader is not woken by every commit.
    leader_seen: LeaderSeen,
    timings: RaftTimings,
    /// Set while a member with a new data directory joins (`membership/joiner.rs`): it refuses
    /// Raft traffic until the cluster counts it as a learner, so that a leader that still
    /// counts it as a voter never sees its log go back (openraft's leader panics on that).
    raft_held: std::sync::atomic::AtomicBool,
    /// Gathers the writes proposed here into batch entries (`write_batch.rs`).
    writes: WriteBatcher,
    /// What the other members said they apply (`features.rs`).
    features: FeatureBook,
    /// Makes the log's appends durable (`log_flush.rs`).
    flusher: Arc<LogFlusher>,
    /// Stores the committed log id now and then (`committed_save.rs`).
    committed: Arc<CommittedSaver>,
    /// Sends the client writes this member forwards to the leader in batches
    /// (`forward_batch.rs`).
    forwards: ForwardBatcher<ForwardStreams>,
}

/// What writes the log's entries and what stores its committed log id.
type LogWriters = (Arc<LogFlusher>, Arc<CommittedSaver>);

/// The log (with its flusher) and the state machine, which applies only what the log has on
/// disk.
fn open_storage(
    data_dir: &Path,
    member_id: MemberId,
    (appended_bytes, last_log): (Arc<AtomicU64>, Arc<LastLogId>),
    (observer, timings): (Arc<dyn ApplyObserver>, &RaftTimings),
) -> Result<(LogStorage, StateMachine), StartError> {
    let log_db = LogDb::open(&data_dir.join("log"), &data_dir.join("log-segments"))?;
    let log_storage = LogStorage::new(
        log_db,
        member_id.0,
        appended_bytes,
        last_log,
        Some(timings.log_append.clone()),
    )
    .map_err(|fault| StartError::Raft {
        source: Box::new(fault),
    })?;
    let state_machine = StateMachine::open(SnapshotFile::new(data_dir), observer, timings.clone())?
        .over_log(log_storage.flusher(), log_storage.appended_bytes());
    Ok((log_storage, state_machine))
}

impl Consensus {
    /// Opens the member's storage under `data_dir` and starts Raft. A pristine member with
    /// `initialize` set founds the cluster with `initial_members`; every other member waits to
    /// be contacted by a leader. A restarted member recovers from its log and snapshot.
    /// `observer` is told of every applied batch.
    pub async fn start(
        config: ConsensusConfig,
        data_dir: &Path,
        initial_members: BTreeMap<MemberId, String>,
        initialize: bool,
        observer: Arc<dyn ApplyObserver>,
    ) -> Result<Consensus, StartError> {
        let raft_config = raft_config(&config)?;
        let timings = RaftTimings::new().map_err(StartError::metrics)?;
        let (appended_bytes, last_log) = (Arc::default(), Arc::default());
        let (log_storage, state_machine) = open_storage(
            data_dir,
            config.member_id,
            (Arc::clone(&appended_bytes), Arc::clone(&last_log)),
            (observer, &timings),
        )?;
        let flusher = log_storage.flusher();
        let committed = log_storage.committed_saver();
        let replica = state_machine.replica();
        let acks = Arc::new(AckClock::default());
        let standing = Arc::new(handoff::Standing::default());
        // One dialer for openraft's links and Coord's own calls: their clones share its count
        // of connections opened.
        let dialer = peer_dialer(&config);
        let network = peer_network(&config, dialer.clone(), &acks, &flusher, &standing);
        let raft = CoordRaft::new(
            config.member_id.0,
            Arc::new(raft_config),
            network,
            log_storage,
            state_machine,
        )
        .await
        .map_err(|fatal| StartError::Raft {
            source: Box::new(fatal),
        })?;
        found_if_new(&raft, initial_members, initialize).await?;
        let size_trigger = tokio::spawn(snapshot_on_size(
            raft.clone(),
            appended_bytes,
            config.snapshot_bytes,
        ));
        let peers = Arc::new(PeerClients::new(config.cluster_id.clone(), dialer));
        let leader_changes = Arc::new(AtomicU64::new(0));
        let (leader_seen, leader_seen_rx) = tokio::sync::watch::channel((0, None));
        tokio::spawn(changes::log_changes(
            raft.clone(),
            acks.clone(),
            config.member_id,
            config.election_timeout,
            leader_changes.clone(),
            leader_seen,
        ));
        let removed_by_peers = Arc::new(tokio::sync::watch::channel(false).0);
        let known_leader = Arc::new(KnownLeader::default());
        let elector = tokio::spawn(
            Elector {
                raft: raft.clone(),
                me: config.member_id,
                timing: timing(&config),
                peers: peers.clone(),
                last_log: last_log.clone(),
                removed: removed_by_peers.clone(),
                known_leader: known_leader.clone(),
                source_address: config.peer_source_address,
            }
            .run(),
        );
        Ok(Consensus::assemble(
            (raft, replica, config, peers, (flusher, committed)),
            (size_trigger, elector),
            (acks, last_log, leader_changes, known_leader, leader_seen_rx),
            removed_by_peers,
            standing,
            timings,
        ))
    }

    fn assemble(
        (raft, replica, config, peers, (flusher, committed)): (
            CoordRaft,
            Arc<Replica>,
            ConsensusConfig,
            Arc<PeerClients>,
            LogWriters,
        ),
        (size_trigger, elector): (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
        (acks, last_log, leader_changes, known_leader, leader_seen): (
            Arc<AckClock>,
            Arc<LastLogId>,
            Arc<AtomicU64>,
            Arc<KnownLeader>,
            LeaderSeen,
        ),
        removed_by_peers: Arc<tokio::sync::watch::Sender<bool>>,
        standing: Arc<handoff::Standing>,
        timings: RaftTimings,
    ) -> Consensus {
        let writes = WriteBatcher::start(
            raft.clone(),
            config.request_timeout,
            timings.writes_per_entry.clone(),
        );
        let forwards = ForwardBatcher::new(
            Arc::new(ForwardStreams::new(peers.clone())),
            timings.writes_per_forward.clone(),
        );
        Consensus {
            replica,
            config,
            peers,
            forwards,
            read_index: ReadIndexBatcher::default(),
            admission: Admission::default(),
            size_trigger,
            elector,
            acks,
            standing,
            last_log,
            handoff: HandOff::default(),
            removed_by_peers,
            leader_changes,
            known_leader,
            leader_seen,
            timings,
            raft_held: std::sync::atomic::AtomicBool::new(false),
            writes,
            features: FeatureBook::default(),
            flusher,
            committed,
            raft,
        }
    }

    /// Resolves once this member's log holds the entries through `index` on disk (the second
    /// gate of `log_flush`: a follower answers an AppendEntries only then); `Err` with the
    /// storage fault that stopped the log.
    pub async fn log_durable_through(&self, index: u64) -> Result<(), String> {
        // On this worker itself when another can go on meanwhile, as the log's appends did
        // before (see `log_storage::on_this_worker`); otherwise on the blocking pool.
        let runtime = tokio::runtime::Handle::current();
        let flushed = if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && runtime.metrics().num_workers() > 1
        {
            self.flusher.flush_through(index)
        } else {
            self.flusher.wait_through(index).await
        };
        flushed.map_err(|fault| fault.to_string())
    }

    /// Refuses AppendEntries, votes, snapshots and pre-votes until `admit_raft_traffic`.
    pub fn hold_raft_traffic(&self) {
        self.raft_held.store(true, Ordering::SeqCst);
    }

    /// Takes Raft traffic again (see `hold_raft_traffic`).
    pub fn admit_raft_traffic(&self) {
        self.raft_held.store(false, Ordering::SeqCst);
    }

    /// Why Raft traffic is refused now, if it is.
    pub fn raft_traffic_refused(&self) -> Option<String> {
        self.raft_held.load(Ordering::SeqCst).then(|| {
            format!(
                "member {} is joining with a new data directory: it takes Raft traffic once the \
                 cluster counts it as a learner",
                self.config.member_id
            )
        })
    }

    /// What the log, the state machine and the write path measure (for `/metrics`).
    pub fn timings(&self) -> &RaftTimings {
        &self.timings
    }

    pub fn member_id(&self) -> MemberId {
        self.config.member_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    pub fn election_timeout(&self) -> Duration {
        self.config.election_timeout
    }

    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Clients for Coord's own member-to-member calls.
    pub fn peers(&self) -> &PeerClients {
        &self.peers
    }

    /// The openraft handle, for the peer service in `grpc/` only.
    pub fn raft(&self) -> &CoordRaft {
        &self.raft
    }

    pub fn view(&self) -> ClusterView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        ClusterView {
            term: Term(metrics.current_term),
            leader: metrics.current_leader.map(MemberId),
            member_id: self.config.member_id,
        }
    }

    /// The term this member leads in, once its leadership is established (it has applied an
    /// entry of its own term, so its replica holds everything committed before it).
    pub fn established_leadership(&self) -> Option<Term> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.state == ServerState::Leader && applied_own_entry(&metrics))
            .then_some(Term(metrics.current_term))
    }

    /// The other members of the latest membership (committed or not), with peer addresses.
    pub fn other_members(&self) -> Vec<(MemberId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.config.member_id.0)
            .map(|(id, member)| (MemberId(*id), member.addr.clone()))
            .collect()
    }

    /// Checks an AppendEntries from a peer before openraft sees it (see `admission.rs`).
    pub fn admit_append(&self, request: &AppendEntriesRequest<TypeConfig>) -> Result<(), Refusal> {
        self.admission.append(request)
    }

    /// Checks a VoteRequest from a peer: a candidate must be in this member's latest
    /// configuration, unless this member has none yet.
    pub fn admit_vote(&self, request: &VoteRequest<TypeConfig>) -> Result<(), Refusal> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let pristine = membership.nodes().next().is_none();
        self.admission.vote(request, |candidate| {
            pristine || membership.get_node(&candidate).is_some()
        })
    }

    /// Checks an InstallSnapshot chunk from a peer.
    pub fn admit_snapshot(
        &self,
        request: &InstallSnapshotRequest<TypeConfig>,
    ) -> Result<(), Refusal> {
        self.admission.snapshot(request)
    }

    /// Where leader-only work goes right now.
    pub fn route(&self) -> Route {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let me = self.config.member_id.0;
        match metrics.current_leader {
            // A leader that a quorum stopped answering takes nothing new (its writes could not
            // commit); clients move on to the majority, which elects a new leader.
            Some(leader) if leader == me && metrics.state == ServerState::Leader => {
                let configs = metrics.membership_config.membership().get_joint_config();
                // Three election timeouts: a follower busy with a batch of large entries
                // answers late but is there.
                if self
                    .acks
                    .quorum_within(me, configs, self.config.election_timeout * 3)
                {
                    Route::Local
                } else {
                    Route::Nowhere { leader_hint: None }
                }
            }
            Some(leader) => match metrics.membership_config.membership().get_node(&leader) {
                Some(member) if leader != me => Route::Leader {
                    id: MemberId(leader),
                    address: member.addr.clone(),
                },
                _ => Route::Nowhere {
                    leader_hint: Some(MemberId(leader)),
                },
            },
            None => Route::Nowhere { leader_hint: None },
        }
    }

    /// Runs `call` on the leader, once: `here` when this member leads, forwarded to the leader
    /// otherwise (where the peer service runs the leader's `here`).
    pub async fn on_leader<C, F, Fut>(&self, call: C, here: F) -> Result<C::Reply, ConsensusError>
    where
        C: LeaderCall,
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<C::Reply, ConsensusError>>,
    {
        self.on_leader_via(call, here, &*self.peers).await
    }

    /// `on_leader`, forwarding through `via`.
    async fn on_leader_via<C, F, Fut, W>(
        &self,
        call: C,
        here: F,
        via: &W,
    ) -> Result<C::Reply, ConsensusError>
    where
        C: LeaderCall,
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<C::Reply, ConsensusError>>,
        W: Forwarder<C>,
    {
        self.serving()?;
        let timeout = self.config.request_timeout;
        let (id, address) = match self.route_now_or_after_election().await {
            Route::Local => return here(call).await,
            Route::Leader { id, address } => (id, address),
            Route::Nowhere { leader_hint } => return Err(ConsensusError::NoLeader { leader_hint }),
        };
        match self
            .forward_while_leading(via, id, &address, &call, timeout)
            .await
        {
            // The leader is gone (its port refused the connection) or says it no longer
            // leads; nothing was applied. Once the next leader is known, go there instead.
            Ok(Err(ConsensusError::NoLeader { .. })) => {}
            // Given up because another member leads now: a call the leader applies at most
            // once (a client write with its write id) goes there too, sparing the client a
            // retry of its own; any other reports its outcome unknown.
            Err(deposed) if call.repeatable() => {
                tracing::debug!(%deposed, "forwarding the write again, to the new leader");
            }
            Err(deposed) => return Err(deposed.into_error(id)),
            Ok(answered) => return answered,
        }
        match self.route_after_leader_change(id).await {
            Route::Local => here(call).await,
            Route::Leader { id, address } => self
                .forward_while_leading(via, id, &address, &call, timeout)
                .await
                .unwrap_or_else(|deposed| Err(deposed.into_error(id))),
            Route::Nowhere { leader_hint } => Err(ConsensusError::NoLeader { leader_hint }),
        }
    }

    /// Forwards `call` to the leader `id`, giving up (outcome unknown) as soon as this member
    /// learns that another member leads (for calls that say so, `GIVEN_UP_WITH_ITS_LEADER`):
    /// a leader that hangs (a paused process, a hung host) would otherwise hold the caller for
    /// the whole request timeout after the cluster moved on. `Err(Deposed)` when given up:
    /// the call may have been applied (`on_leader_via` decides what follows).
    async fn forward_while_leading<C: LeaderCall, W: Forwarder<C>>(
        &self,
        via: &W,
        id: MemberId,
        address: &str,
        call: &C,
        timeout: Duration,
    ) -> Result<Result<C::Reply, ConsensusError>, Deposed> {
        if !C::GIVEN_UP_WITH_ITS_LEADER {
            return Ok(via.forward(id, address, call, timeout).await);
        }
        let mut leader_seen = self.leader_seen.clone();
        let deposed = async {
            let changed = leader_seen
                .wait_for(|(_, leader)| leader.is_some_and(|leader| leader != id.0))
                .await
                .map(|seen| (seen.1, seen.0));
            match changed {
                Ok(leader) => leader,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            forwarded = via.forward(id, address, call, timeout) => Ok(forwarded),
            (leader, term) = deposed => Err(Deposed {
                leader: leader.unwrap_or_default(),
                term,
            }),
        }
    }

    /// The route once a leader other than `gone` is known, waiting at most two election
    /// timeouts (the longest a failover takes without a split vote).
    async fn route_after_leader_change(&self, gone: MemberId) -> Route {
        let mut metrics = self.raft.metrics();
        let changed = wait_for_metrics(&mut metrics, |metrics| {
            metrics
                .current_leader
                .is_some_and(|leader| leader != gone.0)
        });
        let _ = tokio::time::timeout(self.config.election_timeout * 2, changed).await;
        self.route()
    }

    /// The route now, or once an election under way ends (see `route_after_election`).
    async fn route_now_or_after_election(&self) -> Route {
        match self.route() {
            Route::Nowhere { .. } => self.route_after_election().await,
            route => route,
        }
    }

    /// The route once a leader is known, waiting at most one election timeout: a request that
    /// arrives during an election goes to the new leader as soon as there is one, instead of
    /// sending the client away to find no leader elsewhere either. Nothing is proposed while
    /// waiting, so a "no leader" answer after it still means nothing was applied.
    async fn route_after_election(&self) -> Route {
        let mut metrics = self.raft.metrics();
        let me = self.config.member_id.0;
        let elected = wait_for_metrics(&mut metrics, |metrics| {
            metrics
                .current_leader
                .is_some_and(|leader| leader != me || metrics.state == ServerState::Leader)
        });
        let _ = tokio::time::timeout(self.config.election_timeout, elected).await;
        self.route()
    }

    /// Proposes `proposal` (on the leader, forwarding if needed) and waits until it is committed
    /// and applied on the leader. Returns the revision and the namespace's verdict.
    pub async fn write(
        &self,
        proposal: Proposal,
    ) -> Result<(Revision, Result<Output, FsmError>), ConsensusError> {
        let via = WriteForwarder {
            batcher: &self.forwards,
            peers: &self.peers,
            features: &self.features,
        };
        let written = self
            .on_leader_via(
                WriteCall { proposal },
                |call| self.write_for_client(call),
                &via,
            )
            .await?;
        Ok((written.revision, written.outcome.to_outcome()))
    }

    /// Refuses client work on a member outside the cluster's applied membership: one that was
    /// removed (and perhaps restarted on its old data) or one not added yet. Its data may be
    /// stale, and it knows no leader.
    pub fn serving(&self) -> Result<(), ConsensusError> {
        let member = self.config.member_id;
        if self.membership_of_self() == (true, true) && !*self.removed_by_peers.borrow() {
            Ok(())
        } else {
            Err(ConsensusError::NotAMember { member })
        }
    }

    /// A client's write on the leader (`write`, and writes forwarded to it): when a leadership
    /// move ends while the write waits for it, the write goes on to the new leader (a second
    /// forward, the only one).
    pub async fn write_for_client(&self, call: WriteCall) -> Result<Written, ConsensusError> {
        if self.handoff.is_moving() {
            self.handoff.settled(self.move_bound()).await;
            if let Route::Leader { id, address } = self.route() {
                let timeout = self.config.request_timeout;
                return self.peers.forward(id, &address, &call, timeout).await;
            }
        }
        self.write_here(call).await
    }

    /// Proposes a write here; `NoLeader` unless this member leads (never forwarded: the
    /// session keeper's decisions hold only on the leader that made them). Waits while a
    /// leadership move is under way, and while this member's leadership is new (`settled`).
    pub async fn write_here(&self, call: WriteCall) -> Result<Written, ConsensusError> {
        self.settled_leadership().await;
        let _proposing = match self.handoff.begin_proposal() {
            Some(proposing) => proposing,
            None => {
                self.handoff.settled(self.move_bound()).await;
                self.handoff.force_proposal()
            }
        };
        if let Command::Batch(_) = call.proposal.command {
            // Only this member's batcher makes batches; one arriving from elsewhere is refused.
            let refused: Result<Output, FsmError> = Err(FsmError::InvalidArgument {
                reason: "a batch is not a write of its own".into(),
            });
            return Ok(Written {
                revision: self.replica.read(|namespace| namespace.revision()),
                outcome: crate::fsm::OutcomeRecord::of(&refused),
            });
        }
        let pending = timings::Pending::start(&self.timings.proposals_pending);
        let written = if self.batches_allowed() {
            self.writes.write(call.proposal).await
        } else {
            self.writes.write_alone(call.proposal).await
        };
        drop(pending);
        if written.is_err() {
            self.timings.proposals_failed.inc();
        }
        let (revision, outcome) = written?;
        Ok(Written {
            revision,
            outcome: crate::fsm::OutcomeRecord::of(&outcome),
        })
    }

    /// Returns once this member either leads with its leadership established (an entry of its
    /// term applied, so a quorum has answered it) or does not lead, waiting at most an election
    /// timeout. openraft refuses writes to a leader elected a moment ago until a quorum has
    /// answered it (its lease), which clients would hear as `NoLeader` and retry after a
    /// pause: the first writes after a failover, often forwarded by the members that just
    /// learnt of the new leader, would each lose that pause.
    async fn settled_leadership(&self) {
        let settled = |metrics: &openraft::RaftMetrics<TypeConfig>| {
            metrics.state != ServerState::Leader || applied_own_entry(metrics)
        };
        let mut metrics = self.raft.metrics();
        // Every write passes here: no timer unless there is something to wait for.
        if settled(&metrics.borrow_watched()) {
            return;
        }
        let _ = tokio::time::timeout(
            self.config.election_timeout,
            wait_for_metrics(&mut metrics, settled),
        )
        .await;
    }

    /// Whether the writes proposed here may share entries: every member of the latest
    /// membership said it applies batches (`features.rs`).
    fn batches_allowed(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let members = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| MemberId(*id));
        self.features
            .all_apply_batches(self.config.member_id, members)
    }

    /// Records what `member` answered to `Peer.Features` (the greeter asks every second).
    pub fn heard_features(&self, member: MemberId, features: Result<PeerFeatures, PeerCallError>) {
        match features {
            Ok(features) => self.features.heard(member, features),
            Err(error) if error.is_unimplemented() => self.features.heard_unimplemented(member),
            Err(_) => {}
        }
    }

    /// A membership change, run on the leader. Removing the leader first hands leadership to
    /// another voter, so that writes pause for a round trip rather than an election.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ConsensusError> {
        if let MembershipChange::Remove { id } = &change {
            if self.view().leader == Some(*id) {
                match self.move_leader(None).await {
                    Ok(moved) => {
                        tracing::info!(leader = %moved.leader, "leadership moved before removing member {id}")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not move leadership before removing member {id}; removing it anyway")
                    }
                }
            }
        }
        self.on_leader(change, |change| self.change_membership_here(change))
            .await
    }

    /// Hands leadership to `target` (the most caught-up other voter when `None`), on the
    /// leader (see `handoff.rs`).
    pub async fn move_leader(&self, target: Option<MemberId>) -> Result<Moved, ConsensusError> {
        self.on_leader(MoveLeader { target }, |call| self.move_leader_here(call))
            .await
    }

    /// The longest a leadership move may take before the old leader resumes.
    fn move_bound(&self) -> Duration {
        self.config.election_timeout * 3
    }

    /// Runs a leadership move here; `NoLeader` unless this member leads.
    pub async fn move_leader_here(&self, call: MoveLeader) -> Result<Moved, ConsensusError> {
        let Ok(_one_at_a_time) = self.handoff.lock.try_lock() else {
            return Err(ConsensusError::Membership {
                reason: "a leadership move is already under way".into(),
            });
        };
        let Some(term) = self.established_leadership() else {
            return Err(ConsensusError::NoLeader { leader_hint: None });
        };
        let (target, address) = self.move_target(call.target)?;
        tracing::info!(%target, %term, "handing leadership over");
        self.handoff.set_moving(true);
        let bound = self.move_bound();
        let moved = tokio::time::timeout(bound, self.run_move(target, &address, term)).await;
        self.raft.runtime_config().heartbeat(true);
        self.handoff.set_moving(false);
        let moved = moved.unwrap_or_else(|_| {
            Err(ConsensusError::Timeout {
                what: format!("handing leadership to member {target}"),
                timeout: bound,
            })
        });
        match &moved {
            Ok(moved) => {
                tracing::info!(leader = %moved.leader, term = %moved.term, "leadership handed over")
            }
            Err(error) => tracing::warn!(%error, "leadership hand-off failed"),
        }
        moved
    }

    /// The voter a move goes to and its peer address.
    fn move_target(&self, wanted: Option<MemberId>) -> Result<(MemberId, String), ConsensusError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let me = self.config.member_id;
        let matched: Vec<(MemberId, u64)> = membership
            .voter_ids()
            .filter(|id| *id != me.0)
            .map(|id| {
                let index = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(&id).copied().flatten())
                    .map_or(0, |log_id| log_id.index);
                (MemberId(id), index)
            })
            .collect();
        let target = handoff::choose_target(me, wanted, &matched)
            .map_err(|reason| ConsensusError::Membership { reason })?;
        let address = membership
            .get_node(&target.0)
            .map(|member| member.addr.clone())
            .ok_or_else(|| ConsensusError::Membership {
                reason: format!("member {target} has no peer address"),
            })?;
        Ok((target, address))
    }

    /// Waits until `target` holds the whole log, then asks it to stand for election and waits
    /// until a newer leader is known.
    async fn run_move(
        &self,
        target: MemberId,
        address: &str,
        term: Term,
    ) -> Result<Moved, ConsensusError> {
        let me = self.config.member_id.0;
        self.handoff.drained().await;
        let mut metrics = self.raft.metrics();
        let caught_up = wait_for_metrics(&mut metrics, |metrics| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&target.0).copied().flatten())
                .map(|log_id| log_id.index);
            metrics.state != ServerState::Leader || matched >= metrics.last_log_index
        })
        .await
        .map_err(|_| ConsensusError::ShuttingDown)?
        .state
            == ServerState::Leader;
        if !caught_up {
            return Err(ConsensusError::NoLeader { leader_hint: None });
        }
        self.raft.runtime_config().heartbeat(false);
        let request = TimeoutNow {
            from: self.config.member_id,
            term,
        };
        let asked: Result<Result<(), ConsensusError>, PeerCallError> = self
            .peers
            .call(
                address,
                PeerMethod::TimeoutNow,
                MessageKind::TimeoutNow,
                &request,
                self.config.election_timeout,
            )
            .await;
        asked.map_err(|error| ConsensusError::LeaderUnreachable {
            leader: target,
            reason: error.to_string(),
        })??;
        let moved = wait_for_metrics(&mut metrics, |metrics| {
            metrics.current_term > term.0
                && metrics.current_leader.is_some_and(|leader| leader != me)
        })
        .await
        .map_err(|_| ConsensusError::ShuttingDown)?;
        Ok(Moved {
            leader: MemberId(moved.current_leader.unwrap_or(target.0)),
            term: Term(moved.current_term),
        })
    }

    /// On the target of a move: stands for election at once if the sender still leads this
    /// member's term.
    pub fn timeout_now(&self, request: TimeoutNow) -> Result<(), ConsensusError> {
        let (term, voter) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let voter = metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == self.config.member_id.0);
            (metrics.current_term, voter)
        };
        if term != request.term.0 || !voter {
            return Err(ConsensusError::Membership {
                reason: format!(
                    "member {} cannot take over: its term is {term} (the leader's is {}), voter: {voter}",
                    self.config.member_id, request.term
                ),
            });
        }
        tracing::info!(from = %request.from, "asked to take over leadership; standing for election");
        tokio::spawn(handoff::stand(
            self.raft.clone(),
            self.standing.clone(),
            request.term,
            self.config.heartbeat_interval,
            3,
        ));
        Ok(())
    }

    /// Answers a pre-vote (see `election.rs`).
    pub async fn pre_vote(&self, request: PreVote) -> PreVoteReply {
        let held = self.raft_held.load(Ordering::SeqCst);
        let view = match held {
            true => None,
            false => election::voter_view(&self.raft, &self.last_log).await,
        };
        let Some(mut view) = view else {
            return PreVoteReply {
                granted: false,
                removed: false,
            };
        };
        let timing = timing(&self.config);
        if !view.leading && timing.asks_if_gone(view.silence) {
            if let Some((_, address)) = self.known_leader.get() {
                let source = self.config.peer_source_address;
                view.leader_refuses = gone::refuses(&address, source, timing.heartbeat).await;
            }
        }
        let removed = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            membership.nodes().next().is_some()
                && membership.get_node(&request.candidate.0).is_none()
        };
        let granted = !removed && election::grants(view, &request, &timing);
        if granted {
            tracing::info!(candidate = %request.candidate, "no leader heard from: granting a pre-vote");
        }
        PreVoteReply { granted, removed }
    }

    /// Before a leader stops (SIGTERM): hands leadership to another voter if there is one, so
    /// that the cluster does not wait an election timeout. Logs and carries on if it cannot.
    pub async fn hand_off_before_stopping(&self) {
        if self.established_leadership().is_none() || self.other_members().is_empty() {
            return;
        }
        if let Err(error) = self.move_leader_here(MoveLeader { target: None }).await {
            tracing::warn!(%error, "stopping without handing leadership over");
        }
    }

    /// How many times this member saw a new leader since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// How many AppendEntries streams to followers this member, as leader, gave up on because
    /// nothing came back for their whole patience (each one's entries are sent again).
    pub fn append_streams_given_up(&self) -> u64 {
        self.acks.streams_given_up()
    }

    /// How many connections this member opened to other members' peer ports since it started
    /// (openraft's replication, heartbeat and vote links, and Coord's own peer calls). Every
    /// election and new leader opens some; a steady rise says connections keep failing, such
    /// as a peer that stops answering keep-alive pings.
    pub fn peer_connections_opened(&self) -> u64 {
        self.peers.connections_opened()
    }

    /// Whether this member leads and a quorum answered it within an election timeout.
    pub fn leader_has_quorum(&self) -> bool {
        matches!(self.route(), Route::Local)
    }

    /// Founds the cluster from `initial_members` if this member's log is still empty: for a
    /// founder that first looked for a running cluster (`--join-via`) and found none.
    pub async fn found(
        &self,
        initial_members: BTreeMap<MemberId, String>,
    ) -> Result<(), StartError> {
        found_if_new(&self.raft, initial_members, true).await
    }

    /// The voters and learners as this member knows them.
    pub fn membership_view(&self) -> MembershipView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        MembershipView {
            voters: membership.voter_ids().map(MemberId).collect(),
            learners: membership.learner_ids().map(MemberId).collect(),
        }
    }

    /// Runs a member's own membership change (see `join.rs`): here when this member leads,
    /// else relayed once to the leader.
    pub async fn join(&self, call: JoinCall) -> Result<MembershipView, ConsensusError> {
        if call.relayed {
            return match self.route() {
                Route::Local => self.join_here(call.change).await,
                _ => Err(ConsensusError::NoLeader {
                    leader_hint: self.view().leader,
                }),
            };
        }
        let relayed = JoinCall {
            relayed: true,
            ..call
        };
        self.on_leader(relayed, |call| self.join_here(call.change))
            .await
    }

    /// Runs a `Join` on the leader; a change already made is not made again.
    async fn join_here(&self, change: MembershipChange) -> Result<MembershipView, ConsensusError> {
        let view = self.membership_view();
        match join::join_step(&view, change) {
            join::JoinStep::Nothing => Ok(view),
            join::JoinStep::Refuse(reason) => Err(ConsensusError::Membership { reason }),
            join::JoinStep::Change(change) => {
                tracing::info!(?change, "a member asked to change its own membership");
                self.change_membership_here(change).await?;
                Ok(self.membership_view())
            }
        }
    }

    /// On the leader: waits, at most `timeout`, until learner `id` holds all but a few of the
    /// leader's entries (`join::caught_up`), so promoting it does not stall commits.
    async fn wait_caught_up(&self, id: MemberId, timeout: Duration) -> Result<(), ConsensusError> {
        let matched = |metrics: &openraft::RaftMetrics<TypeConfig>| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&id.0).copied().flatten())
                .map(|log_id| log_id.index);
            (matched, metrics.last_log_index.unwrap_or(0))
        };
        let mut metrics = self.raft.metrics();
        let waiting = wait_for_metrics(&mut metrics, |metrics| {
            let (matched, last) = matched(metrics);
            metrics.state != ServerState::Leader || join::caught_up(matched, last)
        });
        let waited = tokio::time::timeout(timeout, waiting)
            .await
            .map(|waited| waited.map(|metrics| metrics.state == ServerState::Leader));
        match waited {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(ConsensusError::NoLeader { leader_hint: None }),
            Ok(Err(_)) => Err(ConsensusError::ShuttingDown),
            Err(_) => {
                let (matched, last) = matched(&self.raft.metrics().borrow_watched());
                let behind = matched.map_or(last, |matched| last.saturating_sub(matched));
                Err(ConsensusError::Membership {
                    reason: format!(
                        "member {id} is still catching up ({behind} entries behind after \
                         {timeout:?}); promote it once it holds all but {} entries",
                        join::PROMOTE_LAG_MAX
                    ),
                })
            }
        }
    }

    /// Runs a membership change here; `NoLeader` unless this member leads.
    pub async fn change_membership_here(
        &self,
        change: MembershipChange,
    ) -> Result<(), ConsensusError> {
        let timeout = self.config.request_timeout;
        let (what, changed) = match change {
            MembershipChange::AddLearner { id, peer_address } => {
                let adding = self
                    .raft
                    .add_learner(id.0, Member { addr: peer_address }, false);
                ("add learner", tokio::time::timeout(timeout, adding).await)
            }
            MembershipChange::Promote { id } => {
                self.wait_caught_up(id, timeout).await?;
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([id.0]));
                let promoting = self.raft.change_membership(change, false);
                ("promote", tokio::time::timeout(timeout, promoting).await)
            }
            MembershipChange::Remove { id } => {
                let change = self.removal(id)?;
                let removing = self.raft.change_membership(change, false);
                ("remove", tokio::time::timeout(timeout, removing).await)
            }
        };
        let changed = changed.map_err(|_| ConsensusError::Timeout {
            what: what.to_owned(),
            timeout,
        })?;
        changed.map(|_| ()).map_err(client_write_error)
    }

    /// The change that removes `id`, a voter or a learner.
    fn removal(&self, id: MemberId) -> Result<ChangeMembers<u64, Member>, ConsensusError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id.0).is_none() {
            return Err(ConsensusError::Membership {
                reason: format!("member {id} is not in the cluster"),
            });
        }
        let is_voter = membership.voter_ids().any(|voter| voter == id.0);
        Ok(if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id.0]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id.0]))
        })
    }

    /// On the leader: an index that every linearizable read starting now must see, confirmed
    /// by a quorum; concurrent callers share one confirmation round.
    pub async fn leader_read_index(&self) -> Result<u64, ConsensusError> {
        let timeout = self.config.request_timeout;
        self.read_index
            .read_index(|| async {
                let confirmed =
                    tokio::time::timeout(timeout, self.raft.get_read_log_id(ReadPolicy::ReadIndex))
                        .await
                        .map_err(|_| ConsensusError::Timeout {
                            what: "leadership confirmation".into(),
                            timeout,
                        })?;
                match confirmed {
                    Ok((read_log_id, _applied)) => Ok(read_log_id.log_id().index),
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                        Err(ConsensusError::NoLeader {
                            leader_hint: forward.leader_id.map(MemberId),
                        })
                    }
                    Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                        Err(ConsensusError::NoLeader { leader_hint: None })
                    }
                    Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal)),
                }
            })
            .await
    }

    /// Waits until a read at `consistency` may be answered from the local replica.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ConsensusError> {
        self.serving()?;
        let index = match consistency {
            Consistency::Serializable => return Ok(()),
            Consistency::MinRevision(revision) => return self.wait_applied(revision).await,
            Consistency::Linearizable => match self.route_now_or_after_election().await {
                Route::Local => self.leader_read_index().await?,
                Route::Leader { id, address } => {
                    let reply: Result<Result<u64, ConsensusError>, PeerCallError> = self
                        .peers
                        .call(
                            &address,
                            PeerMethod::ReadIndex,
                            MessageKind::ReadIndex,
                            &(),
                            self.config.request_timeout,
                        )
                        .await;
                    reply.unwrap_or_else(|error| {
                        Err(ConsensusError::LeaderUnreachable {
                            leader: id,
                            reason: error.to_string(),
                        })
                    })?
                }
                Route::Nowhere { leader_hint } => {
                    return Err(ConsensusError::NoLeader { leader_hint })
                }
            },
        };
        self.wait_applied_index(index).await
    }

    /// Waits (bounded) until the local replica has applied the log through `index`.
    async fn wait_applied_index(&self, index: u64) -> Result<(), ConsensusError> {
        let applied = self.replica.applied_index();
        let what = || format!("catching up to log index {index}");
        self.wait_reached(applied, |current| *current >= index, what)
            .await
    }

    /// Waits (bounded) until the local replica has applied `revision`.
    async fn wait_applied(&self, revision: Revision) -> Result<(), ConsensusError> {
        let applied = self.replica.applied_revision();
        let what = || format!("catching up to revision {revision}");
        self.wait_reached(applied, |current| *current >= revision, what)
            .await
    }

    async fn wait_reached<T>(
        &self,
        mut applied: tokio::sync::watch::Receiver<T>,
        reached: impl FnMut(&T) -> bool,
        what: impl FnOnce() -> String,
    ) -> Result<(), ConsensusError> {
        let timeout = self.config.request_timeout;
        tokio::time::timeout(timeout, applied.wait_for(reached))
            .await
            .map_err(|_| ConsensusError::Timeout {
                what: what(),
                timeout,
            })?
            .map(|_| ())
            .map_err(|_| ConsensusError::ShuttingDown)
    }

    /// Resolves, with the reason, when Raft stops by itself: a storage fault such as a full
    /// disk. The member must then exit (a supervisor restarts it) rather than stay half alive.
    ///
    /// It waits on openraft's server metrics, which change with the vote, role, leader and
    /// membership only, and close when Raft's core stops (after it has recorded why in the full
    /// metrics). The full metrics change several times per write; waiting on them woke the
    /// thread running this (the process's main thread) on every write.
    pub async fn fault(&self) -> String {
        let mut server = self.raft.server_metrics();
        loop {
            if let Err(fatal) = &self.raft.metrics().borrow_watched().running_state {
                return fatal.to_string();
            }
            if server.changed().await.is_err() {
                return match &self.raft.metrics().borrow_watched().running_state {
                    Err(fatal) => fatal.to_string(),
                    Ok(()) => "raft stopped".to_owned(),
                };
            }
        }
    }

    /// Resolves once this member has been removed from the cluster's membership.
    ///
    /// Excluded means: out of the applied membership, or out of the latest one in its log. A
    /// removed follower often never learns that its removal committed (the leader stops
    /// replicating to it), so the latest membership counts too; stopping on an uncommitted
    /// removal that is later undone costs only a restart. A member added back after a removal
    /// replays its own removal while catching up, so exclusion alone is not removal: a removed
    /// member also receives nothing more, so it must stay excluded, with nothing applied, for
    /// `REMOVAL_CONFIRM`.
    pub async fn removed(&self) {
        // Woken when the membership in the log or the peers' verdict changes, and every `tick`
        // to see whether anything was applied; not on every applied revision.
        let mut server = self.raft.server_metrics();
        let mut verdict = self.removed_by_peers.subscribe();
        let applied = self.replica.applied_revision();
        let mut last_applied = *applied.borrow();
        let mut was_member = false;
        let mut excluded_since: Option<tokio::time::Instant> = None;
        let tick = Duration::from_millis(250);
        loop {
            if *verdict.borrow_and_update() {
                return;
            }
            let (in_applied, in_latest) = self.membership_of_self();
            // A pristine member is in no membership yet: it waits to be added first.
            was_member |= in_applied || in_latest;
            let applied_now = *applied.borrow();
            // Something applied since the last look: the member still receives the log.
            let receiving = std::mem::replace(&mut last_applied, applied_now) != applied_now;
            if was_member && !(in_applied && in_latest) && !receiving {
                let since = *excluded_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= REMOVAL_CONFIRM {
                    return;
                }
            } else {
                excluded_since = None;
            }
            tokio::select! {
                changed = server.changed() => {
                    if changed.is_err() {
                        // Raft stopped; `fault` reports that.
                        std::future::pending::<()>().await;
                    }
                }
                changed = verdict.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Whether this member is in the applied membership, and in the latest one in its log.
    fn membership_of_self(&self) -> (bool, bool) {
        let me = self.config.member_id;
        let in_latest = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let in_latest = metrics
                .membership_config
                .membership()
                .get_node(&me.0)
                .is_some();
            in_latest
        };
        (self.replica.has_member(me), in_latest)
    }

    pub fn status(&self) -> ConsensusStatus {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| MemberState {
                id: MemberId(*id),
                peer_address: member.addr.clone(),
                voter: voters.contains(id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id).copied().flatten())
                    .map(|log_id| log_id.index),
            })
            .collect();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Candidate => Role::Candidate,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Stopped,
        };
        ConsensusStatus {
            member_id: self.config.member_id,
            leader: metrics.current_leader.map(MemberId),
            term: Term(metrics.current_term),
            role,
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
        self.elector.abort();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown reported an error");
        }
        // Entries appended and not yet written: nothing was acknowledged for them, but a member
        // that keeps what it received needs less from the others when it comes back.
        let flusher = self.flusher.clone();
        if let Ok(Err(fault)) = tokio::task::spawn_blocking(move || flusher.drain()).await {
            tracing::warn!(%fault, "the log's last entries could not be written at shutdown");
        }
        // After the entries, so that the cap lets all of it through.
        if let Err(fault) = self.committed.write_latest() {
            tracing::warn!(%fault, "the committed log id could not be stored at shutdown");
        }
    }
}

/// Founds the cluster with `initial_members` when this member is pristine and `initialize` is
/// set; logs that a pristine member waits otherwise. A restarted member does nothing here.
/// How this member dials the others: from `--peer-source-address`, over mutual TLS when set.
fn peer_dialer(config: &ConsensusConfig) -> PeerDialer {
    PeerDialer {
        source_address: config.peer_source_address,
        tls: config.peer_tls.clone(),
        allowed_names: config.peer_allowed_names.clone(),
        connections_opened: Arc::default(),
    }
}

async fn found_if_new(
    raft: &CoordRaft,
    initial_members: BTreeMap<MemberId, String>,
    initialize: bool,
) -> Result<(), StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|error| StartError::Raft {
            source: Box::new(error),
        })?;
    if !initialized && initialize {
        tracing::info!(members = ?initial_members.keys().collect::<Vec<_>>(), "founding a new cluster");
        let members: BTreeMap<u64, Member> = initial_members
            .into_iter()
            .map(|(id, addr)| (id.0, Member { addr }))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => {
                return Err(StartError::Raft {
                    source: Box::new(error),
                })
            }
        }
    } else if !initialized {
        tracing::info!("new member: waiting for the leader to contact it");
    }
    Ok(())
}

/// openraft's configuration for `config`.
fn raft_config(config: &ConsensusConfig) -> Result<Config, StartError> {
    Config {
        cluster_name: config.cluster_id.clone(),
        heartbeat_interval: millis(config.heartbeat_interval),
        // Coord runs elections itself (`election.rs`). openraft's election timeout is then used
        // only as its leader lease, which is as short as openraft allows: one and a half
        // heartbeats, so a hand-off's vote is not refused for long.
        enable_elect: false,
        election_timeout_min: millis(config.heartbeat_interval) + 1,
        election_timeout_max: millis(config.heartbeat_interval) * 3 / 2 + 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
        max_in_snapshot_log_to_keep: config.snapshot_keep_entries,
        // Bounds one AppendEntries message: entries carry at most 8 MiB each.
        max_payload_entries: 64,
        // A slow disk or a loaded machine must not make a healthy leader look dead.
        install_snapshot_timeout: 30_000,
        // A learner caught up from scratch after its disk was lost: the leader starts its
        // replication over instead of counting entries the learner no longer has (see
        // "Membership" in ARCHITECTURE.md).
        allow_log_reversion: Some(true),
        // A member that led comes back as a follower of its old term and leads again only
        // after a new election, at a higher term, as etcd's members do. A leader's entries
        // reach its followers while its own write is under way (`log_flush`), so a leader
        // killed in between can come back without entries a follower holds; resuming its
        // term, it would give its next entries the same log ids (term, leader, index), the
        // follower would keep its own as matching, and the two would apply different entries
        // at one index. In a new term the new leader's entries conflict with those and replace
        // them. openraft demotes the vote in memory only, so the stored vote never goes back.
        enable_leader_restore: Some(false),
        ..Config::default()
    }
    .validate()
    .map_err(|error| StartError::Timing {
        source: Box::new(error),
    })
}

/// openraft's network for this member: its peer connections, the acknowledgements they record
/// for the quorum check, the log whose durable entries bound the commit index sent, and whether
/// it stands for election in a hand-off.
fn peer_network(
    config: &ConsensusConfig,
    dialer: PeerDialer,
    acks: &Arc<AckClock>,
    flusher: &Arc<LogFlusher>,
    standing: &Arc<handoff::Standing>,
) -> PeerNetwork {
    PeerNetwork::new(
        config.member_id.0,
        config.cluster_id.clone(),
        dialer,
        acks.clone(),
        flusher.clone(),
        standing.clone(),
    )
}

fn timing(config: &ConsensusConfig) -> ElectionTiming {
    ElectionTiming {
        heartbeat: config.heartbeat_interval,
        election_timeout: config.election_timeout,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Asks openraft for a snapshot whenever more than `limit` bytes of log were appended since the
/// last snapshot (openraft 0.9's own policy counts entries only; large entries need this too).
/// Every snapshot built sets the count back to zero (`SnapshotBuilder`), so the two policies
/// never build two in a row.
async fn snapshot_on_size(raft: CoordRaft, appended_bytes: Arc<AtomicU64>, limit: u64) {
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

fn fatal_error(fatal: Fatal<TypeConfig>) -> ConsensusError {
    match fatal {
        Fatal::Stopped => ConsensusError::ShuttingDown,
        Fatal::StorageError(_) | Fatal::Panicked => ConsensusError::Fatal {
            reason: fatal.to_string(),
        },
    }
}
