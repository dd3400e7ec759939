//! `Queue`: the acquisition engine behind `Mutex`, `RwLock`, `Semaphore` and `Election`:
//! enqueue an ephemeral sequential node, wait for the turn that a `Rule` defines, confirm,
//! and return a `Holding`, which the recipes above wrap in their handles. Also the pure grant
//! decision (`decide`), which listings and tests share, and the same rule as a member applies
//! it (`turn_rule`): the queue first asks a member to wait for the turn (`AwaitTurn`), and
//! lists and watches itself only when the member predates that call. The steps of one queued node
//! (`Queued`: enqueue, list, wait, hand over) are shared with `DoubleBarrier`, whose turn
//! comes by a count instead of a `Rule`.
//!
//! Layering: the queue builds on `directory` (listings in queue order), `pending` (the node's
//! drop guard) and `holding` (what it returns); it never names the handles built on it.
//!
//! Invariants:
//! - entries are ordered by their sequence suffix, which the parent assigns in commit order, so
//!   every node that precedes ours was created before ours and no new predecessor can appear;
//! - a waiter watches one node (its predecessor, or the last writer before a reader) from the
//!   revision after the listing that chose it, so a deletion between the listing and the watch
//!   is not missed; after any wake-up it lists again rather than assume its turn has come
//!   (the predecessor may have abandoned, and an earlier one may still be there);
//! - `acquire` returns a holding only after a check made after its last wait (the member's
//!   `AwaitTurn` answer, or a listing) showed its node with its token and granted the turn, and
//!   `confirm` then found the session safe; otherwise it leaves no node behind. That listing reflects at least the revision of the event that
//!   ended the wait (or of the create, before any wait), not necessarily the leader's latest:
//!   the nodes before ours only ever go away, so a later state could only grant more; and our
//!   own node cannot have expired unseen, since the session is checked afterwards (it cannot
//!   expire before `safe_until`) and the holding's monitor reports explicit deletions. A
//!   listing with no such revision to go by (after a compacted or failed watch) is
//!   linearizable.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::directory::{base_name, check_name, list_directory_at, Entry, Listing};
use super::hold_state::HoldState;
use super::holding::Holding;
use super::pending::PendingNode;
use super::record::NodeRecord;
use super::role::Role;
use super::wait::{
    check_session, persist, session_error, session_lost, wait_for_change, Attempted, Patience,
    Woken,
};
use crate::client::Client;
use crate::error::Error;
use crate::session::SessionView;
use crate::txn::{Compare, CompareOp, Op, Txn};
use crate::types::Consistency;
use crate::watch::{EventFilter, WatchOptions};

/// When a queued node's turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// When no node of its family precedes it (mutex, writer, candidate).
    Exclusive,
    /// When no `lock-` or `write-` node precedes it (reader).
    Shared,
    /// When fewer than this many nodes of its family precede it (semaphore).
    Permits(u64),
}

/// What a queued node should do after a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Granted,
    /// Wait for the entry at this index to go.
    WaitFor(usize),
    /// Wait for any change of the directory's children.
    WaitForChildren,
}

/// The decision for the entry at `own` in `entries` (in queue order).
pub(crate) fn decide(rule: Rule, entries: &[Entry], own: usize) -> Decision {
    let family = entries[own].role.family();
    let mut before = entries[..own]
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.role.family() == family);
    let blocker = match rule {
        Rule::Exclusive => before.next_back(),
        Rule::Shared => before.rfind(|(_, entry)| entry.role.excludes_readers()),
        Rule::Permits(permits) => {
            let preceding = u64::try_from(before.count()).unwrap_or(u64::MAX);
            return if preceding < permits {
                Decision::Granted
            } else {
                Decision::WaitForChildren
            };
        }
    };
    match blocker {
        Some((index, _)) => Decision::WaitFor(index),
        None => Decision::Granted,
    }
}

/// Which queued nodes block a turn in `AwaitTurn`, and how many may precede it: `decide`'s
/// rule as the member applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnRule {
    pub(crate) blocking_prefixes: Vec<String>,
    pub(crate) permits: u64,
}

/// The rule `AwaitTurn` applies for a `role` node queued by `rule`: the prefixes of the roles
/// `decide` would wait for, and the permits.
pub(crate) fn turn_rule(role: Role, rule: Rule) -> TurnRule {
    let family = role.family();
    let blocks = |other: Role| match rule {
        Rule::Exclusive | Rule::Permits(_) => other.family() == family,
        Rule::Shared => other.family() == family && other.excludes_readers(),
    };
    TurnRule {
        blocking_prefixes: Role::ALL
            .into_iter()
            .filter(|other| blocks(*other))
            .map(|other| other.prefix().to_owned())
            .collect(),
        permits: match rule {
            Rule::Permits(permits) => permits,
            Rule::Exclusive | Rule::Shared => 1,
        },
    }
}

