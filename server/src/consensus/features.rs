//! `PeerFeatures`: which log commands a member applies and which leader work it takes,
//! exchanged over `Peer.Features`; and `FeatureBook`, each member's record of what the others
//! answered. It decides whether the leader may write batch entries, and whether a follower may
//! forward client writes to the leader in batches.
//!
//! Invariants:
//! - the leader writes a `Command::Batch` only while every member of the latest membership has
//!   said it applies them. A member that has not answered yet, or that answered `UNIMPLEMENTED`
//!   (a release before batches), keeps the leader on plain entries, one write each, which every
//!   release applies;
//! - a follower sends a `MessageKind::WriteBatch` only to a leader that said it takes them;
//!   until then each forwarded write is a call of its own, which every release takes.
//!
//! A call that fails in transit changes nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::ids::MemberId;

/// The log commands of the first release, before `Command::Batch`.
pub const COMMAND_SET_PLAIN: u32 = 1;
/// Adds `Command::Batch`.
pub const COMMAND_SET_BATCHES: u32 = 2;
/// Adds `MessageKind::WriteBatch`: forwarded client writes, several to a `Peer.Forward` call.
/// The log commands are those of `COMMAND_SET_BATCHES`.
pub const COMMAND_SET_FORWARD_BATCHES: u32 = 3;
/// The newest set this build applies and takes.
pub const COMMAND_SET: u32 = COMMAND_SET_FORWARD_BATCHES;

/// A member's answer to `Peer.Features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFeatures {
    /// The newest set of log commands the member applies and peer calls it takes; each set
    /// holds all of the sets before it.
    pub command_set: u32,
}

impl PeerFeatures {
    pub fn this_build() -> PeerFeatures {
        PeerFeatures {
            command_set: COMMAND_SET,
        }
    }
}

/// What each other member last said it applies.
#[derive(Debug, Default)]
pub struct FeatureBook {
    command_sets: Mutex<BTreeMap<MemberId, u32>>,
}

impl FeatureBook {
    /// Records `member`'s answer.
    pub fn heard(&self, member: MemberId, features: PeerFeatures) {
        self.book().insert(member, features.command_set);
    }

    /// Records that `member` has no `Peer.Features`: it applies the first release's commands.
    pub fn heard_unimplemented(&self, member: MemberId) {
        self.book().insert(member, COMMAND_SET_PLAIN);
    }

    /// Whether every one of `members` (this member aside) said it applies batches.
    pub fn all_apply_batches(
        &self,
        me: MemberId,
        members: impl IntoIterator<Item = MemberId>,
    ) -> bool {
        let book = self.book();
        members
            .into_iter()
            .filter(|member| *member != me)
            .all(|member| {
                book.get(&member)
                    .is_some_and(|set| *set >= COMMAND_SET_BATCHES)
            })
    }

    /// Whether `member` said it takes forwarded writes in batches (`MessageKind::WriteBatch`).
    pub fn takes_write_batches(&self, member: MemberId) -> bool {
        self.book()
            .get(&member)
            .is_some_and(|set| *set >= COMMAND_SET_FORWARD_BATCHES)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BTreeMap<MemberId, u32>> {
        self.command_sets
            .lock()
            .expect("no code panics while holding the feature book")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_for_every_other_member_to_say_it_applies_them() {
        let book = FeatureBook::default();
        let me = MemberId(1);
        let members = [MemberId(1), MemberId(2), MemberId(3)];
        assert!(
            book.all_apply_batches(me, [me]),
            "a lone member decides for itself"
        );
        assert!(!book.all_apply_batches(me, members), "nobody answered yet");
        book.heard(MemberId(2), PeerFeatures::this_build());
        assert!(
            !book.all_apply_batches(me, members),
            "member 3 has not answered"
        );
        book.heard_unimplemented(MemberId(3));
        assert!(
            !book.all_apply_batches(me, members),
            "member 3 runs an older release"
        );
        book.heard(MemberId(3), PeerFeatures::this_build());
        assert!(book.all_apply_batches(me, members));
        book.heard(
            MemberId(2),
            PeerFeatures {
                command_set: COMMAND_SET_PLAIN,
            },
        );
        assert!(!book.all_apply_batches(me, members), "member 2 went back");
    }

    #[test]
    fn writes_are_forwarded_in_batches_only_to_a_member_that_said_it_takes_them() {
        let book = FeatureBook::default();
        let leader = MemberId(2);
        assert!(!book.takes_write_batches(leader), "it has not answered yet");
        book.heard_unimplemented(leader);
        assert!(!book.takes_write_batches(leader), "a first release");
        let batches_only = PeerFeatures {
            command_set: COMMAND_SET_BATCHES,
        };
        book.heard(leader, batches_only);
        assert!(
            !book.takes_write_batches(leader),
            "applies batch entries only"
        );
        assert!(book.all_apply_batches(MemberId(1), [MemberId(1), leader]));
        book.heard(leader, PeerFeatures::this_build());
        assert!(book.takes_write_batches(leader));
        assert!(
            book.all_apply_batches(MemberId(1), [MemberId(1), leader]),
            "the newer set holds batch entries too"
        );
        assert!(!book.takes_write_batches(MemberId(3)), "another member");
    }
}
