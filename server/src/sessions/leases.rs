//! `LeaseTable`: the leader's view of session liveness, on its monotonic clock.
//!
//! Only the leader decides that a session expired, and it commits that decision through Raft
//! (`CloseSession` with `SessionEnd::Expired`). A keep-alive moves the leader's in-memory
//! deadline and is acknowledged only once a checkpoint (`CheckpointSessions`) taken after it has
//! committed. Checkpoints record each session's remaining time; a new leader starts from the
//! latest one.
//!
//! Why acknowledge after the checkpoint: a client counts its lease from when it sent the
//! acknowledged keep-alive. A checkpoint taken after the keep-alive records at least
//! `keep-alive time + TTL - checkpoint time` remaining, and any later leader takes over after
//! that checkpoint, so it cannot expire the session before the client's own deadline. A leader
//! that lost its quorum cannot commit the checkpoint, so it cannot acknowledge keep-alives.
//! Renewed sessions are checkpointed in small batches every tick; every session (including
//! dead ones, whose remainder shrinks) in a full checkpoint every few ticks.
//!
//! Invariants:
//! - The table belongs to one leadership (term); a change of term discards it, and the new
//!   leader grants each session it inherits its deadline by the checkpoints this member applied
//!   (`ReplicaState::session_deadlines`: apply time plus recorded remainder; no earlier than the
//!   takeover) plus `takeover_grace` (one election's worth), never a fresh TTL. That is at most
//!   the checkpointed remainder plus the grace, counted from the takeover. The grace is left
//!   out of the checkpoints this leader writes, so failovers do not add it up: a dead session
//!   outlives its recorded time only while no leader lasts a grace period.
//! - A session chosen for expiry (`expiring`) is never kept alive again, even if a keep-alive
//!   arrives before the close commits: the client hears "expired" rather than a TTL that the
//!   log is about to contradict.
//! - Nothing here reads a wall clock; every time is an `Instant` passed in by the caller, so the
//!   table is tested without sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::consensus::Term;
use crate::fsm::{millis, Revision, SessionId, SessionRecord};

#[derive(Debug, Clone)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    /// Time granted beyond what the log records (the takeover grace); left out of checkpoints
    /// so that it is never granted twice. A keep-alive clears it.
    bonus: Duration,
    /// When this leader last heard a keep-alive for the session.
    last_heard: Option<Instant>,
    expiring: bool,
}

/// What an administrator sees of one session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseView {
    pub session: SessionId,
    pub ttl_ms: u64,
    /// Time left before the leader expires it.
    pub remaining_ms: u64,
    /// Since the leader last heard a keep-alive; `None` if it has not heard one yet.
    pub last_keepalive_age_ms: Option<u64>,
    pub ephemerals: Vec<String>,
}

#[derive(Debug)]
pub struct LeaseTable {
    /// The leadership these leases belong to; `None` when this member is not the leader.
    term: Option<Term>,
    /// The revision applied when this leadership's table was built: sessions with a higher id
    /// (ids are revisions) were opened under this leader.
    since: Revision,
    /// The replica revision the table last matched, to skip syncs when nothing was applied.
    synced_at: Revision,
    leases: HashMap<SessionId, Lease>,
    takeover_grace: Duration,
    /// Sessions kept alive since the last checkpoint was taken.
    renewed: BTreeSet<SessionId>,
    /// Keep-alives waiting for the next checkpoint to commit.
    acks: Vec<oneshot::Sender<()>>,
}

/// A checkpoint to propose, and the keep-alives it acknowledges once committed.
pub struct PendingCheckpoint {
    pub remaining: Vec<(SessionId, u64)>,
    pub acks: Vec<oneshot::Sender<()>>,
}

impl LeaseTable {
    pub fn new(takeover_grace: Duration) -> LeaseTable {
        LeaseTable {
            term: None,
            since: Revision(0),
            synced_at: Revision(0),
            leases: HashMap::new(),
            takeover_grace,
            renewed: BTreeSet::new(),
            acks: Vec::new(),
        }
    }

    /// Whether the table is current for leadership `term`.
    #[cfg(test)]
    pub fn is_for(&self, term: Term) -> bool {
        self.term == Some(term)
    }

