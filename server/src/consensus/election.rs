//! Elections, driven by Coord rather than by openraft's own timer: Raft's pre-vote, a
//! leader-side quorum check, and the election timer itself.
//!
//! openraft 0.9 has neither pre-vote nor check-quorum. Without them a member that was cut off
//! or paused starts elections at ever higher terms; when it returns, the leader sees the
//! higher term in a reply and steps down, and writes stop for a whole election. openraft's
//! own remedy, a leader lease equal to `election_timeout_max` added to every follower's
//! election timeout, makes every failover wait two election timeouts instead of one.
//!
//! So openraft's timer is off (`enable_elect = false`) and its lease is as short as openraft
//! allows (one and a half heartbeats). Every member runs `run_elections`:
//!
//! ```text
//!  every tick (a quarter of a heartbeat):
//!    leader, learner, or heard from a leader within its timeout (random in [E, 1.25 E))? ─► wait
//!      (unless, after a random 2 to 4 heartbeats, the last leader's peer port refuses
//!       connections: its process is gone; see `gone.rs`)
//!    ask every other voter: PreVote { my last log id }
//!      a voter grants when it is not the leader, has heard from no leader for E - heartbeat,
//!      and the sender's log is at least as up to date as its own
//!    granted by a majority of every voter set (joint configurations have two) ─► elect now
//!    otherwise try again after half to one election timeout
//! ```
//!
//! Invariant: a member starts an election (raising its term) only after a majority of voters
//! said they have not heard from a leader for about an election timeout, or for two heartbeats
//! while their own connections to the leader's peer port are refused. A member that returns
//! from isolation or a pause therefore finds the leader's followers refusing, never raises its
//! term, and rejoins as a follower; the leader keeps its term.
//!
//! "Heard from a leader" is openraft's own vote clock (`vote_last_modified`): it moves on every
//! AppendEntries or snapshot chunk from the current leader and on every vote granted.
//!
//! Safety does not rest on any of this: Raft's vote (terms and the log comparison, checked by
//! openraft) still decides who leads. Pre-vote only decides when to ask.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::gone::{self, KnownLeader};
use super::ids::MemberId;
use super::peer_client::{PeerClients, PeerMethod};
use super::state_machine::CoordRaft;
use super::types::LogId;
use super::wire::MessageKind;

/// A candidate's question to a voter (Raft's pre-vote): would you vote for me now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVote {
    pub candidate: MemberId,
    /// The candidate's last log id as (term, index); `None` for an empty log.
    pub last_log: Option<(u64, u64)>,
}

/// A voter's answer to a `PreVote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteReply {
    pub granted: bool,
    /// The candidate is not in the voter's latest membership: it was removed. A removed
    /// follower seldom learns this from its own log (the leader stops replicating to it before
    /// the final configuration entry), so this is how it finds out.
    pub removed: bool,
}

/// What a voter knows when it answers a pre-vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterView {
    /// This member leads (and so has heard from itself).
    pub leading: bool,
    /// Time since it last heard from a leader or granted a vote; `None`: never.
    pub silence: Option<Duration>,
    /// Its last log id as (term, index).
    pub last_log: Option<(u64, u64)>,
    /// Its own connection to the last leader's peer port was just refused (`gone.rs`); only
    /// looked at while the silence is between `gone_silence` and `silence_to_grant`.
    pub leader_refuses: bool,
}

/// The timing elections run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionTiming {
    pub heartbeat: Duration,
    /// The shortest time without a leader after which a member stands for election.
    pub election_timeout: Duration,
}

impl ElectionTiming {
    /// How long a voter must have heard from no leader before it grants a pre-vote: the
    /// election timeout less one heartbeat, so that a candidate whose last heartbeat came a
    /// little earlier than the voter's is not refused.
    pub fn silence_to_grant(&self) -> Duration {
        self.election_timeout.saturating_sub(self.heartbeat)
    }

    /// How long a voter must have heard from no leader before it grants a pre-vote because the
    /// leader's port refuses connections (`gone.rs`): two heartbeats, more than openraft's
    /// leader lease of one and a half.
    pub fn gone_silence(&self) -> Duration {
        self.heartbeat * 2
    }

    /// Whether a voter with this `silence` would ask whether the leader is gone before answering.
    pub fn asks_if_gone(&self, silence: Option<Duration>) -> bool {
        silence.is_some_and(|silence| {
            silence >= self.gone_silence() && silence < self.silence_to_grant()
        })
    }

