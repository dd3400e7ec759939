//! `SessionDeadlines`: when each session would expire by what this member has applied, on its
//! own monotonic clock: the apply time of the session's open or latest checkpoint plus the time
//! it recorded. Not replicated. A new leader builds its lease table from it, so the time between
//! a checkpoint and a takeover counts against a dead session instead of being granted again.
//!
//! It is fed the `SessionChange`s that `Namespace::apply` reports, while the replica's write
//! lock is held; readers take the replica's read lock first, so a reader sees the sessions and
//! their deadlines as of one applied revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::fsm::{SessionChange, SessionId, SessionRecord};

#[derive(Debug, Default)]
pub struct SessionDeadlines {
    deadlines: Mutex<HashMap<SessionId, Instant>>,
}

impl SessionDeadlines {
    fn deadlines(&self) -> MutexGuard<'_, HashMap<SessionId, Instant>> {
        // Every update is a single insert or remove: a panic elsewhere leaves it consistent.
        self.deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what one applied batch did to the sessions, applied at `at`.
    pub fn record(&self, changes: &[SessionChange], at: Instant) {
        let mut deadlines = self.deadlines();
        for change in changes {
            match *change {
                SessionChange::Opened { session, ttl_ms } => {
                    deadlines.insert(session, at + Duration::from_millis(ttl_ms));
                }
                SessionChange::Renewed {
                    session,
                    remaining_ms,
                } => {
                    deadlines.insert(session, at + Duration::from_millis(remaining_ms));
                }
                SessionChange::Closed { session } => {
                    deadlines.remove(&session);
                }
            }
        }
    }

    /// Starts afresh from a restored replica's sessions: each gets its recorded remainder from
    /// `at` (after a restart replay cannot know the real age, so it errs on keeping sessions).
    pub fn reset(&self, sessions: &BTreeMap<SessionId, SessionRecord>, at: Instant) {
        let mut deadlines = self.deadlines();
        deadlines.clear();
        deadlines.extend(
            sessions.iter().map(|(session, record)| {
                (*session, at + Duration::from_millis(record.remaining_ms))
            }),
        );
    }

    /// Runs `read` on the deadlines.
    pub fn read<T>(&self, read: impl FnOnce(&HashMap<SessionId, Instant>) -> T) -> T {
        read(&self.deadlines())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_checkpoints_set_deadlines_from_their_apply_time_and_closes_drop_them() {
        let deadlines = SessionDeadlines::default();
        let start = Instant::now();
        let (one, two) = (SessionId(1), SessionId(2));
        deadlines.record(
            &[
                SessionChange::Opened {
                    session: one,
                    ttl_ms: 5_000,
                },
                SessionChange::Opened {
                    session: two,
                    ttl_ms: 5_000,
                },
            ],
            start,
        );
        let later = start + Duration::from_secs(2);
        deadlines.record(
            &[
                SessionChange::Renewed {
                    session: one,
                    remaining_ms: 1_000,
                },
                SessionChange::Closed { session: two },
            ],
            later,
        );
        deadlines.read(|map| {
            assert_eq!(map.get(&one), Some(&(later + Duration::from_secs(1))));
            assert!(!map.contains_key(&two));
        });
    }
}