    /// Aligns the table with leadership `term` (`None`: not the leader) and with the
    /// replica's sessions as of `applied`.
    pub fn sync(
        &mut self,
        term: Option<Term>,
        now: Instant,
        sessions: &BTreeMap<SessionId, SessionRecord>,
        deadlines: &HashMap<SessionId, Instant>,
        applied: Revision,
    ) {
        if term != self.term {
            self.leases.clear();
            self.renewed.clear();
            // Dropping the senders tells waiting keep-alives that this leadership ended.
            self.acks.clear();
            self.term = term;
            self.since = applied;
            self.synced_at = Revision(0);
        }
        if term.is_none() || (applied == self.synced_at && !self.leases.is_empty()) {
            return;
        }
        self.synced_at = applied;
        self.leases
            .retain(|session, _| sessions.contains_key(session));
        for (session, record) in sessions {
            let since = self.since;
            let grace = self.takeover_grace;
            self.leases.entry(*session).or_insert_with(|| {
                let ttl = Duration::from_millis(record.ttl_ms);
                let recorded = deadlines
                    .get(session)
                    .copied()
                    .unwrap_or(now + ttl)
                    .min(now + ttl);
                // An inherited session whose recorded time ran out while there was no leader
                // still gets the grace from now: its client could not renew meanwhile.
                let (start, bonus) = if session.0 > since.0 {
                    (recorded, Duration::ZERO)
                } else {
                    (recorded.max(now), grace)
                };
                Lease {
                    ttl,
                    deadline: start + bonus,
                    bonus,
                    last_heard: None,
                    expiring: false,
                }
            });
        }
    }

    /// Extends `session` by its TTL from `now`; `None` when it is unknown or being expired.
    /// `ack` fires when a checkpoint taken after this keep-alive has committed; only then may
    /// the TTL be reported to the client.
    pub fn keep_alive(
        &mut self,
        session: SessionId,
        now: Instant,
        ack: oneshot::Sender<()>,
    ) -> Option<Duration> {
        let lease = self.leases.get_mut(&session)?;
        if lease.expiring {
            return None;
        }
        lease.deadline = now + lease.ttl;
        lease.bonus = Duration::ZERO;
        lease.last_heard = Some(now);
        self.renewed.insert(session);
        self.acks.push(ack);
        Some(lease.ttl)
    }

    /// Takes the next checkpoint: every live session when `full`, else only those renewed since
    /// the last one. `None` when there is nothing to record.
    pub fn take_checkpoint(&mut self, now: Instant, full: bool) -> Option<PendingCheckpoint> {
        let renewed = std::mem::take(&mut self.renewed);
        let acks = std::mem::take(&mut self.acks);
        let remaining: Vec<(SessionId, u64)> = if full {
            self.checkpoint(now)
        } else {
            renewed
                .iter()
                .filter_map(|session| {
                    let lease = self.leases.get(session)?;
                    (!lease.expiring).then(|| (*session, lease.recorded_remaining(now)))
                })
                .collect()
        };
        if remaining.is_empty() && acks.is_empty() {
            return None;
        }
        Some(PendingCheckpoint { remaining, acks })
    }

    /// The sessions whose deadline passed, marked as expiring.
    pub fn due(&mut self, now: Instant) -> Vec<SessionId> {
        let mut due: Vec<SessionId> = self
            .leases
            .iter_mut()
            .filter(|(_, lease)| !lease.expiring && lease.deadline <= now)
            .map(|(session, lease)| {
                lease.expiring = true;
                *session
            })
            .collect();
        due.sort();
        due
    }

    /// Gives `session` back to the living after its expiry could not be committed (it will be
    /// due again at once, and retried).
    pub fn expiry_failed(&mut self, session: SessionId) {
        if let Some(lease) = self.leases.get_mut(&session) {
            lease.expiring = false;
        }
    }

    /// Every live session's remaining time, for a checkpoint.
    pub fn checkpoint(&self, now: Instant) -> Vec<(SessionId, u64)> {
        let mut remaining: Vec<(SessionId, u64)> = self
            .leases
            .iter()
            .filter(|(_, lease)| !lease.expiring)
            .map(|(session, lease)| (*session, lease.recorded_remaining(now)))
            .collect();
        remaining.sort();
        remaining
    }

