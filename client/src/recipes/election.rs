//! `Election`: leader election with an etcd-like interface on a directory of ephemeral
//! sequential `candidate-` nodes, each holding its candidate's value; the lowest node leads.
//!
//! Invariants:
//! - `campaign` queues like a mutex (each candidate watches its predecessor only) and returns
//!   a `Leadership` only after the re-check of `recipes`;
//! - `proclaim` changes the value only through a txn fenced by the leader's token, so a
//!   deposed leader cannot overwrite its successor's value;
//! - `observe` emits leader changes in revision order, each distinct leader (path and value)
//!   once per change: it follows one recursive watch of the directory, applies every event to
//!   a local copy of the candidates, and lists again when the history it needs was compacted.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use super::directory::list_directory;
use super::held_node::{sealed, HeldNode};
use super::holding::Holding;
use super::queue::{Queue, Rule};
use super::record::{payload_of, NodeRecord};
use super::role::Role;
use super::wait::{transient, Backoff, Patience};
use crate::client::Client;
use crate::error::Error;
use crate::session::{Session, SessionView};
use crate::txn::{Op, Txn};
use crate::watch::{EventKind, WatchEvent, WatchOptions};

/// How often `Election::leader` lists again when the leader it found left before it read it.
const LEADER_READS_MAX: u32 = 16;
/// Leader changes buffered for an `observe` stream's reader.
const LEADER_CHANGES_BUFFERED: usize = 64;

/// A leader election named by a path such as `/elections/scheduler`.
///
/// Candidates queue in arrival order as ephemeral sequential nodes holding their values; the
/// first one leads, and each other watches only its predecessor. The leadership's fencing
/// token is its node's create revision. When a leader resigns, or its session ends, the next
/// candidate leads. Campaigning is cancel-safe: a dropped campaign withdraws its candidacy.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, Election, HeldNode};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let election = Election::new(&client, &session, "/elections/scheduler");
/// let mut leadership = election.campaign("10.0.0.7:9000").await?;
/// println!("leading with token {}", leadership.token());
/// leadership.proclaim("10.0.0.7:9001").await?;
/// tokio::select! {
///     state = leadership.suspended() => eprintln!("must stop leading: {state:?}"),
///     () = tokio::time::sleep(Duration::from_secs(60)) => leadership.resign().await?,
/// }
///
/// // Anyone can ask who leads, or follow the changes.
/// if let Some(leader) = Election::leader(&client, "/elections/scheduler").await? {
///     println!("{} leads", String::from_utf8_lossy(&leader.value));
/// }
/// let mut changes = Election::observe(&client, "/elections/scheduler");
/// while let Some(change) = changes.next().await {
///     match change? {
///         Some(leader) => println!("leader: {}", String::from_utf8_lossy(&leader.value)),
///         None => println!("no leader"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Election {
    client: Client,
    session: SessionView,
    name: String,
}

impl Election {
    /// An election named `name` (a path; not the root), in which `session` campaigns.
    pub fn new(client: &Client, session: &Session, name: impl Into<String>) -> Election {
        Election {
            client: client.clone(),
            session: session.view(),
            name: name.into(),
        }
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stands as a candidate with `value` (an address, an id) and waits until this candidate
    /// leads. Fails with [`Error::SessionExpired`] or [`Error::SessionUnsafe`] if the session
    /// is lost first, or [`Error::LockLost`] if the candidacy was deleted.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership, Error> {
        let leadership = self
            .campaign_within(value.into(), Patience::Forever)
            .await?;
        Ok(leadership.expect("waiting without a deadline ends in success or an error"))
    }

    /// Like [`Election::campaign`], giving up after `timeout`: `None` (and the candidacy
    /// withdrawn) if this candidate did not lead by then.
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Option<Leadership>, Error> {
        self.campaign_within(value.into(), Patience::after(timeout))
            .await
    }

    async fn campaign_within(
        &self,
        value: Vec<u8>,
        patience: Patience,
    ) -> Result<Option<Leadership>, Error> {
        let queue = Queue {
            client: &self.client,
            session: &self.session,
            name: &self.name,
            role: Role::Candidate,
            rule: Rule::Exclusive,
            payload: &value,
        };
        let acquired = queue.acquire(patience).await?;
        Ok(acquired.map(|acquired| Leadership {
            holding: acquired.holding,
            record: acquired.record,
        }))
    }