    /// A candidate's wait before it checks whether the leader is gone: random in [2, 4)
    /// heartbeats, so that two followers seldom stand at once.
    fn gone_timeout(&self) -> Duration {
        self.gone_silence() + self.gone_silence().mul_f64(random_fraction())
    }

    /// A candidate's timeout: random in [E, 1.25 E), so that two followers seldom stand at
    /// once. Two collide only when the second asks before the first's vote request reached it
    /// (a few milliseconds), and a voter that heard from a winner meanwhile drops its stale
    /// pre-vote (`heard_since`), so a quarter of E is spread enough.
    fn candidate_timeout(&self) -> Duration {
        self.election_timeout + self.election_timeout.mul_f64(random_fraction() / 4.0)
    }

    /// The pause after a pre-vote that was refused: random in [E/2, E).
    fn retry_pause(&self) -> Duration {
        self.election_timeout.mul_f64(0.5 + random_fraction() / 2.0)
    }

    fn tick(&self) -> Duration {
        (self.heartbeat / 4).clamp(Duration::from_millis(5), Duration::from_millis(50))
    }
}

/// A number in [0, 1) that differs between calls and between processes (std's randomly keyed
/// hasher; timers need spread, not cryptographic quality).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a voter in `voter`'s position grants `request`.
pub fn grants(voter: VoterView, request: &PreVote, timing: &ElectionTiming) -> bool {
    let quiet = voter.silence.is_none_or(|silence| {
        silence >= timing.silence_to_grant()
            || (voter.leader_refuses && silence >= timing.gone_silence())
    });
    !voter.leading && quiet && request.last_log >= voter.last_log
}

/// Whether `granted` (the candidate included) is a majority of every voter set in `configs`.
pub fn is_majority(configs: &[BTreeSet<u64>], granted: &BTreeSet<u64>) -> bool {
    configs.iter().all(|voters| {
        let count = voters.intersection(granted).count();
        count * 2 > voters.len()
    })
}

/// The last log id this member holds, kept by the log storage adapter (openraft does not
/// expose its own).
#[derive(Debug, Default)]
pub struct LastLogId(Mutex<Option<LogId>>);

impl LastLogId {
    pub fn set(&self, log_id: Option<LogId>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = log_id;
    }

    pub fn get(&self) -> Option<(u64, u64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|log_id| (log_id.leader_id.term, log_id.index))
    }
}

/// When each peer last acknowledged this member's AppendEntries (as leader), for the
/// leader-side quorum check: a leader that a quorum stopped answering says so instead of
/// taking writes that cannot commit.
///
/// Also counts the `AppendStream`s this member gave up on, silent too long (see `network.rs`).
#[derive(Debug, Default)]
pub struct AckClock {
    answers: Mutex<BTreeMap<u64, Instant>>,
    streams_given_up: AtomicU64,
}

impl AckClock {
    pub fn record(&self, peer: u64) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, Instant::now());
    }

    /// A follower's `AppendStream` was given up: nothing came back for its whole patience.
    pub fn stream_given_up(&self) {
        self.streams_given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// How many `AppendStream`s this member gave up on since it started.
    pub fn streams_given_up(&self) -> u64 {
        self.streams_given_up.load(Ordering::Relaxed)
    }

    /// Whether `peer` answered within `within`.
    pub fn answered_within(&self, peer: u64, within: Duration) -> bool {
        let acks = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        acks.get(&peer)
            .is_some_and(|at| Instant::now().saturating_duration_since(*at) <= within)
    }

    /// Whether a majority of every voter set in `configs` (`me` counts as always current)
    /// acknowledged within `within`.
    pub fn quorum_within(&self, me: u64, configs: &[BTreeSet<u64>], within: Duration) -> bool {
        let acks = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let fresh: BTreeSet<u64> = configs
            .iter()
            .flatten()
            .copied()
            .filter(|id| {
                *id == me
                    || acks
                        .get(id)
                        .is_some_and(|at| now.saturating_duration_since(*at) <= within)
            })
            .collect();
        is_majority(configs, &fresh)
    }
}

/// What the election loop reads from openraft at each tick.
struct Position {
    state: ServerState,
    silence: Option<Duration>,
    configs: Vec<BTreeSet<u64>>,
    /// The established leader and its peer address, when there is one.
    leader: Option<(u64, String)>,
}

/// This member's view for answering a pre-vote (`None` once Raft stopped).
pub async fn voter_view(raft: &CoordRaft, last_log: &LastLogId) -> Option<VoterView> {
    let position = position(raft).await?;
    Some(VoterView {
        leading: position.state == ServerState::Leader,
        silence: position.silence,
        last_log: last_log.get(),
        leader_refuses: false,
    })
}