    /// What an administrator sees, with owned nodes from `sessions`.
    pub fn view(
        &self,
        now: Instant,
        sessions: &BTreeMap<SessionId, SessionRecord>,
    ) -> Vec<LeaseView> {
        sessions
            .iter()
            .map(|(session, record)| {
                let lease = self.leases.get(session);
                LeaseView {
                    session: *session,
                    ttl_ms: record.ttl_ms,
                    remaining_ms: lease.map_or(record.remaining_ms, |lease| {
                        millis(lease.deadline.saturating_duration_since(now))
                    }),
                    last_keepalive_age_ms: lease
                        .and_then(|lease| lease.last_heard)
                        .map(|heard| millis(now.saturating_duration_since(heard))),
                    ephemerals: record.ephemerals.iter().map(ToString::to_string).collect(),
                }
            })
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

impl Lease {
    /// The time left that a checkpoint records: without the bonus.
    fn recorded_remaining(&self, now: Instant) -> u64 {
        millis(
            self.deadline
                .saturating_duration_since(now)
                .saturating_sub(self.bonus),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn record(ttl_ms: u64, remaining_ms: u64) -> SessionRecord {
        SessionRecord {
            ttl_ms,
            remaining_ms,
            ephemerals: BTreeSet::new(),
            owner: "c".into(),
        }
    }

    const GRACE: Duration = Duration::from_secs(3);

    /// Deadlines as a member that applied each session's checkpoint at `at` would have them.
    fn deadlines(
        sessions: &BTreeMap<SessionId, SessionRecord>,
        at: Instant,
    ) -> HashMap<SessionId, Instant> {
        sessions
            .iter()
            .map(|(session, record)| (*session, at + Duration::from_millis(record.remaining_ms)))
            .collect()
    }

    fn ack() -> oneshot::Sender<()> {
        oneshot::channel().0
    }

    #[test]
    fn a_session_opened_under_this_leader_lives_its_ttl_and_keep_alives_extend_it() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        table.sync(
            Some(Term(1)),
            start,
            &BTreeMap::new(),
            &HashMap::new(),
            Revision(10),
        );
        let sessions = BTreeMap::from([(SessionId(11), record(5_000, 5_000))]);
        table.sync(
            Some(Term(1)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(11),
        );
        assert!(table.due(start + Duration::from_millis(4_999)).is_empty());
        assert_eq!(
            table.keep_alive(SessionId(11), start + Duration::from_secs(4), ack()),
            Some(Duration::from_secs(5))
        );
        assert!(table.due(start + Duration::from_millis(8_999)).is_empty());
        assert_eq!(
            table.due(start + Duration::from_secs(9)),
            vec![SessionId(11)]
        );
        // Once chosen for expiry, a late keep-alive does not revive it.
        assert_eq!(
            table.keep_alive(SessionId(11), start + Duration::from_secs(9), ack()),
            None
        );
        assert!(table.due(start + Duration::from_secs(20)).is_empty());
        table.expiry_failed(SessionId(11));
        assert_eq!(
            table.due(start + Duration::from_secs(20)),
            vec![SessionId(11)]
        );
    }

    #[test]
    fn a_new_leader_grants_the_checkpointed_remainder_plus_grace_not_a_full_ttl() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        let sessions = BTreeMap::from([(SessionId(5), record(60_000, 2_000))]);
        table.sync(
            Some(Term(7)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(40),
        );
        let bound = Duration::from_millis(2_000) + GRACE;
        // The grace is the new leader's own: its checkpoints do not pass it on.
        let checkpoint = table
            .take_checkpoint(start + Duration::from_secs(1), true)
            .expect("a live session");
        assert_eq!(checkpoint.remaining, vec![(SessionId(5), 1_000)]);
        assert!(table
            .due(start + bound - Duration::from_millis(1))
            .is_empty());
        assert_eq!(table.due(start + bound), vec![SessionId(5)]);
    }

    #[test]
    fn time_since_the_checkpoint_was_applied_counts_against_an_inherited_session() {
        let applied_at = Instant::now();
        let takeover = applied_at + Duration::from_secs(2);
        let mut table = LeaseTable::new(GRACE);
        let sessions = BTreeMap::from([(SessionId(5), record(60_000, 3_000))]);
        let deadlines = deadlines(&sessions, applied_at);
        table.sync(Some(Term(7)), takeover, &sessions, &deadlines, Revision(40));
        let expiry = applied_at + Duration::from_millis(3_000) + GRACE;
        assert!(table.due(expiry - Duration::from_millis(1)).is_empty());
        assert_eq!(table.due(expiry), vec![SessionId(5)]);
    }

    #[test]
    fn a_session_whose_recorded_time_ran_out_without_a_leader_gets_the_grace_from_the_takeover() {
        let applied_at = Instant::now();
        let takeover = applied_at + Duration::from_secs(5);
        let mut table = LeaseTable::new(GRACE);
        let sessions = BTreeMap::from([(SessionId(5), record(3_000, 1_000))]);
        let deadlines = deadlines(&sessions, applied_at);
        table.sync(Some(Term(9)), takeover, &sessions, &deadlines, Revision(40));
        assert!(table
            .due(takeover + GRACE - Duration::from_millis(1))
            .is_empty());
        // Its checkpoint records nothing left, so the next leader adds no more than the grace.
        let checkpoint = table
            .take_checkpoint(takeover, true)
            .expect("a live session");
        assert_eq!(checkpoint.remaining, vec![(SessionId(5), 0)]);
        assert_eq!(table.due(takeover + GRACE), vec![SessionId(5)]);
    }

    #[test]
    fn a_change_of_term_discards_the_table_and_closed_sessions_leave_it() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        let sessions = BTreeMap::from([
            (SessionId(5), record(10_000, 10_000)),
            (SessionId(6), record(10_000, 10_000)),
        ]);
        table.sync(
            Some(Term(2)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(6),
        );
        assert_eq!(table.len(), 2);
        let later = start + Duration::from_secs(1);
        let fewer = BTreeMap::from([(SessionId(6), record(10_000, 10_000))]);
        table.sync(
            Some(Term(2)),
            later,
            &fewer,
            &deadlines(&fewer, start),
            Revision(7),
        );
        assert_eq!(table.keep_alive(SessionId(5), later, ack()), None);
        assert!(table.keep_alive(SessionId(6), later, ack()).is_some());
        table.sync(None, later, &fewer, &deadlines(&fewer, start), Revision(7));
        assert!(table.is_empty());
        assert!(!table.is_for(Term(2)));
    }

    #[test]
    fn a_keep_alive_is_acknowledged_by_the_next_checkpoint_which_records_it() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        table.sync(
            Some(Term(1)),
            start,
            &BTreeMap::new(),
            &HashMap::new(),
            Revision(1),
        );
        let sessions = BTreeMap::from([
            (SessionId(2), record(10_000, 10_000)),
            (SessionId(3), record(10_000, 10_000)),
        ]);
        table.sync(
            Some(Term(1)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(3),
        );
        let (sender, mut receiver) = oneshot::channel();
        let renewed_at = start + Duration::from_secs(4);
        assert!(table.keep_alive(SessionId(3), renewed_at, sender).is_some());
        let taken_at = renewed_at + Duration::from_millis(250);
        let checkpoint = table
            .take_checkpoint(taken_at, false)
            .expect("a renewal to record");
        // Only the renewed session, with what it has left after the keep-alive.
        assert_eq!(checkpoint.remaining, vec![(SessionId(3), 9_750)]);
        assert_eq!(checkpoint.acks.len(), 1);
        assert!(
            receiver.try_recv().is_err(),
            "not acknowledged before the commit"
        );
        for ack in checkpoint.acks {
            ack.send(()).unwrap();
        }
        assert!(receiver.try_recv().is_ok());
        assert!(table.take_checkpoint(taken_at, false).is_none());
        let full = table
            .take_checkpoint(taken_at, true)
            .expect("live sessions");
        assert_eq!(
            full.remaining,
            vec![(SessionId(2), 5_750), (SessionId(3), 9_750)]
        );
    }

    #[test]
    fn a_change_of_term_drops_waiting_keep_alives() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        let sessions = BTreeMap::from([(SessionId(2), record(10_000, 10_000))]);
        table.sync(
            Some(Term(1)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(3),
        );
        let (sender, mut receiver) = oneshot::channel();
        assert!(table.keep_alive(SessionId(2), start, sender).is_some());
        table.sync(
            None,
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(3),
        );
        assert!(matches!(
            receiver.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn checkpoints_report_time_left_and_skip_expiring_sessions() {
        let start = Instant::now();
        let mut table = LeaseTable::new(GRACE);
        table.sync(
            Some(Term(1)),
            start,
            &BTreeMap::new(),
            &HashMap::new(),
            Revision(1),
        );
        let sessions = BTreeMap::from([
            (SessionId(2), record(4_000, 4_000)),
            (SessionId(3), record(10_000, 10_000)),
        ]);
        table.sync(
            Some(Term(1)),
            start,
            &sessions,
            &deadlines(&sessions, start),
            Revision(3),
        );
        let now = start + Duration::from_secs(5);
        assert_eq!(table.due(now), vec![SessionId(2)]);
        assert_eq!(table.checkpoint(now), vec![(SessionId(3), 5_000)]);
    }
}