    /// The current leader of election `name`, from linearizable reads; `None` if nobody
    /// campaigns.
    pub async fn leader(client: &Client, name: &str) -> Result<Option<LeaderInfo>, Error> {
        for _ in 0..LEADER_READS_MAX {
            let listing = match list_directory(client, name).await {
                Ok(listing) => listing,
                Err(Error::NoNode { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let Some(first) = listing
                .entries
                .iter()
                .find(|entry| entry.role == Role::Candidate)
            else {
                return Ok(None);
            };
            match client.get(&first.path).await {
                Ok(node) if node.stat.create_revision == first.stat.create_revision => {
                    return Ok(Some(LeaderInfo {
                        path: first.path.clone(),
                        value: payload_of(&node.data),
                        token: node.stat.create_revision,
                        session: node.stat.ephemeral_owner,
                    }));
                }
                // It left between the listing and the read: list again.
                Ok(_) | Err(Error::NoNode { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(Error::Unavailable {
            message: format!("the leader of {name} kept changing while it was read"),
            leader_hint: None,
        })
    }

    /// Follows the leader of election `name`: first the current leader (or `None`), then every
    /// change of leader or of its value, in revision order. Survives member failures (the
    /// watch resumes) and compaction (it lists again); ends after a non-retryable error, which
    /// it yields. Dropping the stream stops it. Call it within a Tokio runtime (it spawns the
    /// follower task).
    pub fn observe(client: &Client, name: &str) -> LeaderChanges {
        let (sender, receiver) = mpsc::channel(LEADER_CHANGES_BUFFERED);
        let task = tokio::spawn(follow_leader(client.clone(), name.to_owned(), sender));
        LeaderChanges {
            changes: ReceiverStream::new(receiver),
            task,
        }
    }
}

/// Who leads an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's candidate node.
    pub path: String,
    /// The value it campaigned with or last proclaimed.
    pub value: Vec<u8>,
    /// Its fencing token (the node's create revision).
    pub token: u64,
    /// Its session.
    pub session: u64,
}

/// Leadership of an [`Election`], won by [`Election::campaign`].
///
/// Like a lock guard: [`HeldNode::suspended`] resolves and [`HeldNode::is_safe`] turns false
/// as soon as the leader must stop acting (its session cannot be confirmed in time), and
/// [`HeldNode::lost`] resolves once the leadership is lost for good. Resign with [`Leadership::resign`]; dropping it instead spawns
/// a best-effort, fenced delete of the candidacy, and the session's end removes it anyway.
/// A leader that acts on other systems should pass its token along (see
/// [`crate::recipes::TokenVerifier`]).
///
/// ```no_run
/// # async fn example(election: coord_client::Election) -> Result<(), coord_client::Error> {
/// use coord_client::HeldNode;
/// let leadership = election.campaign("worker-3").await?;
/// while leadership.is_safe() {
///     // ... one bounded step of leader work, fenced with leadership.token() ...
/// #   break;
/// }
/// leadership.resign().await?;
/// # Ok(())
/// # }
/// ```
pub struct Leadership {
    holding: Holding,
    record: NodeRecord,
}

impl Leadership {
    /// The value last campaigned with or proclaimed.
    pub fn value(&self) -> &[u8] {
        &self.record.payload
    }

    /// Adds this leader's fence to `txn`.
    pub fn fence(&self, txn: Txn) -> Txn {
        self.holding.fence(txn)
    }

    /// Replaces the leader's value, with a txn fenced by its token: refused with
    /// [`Error::LockLost`] if this is no longer the leader's node.
    pub async fn proclaim(&mut self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        let record = self.record.with_payload(value.into());
        let path = self.holding.path();
        let txn =
            Txn::new()
                .fence(path, self.holding.token())
                .then(Op::set(path, record.encode(), None));
        self.holding
            .client()
            .txn(txn)
            .await
            .map_err(|error| match error {
                Error::FenceRejected { .. } => Error::LockLost {
                    path: path.to_owned(),
                    token: self.holding.token(),
                },
                other => other,
            })?;
        self.record = record;
        Ok(())
    }

    /// Gives up leadership: deletes the candidacy (fine if already gone); the next candidate
    /// leads.
    pub async fn resign(self) -> Result<(), Error> {
        self.holding.release().await
    }
}

impl sealed::Holder for Leadership {
    fn holding(&self) -> &Holding {
        &self.holding
    }
}

impl HeldNode for Leadership {}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.holding.debug_as("Leadership", formatter)
    }
}

/// The stream [`Election::observe`] returns: `Some(leader)` or `None` (nobody campaigns) at
/// every change, then an error if it has to stop. A `tokio_stream::Stream`, or use
/// [`LeaderChanges::next`]. Dropping it stops following.
pub struct LeaderChanges {
    changes: ReceiverStream<Result<Option<LeaderInfo>, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderChanges {
    /// The next change; `None` once the stream ended (after an error).
    pub async fn next(&mut self) -> Option<Result<Option<LeaderInfo>, Error>> {
        std::future::poll_fn(|context| Pin::new(&mut self.changes).poll_next(context)).await
    }
}

impl Stream for LeaderChanges {
    type Item = Result<Option<LeaderInfo>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.changes).poll_next(context)
    }
}

impl Drop for LeaderChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One candidate as `observe` knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    path: String,
    token: u64,
    session: u64,
    /// `None` until read (a listing carries no data; events do).
    data: Option<Vec<u8>>,
}

/// The candidates of one election directory, in queue order, kept up to date from events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Candidates {
    by_sequence: BTreeMap<(u64, String), Candidate>,
}

impl Candidates {
    /// Applies one event of a recursive watch on `directory`; other nodes are ignored.
    fn apply(&mut self, directory: &str, event: &WatchEvent) {
        let Some(name) = event
            .path
            .strip_prefix(directory)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|name| !name.contains('/'))
        else {
            // The directory itself going takes its children, each with its own event.
            return;
        };
        let Some((Role::Candidate, sequence)) = Role::parse(name) else {
            return;
        };
        let key = (sequence, name.to_owned());
        match event.kind {
            EventKind::Created | EventKind::DataChanged => {
                self.by_sequence.insert(
                    key,
                    Candidate {
                        path: event.path.clone(),
                        token: event.stat.create_revision,
                        session: event.stat.ephemeral_owner,
                        data: Some(event.data.clone()),
                    },
                );
            }
            EventKind::Deleted(_) => {
                self.by_sequence.remove(&key);
            }
            EventKind::ChildrenChanged => {}
        }
    }