async fn position(raft: &CoordRaft) -> Option<Position> {
    raft.with_raft_state(|state| {
        // openraft's clock, which its vote times are read on.
        let now = <openraft::TokioInstant as openraft::Instant>::now();
        Position {
            state: state.server_state,
            silence: state
                .vote_last_modified()
                .map(|at| openraft::Instant::saturating_duration_since(&now, at)),
            configs: state
                .membership_state
                .effective()
                .membership()
                .get_joint_config()
                .clone(),
            leader: Some(state.vote_ref())
                .filter(|vote| vote.is_committed())
                .map(|vote| vote.leader_id.node_id)
                .and_then(|id| {
                    let membership = state.membership_state.effective().membership();
                    membership.get_node(&id).map(|node| (id, node.addr.clone()))
                }),
        }
    })
    .await
    .ok()
}

/// Everything the election loop needs.
pub struct Elector {
    pub raft: CoordRaft,
    pub me: MemberId,
    pub timing: ElectionTiming,
    pub peers: Arc<PeerClients>,
    pub last_log: Arc<LastLogId>,
    /// Set when a majority of the voters this member knows say it is no longer a member.
    pub removed: Arc<tokio::sync::watch::Sender<bool>>,
    /// The last leader this member knew, kept up to date here (`gone.rs`).
    pub known_leader: Arc<KnownLeader>,
    /// The local address connections to the leader's port are made from.
    pub source_address: Option<IpAddr>,
}

/// Why a member asks for a pre-vote.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// No leader heard from for a candidate timeout.
    Silence,
    /// The last leader's peer port refuses connections (`gone.rs`).
    LeaderGone(u64),
}

/// What a pre-vote round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Elect,
    Refused,
    /// A majority of every voter set said this member is not in their membership.
    Removed,
}

/// The verdict of a pre-vote round from the voters that granted and those that said the
/// candidate was removed (the candidate itself counts as granting).
fn verdict(configs: &[BTreeSet<u64>], granted: &BTreeSet<u64>, removed: &BTreeSet<u64>) -> Verdict {
    if is_majority(configs, granted) {
        Verdict::Elect
    } else if !removed.is_empty() && is_majority_without(configs, removed, granted) {
        Verdict::Removed
    } else {
        Verdict::Refused
    }
}

/// Whether `saying` is a majority of every voter set once the `candidate_side` members
/// (the candidate among them) are left out of the count of those who could disagree.
fn is_majority_without(
    configs: &[BTreeSet<u64>],
    saying: &BTreeSet<u64>,
    candidate_side: &BTreeSet<u64>,
) -> bool {
    configs.iter().all(|voters| {
        let others: BTreeSet<u64> = voters.difference(candidate_side).copied().collect();
        !others.is_empty() && others.intersection(saying).count() * 2 > others.len()
    })
}

impl Elector {
    /// Runs until Raft stops: stands for election when no leader was heard for a candidate
    /// timeout, or for a few heartbeats with the leader's port refusing connections, and a
    /// majority agrees in a pre-vote.
    pub async fn run(self) {
        let mut timeout = self.timing.candidate_timeout();
        let mut gone_timeout = self.timing.gone_timeout();
        let mut not_before = Instant::now();
        loop {
            tokio::time::sleep(self.timing.tick()).await;
            // Anything heard after this instant makes what is decided from `position` stale.
            let looked_at = Instant::now();
            let Some(position) = position(&self.raft).await else {
                return;
            };
            if let Some(leader) = position.leader.clone().filter(|(id, _)| *id != self.me.0) {
                self.known_leader.set(leader);
            }
            let voter = position.configs.iter().any(|set| set.contains(&self.me.0));
            let early = position
                .silence
                .is_some_and(|silence| silence < gone_timeout);
            if position.state == ServerState::Leader || !voter || early {
                continue;
            }
            if Instant::now() < not_before {
                continue;
            }
            let standing = match position.silence.is_some_and(|silence| silence < timeout) {
                false => Standing::Silence,
                true => match self.leader_gone().await {
                    Some(leader) => Standing::LeaderGone(leader),
                    None => {
                        not_before = Instant::now() + self.timing.heartbeat;
                        continue;
                    }
                },
            };
            let mut verdict = self.pre_vote(&position.configs).await;
            if verdict == Verdict::Elect && self.heard_since(looked_at).await {
                // Another member won (or a leader spoke) since this member looked, while the
                // voters answered: the grants are stale.
                verdict = Verdict::Refused;
            }
            match verdict {
                Verdict::Elect => {
                    match &standing {
                        Standing::Silence => tracing::info!(
                            silence = ?position.silence,
                            "no leader heard from; a majority agreed in a pre-vote: starting an election"
                        ),
                        Standing::LeaderGone(leader) => tracing::info!(
                            silence = ?position.silence,
                            leader,
                            "the leader's peer port refuses connections; a majority agreed in a \
                             pre-vote: starting an election"
                        ),
                    }
                    if self.raft.trigger().elect(false).await.is_err() {
                        return;
                    }
                    timeout = self.timing.candidate_timeout();
                    gone_timeout = self.timing.gone_timeout();
                }
                Verdict::Refused => {
                    not_before = Instant::now()
                        + match standing {
                            Standing::Silence => self.timing.retry_pause(),
                            Standing::LeaderGone(_) => self.timing.heartbeat,
                        }
                }
                Verdict::Removed => {
                    tracing::warn!(
                        "the other members say this member was removed from the cluster"
                    );
                    self.removed.send_replace(true);
                    not_before = Instant::now() + self.timing.retry_pause();
                }
            }
        }
    }

