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
//!
//! A `Watch` has no task: the caller's `next` (or `poll_next`) reads the responses its stream
//! routed to it and, after a failure, reconnects. An event thus wakes the stream's task and
//! then the caller, and nothing in between.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use coord_proto::v1 as pb;
use tokio::time::Instant;
use tokio_stream::Stream;

use crate::client::Client;
use crate::endpoints::{Route, Target};
use crate::error::Error;
use crate::types::Stat;
use crate::watch_streams::{Delivery, Subscription};

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
    /// Events read from the stream and not handed out yet, in revision order.
    ready: VecDeque<WatchEvent>,
    state: State,
}

/// Where a [`Watch`] stands. A watch has no task of its own: it reads its stream, and
/// reconnects after a failure, as its caller asks for the next event, so an event costs the
/// caller's wake-up and no other task's.
enum State {
    /// Reading the responses of a watch a member created.
    Following { follower: Follower, open: Open },
    /// Opening a stream again, to resume from the follower's `next`.
    Reconnecting(Reconnect),
    /// Ended with this error, which the caller has not been given yet.
    Failed(Error),
    /// Ended.
    Done,
}

/// A reconnection in progress: it gives the follower back with the stream it opened.
type Reconnect = Pin<Box<dyn Future<Output = (Follower, Result<Open, Error>)> + Send + Sync>>;

impl Watch {
    /// The next event; `None` once the watch ended (a one-shot watch fired, or after an error).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        std::future::poll_fn(|context| Pin::new(&mut *self).poll_next(context)).await
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let watch = &mut *self;
        loop {
            if let Some(event) = watch.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            // Taken out and put back (or replaced): `Done` is what stays when it returns early.
            watch.state = match std::mem::replace(&mut watch.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Failed(error) => return Poll::Ready(Some(Err(error))),
                State::Following {
                    mut follower,
                    mut open,
                } => match open.subscription.responses.poll_recv(context) {
                    Poll::Pending => {
                        watch.state = State::Following { follower, open };
                        return Poll::Pending;
                    }
                    Poll::Ready(delivery) => {
                        match follower.take(delivery, &open.subscription, &mut watch.ready) {
                            None => State::Following { follower, open },
                            Some(Ended::Done) => State::Done,
                            Some(Ended::Failed(error)) => State::Failed(error),
                            Some(Ended::Reconnect { not_here }) => {
                                if not_here {
                                    follower.client.routing().failed(&open.endpoint);
                                }
                                // Off the old stream before joining another.
                                drop(open);
                                State::Reconnecting(Box::pin(follower.reconnect()))
                            }
                        }
                    }
                },
                State::Reconnecting(mut reconnect) => match reconnect.as_mut().poll(context) {
                    Poll::Pending => {
                        watch.state = State::Reconnecting(reconnect);
                        return Poll::Pending;
                    }
                    Poll::Ready((follower, Ok(open))) => State::Following { follower, open },
                    Poll::Ready((_, Err(error))) => State::Failed(error),
                },
            };
        }
    }
}

impl Client {
    /// Starts watching; returns once a member accepted the watch, so that every change
    /// committed after this returns is delivered. Members that do not answer are skipped as
    /// for any call, until the request timeout.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watch, Error> {
        let mut follower = Follower {
            client: self.clone(),
            options,
            next: 0,
            route: Route::new(),
        };
        // The first connection is made here, so a bad path or a compacted start fails the call.
        let deadline = Instant::now() + self.options().request_timeout;
        let open = follower.connect(Some(deadline)).await?;
        Ok(Watch {
            ready: VecDeque::new(),
            state: State::Following { follower, open },
        })
    }
}

/// What a `Watch` knows of where it is, kept across reconnections.
struct Follower {
    client: Client,
    options: WatchOptions,
    /// The next revision to deliver (0 before the first connection: from now).
    next: u64,
    /// The way through the endpoints since the last stream that was created.
    route: Route,
}

/// A watch created on a member: its place on a stream shared with the client's other watches.
struct Open {
    subscription: Subscription,
    endpoint: String,
}

enum Ended {
    /// Stop: the watch fired once.
    Done,
    /// Stop with this error for the caller.
    Failed(Error),
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

    /// Opens a stream again (see `connect`), with no deadline: a watch waits out an outage.
    async fn reconnect(mut self) -> (Follower, Result<Open, Error>) {
        let opened = self.connect(None).await;
        (self, opened)
    }

    /// Takes one delivery of the watch's stream: its events go to `ready` (and `next` past
    /// them); says how the stream ended, if it did.
    fn take(
        &mut self,
        delivery: Option<Delivery>,
        subscription: &Subscription,
        ready: &mut VecDeque<WatchEvent>,
    ) -> Option<Ended> {
        let response = match delivery {
            Some(Ok(response)) => *response,
            Some(Err(_)) => return Some(Ended::Reconnect { not_here: true }),
            // Taken off its stream for reading too slowly: resume, the member is fine.
            None => {
                return Some(Ended::Reconnect {
                    not_here: !subscription.overflowed(),
                })
            }
        };
        if response.canceled {
            let reason = pb::CancelReason::try_from(response.cancel_reason);
            return Some(match reason {
                Ok(pb::CancelReason::Once) => Ended::Done,
                // Resume from where this watch got to; the history may still have it.
                Ok(pb::CancelReason::TooSlow) => Ended::Reconnect { not_here: false },
                _ => Ended::Failed(canceled_error(&response)),
            });
        }
        // Every event up to the response's revision is in it. A progress response carries no
        // event, and its revision is how far the watch is current: `next` moves past it too.
        let reached = response.header.map_or(0, |header| header.revision);
        for event in response.events {
            // After a reconnection the server starts at `next`, so nothing repeats; this
            // guard keeps the promise even against a misbehaving member.
            if event.revision < self.next {
                continue;
            }
            self.next = self.next.max(event.revision);
            self.client.count_watch_event();
            ready.push_back(event_from_pb(event));
        }
        self.next = self.next.max(reached + 1);
        None
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
