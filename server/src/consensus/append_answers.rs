//! Which answers of an `AppendStream` travel, and which requests a leader still expects an
//! answer to.
//!
//! openraft counts an answer by the log id it matched, not by the request it answers: an answer
//! that matched through `m` settles every request the leader sent whose entries end at or before
//! `m`. Most requests of a busy stream carry no entries, only a new commit index (one to each
//! follower after every commit), and their answer repeats the match the answer before it already
//! reported. A leader that asks for it (`APPEND_ANSWERS_METADATA_KEY` set to `NEWS_ONLY`) gets
//! only the answers that tell it something: `NewsFilter` on the follower drops an answer that
//! matched no further than one this stream already sent; `Unanswered` on the leader keeps, for
//! its timeout and pipeline depth, only the requests whose answer is still to come.
//!
//! Invariants:
//! - every answer a follower leaves out matched no further than an answer it sent before on the
//!   same stream, and refusals (a conflict, a higher vote) are always sent: the leader learns
//!   every match and every refusal it learned before, so what it counts towards a commit is
//!   unchanged (it only learns less often that a follower is still there; heartbeats say so);
//! - the leader forgets a request only once an answer matched through the request's last log id,
//!   so a request whose answer was left out is settled by the earlier answer that made it
//!   redundant, and a request whose answer never comes still times out;
//! - a member that does not know the metadata sends every answer, and the leader's ledger
//!   settles the repeated ones without harm: each side works with the other's older release.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;

use tokio::time::Instant;

use super::types::LogId;

/// The metadata of an `AppendStream` call by which the leader asks for news-only answers.
pub const APPEND_ANSWERS_METADATA_KEY: &str = "coord-append-answers";

/// Its value: leave out answers that repeat an earlier match.
pub const NEWS_ONLY: &str = "news-only";

/// The log id through which a request's answer will match when it succeeds: its last entry's,
/// or (without entries) the entry it follows.
pub fn matches_through(prev_log_id: Option<LogId>, last_entry: Option<LogId>) -> Option<LogId> {
    last_entry.or(prev_log_id)
}

/// A member's count of the `AppendStream` answers it sent and left out, as
/// `coord_peer_append_answers_total`.
#[derive(Debug, Default)]
pub struct AnswerCounts {
    pub sent: AtomicU64,
    pub left_out: AtomicU64,
}

/// The follower's side: which successful answers of one stream to send.
#[derive(Debug, Default)]
pub struct NewsFilter {
    /// The furthest match this stream has sent (`None`: nothing sent yet).
    sent: Option<Option<LogId>>,
}

impl NewsFilter {
    /// Whether a successful answer that matched through `matched` tells the leader anything
    /// new, noting it as sent if so.
    pub fn is_news(&mut self, matched: Option<LogId>) -> bool {
        if self.sent.is_some_and(|sent| matched <= sent) {
            return false;
        }
        self.sent = Some(matched);
        true
    }
}

/// The leader's side: the requests of one stream still waiting for an answer, oldest first.
#[derive(Debug, Default)]
pub struct Unanswered {
    /// Each request's `matches_through` and when it was sent.
    waiting: VecDeque<(Option<LogId>, Instant)>,
    /// The furthest match answered on this stream (`None`: no answer yet).
    answered: Option<Option<LogId>>,
}

impl Unanswered {
    /// A request that will match through `through` was sent at `at`. One that an answer already
    /// received covers gets no answer of its own from a follower sending news only; it is not
    /// waited for.
    pub fn sent(&mut self, through: Option<LogId>, at: Instant) {
        if self.answered.is_some_and(|answered| through <= answered) {
            return;
        }
        self.waiting.push_back((through, at));
    }

    /// A successful answer matched through `matched`: every request it covers is settled.
    pub fn matched(&mut self, matched: Option<LogId>) {
        while self
            .waiting
            .front()
            .is_some_and(|(through, _)| *through <= matched)
        {
            self.waiting.pop_front();
        }
        self.answered = self.answered.max(Some(matched));
    }

    /// When the oldest request still waiting was sent.
    pub fn oldest(&self) -> Option<Instant> {
        self.waiting.front().map(|(_, at)| *at)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::CommittedLeaderId;

    fn log(index: u64) -> Option<LogId> {
        Some(LogId::new(
            CommittedLeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        ))
    }

    /// The requests a leader sends in one stream under `coord-bench writes --clients 1`: each
    /// write's entries, then a commit-only request that repeats their match.
    fn sent_and_answered(requests: &[Option<LogId>]) -> (Vec<Option<LogId>>, Unanswered) {
        let mut filter = NewsFilter::default();
        let mut ledger = Unanswered::default();
        let start = Instant::now();
        let mut answers = Vec::new();
        for through in requests {
            ledger.sent(*through, start);
            if filter.is_news(*through) {
                answers.push(*through);
                ledger.matched(*through);
            }
        }
        (answers, ledger)
    }

    #[test]
    fn a_commit_only_request_gets_no_answer_and_is_not_waited_for() {
        let (answers, ledger) = sent_and_answered(&[log(5), log(5), log(6), log(6), log(8)]);
        assert_eq!(answers, [log(5), log(6), log(8)]);
        assert!(ledger.is_empty());
    }

    #[test]
    fn the_first_answer_of_a_stream_always_travels() {
        let mut filter = NewsFilter::default();
        assert!(filter.is_news(None));
        assert!(!filter.is_news(None));
        assert!(filter.is_news(log(1)));
        // A match behind one already sent is no news either.
        assert!(filter.is_news(log(3)));
        assert!(!filter.is_news(log(2)));
    }

    /// Requests pipelined ahead of their answers: a commit-only request sent before the answer
    /// that covers it arrives is settled by that answer, not waited for beyond it.
    #[test]
    fn an_answer_in_flight_settles_the_requests_it_makes_redundant() {
        let start = Instant::now();
        let mut ledger = Unanswered::default();
        ledger.sent(log(5), start);
        ledger.sent(log(5), start + std::time::Duration::from_millis(1));
        ledger.sent(log(7), start + std::time::Duration::from_millis(2));
        assert_eq!(ledger.len(), 3);
        ledger.matched(log(5));
        assert_eq!(ledger.len(), 1);
        assert_eq!(
            ledger.oldest(),
            Some(start + std::time::Duration::from_millis(2))
        );
        // Sent after the answer arrived: the follower will say nothing to it.
        ledger.sent(log(5), start + std::time::Duration::from_millis(3));
        assert_eq!(ledger.len(), 1);
        ledger.matched(log(7));
        assert!(ledger.is_empty());
    }

    /// A follower that answers every request (an older release): the repeated answers settle
    /// nothing more and leave the ledger consistent.
    #[test]
    fn a_follower_that_answers_everything_leaves_the_ledger_consistent() {
        let start = Instant::now();
        let mut ledger = Unanswered::default();
        for through in [log(5), log(5), log(6)] {
            ledger.sent(through, start);
        }
        for through in [log(5), log(5)] {
            ledger.matched(through);
        }
        assert_eq!(ledger.len(), 1);
        ledger.matched(log(6));
        assert!(ledger.is_empty());
    }

    /// A request whose answer never comes keeps the oldest sending time, so it times out.
    #[test]
    fn a_request_without_any_answer_stays_waited_for() {
        let start = Instant::now();
        let mut ledger = Unanswered::default();
        ledger.sent(log(5), start);
        ledger.sent(log(6), start + std::time::Duration::from_millis(1));
        assert_eq!(ledger.oldest(), Some(start));
        assert_eq!(ledger.len(), 2);
    }
}