    /// Whether this member heard from a leader, or granted a vote, since `since`.
    async fn heard_since(&self, since: Instant) -> bool {
        position(&self.raft).await.is_some_and(|position| {
            position.state == ServerState::Leader
                || position
                    .silence
                    .is_some_and(|silence| silence < since.elapsed())
        })
    }

    /// The last known leader's id when its peer port refuses connections.
    async fn leader_gone(&self) -> Option<u64> {
        let Some((id, address)) = self.known_leader.get() else {
            tracing::debug!("no leader known to check");
            return None;
        };
        let refused = gone::refuses(&address, self.source_address, self.timing.heartbeat).await;
        tracing::debug!(leader = id, %address, refused, "checked the leader's peer port");
        refused.then_some(id)
    }

    /// Asks every other voter in parallel.
    async fn pre_vote(&self, configs: &[BTreeSet<u64>]) -> Verdict {
        let request = PreVote {
            candidate: self.me,
            last_log: self.last_log.get(),
        };
        let addresses = self.addresses(configs).await;
        let asks = addresses.into_iter().map(|(id, address)| {
            let request = &request;
            async move {
                let reply: Result<PreVoteReply, _> = self
                    .peers
                    .call(
                        &address,
                        PeerMethod::PreVote,
                        MessageKind::PreVote,
                        request,
                        self.timing.election_timeout / 2,
                    )
                    .await;
                (id, reply.ok())
            }
        });
        // Decided as soon as a majority granted: a voter that hangs (a paused leader) would
        // otherwise hold the round for its whole timeout, while another member may win.
        let mut replies: futures::stream::FuturesUnordered<_> = asks.collect();
        let mut granted = BTreeSet::from([self.me.0]);
        let mut removed = BTreeSet::new();
        while !is_majority(configs, &granted) {
            let Some((id, reply)) = replies.next().await else {
                break;
            };
            match reply {
                Some(PreVoteReply { granted: true, .. }) => {
                    granted.insert(id);
                }
                Some(PreVoteReply { removed: true, .. }) => {
                    removed.insert(id);
                }
                _ => {}
            }
        }
        verdict(configs, &granted, &removed)
    }

