//! An attempt on a member that stopped answering (a paused process, a hung host) while the rest
//! of the cluster moved on.
//!
//! An attempt sent to a member that hangs would wait out its whole budget (a write's is a
//! quarter of the request timeout, several seconds), though the other members elect a new
//! leader within about an election timeout. So a retryable attempt (a read, or a write with a
//! write id) that has not answered within `SUSPECT_AFTER` asks the other endpoints for their
//! status, every `POLL_EVERY`. When one of them says it leads, with a quorum behind it, and it is
//! not the target, the attempt is abandoned and the call goes on to that leader. An abandoned
//! write counts as possibly applied (`Timeout`); its retry carries the same write id, so the
//! cluster applies it once.
//!
//! A target that is merely slow is never abandoned: no other member claims to lead while it
//! does. Calls that cannot be retried safely are never hedged.

use std::time::Duration;

/// How long an attempt goes unanswered before the other members are asked.
pub(crate) const SUSPECT_AFTER: Duration = Duration::from_millis(500);
/// Between two rounds of questions, and the budget of each question.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);

/// One member's answer to a status question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The member that answered (its response header).
    pub(crate) member: u64,
    /// The leader it knows (0: none).
    pub(crate) leader: u64,
    /// It leads and a quorum acknowledged it within an election timeout.
    pub(crate) leader_has_quorum: bool,
}

/// The member to go to instead of `target` (the member the hung attempt went to, when known):
/// one that answered that it leads itself, with a quorum, and is not the target.
pub(crate) fn moved_on(target: Option<u64>, seen: &[Seen]) -> Option<u64> {
    seen.iter()
        .find(|seen| {
            seen.member != 0
                && seen.leader == seen.member
                && seen.leader_has_quorum
                && Some(seen.member) != target
        })
        .map(|seen| seen.member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(member: u64, leader: u64, leader_has_quorum: bool) -> Seen {
        Seen {
            member,
            leader,
            leader_has_quorum,
        }
    }

    #[test]
    fn only_a_member_that_leads_with_a_quorum_draws_the_call_away() {
        // The others still follow the target, or know no leader: wait for the target.
        assert_eq!(
            moved_on(Some(1), &[seen(2, 1, false), seen(3, 0, false)]),
            None
        );
        // A member that names another leader is hearsay; the leader must say so itself.
        assert_eq!(moved_on(Some(1), &[seen(2, 3, false)]), None);
        // A deposed leader that lost its quorum does not count.
        assert_eq!(moved_on(Some(1), &[seen(3, 3, false)]), None);
        assert_eq!(
            moved_on(Some(1), &[seen(2, 3, false), seen(3, 3, true)]),
            Some(3)
        );
        // The target itself leading is no reason to leave it.
        assert_eq!(moved_on(Some(3), &[seen(3, 3, true)]), None);
        // A target whose member id is not known yet.
        assert_eq!(moved_on(None, &[seen(2, 2, true)]), Some(2));
        assert_eq!(moved_on(None, &[seen(0, 0, true)]), None);
        assert_eq!(moved_on(Some(1), &[]), None);
    }
}
