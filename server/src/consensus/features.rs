//! `PeerFeatures`: which log commands a member applies, exchanged over `Peer.Features`; and
//! `FeatureBook`, the leader's record of what each member answered, which decides whether it
//! may write batch entries.
//!
//! Invariant: the leader writes a `Command::Batch` only while every member of the latest
//! membership has said it applies them. A member that has not answered yet, or that answered
//! `UNIMPLEMENTED` (a release before batches), keeps the leader on plain entries, one write
//! each, which every release applies. A call that fails in transit changes nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::ids::MemberId;

/// The log commands of the first release, before `Command::Batch`.
pub const COMMAND_SET_PLAIN: u32 = 1;
/// Adds `Command::Batch`.
pub const COMMAND_SET_BATCHES: u32 = 2;
/// The newest set this build applies.
pub const COMMAND_SET: u32 = COMMAND_SET_BATCHES;

/// A member's answer to `Peer.Features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFeatures {
    /// The newest set of log commands the member applies.
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
}
