//! Session liveness, run by the leader: keep-alives, expiry and checkpoints (the rules are in
//! `leases.rs`). Followers forward keep-alives and listings to the leader, once.
//!
//! Invariant: the leader acts on sessions only once its leadership is established, that is once
//! it has applied an entry of its own term: by then its replica holds every checkpoint and close
//! committed before it, so the lease table it builds starts from the latest checkpoint.
//! Invariant: checkpoints and expiries are proposed locally and never forwarded; a member that
//! lost the leadership drops them (and the keep-alives waiting on them) instead.

use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::ServerState;
use tokio::sync::oneshot;

use super::leases::{LeaseTable, LeaseView};
use super::{Consensus, ConsensusError, ForwardReply, ForwardRequest, ForwardResult, Route};
use crate::fsm::{
    CheckpointCommand, CloseSessionCommand, Command, FsmError, SessionEnd, SessionId,
};

/// Expiries proposed at once; more wait for the next tick.
const EXPIRIES_IN_FLIGHT_MAX: usize = 64;

/// Renewals are checkpointed every tick; every session on every `FULL_CHECKPOINT_TICKS`th.
const FULL_CHECKPOINT_TICKS: u64 = 4;

impl Consensus {
    /// The term this member leads in, once its leadership is established; 0 otherwise.
    fn established_term(&self) -> u64 {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let applied_own_entry = metrics
            .last_applied
            .is_some_and(|log_id| log_id.leader_id.term == metrics.current_term);
        if metrics.state == ServerState::Leader && applied_own_entry {
            metrics.current_term
        } else {
            0
        }
    }

    fn lease_table(&self) -> MutexGuard<'_, LeaseTable> {
        // Nothing panics while holding the lock, so a poisoned table is still consistent.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lease table, aligned with leadership `term` and the replica's sessions.
    fn synced_leases(&self, term: u64, now: Instant) -> MutexGuard<'_, LeaseTable> {
        let mut table = self.lease_table();
        self.replica.read(|state| {
            table.sync(
                term,
                now,
                state.namespace.sessions(),
                &state.session_deadlines,
                state.namespace.revision(),
            );
        });
        table
    }

    /// Keeps `session` alive; returns the TTL granted from now in milliseconds, or 0 when the
    /// session is gone (expired, closed, or never existed).
    pub async fn keep_alive(&self, session: SessionId) -> Result<u64, ConsensusError> {
        let request = ForwardRequest::KeepAlive { session };
        match self.route() {
            Route::Local => self.run_forwarded(request).await,
            Route::Leader { id, address } => self.forward(id, &address, &request).await,
            Route::Nowhere { leader_hint } => Err(ConsensusError::NoLeader { leader_hint }),
        }
        .map(|reply| match reply {
            ForwardReply::KeptAlive { ttl_ms } => ttl_ms,
            _ => unreachable!("a keep-alive is answered with KeptAlive"),
        })
    }

    /// On the leader: extends the session and waits until a checkpoint recording the extension
    /// has committed.
    pub(super) async fn keep_alive_here(&self, session: SessionId) -> ForwardResult {
        let term = self.established_term();
        if term == 0 {
            return Err(ConsensusError::NoLeader {
                leader_hint: self.view().leader,
            });
        }
        let now = Instant::now();
        let (ack, acknowledged) = oneshot::channel();
        let granted = self.synced_leases(term, now).keep_alive(session, now, ack);
        let Some(ttl) = granted else {
            return Ok(ForwardReply::KeptAlive { ttl_ms: 0 });
        };
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, acknowledged).await {
            Ok(Ok(())) => Ok(ForwardReply::KeptAlive {
                ttl_ms: millis(ttl),
            }),
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
    pub async fn list_sessions(&self) -> Result<Vec<LeaseView>, ConsensusError> {
        let request = ForwardRequest::ListSessions;
        match self.route() {
            Route::Local => self.run_forwarded(request).await,
            Route::Leader { id, address } => self.forward(id, &address, &request).await,
            Route::Nowhere { leader_hint } => Err(ConsensusError::NoLeader { leader_hint }),
        }
        .map(|reply| match reply {
            ForwardReply::Sessions(sessions) => sessions,
            _ => unreachable!("a listing is answered with Sessions"),
        })
    }

    pub(super) fn list_sessions_here(&self) -> ForwardResult {
        let term = self.established_term();
        if term == 0 {
            return Err(ConsensusError::NoLeader {
                leader_hint: self.view().leader,
            });
        }
        let now = Instant::now();
        let table = self.synced_leases(term, now);
        let sessions = self
            .replica
            .read(|state| table.view(now, state.namespace.sessions()));
        Ok(ForwardReply::Sessions(sessions))
    }

    /// Runs until the member stops: on the leader, expires sessions whose deadline passed and
    /// writes checkpoints; elsewhere, keeps the lease table empty.
    pub async fn run_session_keeper(self: Arc<Consensus>) {
        let tick = (self.config.session_checkpoint_interval / FULL_CHECKPOINT_TICKS as u32)
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut clock = CheckpointClock::default();
        loop {
            ticker.tick().await;
            ticks += 1;
            let term = self.established_term();
            let now = Instant::now();
            let full = ticks.is_multiple_of(FULL_CHECKPOINT_TICKS);
            let (due, checkpoint) = {
                let mut table = self.synced_leases(term, now);
                let due = table.due(now);
                (due, table.take_checkpoint(now, full))
            };
            if term == 0 {
                continue;
            }
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
            if let Ok(ForwardReply::Written { outcome: Ok(_), .. }) =
                self.run_forwarded(ForwardRequest::Write(command)).await
            {
                for ack in acks {
                    // A keep-alive whose caller gave up has nobody to tell.
                    let _ = ack.send(());
                }
            }
        }
    }

    fn has_writers(&self) -> bool {
        self.replica
            .read(|state| !state.namespace.writers().is_empty())
    }

    /// Commits the expiry of each session in `due`, deleting its ephemeral nodes.
    async fn expire(&self, due: Vec<SessionId>) {
        let outcomes: Vec<(SessionId, ForwardResult)> = futures::stream::iter(due)
            .map(|session| async move {
                tracing::info!(%session, "session expired: no keep-alive within its TTL");
                let command = Command::CloseSession(CloseSessionCommand {
                    session,
                    end: SessionEnd::Expired,
                });
                (
                    session,
                    self.run_forwarded(ForwardRequest::Write(command)).await,
                )
            })
            .buffer_unordered(EXPIRIES_IN_FLIGHT_MAX)
            .collect()
            .await;
        for (session, outcome) in outcomes {
            match outcome {
                Ok(ForwardReply::Written {
                    outcome: Ok(_) | Err(FsmError::SessionExpired { .. }),
                    ..
                }) => {}
                Ok(reply) => {
                    tracing::error!(%session, ?reply, "expiring a session gave an unexpected reply");
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
    term: u64,
    last: Option<Instant>,
}

impl CheckpointClock {
    fn elapsed_ms(&mut self, term: u64, now: Instant) -> u64 {
        if self.term != term {
            self.term = term;
            self.last = None;
        }
        let elapsed = self.last.map_or(Duration::ZERO, |last| now - last);
        self.last = Some(now);
        millis(elapsed)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
