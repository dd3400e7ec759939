//! `Watch`: a stream of changes under a path that survives member failures: when its stream
//! breaks, or the server cancels it as too slow, it reconnects (to another member if needed)
//! and resumes right after the last revision it delivered, so events arrive in revision order,
//! each once, with no gap. Reconnecting follows the client's routing: the next endpoint at
//! once after a member that failed or stayed silent past the attempt's budget, a pause only
//! after a whole round failed. A start revision older than the cluster keeps ends it with
//! `Error::Compacted`.
//!
//! The watches of one client share a few gRPC streams (`watch_streams.rs`); a watch whose
//! reader falls behind is taken off its stream and resumes the same way, so it never holds up
//! the other watches on that stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use coord_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;

use crate::client::Client;
use crate::endpoints::{Route, Target};
use crate::error::Error;
use crate::types::Stat;
use crate::watch_streams::Subscription;

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The node was created.
    Created,
    /// The node's data was replaced.
    DataChanged,
    /// The node is gone; the reason says why.
    Deleted(DeleteReason),
    /// A child was added or removed; the event's path is the parent's.
    ChildrenChanged,
}

/// Why a node was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// A delete request removed it (or a recursive delete of an ancestor).
    Deleted,
    /// It was ephemeral and its owning session was closed.
    SessionClosed,
    /// It was ephemeral and its owning session expired.
    SessionExpired,
    /// It was a container and its last child went.
    ContainerEmpty,
}

/// One change, at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventKind,
    /// The node it happened to.
    pub path: String,
    /// The revision of the write that made the change.
    pub revision: u64,
    /// The node's stat after the change (its last stat for a deletion).
    pub stat: Stat,
    /// The node's data after the change, when the watch asked for it.
    pub data: Vec<u8>,
}

/// A kind of event a watch may be limited to (see [`WatchOptions::kinds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventFilter {
    /// Creations.
    Created,
    /// Data changes.
    DataChanged,
    /// Deletions, for any [`DeleteReason`].
    Deleted,
    /// Changes to a node's set of children.
    ChildrenChanged,
}

impl EventFilter {
    fn to_pb(self) -> i32 {
        match self {
            EventFilter::Created => pb::EventKind::Created as i32,
            EventFilter::DataChanged => pb::EventKind::DataChanged as i32,
            EventFilter::Deleted => pb::EventKind::Deleted as i32,
            EventFilter::ChildrenChanged => pb::EventKind::ChildrenChanged as i32,
        }
    }
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// The node, or with `recursive` the whole subtree under it.
    pub path: String,
    /// Watch every node under `path` too, not only the node itself and its set of children.
    pub recursive: bool,
    /// The first revision to deliver; 0 means from now.
    pub start_revision: u64,
    /// Include the node's data in events.
    pub with_data: bool,
    /// End after the first batch of events (a ZooKeeper-style one-shot watch).
    pub once: bool,
    /// Deliver only these kinds of event; empty delivers every kind. The server filters, so a
    /// one-shot watch for `Deleted` is not woken by a data change.
    pub kinds: Vec<EventFilter>,
}

/// A stream of [`WatchEvent`]s (`futures::Stream` / `tokio_stream::Stream`), or use
/// [`Watch::next`]. Dropping it cancels the watch.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use coord_client::{Client, WatchOptions};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let options = WatchOptions { path: "/config".into(), recursive: true, ..Default::default() };
/// let mut watch = client.watch(options).await?;
/// while let Some(event) = watch.next().await {
///     let event = event?;
///     println!("{:?} {} at revision {}", event.kind, event.path, event.revision);
/// }
/// # Ok(())
/// # }
/// ```
pub struct Watch {
    events: mpsc::Receiver<Delivered>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// The next event; `None` once the watch ended (a one-shot watch fired, or after an error).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        self.events.recv().await.map(|delivered| *delivered)
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events
            .poll_recv(context)
            .map(|delivered| delivered.map(|delivered| *delivered))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events buffered between the stream and the caller.
const EVENTS_BUFFERED: usize = 1024;
/// What a `Watch` hands its caller, boxed: a channel's slots are allocated in blocks, and a
/// pointer keeps an idle watch small.
type Delivered = Box<Result<WatchEvent, Error>>;

impl Client {
    /// Starts watching; returns once a member accepted the watch, so that every change
    /// committed after this returns is delivered. Members that do not answer are skipped as
    /// for any call, until the request timeout.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watch, Error> {
        let (sender, receiver) = mpsc::channel(EVENTS_BUFFERED);
        let mut follower = Follower {
            client: self.clone(),
            options,
            next: 0,
            sender,
            route: Route::new(),
        };
        // The first connection is made here, so a bad path or a compacted start fails the call.
        let deadline = Instant::now() + self.options().request_timeout;
        let stream = follower.connect(Some(deadline)).await?;
        let task = tokio::spawn(follower.run(stream));
        Ok(Watch {
            events: receiver,
            task,
        })
    }
}

