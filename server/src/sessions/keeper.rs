//! `SessionKeeper`: session liveness, run by the leader: keep-alives, expiry and checkpoints
//! (the rules are in `leases.rs`). On a follower, keep-alives and listings are forwarded to the
//! leader once (`KeepAliveCall`, `ListSessionsCall`).
//!
//! Invariant: the leader acts on sessions only once its leadership is established, that is once
//! it has applied an entry of its own term: by then its replica holds every checkpoint and close
//! committed before it, so the lease table it builds starts from the latest checkpoint.
//! Invariant: checkpoints and expiries are proposed locally and never forwarded; a member that
//! lost the leadership drops them (and the keep-alives waiting on them) instead.
//!
//! ```text
//!  keep-alive ─► on_leader ─► keep_alive_here ─► LeaseTable::keep_alive (ack waits)
//!  tick ──────► run loop ──► LeaseTable::{due, take_checkpoint} ─► write_here(CloseSession /
//!                            CheckpointSessions) ─► committed ─► acks fire ─► keep-alive answers
//! ```

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::deadlines::SessionDeadlines;
use super::leases::{LeaseTable, LeaseView};
use crate::consensus::{
    Consensus, ConsensusError, LeaderCall, MessageKind, Term, WriteCall, Written,
};
use crate::fsm::{
    millis, CheckpointCommand, CloseSessionCommand, Command, FsmError, OutcomeRecord, SessionEnd,
    SessionId,
};

/// Expiries proposed at once; more wait for the next tick.
const EXPIRIES_IN_FLIGHT_MAX: usize = 64;

/// Renewals are checkpointed every tick; every session on every `FULL_CHECKPOINT_TICKS`th.
const FULL_CHECKPOINT_TICKS: u64 = 4;

/// A keep-alive for `session`, run on the leader. The reply is the TTL granted from now in
/// milliseconds, or 0 when the session is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAliveCall {
    pub session: SessionId,
}

impl LeaderCall for KeepAliveCall {
    const KIND: MessageKind = MessageKind::KeepAlive;
    type Reply = u64;
}

/// Every session as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSessionsCall;

impl LeaderCall for ListSessionsCall {
    const KIND: MessageKind = MessageKind::ListSessions;
    type Reply = Vec<LeaseView>;
}

/// Timing of the keeper.
#[derive(Debug, Clone, Copy)]
pub struct KeeperConfig {
    /// How often every session's remaining time is checkpointed (renewals four times as often).
    pub checkpoint_interval: Duration,
    /// How long a client's write outcomes are remembered after its last write.
    pub write_id_retention: Duration,
    /// Time granted to inherited sessions on a takeover, beyond what the log records.
    pub takeover_grace: Duration,
}

pub struct SessionKeeper {
    consensus: Arc<Consensus>,
    deadlines: Arc<SessionDeadlines>,
    config: KeeperConfig,
    /// The leader's session deadlines (empty on other members).
    leases: Mutex<LeaseTable>,
    /// Sessions this member expired while it led (`coord_sessions_expired_total`).
    expired: std::sync::atomic::AtomicU64,
}

