//! Leadership hand-off: a leader that is told to stop (SIGTERM, its own removal,
//! `coordctl member move-leader`) passes leadership to a caught-up voter first, so writes pause
//! for about a round trip instead of an election timeout. This is Raft's TimeoutNow, built on
//! openraft's elections: the target's vote requests carry openraft's `leadership_transfer`
//! (`Standing`, sent as a `TransferVote`), so the voters, the old leader among them, set their
//! leases aside for it:
//!
//! ```text
//!  leader                                              target (a voter)
//!  hold new writes (they wait, then go to the new leader)
//!  wait until the target's matched index = last log index
//!  stop heartbeats ───────── TimeoutNow { term } ──────► term still ours? elect now,
//!                                                        votes sent as TransferVotes
//!  grant its vote (log as long, lease set aside) ◄────── (retried every two heartbeats if
//!                                                        a vote is lost or refused)
//!  step down; writes held here go to the new leader ◄─── leader at term + 1
//! ```
//!
//! Invariant: the target is asked only once it holds every entry of the leader's log, and the
//! leader takes no new entry while it waits, so the new leader has everything the old one
//! acknowledged, and Raft's vote (which checks the log again) decides as always. A move that
//! does not finish within its bound resumes the old leader: heartbeats restart and held
//! writes proceed here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ids::{MemberId, Term};
use super::leader::LeaderCall;
use super::state_machine::CoordRaft;
use super::types::wait_for_metrics;
use super::wire::MessageKind;

/// Moves leadership to `target`, or to the most caught-up other voter when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveLeader {
    pub target: Option<MemberId>,
}

/// The leader after a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub leader: MemberId,
    pub term: Term,
}

impl LeaderCall for MoveLeader {
    const KIND: MessageKind = MessageKind::MoveLeader;
    type Reply = Moved;
    const GIVEN_UP_WITH_ITS_LEADER: bool = false;
}

/// From a leader to the voter it hands leadership to: start an election now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    pub from: MemberId,
    /// The leader's term; a target that moved past it ignores the message.
    pub term: Term,
}

/// Whether a leadership move is under way on this member; writes wait while it is.
pub struct HandOff {
    /// Held for the whole move: one move at a time.
    pub lock: tokio::sync::Mutex<()>,
    moving: watch::Sender<bool>,
    /// Proposals handed to openraft and not finished: a move waits until none is left, so
    /// that no entry lands in the log after the target caught up.
    in_flight: AtomicUsize,
}

/// One proposal in flight (see `HandOff::begin_proposal`); counted until dropped.
pub struct Proposing<'a>(&'a HandOff);

impl Drop for Proposing<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for HandOff {
    fn default() -> HandOff {
        HandOff {
            lock: tokio::sync::Mutex::new(()),
            moving: watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
        }
    }
}

impl HandOff {
    pub fn set_moving(&self, moving: bool) {
        self.moving.send_replace(moving);
    }

    /// Counts a proposal in, unless a move is under way (then `None`: wait for `settled`).
    /// Counting before looking at the flag, and the move setting the flag before counting,
    /// means no proposal slips past a move unseen.
    pub fn begin_proposal(&self) -> Option<Proposing<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let proposing = Proposing(self);
        (!self.is_moving()).then_some(proposing)
    }

    /// Counts a proposal in whatever happens (after a move that did not settle in time).
    pub fn force_proposal(&self) -> Proposing<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Proposing(self)
    }

    /// Waits until no proposal is in flight.
    pub async fn drained(&self) {
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn is_moving(&self) -> bool {
        *self.moving.borrow()
    }

    /// Waits (at most `bound`) until no move is under way.
    pub async fn settled(&self, bound: Duration) {
        let mut moving = self.moving.subscribe();
        let _ = tokio::time::timeout(bound, moving.wait_for(|moving| !*moving)).await;
    }
}

/// Chooses the voter to hand leadership to: `wanted` if it is another voter, otherwise the
/// other voter with the highest matched index (lowest id on a tie). `matched` lists
/// (voter, matched index) for every voter but the leader.
pub fn choose_target(
    me: MemberId,
    wanted: Option<MemberId>,
    matched: &[(MemberId, u64)],
) -> Result<MemberId, String> {
    match wanted {
        Some(id) if id == me => Err(format!("member {id} already leads")),
        Some(id) if matched.iter().any(|(voter, _)| *voter == id) => Ok(id),
        Some(id) => Err(format!("member {id} is not a voter of this cluster")),
        None => matched
            .iter()
            .max_by_key(|(voter, index)| (*index, std::cmp::Reverse(*voter)))
            .map(|(voter, _)| *voter)
            .ok_or_else(|| "no other voter to hand leadership to".to_owned()),
    }
}

/// Set while this member stands for election at its leader's request (`stand`): its vote
/// requests then go out as `TransferVote`s, which voters take with openraft's
/// `leadership_transfer` set, so that neither a follower's lease nor the old leader's own lease
/// refuses them (the leader that asked has stopped leading).
#[derive(Debug, Default)]
pub struct Standing(AtomicBool);

impl Standing {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Clears `Standing` however `stand` ends.
struct StandingGuard(Arc<Standing>);

impl Drop for StandingGuard {
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::SeqCst);
    }
}

/// On the target: stand for election now, again after two heartbeats while the followers'
/// leases (one and a half heartbeats after the leader's last one) still refuse, until this
/// member leads, another one does at a newer term, or `attempts` run out (few: each attempt
/// raises the term, and a failed move must not outbid the ordinary elections that follow).
pub async fn stand(
    raft: CoordRaft,
    standing: Arc<Standing>,
    from_term: Term,
    heartbeat: Duration,
    attempts: u32,
) {
    standing.0.store(true, Ordering::SeqCst);
    let _standing = StandingGuard(standing);
    let mut metrics = raft.metrics();
    for _ in 0..attempts {
        if raft.trigger().elect(false).await.is_err() {
            return;
        }
        let decided = tokio::time::timeout(
            heartbeat * 2,
            wait_for_metrics(&mut metrics, |metrics| {
                metrics.current_term > from_term.0
                    && (metrics.state == ServerState::Leader || metrics.current_leader.is_some())
            }),
        )
        .await;
        if matches!(decided, Ok(Ok(_))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_caught_up_voter_is_chosen() {
        let matched = [(MemberId(2), 10), (MemberId(3), 12), (MemberId(4), 12)];
        assert_eq!(choose_target(MemberId(1), None, &matched), Ok(MemberId(3)));
        assert_eq!(
            choose_target(MemberId(1), Some(MemberId(2)), &matched),
            Ok(MemberId(2))
        );
    }

    #[test]
    fn proposals_are_counted_and_refused_during_a_move() {
        let handoff = HandOff::default();
        let first = handoff.begin_proposal().expect("no move yet");
        handoff.set_moving(true);
        assert!(handoff.begin_proposal().is_none());
        assert_eq!(handoff.in_flight.load(Ordering::SeqCst), 1);
        drop(first);
        let forced = handoff.force_proposal();
        assert_eq!(handoff.in_flight.load(Ordering::SeqCst), 1);
        drop(forced);
        assert_eq!(handoff.in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn impossible_targets_are_refused() {
        let matched = [(MemberId(2), 10)];
        assert!(choose_target(MemberId(1), Some(MemberId(1)), &matched).is_err());
        assert!(choose_target(MemberId(1), Some(MemberId(9)), &matched).is_err());
        assert!(choose_target(MemberId(1), None, &[]).is_err());
    }
}