/// How `Queued::await_turn` ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaited {
    /// The member checked the turn granted at `revision`; `waited`: not at the first check.
    Granted { revision: u64, waited: bool },
    /// Not granted at once, and the patience was `Try` (the node is still there).
    NotNow,
    /// The deadline passed (the node is then deleted; stop using the `Queued`).
    TimedOut,
    /// The member does not serve `AwaitTurn`.
    Unsupported,
}

/// The longest one `AwaitTurn` is asked to wait; a longer wait asks again.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// A node queued or held, as `Queue::acquire` hands it over.
pub(crate) struct Acquired {
    pub(crate) holding: Holding,
    /// The data the node holds now.
    pub(crate) record: NodeRecord,
}

/// One acquisition: a queue of `role` nodes in directory `name`, served by `rule`.
pub(crate) struct Queue<'a> {
    pub(crate) client: &'a Client,
    pub(crate) session: &'a SessionView,
    pub(crate) name: &'a str,
    pub(crate) role: Role,
    pub(crate) rule: Rule,
    pub(crate) payload: &'a [u8],
}

impl Queue<'_> {
    /// Enqueues, waits for the turn within `patience`, confirms, and returns the holding;
    /// `None` if the turn did not come in time (the node is then deleted).
    ///
    /// Cancel-safe: if the future is dropped, the node (even one whose create is still in
    /// doubt) is deleted by a spawned task.
    pub(crate) async fn acquire(&self, patience: Patience) -> Result<Option<Acquired>, Error> {
        let queued = Queued::enqueue(
            self.client,
            self.session,
            self.name,
            self.role,
            self.payload,
            patience,
        )
        .await?;
        let Some(mut queued) = queued else {
            return Ok(None);
        };
        match queued
            .await_turn(&turn_rule(self.role, self.rule), patience)
            .await?
        {
            Awaited::Granted { revision, waited } => {
                return queued.hand_over(revision, waited).await.map(Some)
            }
            Awaited::NotNow => {
                queued.abandon().await;
                return Ok(None);
            }
            Awaited::TimedOut => return Ok(None),
            // A member that predates `AwaitTurn`: list and watch.
            Awaited::Unsupported => {}
        }
        let mut waited = false;
        let seen_at = loop {
            let Some((listing, own)) = queued.list().await? else {
                return Ok(None);
            };
            // Only the event that can grant the turn wakes the waiter: a predecessor's data
            // changing (stamped when its own wait ends) is not one, so each hand-off wakes
            // exactly the next waiter.
            let (watched, kind) = match decide(self.rule, &listing.entries, own) {
                // This listing, made after the last wait, is the read that re-checks the node.
                Decision::Granted => break listing.revision,
                Decision::WaitFor(index) => {
                    (listing.entries[index].path.clone(), EventFilter::Deleted)
                }
                Decision::WaitForChildren => (self.name.to_owned(), EventFilter::ChildrenChanged),
            };
            if patience == Patience::Try {
                queued.abandon().await;
                return Ok(None);
            }
            let options = WatchOptions {
                path: watched,
                start_revision: listing.revision + 1,
                once: true,
                kinds: vec![kind],
                ..WatchOptions::default()
            };
            if !queued.wait(options).await? {
                return Ok(None);
            }
            waited = true;
        };
        queued.hand_over(seen_at, waited).await.map(Some)
    }
}

/// A node this attempt created in a recipe directory, from its create until it is handed over
/// as a `Holding`: the steps every queueing recipe shares (the queue's, and the double
/// barrier's, whose turn rule is a count and a marker).
///
/// ```text
///  enqueue ──► await_turn (the member waits) ──(granted)──► hand_over
///                 │ (deadline) ──► node deleted, None
///                 │ (member before AwaitTurn)
///                 ▼
///               list ──(turn not granted)──► wait ──(deadline)──► node deleted, None
///               ▲  │                          │
///               │  └──(granted)──► hand_over  │
///               └─────────(changed)───────────┘
///
///  hand_over: session safe? ──► disarm the drop guard ──► Holding (its monitor started)
///             └──► (granted after a wait) stamp the grant time, if still held a second later
/// ```
///
/// Its `PendingNode` deletes the node if the attempt ends any other way: an error, `abandon`,
/// a deadline, or the future being dropped.
pub(crate) struct Queued<'a> {
    client: &'a Client,
    session: &'a SessionView,
    directory: &'a str,
    deadline: Option<Instant>,
    pending: PendingNode,
    record: NodeRecord,
    /// The node's path, its last segment, and its create revision (the token).
    path: String,
    own_name: String,
    token: u64,
    /// The revision the next listing must reflect: the create's, then the event that ended
    /// the last wait (`None`: the latest, a linearizable listing).
    fresh_from: Option<u64>,
}