impl SessionKeeper {
    pub fn new(
        consensus: Arc<Consensus>,
        deadlines: Arc<SessionDeadlines>,
        config: KeeperConfig,
    ) -> SessionKeeper {
        SessionKeeper {
            consensus,
            deadlines,
            config,
            leases: Mutex::new(LeaseTable::new(config.takeover_grace)),
            expired: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lease_table(&self) -> MutexGuard<'_, LeaseTable> {
        // Nothing panics while holding the lock, so a poisoned table is still consistent.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lease table, aligned with leadership `term` and the replica's sessions.
    fn synced_leases(&self, term: Option<Term>, now: Instant) -> MutexGuard<'_, LeaseTable> {
        let mut table = self.lease_table();
        self.consensus.replica().read(|namespace| {
            self.deadlines.read(|deadlines| {
                table.sync(
                    term,
                    now,
                    namespace.sessions(),
                    deadlines,
                    namespace.revision(),
                );
            });
        });
        table
    }

    fn not_leading(&self) -> ConsensusError {
        ConsensusError::NoLeader {
            leader_hint: self.consensus.view().leader,
        }
    }

    /// Keeps `session` alive; returns the TTL granted from now in milliseconds, or 0 when the
    /// session is gone (expired, closed, or never existed).
    pub async fn keep_alive(&self, session: SessionId) -> Result<u64, ConsensusError> {
        self.consensus
            .on_leader(KeepAliveCall { session }, |call| self.keep_alive_here(call))
            .await
    }

    /// On the leader: extends the session and waits until a checkpoint recording the extension
    /// has committed.
    pub async fn keep_alive_here(&self, call: KeepAliveCall) -> Result<u64, ConsensusError> {
        let Some(term) = self.consensus.established_leadership() else {
            return Err(self.not_leading());
        };
        let now = Instant::now();
        let (ack, acknowledged) = oneshot::channel();
        let granted = self
            .synced_leases(Some(term), now)
            .keep_alive(call.session, now, ack);
        let Some(ttl) = granted else {
            return Ok(0);
        };
        let timeout = self.consensus.request_timeout();
        match tokio::time::timeout(timeout, acknowledged).await {
            Ok(Ok(())) => Ok(millis(ttl)),
            // The checkpoint failed or the leadership ended: nothing was promised.
            Ok(Err(_)) => Err(ConsensusError::NoLeader { leader_hint: None }),
            Err(_) => Err(ConsensusError::Timeout {
                what: "keep-alive checkpoint".into(),
                timeout,
            }),
        }
    }

    /// Every session with its TTL, time left, keep-alive age and ephemeral nodes, as the
    /// leader sees them.
    pub async fn list(&self) -> Result<Vec<LeaseView>, ConsensusError> {
        self.consensus
            .on_leader(ListSessionsCall, |call| async { self.list_here(call) })
            .await
    }

    pub fn list_here(&self, _call: ListSessionsCall) -> Result<Vec<LeaseView>, ConsensusError> {
        let Some(term) = self.consensus.established_leadership() else {
            return Err(self.not_leading());
        };
        let now = Instant::now();
        let table = self.synced_leases(Some(term), now);
        Ok(self
            .consensus
            .replica()
            .read(|namespace| table.view(now, namespace.sessions())))
    }

    /// Runs until the member stops: on the leader, expires sessions whose deadline passed and
    /// writes checkpoints; elsewhere, keeps the lease table empty.
    pub async fn run(self: Arc<SessionKeeper>) {
        let tick = (self.config.checkpoint_interval / FULL_CHECKPOINT_TICKS as u32)
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut clock = CheckpointClock::default();
        loop {
            ticker.tick().await;
            ticks += 1;
            let term = self.consensus.established_leadership();
            let now = Instant::now();
            let full = ticks.is_multiple_of(FULL_CHECKPOINT_TICKS);
            let (due, checkpoint) = {
                let mut table = self.synced_leases(term, now);
                let due = table.due(now);
                (due, table.take_checkpoint(now, full))
            };
            let Some(term) = term else { continue };
            let elapsed_ms = if full { clock.elapsed_ms(term, now) } else { 0 };
            self.expire(due).await;
            let (remaining, acks) = match checkpoint {
                Some(checkpoint) => (checkpoint.remaining, checkpoint.acks),
                // Even with no session, a full checkpoint ages remembered write outcomes.
                None if elapsed_ms > 0 && self.has_writers() => (Vec::new(), Vec::new()),
                None => continue,
            };
            let command = Command::CheckpointSessions(CheckpointCommand {
                remaining,
                elapsed_ms,
                write_id_retention_ms: millis(self.config.write_id_retention),
            });
            if let Ok(Written {
                outcome: OutcomeRecord::Done(_),
                ..
            }) = self.propose_here(command).await
            {
                for ack in acks {
                    // A keep-alive whose caller gave up has nobody to tell.
                    let _ = ack.send(());
                }
            }
        }
    }

    /// Proposes a session command on this member, which must lead: never forwarded.
    async fn propose_here(&self, command: Command) -> Result<Written, ConsensusError> {
        self.consensus
            .write_here(WriteCall {
                proposal: command.into(),
            })
            .await
    }

    fn has_writers(&self) -> bool {
        self.consensus
            .replica()
            .read(|namespace| !namespace.writers().is_empty())
    }

    /// How many sessions this member expired while it led.
    pub fn sessions_expired(&self) -> u64 {
        self.expired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits the expiry of each session in `due`, deleting its ephemeral nodes.
    async fn expire(&self, due: Vec<SessionId>) {
        let outcomes: Vec<(SessionId, Result<Written, ConsensusError>)> =
            futures::stream::iter(due)
                .map(|session| async move {
                    tracing::info!(%session, "session expired: no keep-alive within its TTL");
                    let command = Command::CloseSession(CloseSessionCommand {
                        session,
                        end: SessionEnd::Expired,
                    });
                    (session, self.propose_here(command).await)
                })
                .buffer_unordered(EXPIRIES_IN_FLIGHT_MAX)
                .collect()
                .await;
        for (session, outcome) in outcomes {
            match outcome {
                Ok(Written {
                    outcome: OutcomeRecord::Done(_),
                    ..
                }) => {
                    self.expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Written {
                    outcome: OutcomeRecord::Refused(FsmError::SessionExpired { .. }),
                    ..
                }) => {}
                Ok(written) => {
                    tracing::error!(%session, ?written, "expiring a session gave an unexpected reply");
                }
                Err(error) => {
                    tracing::warn!(%session, %error, "expiry not committed; retrying");
                    self.lease_table().expiry_failed(session);
                }
            }
        }
    }
}

/// The leader time each full checkpoint reports as elapsed: since the previous full checkpoint
/// of the same term, or since the term's first one was due. Time before this member led is
/// never counted, so the replicated clock runs slow, never fast.
#[derive(Debug, Default)]
struct CheckpointClock {
    term: Option<Term>,
    last: Option<Instant>,
}

impl CheckpointClock {
    fn elapsed_ms(&mut self, term: Term, now: Instant) -> u64 {
        if self.term != Some(term) {
            self.term = Some(term);
            self.last = None;
        }
        let elapsed = self.last.map_or(Duration::ZERO, |last| now - last);
        self.last = Some(now);
        millis(elapsed)
    }
}