    /// The leader, once its data is known.
    fn leader(&self) -> Option<LeaderInfo> {
        let candidate = self.by_sequence.values().next()?;
        Some(LeaderInfo {
            path: candidate.path.clone(),
            value: payload_of(candidate.data.as_deref()?),
            token: candidate.token,
            session: candidate.session,
        })
    }

    /// Reads the leader's data if it is not known yet (after a listing). A leader that is gone
    /// is dropped; its deletion event follows anyway.
    async fn read_leader(&mut self, client: &Client) -> Result<(), Error> {
        loop {
            let Some((key, candidate)) = self.by_sequence.iter().next() else {
                return Ok(());
            };
            if candidate.data.is_some() {
                return Ok(());
            }
            let key = key.clone();
            match client.get(&candidate.path).await {
                Ok(node) if node.stat.create_revision == candidate.token => {
                    if let Some(candidate) = self.by_sequence.get_mut(&key) {
                        candidate.data = Some(node.data);
                    }
                }
                Ok(_) | Err(Error::NoNode { .. }) => {
                    self.by_sequence.remove(&key);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The background side of `LeaderChanges`.
async fn follow_leader(
    client: Client,
    directory: String,
    sender: mpsc::Sender<Result<Option<LeaderInfo>, Error>>,
) {
    // What was sent last, to send changes only; `None` before the first.
    let mut sent: Option<Option<LeaderInfo>> = None;
    let mut backoff = Backoff::new();
    loop {
        match follow_once(&client, &directory, &sender, &mut sent).await {
            // Compacted history, or the watch ended: list again.
            Ok(Followed::Resync) => backoff = Backoff::new(),
            Ok(Followed::ReaderGone) => return,
            Err(error) if transient(&error) => {}
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
        backoff.pause(None).await;
    }
}

enum Followed {
    Resync,
    ReaderGone,
}

/// Watches the directory from now, lists it, then applies events until the watch ends.
///
/// Events from the watch's start may repeat what the listing already shows; applying them in
/// order on top of the listing still ends in the state of each later revision, because the
/// watch misses nothing after its start. So changes are sent only once the events pass the
/// listing's last revision, and only at revision boundaries (never halfway through the events
/// of one revision).
async fn follow_once(
    client: &Client,
    directory: &str,
    sender: &mpsc::Sender<Result<Option<LeaderInfo>, Error>>,
    sent: &mut Option<Option<LeaderInfo>>,
) -> Result<Followed, Error> {
    let options = WatchOptions {
        path: directory.to_owned(),
        recursive: true,
        with_data: true,
        ..WatchOptions::default()
    };
    let mut watch = client.watch(options).await?;
    let mut candidates = Candidates::default();
    let mut listed_at = 0;
    match list_directory(client, directory).await {
        Ok(listing) => {
            listed_at = listing.last_revision;
            for entry in listing.entries {
                if entry.role == Role::Candidate {
                    let candidate = Candidate {
                        path: entry.path,
                        token: entry.stat.create_revision,
                        session: entry.stat.ephemeral_owner,
                        data: None,
                    };
                    candidates
                        .by_sequence
                        .insert((entry.sequence, entry.name), candidate);
                }
            }
        }
        // No directory, no candidates; the watch shows any that come.
        Err(Error::NoNode { .. }) => {}
        Err(error) => return Err(error),
    }
    candidates.read_leader(client).await?;
    if !publish(sender, sent, &candidates).await {
        return Ok(Followed::ReaderGone);
    }
    // The first event of the next revision, read while draining the previous one.
    let mut carried: Option<WatchEvent> = None;
    loop {
        let event = match carried.take() {
            Some(event) => event,
            None => match watch.next().await {
                Some(Ok(event)) => event,
                None | Some(Err(Error::Compacted { .. })) => return Ok(Followed::Resync),
                Some(Err(error)) => return Err(error),
            },
        };
        let revision = event.revision;
        candidates.apply(directory, &event);
        // Apply the rest of this revision's events that have arrived.
        loop {
            match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                Ok(Some(Ok(more))) if more.revision == revision => {
                    candidates.apply(directory, &more);
                }
                Ok(Some(Ok(more))) => {
                    carried = Some(more);
                    break;
                }
                // Listing again publishes whatever changed.
                Ok(Some(Err(Error::Compacted { .. }))) => return Ok(Followed::Resync),
                Ok(Some(Err(error))) => return Err(error),
                // Nothing more yet, or the stream ended (the next read says so).
                Ok(None) | Err(_) => break,
            }
        }
        if revision > listed_at {
            candidates.read_leader(client).await?;
            if !publish(sender, sent, &candidates).await {
                return Ok(Followed::ReaderGone);
            }
        }
    }
}

/// Sends the leader if it differs from what was sent last; `false` if the reader is gone.
async fn publish(
    sender: &mpsc::Sender<Result<Option<LeaderInfo>, Error>>,
    sent: &mut Option<Option<LeaderInfo>>,
    candidates: &Candidates,
) -> bool {
    let leader = candidates.leader();
    if sent.as_ref() == Some(&leader) {
        return true;
    }
    *sent = Some(leader.clone());
    sender.send(Ok(leader)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Stat;
    use crate::watch::DeleteReason;

    fn event(kind: EventKind, path: &str, revision: u64, data: &[u8]) -> WatchEvent {
        WatchEvent {
            kind,
            path: path.into(),
            revision,
            stat: Stat {
                create_revision: revision,
                ephemeral_owner: 77,
                ..Stat::default()
            },
            data: data.to_vec(),
        }
    }

    #[test]
    fn the_lowest_candidate_leads_and_the_next_takes_over() {
        let directory = "/elections/s";
        let mut candidates = Candidates::default();
        assert_eq!(candidates.leader(), None);
        candidates.apply(
            directory,
            &event(
                EventKind::Created,
                "/elections/s/candidate-0000000002",
                10,
                b"b",
            ),
        );
        candidates.apply(
            directory,
            &event(
                EventKind::Created,
                "/elections/s/candidate-0000000001",
                11,
                b"a",
            ),
        );
        // Not a candidate, or not a direct child: ignored.
        candidates.apply(
            directory,
            &event(EventKind::Created, "/elections/s/lock-0000000000", 12, b"x"),
        );
        candidates.apply(
            directory,
            &event(
                EventKind::Created,
                "/elections/s/x/candidate-0000000000",
                13,
                b"y",
            ),
        );
        let leader = candidates.leader().expect("a leader");
        assert_eq!(
            (leader.path.as_str(), leader.value.as_slice()),
            ("/elections/s/candidate-0000000001", &b"a"[..])
        );
        candidates.apply(
            directory,
            &event(
                EventKind::DataChanged,
                "/elections/s/candidate-0000000001",
                14,
                b"a2",
            ),
        );
        assert_eq!(candidates.leader().expect("a leader").value, b"a2");
        candidates.apply(
            directory,
            &event(
                EventKind::Deleted(DeleteReason::SessionExpired),
                "/elections/s/candidate-0000000001",
                15,
                b"",
            ),
        );
        assert_eq!(
            candidates.leader().expect("a leader").path,
            "/elections/s/candidate-0000000002"
        );
    }

    #[test]
    fn a_leader_with_unread_data_is_not_reported() {
        let mut candidates = Candidates::default();
        candidates.by_sequence.insert(
            (1, "candidate-0000000001".into()),
            Candidate {
                path: "/e/candidate-0000000001".into(),
                token: 5,
                session: 9,
                data: None,
            },
        );
        assert_eq!(candidates.leader(), None);
        let record = NodeRecord {
            since_unix_ms: 1,
            attempt: "a.1".into(),
            payload: b"host".to_vec(),
        };
        candidates.apply(
            "/e",
            &WatchEvent {
                kind: EventKind::DataChanged,
                path: "/e/candidate-0000000001".into(),
                revision: 6,
                stat: Stat {
                    create_revision: 5,
                    ephemeral_owner: 9,
                    ..Stat::default()
                },
                data: record.encode(),
            },
        );
        assert_eq!(
            candidates.leader(),
            Some(LeaderInfo {
                path: "/e/candidate-0000000001".into(),
                value: b"host".to_vec(),
                token: 5,
                session: 9,
            })
        );
    }
}