impl<'a> Queued<'a> {
    /// Checks the directory's name and the session, then creates an ephemeral sequential
    /// `role` node holding `payload` in `directory`; `None` if the deadline of `patience`
    /// passed first (the node, if any, is then deleted).
    pub(crate) async fn enqueue(
        client: &'a Client,
        session: &'a SessionView,
        directory: &'a str,
        role: Role,
        payload: &[u8],
        patience: Patience,
    ) -> Result<Option<Queued<'a>>, Error> {
        check_name(directory)?;
        check_session(session)?;
        let deadline = patience.deadline();
        let record = NodeRecord::new(client, payload.to_vec());
        let mut pending = PendingNode::new(client.clone(), session.clone());
        let Some(created) = pending.create(directory, role, &record, deadline).await? else {
            return Ok(None);
        };
        Ok(Some(Queued {
            client,
            session,
            directory,
            deadline,
            pending,
            record,
            own_name: base_name(&created.path).to_owned(),
            token: created.stat.create_revision,
            fresh_from: Some(created.stat.create_revision),
            path: created.path,
        }))
    }

    /// The instant at which the attempt gives up, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The error for a node that is gone: whatever it queued for is lost.
    fn lost(&self) -> Error {
        Error::LockLost {
            path: self.path.clone(),
            token: self.token,
        }
    }

    /// Lists the directory, retrying transient failures while the session is safe, and finds
    /// this node in it: the listing and the node's index. `None` at the deadline (the node is
    /// then deleted; stop using this value); `LockLost` if the node or the directory is gone.
    pub(crate) async fn list(&mut self) -> Result<Option<(Listing, usize)>, Error> {
        let consistency = self
            .fresh_from
            .map_or(Consistency::Linearizable, Consistency::MinRevision);
        let listed = persist(Some(self.session), self.deadline, || {
            list_directory_at(self.client, self.directory, consistency)
        })
        .await;
        let listing = match listed {
            Ok(Attempted::Done(listing)) => listing,
            Ok(Attempted::TimedOut) => {
                self.pending.remove().await;
                return Ok(None);
            }
            Err(Error::NoNode { .. }) => return Err(self.lost()),
            Err(error) => return Err(error),
        };
        match listing.position(&self.own_name, self.token) {
            Some(own) => Ok(Some((listing, own))),
            None => Err(self.lost()),
        }
    }

    /// Waits for the first event of the watch `options` describes (see `wait_for_change`):
    /// `true` when something may have changed, `false` at the deadline (the node is then
    /// deleted; stop using this value).
    pub(crate) async fn wait(&mut self, options: WatchOptions) -> Result<bool, Error> {
        match wait_for_change(self.client, Some(self.session), options, self.deadline).await? {
            Woken::Changed(revision) => {
                self.fresh_from = revision;
                Ok(true)
            }
            Woken::TimedOut => {
                self.pending.remove().await;
                Ok(false)
            }
        }
    }

    /// Waits on a member (`AwaitTurn`) until the turn `rule` defines comes, within the
    /// patience's deadline (at once for `Try`), retrying transient failures while the session is
    /// safe. Ends with an error when the session is lost, and with `LockLost` if the node goes.
    pub(crate) async fn await_turn(
        &mut self,
        rule: &TurnRule,
        patience: Patience,
    ) -> Result<Awaited, Error> {
        let mut request = coord_proto::v1::AwaitTurnRequest {
            directory: self.directory.to_owned(),
            name: self.own_name.clone(),
            token: self.token,
            blocking_prefixes: rule.blocking_prefixes.clone(),
            permits: rule.permits,
            ..Default::default()
        };
        let mut waited = false;
        loop {
            let wait = match patience {
                Patience::Try => Duration::ZERO,
                Patience::Forever => TURN_WAIT,
                Patience::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.pending.remove().await;
                        return Ok(Awaited::TimedOut);
                    }
                    left.min(TURN_WAIT)
                }
            };
            let consistency = self
                .fresh_from
                .map_or(Consistency::Linearizable, Consistency::MinRevision);
            request.read = Some(consistency.to_pb());
            let asked = tokio::select! {
                asked = persist(Some(self.session), self.deadline, || {
                    self.client.await_turn(&request, wait)
                }) => asked,
                reason = session_lost(self.session) => {
                    return Err(session_error(self.session, reason));
                }
            };
            let answer = match asked {
                Ok(Attempted::Done(Some(answer))) => answer,
                Ok(Attempted::Done(None)) => return Ok(Awaited::Unsupported),
                Ok(Attempted::TimedOut) => {
                    self.pending.remove().await;
                    return Ok(Awaited::TimedOut);
                }
                Err(Error::NoNode { .. }) => return Err(self.lost()),
                Err(error) => return Err(error),
            };
            if answer.granted {
                return Ok(Awaited::Granted {
                    revision: answer.revision,
                    waited: waited || answer.waited,
                });
            }
            if patience == Patience::Try {
                return Ok(Awaited::NotNow);
            }
            // Not yet, within this answer's wait: ask again, from what it saw.
            waited = true;
            self.fresh_from = Some(answer.revision);
        }
    }

    /// Gives up the turn: deletes the node now, or leaves it to the drop guard, which retries.
    pub(crate) async fn abandon(mut self) {
        self.pending.remove().await;
    }

    /// The hand-off, once a check made after the last wait (a listing, or a member's
    /// `AwaitTurn` answer, at revision `seen_at`) granted the turn: `confirm` the session, then disarm the drop guard and start holding, watched
    /// from the listing's revision on. A waiter that was granted (`restamp`) has the grant
    /// time written into its node later, if it still holds it then (see `stamp_later`).
    pub(crate) async fn hand_over(
        mut self,
        seen_at: u64,
        restamp: bool,
    ) -> Result<Acquired, Error> {
        let record = if restamp {
            self.record.restamped()
        } else {
            self.record.clone()
        };
        check_session(self.session)?;
        self.pending.disarm();
        let holding = Holding::start(
            self.client.clone(),
            self.session.clone(),
            self.directory.to_owned(),
            self.path,
            self.token,
            seen_at + 1,
        );
        if restamp {
            tokio::spawn(stamp_later(
                self.client.clone(),
                (holding.path().to_owned(), self.token),
                record.encode(),
                holding.watch_state(),
            ));
        }
        Ok(Acquired { holding, record })
    }
}