/// The background side of a `Watch`.
struct Follower {
    client: Client,
    options: WatchOptions,
    /// The next revision to deliver (0 before the first connection: from now).
    next: u64,
    sender: mpsc::Sender<Delivered>,
    /// The way through the endpoints since the last stream that was created.
    route: Route,
}

/// A watch created on a member: its place on a stream shared with the client's other watches.
struct Open {
    subscription: Subscription,
    endpoint: String,
}

enum Ended {
    /// Stop: the caller went away, the watch fired once, or an error was delivered.
    Done,
    /// Reconnect and resume from `next`; `not_here` when the stream failed (the member went
    /// away, or ended the stream as unavailable), so that it is avoided for a while.
    Reconnect { not_here: bool },
}

impl Follower {
    /// Opens a stream along the endpoints (the next one at once after a member that is not
    /// there, a pause only after a whole round failed) until one creates the watch, or until
    /// `deadline` (`None`: no deadline), when the last failure is returned. Errors that no
    /// reconnection can fix are returned at once.
    async fn connect(&mut self, deadline: Option<Instant>) -> Result<Open, Error> {
        let client = self.client.clone();
        let endpoints = client.routing();
        loop {
            let Some(target) = endpoints.next(&mut self.route) else {
                tokio::time::sleep(self.route.start_round()).await;
                continue;
            };
            match self.open(&target).await {
                Ok(open) => {
                    endpoints.answered(&target.address);
                    self.route = Route::new();
                    return Ok(open);
                }
                Err(error) if reconnectable(&error) => {
                    match error {
                        Error::Unavailable {
                            leader_hint: Some(leader),
                            ..
                        } => self.route.redirect(leader),
                        _ => endpoints.failed(&target.address),
                    }
                    let pause = endpoints.pause_before_next(&self.route);
                    if deadline.is_some_and(|deadline| Instant::now() + pause >= deadline) {
                        return Err(error);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Creates the watch from `next` (or the requested start) on a stream to `target` shared
    /// with this client's other watches, within the route's budget.
    async fn open(&mut self, target: &Target) -> Result<Open, Error> {
        let start = if self.next == 0 {
            self.options.start_revision
        } else {
            self.next
        };
        let create = pb::WatchCreate {
            watch_id: 0,
            path: self.options.path.clone(),
            recursive: self.options.recursive,
            kinds: self.options.kinds.iter().map(|kind| kind.to_pb()).collect(),
            start_revision: start,
            once: self.options.once,
            with_data: self.options.with_data,
        };
        let mut subscription = self.client.watch_streams().subscribe(target, create);
        let budget = self.route.budget();
        match tokio::time::timeout(budget, subscription.responses.recv()).await {
            Ok(Some(Ok(response))) if response.created => {
                if self.next == 0 {
                    self.next = response.header.map_or(0, |header| header.revision) + 1;
                }
                Ok(Open {
                    subscription,
                    endpoint: target.address.clone(),
                })
            }
            Ok(Some(Ok(response))) if response.canceled => Err(canceled_error(&response)),
            Ok(Some(Err(error))) => Err(*error),
            Ok(Some(Ok(_)) | None) => Err(Error::ConnectionLost {
                endpoint: target.address.clone(),
                message: "the stream ended before the watch was created".into(),
            }),
            Err(_) => {
                self.route.timed_out();
                Err(Error::Timeout {
                    message: format!("no answer from {} within {budget:?}", target.address),
                })
            }
        }
    }

    async fn run(mut self, mut stream: Open) {
        loop {
            match self.follow(&mut stream).await {
                Ended::Done => return,
                Ended::Reconnect { not_here } => {
                    if not_here {
                        self.client.routing().failed(&stream.endpoint);
                    }
                }
            }
            match self.connect(None).await {
                Ok(open) => stream = open,
                Err(error) => {
                    let _ = self.sender.send(Box::new(Err(error))).await;
                    return;
                }
            }
        }
    }

    /// Delivers events from one stream until it ends.
    async fn follow(&mut self, stream: &mut Open) -> Ended {
        loop {
            let response = match stream.subscription.responses.recv().await {
                Some(Ok(response)) => response,
                Some(Err(_)) => return Ended::Reconnect { not_here: true },
                // Taken off its stream for reading too slowly: resume, the member is fine.
                None => {
                    return Ended::Reconnect {
                        not_here: !stream.subscription.overflowed(),
                    }
                }
            };
            if response.canceled {
                let reason = pb::CancelReason::try_from(response.cancel_reason);
                return match reason {
                    Ok(pb::CancelReason::Once) => Ended::Done,
                    // Resume from where this watch got to; the history may still have it.
                    Ok(pb::CancelReason::TooSlow) => Ended::Reconnect { not_here: false },
                    _ => {
                        let _ = self
                            .sender
                            .send(Box::new(Err(canceled_error(&response))))
                            .await;
                        Ended::Done
                    }
                };
            }
            if response.progress {
                let current = response.header.map_or(0, |header| header.revision);
                self.next = self.next.max(current + 1);
                continue;
            }
            for event in response.events {
                // After a reconnection the server starts at `next`, so nothing repeats; this
                // guard keeps the promise even against a misbehaving member.
                if event.revision < self.next {
                    continue;
                }
                let revision = event.revision;
                self.client.count_watch_event();
                if self
                    .sender
                    .send(Box::new(Ok(event_from_pb(event))))
                    .await
                    .is_err()
                {
                    return Ended::Done;
                }
                self.next = self.next.max(revision);
            }
            // Every event up to the response's revision was delivered.
            let reached = response.header.map_or(0, |header| header.revision);
            self.next = self.next.max(reached + 1);
        }
    }
}

fn reconnectable(error: &Error) -> bool {
    error.is_retryable() || error.is_outcome_unknown() || matches!(error, Error::Unreachable { .. })
}

fn canceled_error(response: &pb::WatchResponse) -> Error {
    match pb::CancelReason::try_from(response.cancel_reason) {
        Ok(pb::CancelReason::Compacted) => Error::Compacted {
            oldest_revision: response.compact_revision,
        },
        _ => Error::InvalidArgument {
            message: response.cancel_message.clone(),
        },
    }
}

fn event_from_pb(event: pb::Event) -> WatchEvent {
    let kind = match pb::EventKind::try_from(event.kind) {
        Ok(pb::EventKind::Created) => EventKind::Created,
        Ok(pb::EventKind::DataChanged) => EventKind::DataChanged,
        Ok(pb::EventKind::ChildrenChanged) => EventKind::ChildrenChanged,
        _ => EventKind::Deleted(match pb::DeleteReason::try_from(event.delete_reason) {
            Ok(pb::DeleteReason::SessionClosed) => DeleteReason::SessionClosed,
            Ok(pb::DeleteReason::SessionExpired) => DeleteReason::SessionExpired,
            Ok(pb::DeleteReason::ContainerEmpty) => DeleteReason::ContainerEmpty,
            _ => DeleteReason::Deleted,
        }),
    };
    WatchEvent {
        kind,
        path: event.path,
        revision: event.revision,
        stat: event.stat.into(),
        data: event.data,
    }
}