    /// The peer addresses of the other voters.
    async fn addresses(&self, configs: &[BTreeSet<u64>]) -> Vec<(u64, String)> {
        let voters: BTreeSet<u64> = configs.iter().flatten().copied().collect();
        let me = self.me.0;
        self.raft
            .with_raft_state(move |state| {
                let membership = state.membership_state.effective().membership();
                voters
                    .into_iter()
                    .filter(|id| *id != me)
                    .filter_map(|id| membership.get_node(&id).map(|node| (id, node.addr.clone())))
                    .collect()
            })
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> ElectionTiming {
        ElectionTiming {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
        }
    }

    fn request(last_log: Option<(u64, u64)>) -> PreVote {
        PreVote {
            candidate: MemberId(2),
            last_log,
        }
    }

    fn voter(leading: bool, silence_ms: Option<u64>, last_log: Option<(u64, u64)>) -> VoterView {
        VoterView {
            leading,
            silence: silence_ms.map(Duration::from_millis),
            last_log,
            leader_refuses: false,
        }
    }

    #[test]
    fn a_voter_that_hears_a_leader_refuses() {
        let view = voter(false, Some(200), Some((3, 10)));
        assert!(!grants(view, &request(Some((3, 10))), &timing()));
    }

    #[test]
    fn a_voter_grants_early_only_when_the_leader_refuses_connections() {
        let gone = VoterView {
            leader_refuses: true,
            ..voter(false, Some(250), Some((3, 10)))
        };
        assert!(grants(gone, &request(Some((3, 10))), &timing()));
        // Still behind the candidate's log, or heard from a leader within two heartbeats.
        assert!(!grants(gone, &request(Some((3, 9))), &timing()));
        let lately = VoterView {
            silence: Some(Duration::from_millis(150)),
            ..gone
        };
        assert!(!grants(lately, &request(Some((3, 10))), &timing()));
        // The same silence without a refused connection waits for the election timeout.
        let slow = voter(false, Some(250), Some((3, 10)));
        assert!(!grants(slow, &request(Some((3, 10))), &timing()));
        let timing = timing();
        assert!(!timing.asks_if_gone(Some(Duration::from_millis(150))));
        assert!(timing.asks_if_gone(Some(Duration::from_millis(250))));
        assert!(!timing.asks_if_gone(Some(Duration::from_millis(900))));
        assert!(!timing.asks_if_gone(None));
    }

    #[test]
    fn a_leader_refuses() {
        let view = voter(true, Some(5000), Some((3, 10)));
        assert!(!grants(view, &request(Some((4, 10))), &timing()));
    }

    #[test]
    fn a_quiet_voter_grants_an_up_to_date_candidate() {
        let view = voter(false, Some(900), Some((3, 10)));
        assert!(grants(view, &request(Some((3, 10))), &timing()));
        assert!(grants(view, &request(Some((4, 2))), &timing()));
        let never_heard = voter(false, None, None);
        assert!(grants(never_heard, &request(None), &timing()));
    }

    #[test]
    fn a_quiet_voter_refuses_a_candidate_behind_it() {
        let view = voter(false, Some(5000), Some((3, 10)));
        assert!(!grants(view, &request(Some((3, 9))), &timing()));
        assert!(!grants(view, &request(Some((2, 50))), &timing()));
        assert!(!grants(view, &request(None), &timing()));
    }

    #[test]
    fn majorities_count_every_voter_set() {
        let three: BTreeSet<u64> = [1, 2, 3].into();
        let five: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        assert!(is_majority(std::slice::from_ref(&three), &[1, 2].into()));
        assert!(!is_majority(std::slice::from_ref(&three), &[1].into()));
        assert!(!is_majority(std::slice::from_ref(&three), &[1, 9].into()));
        assert!(!is_majority(&[three.clone(), five.clone()], &[1, 2].into()));
        assert!(is_majority(&[three, five], &[1, 2, 4].into()));
        assert!(is_majority(&[[7].into()], &[7].into()));
    }

    #[test]
    fn a_majority_saying_removed_means_removed() {
        let three: BTreeSet<u64> = [1, 2, 3].into();
        let me: BTreeSet<u64> = [1].into();
        let configs = [three];
        assert_eq!(
            verdict(&configs, &[1, 2].into(), &[].into()),
            Verdict::Elect
        );
        assert_eq!(verdict(&configs, &me, &[2, 3].into()), Verdict::Removed);
        // One of two others is not a majority of them.
        assert_eq!(verdict(&configs, &me, &[2].into()), Verdict::Refused);
        assert_eq!(verdict(&configs, &me, &[].into()), Verdict::Refused);
        // Alone in its own configuration, a member is never told it was removed.
        assert_eq!(verdict(&[[1].into()], &me, &[].into()), Verdict::Elect);
    }

    #[test]
    fn the_quorum_clock_counts_fresh_acks_only() {
        let clock = AckClock::default();
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        assert!(!clock.quorum_within(1, std::slice::from_ref(&voters), Duration::from_secs(1)));
        clock.record(2);
        assert!(clock.quorum_within(1, std::slice::from_ref(&voters), Duration::from_secs(1)));
        assert!(clock.quorum_within(7, &[[7].into()], Duration::ZERO));
    }

    #[test]
    fn candidate_timeouts_stay_in_range() {
        let timing = timing();
        for _ in 0..1000 {
            let timeout = timing.candidate_timeout();
            assert!(timeout >= timing.election_timeout);
            assert!(timeout < timing.election_timeout.mul_f64(1.25));
            let gone = timing.gone_timeout();
            assert!(gone >= timing.heartbeat * 2 && gone < timing.heartbeat * 4);
            let pause = timing.retry_pause();
            assert!(pause >= timing.election_timeout / 2 && pause < timing.election_timeout);
        }
    }
}