/// How long a granted waiter holds before its grant time is written into its node. Most holds
/// of a busy lock are shorter, and skipping their stamp spares the log one write per hand-off
/// (of three: the release, the stamp, the next node); a listing in a hold's first second shows
/// when the holder queued instead.
const STAMP_AFTER: Duration = Duration::from_secs(1);

/// Writes the grant time (`data`) into the node at `path` created at `token` once it has been
/// held for `STAMP_AFTER`, unless the holding ends first (`states`, the holding's published
/// state, closes when it is released or dropped, and turns `Lost`). The txn is fenced by the
/// token, so a node released or lost meanwhile is left alone, and applies only while the
/// node's data was never changed (version 0), so an election's value proclaimed meanwhile is
/// not overwritten with the campaign's. The stamp is for people reading listings ("held
/// since"); nothing waits for it, so it costs a hand-off no commit. A failure is left at that.
///
/// Why the hand-off needs no write of its own: the listing that granted the turn showed the
/// node with its token at a revision after the last wait, and the session, checked after that
/// listing, cannot expire before `safe_until`; so the node lasts until then unless someone
/// deletes it explicitly, which the holding's monitor reports.
async fn stamp_later(
    client: Client,
    (path, token): (String, u64),
    data: Vec<u8>,
    mut states: watch::Receiver<HoldState>,
) {
    let due = tokio::time::sleep(STAMP_AFTER);
    tokio::pin!(due);
    loop {
        tokio::select! {
            () = &mut due => break,
            changed = states.changed() => {
                let lost = matches!(*states.borrow_and_update(), HoldState::Lost(_));
                if changed.is_err() || lost {
                    return;
                }
            }
        }
    }
    let txn = Txn::new()
        .fence(&path, token)
        .when(Compare::version(&path, CompareOp::Equal, 0))
        .then(Op::set(&path, data, None));
    let _ = client.txn(txn).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Stat;

    fn listing(names: &[&str]) -> Listing {
        let children = names.iter().enumerate().map(|(index, name)| {
            let stat = Stat {
                create_revision: 100 + index as u64,
                ..Stat::default()
            };
            ((*name).to_owned(), stat)
        });
        Listing::from_children("/locks/db", (5, 5), children)
    }

    fn own(listing: &Listing, name: &str) -> usize {
        listing
            .entries
            .iter()
            .position(|entry| entry.name == name)
            .expect("the entry is listed")
    }

    fn waits_for<'a>(listing: &'a Listing, rule: Rule, name: &str) -> Option<&'a str> {
        match decide(rule, &listing.entries, own(listing, name)) {
            Decision::Granted => None,
            Decision::WaitFor(index) => Some(&listing.entries[index].name),
            Decision::WaitForChildren => Some("*"),
        }
    }

    /// What a member answers under `rule` (as `Namespace::turn` counts): granted when fewer
    /// than `permits` entries before `own` are named by one of its prefixes.
    fn member_grants(rule: &TurnRule, entries: &[Entry], own: usize) -> bool {
        let blockers = entries[..own]
            .iter()
            .filter(|entry| {
                rule.blocking_prefixes
                    .iter()
                    .any(|prefix| entry.name.starts_with(prefix.as_str()))
            })
            .count();
        (blockers as u64) < rule.permits
    }

    /// Every queue of up to four nodes of any roles, every node in it and every rule: the
    /// member's answer under `turn_rule` grants exactly when `decide` does.
    #[test]
    fn the_members_turn_rule_grants_exactly_what_decide_grants() {
        let rules = [
            Rule::Exclusive,
            Rule::Shared,
            Rule::Permits(1),
            Rule::Permits(2),
            Rule::Permits(3),
        ];
        let roles = Role::ALL.len();
        for length in 1..=4u32 {
            for code in 0..roles.pow(length) {
                let names: Vec<String> = (0..length)
                    .map(|place| {
                        let role = Role::ALL[code / roles.pow(place) % roles];
                        format!("{}{:010}", role.prefix(), place + 1)
                    })
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let listing = listing(&names);
                for (own, entry) in listing.entries.iter().enumerate() {
                    for rule in rules {
                        let decided = decide(rule, &listing.entries, own) == Decision::Granted;
                        let member = turn_rule(entry.role, rule);
                        assert_eq!(
                            member_grants(&member, &listing.entries, own),
                            decided,
                            "{names:?}, {} by {rule:?}",
                            entry.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_mutex_waiter_watches_only_its_immediate_predecessor() {
        let listing = listing(&["lock-0000000001", "lock-0000000002", "lock-0000000005"]);
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "lock-0000000001"),
            None
        );
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "lock-0000000002"),
            Some("lock-0000000001")
        );
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "lock-0000000005"),
            Some("lock-0000000002")
        );
    }

    #[test]
    fn readers_share_until_a_writer_and_wait_for_the_last_writer_before_them() {
        let listing = listing(&[
            "read-0000000001",
            "read-0000000002",
            "write-0000000003",
            "read-0000000004",
            "write-0000000005",
            "read-0000000006",
        ]);
        assert_eq!(waits_for(&listing, Rule::Shared, "read-0000000001"), None);
        assert_eq!(waits_for(&listing, Rule::Shared, "read-0000000002"), None);
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "write-0000000003"),
            Some("read-0000000002")
        );
        assert_eq!(
            waits_for(&listing, Rule::Shared, "read-0000000004"),
            Some("write-0000000003")
        );
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "write-0000000005"),
            Some("read-0000000004")
        );
        assert_eq!(
            waits_for(&listing, Rule::Shared, "read-0000000006"),
            Some("write-0000000005")
        );
    }

    #[test]
    fn a_mutex_in_the_same_directory_counts_as_a_writer() {
        let listing = listing(&["lock-0000000001", "read-0000000002", "write-0000000003"]);
        assert_eq!(
            waits_for(&listing, Rule::Shared, "read-0000000002"),
            Some("lock-0000000001")
        );
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "write-0000000003"),
            Some("read-0000000002")
        );
    }

    #[test]
    fn semaphore_holders_are_the_first_n_and_others_watch_the_directory() {
        let listing = listing(&[
            "permit-0000000001",
            "permit-0000000002",
            "permit-0000000003",
            "lock-0000000004",
        ]);
        let rule = Rule::Permits(2);
        assert_eq!(waits_for(&listing, rule, "permit-0000000001"), None);
        assert_eq!(waits_for(&listing, rule, "permit-0000000002"), None);
        assert_eq!(waits_for(&listing, rule, "permit-0000000003"), Some("*"));
        // Another family in the directory neither blocks nor is blocked.
        assert_eq!(
            waits_for(&listing, Rule::Exclusive, "lock-0000000004"),
            None
        );
    }
}
