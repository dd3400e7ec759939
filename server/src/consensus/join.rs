//! Joining on its own (`--join-via`): the messages a new member sends through any member's
//! peer port, and the rule for when a learner is caught up enough to vote.
//!
//! ```text
//!  new member ──Join{AddLearner me}──► any member ──(leader?)──► leader: add learner ─► view
//!             ──Join{Promote me}─────► any member ──────────────► leader: wait until caught
//!                                                                  up, then promote ───► view
//! ```
//!
//! A `Join` travels at most two hops: the member it reaches runs it (it leads) or relays it
//! once to the leader it knows (`relayed: true`), which runs it or answers `NoLeader`. Every
//! change is idempotent, so a joiner simply repeats a call whose answer it did not get.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ids::MemberId;
use super::leader::{LeaderCall, MembershipChange};
use super::wire::MessageKind;

/// A learner may be promoted once it holds all but this many of the leader's log entries:
/// close enough that counting it in the quorum does not stall commits while it catches up.
pub const PROMOTE_LAG_MAX: u64 = 100;

/// A membership change a member asks for itself, sent through any member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCall {
    pub change: MembershipChange,
    /// Set by the member that relays the call to the leader: the leader runs it or answers
    /// `NoLeader`, never relays it again.
    pub relayed: bool,
}

impl LeaderCall for JoinCall {
    const KIND: MessageKind = MessageKind::Join;
    type Reply = MembershipView;
    const GIVEN_UP_WITH_ITS_LEADER: bool = false;
}

/// The membership once the change is committed (or found already made).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    pub voters: BTreeSet<MemberId>,
    pub learners: BTreeSet<MemberId>,
}

impl MembershipView {
    pub fn is_voter(&self, id: MemberId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_member(&self, id: MemberId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// What the leader does with a `Join`, given the membership now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStep {
    /// Already so: answer with the membership as it is.
    Nothing,
    /// Run this change.
    Change(MembershipChange),
    /// Refuse, saying why.
    Refuse(String),
}

/// Decides a `Join` against the current membership: adding a member that is already in it,
/// or promoting a voter, changes nothing; promoting or removing an unknown member is refused.
pub fn join_step(view: &MembershipView, change: MembershipChange) -> JoinStep {
    match change {
        MembershipChange::AddLearner { id, .. } if view.is_member(id) => JoinStep::Nothing,
        MembershipChange::Promote { id } if view.is_voter(id) => JoinStep::Nothing,
        MembershipChange::Promote { id } if !view.is_member(id) => {
            JoinStep::Refuse(format!("member {id} is not a learner of this cluster"))
        }
        MembershipChange::Remove { id } if !view.is_member(id) => JoinStep::Nothing,
        change => JoinStep::Change(change),
    }
}

/// Whether a learner matched up to `matched` is close enough to the leader's `last_index`.
pub fn caught_up(matched: Option<u64>, last_index: u64) -> bool {
    matched.is_some_and(|matched| last_index.saturating_sub(matched) <= PROMOTE_LAG_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[u64], learners: &[u64]) -> MembershipView {
        MembershipView {
            voters: voters.iter().copied().map(MemberId).collect(),
            learners: learners.iter().copied().map(MemberId).collect(),
        }
    }

    fn add(id: u64) -> MembershipChange {
        MembershipChange::AddLearner {
            id: MemberId(id),
            peer_address: "m:7401".into(),
        }
    }

    #[test]
    fn repeated_joins_change_nothing() {
        let cluster = view(&[1, 2], &[3]);
        assert_eq!(join_step(&cluster, add(3)), JoinStep::Nothing);
        assert_eq!(join_step(&cluster, add(2)), JoinStep::Nothing);
        let promote_voter = MembershipChange::Promote { id: MemberId(2) };
        assert_eq!(join_step(&cluster, promote_voter), JoinStep::Nothing);
        let remove_gone = MembershipChange::Remove { id: MemberId(9) };
        assert_eq!(join_step(&cluster, remove_gone), JoinStep::Nothing);
    }

    #[test]
    fn new_members_are_added_and_learners_promoted() {
        let cluster = view(&[1, 2], &[3]);
        assert_eq!(join_step(&cluster, add(4)), JoinStep::Change(add(4)));
        let promote = MembershipChange::Promote { id: MemberId(3) };
        assert_eq!(
            join_step(&cluster, promote.clone()),
            JoinStep::Change(promote)
        );
        let remove = MembershipChange::Remove { id: MemberId(2) };
        assert_eq!(
            join_step(&cluster, remove.clone()),
            JoinStep::Change(remove)
        );
    }

    #[test]
    fn promoting_a_stranger_is_refused() {
        let step = join_step(
            &view(&[1], &[]),
            MembershipChange::Promote { id: MemberId(5) },
        );
        assert!(matches!(step, JoinStep::Refuse(reason) if reason.contains("member 5")));
    }

    #[test]
    fn caught_up_allows_a_small_lag_only() {
        assert!(!caught_up(None, 0));
        assert!(caught_up(Some(0), PROMOTE_LAG_MAX));
        assert!(!caught_up(Some(0), PROMOTE_LAG_MAX + 1));
        assert!(caught_up(Some(500), 400));
    }
}
