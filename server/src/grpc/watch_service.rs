//! The `coord.v1.Watch` service: a bidirectional stream carrying any number of watches.
//!
//! Each watch reads this member's applied events from the shared `EventHistory`, from its next
//! revision up to the applied revision, so events come in revision order, each once, with no
//! gap: the stream only ever moves a watch's position past revisions it has read.
//!
//! A stream's session has no task of its own: it is the stream's response body, so the HTTP/2
//! connection's task runs it as it asks for the next response, and an applied revision wakes
//! that task and no other.
//!
//! Back-pressure: the connection asks for responses only while HTTP/2 flow control lets it
//! send, and a session queues at most about `RESPONSES_BUFFERED` of them; a watcher that does
//! not read stalls only its own stream, which stops reading the history. If the history
//! evicts revisions the watch has not read yet, the watch is cancelled with `TOO_SLOW` and the
//! revision to resume from; server memory does not grow with a slow watcher.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::watch_server::Watch as WatchApi;
use futures::Stream;
use tokio::time::{Instant, Interval};
use tonic::{Request, Response, Status, Streaming};

use super::access::{Access, Identity};
use super::await_turn::{await_turn, TurnContext};
use super::status::going_away_status;
use super::watch_budget::{WatchBudget, WatchCounters};
use crate::auth::{Caller, Permission};
use crate::consensus::Consensus;
use crate::fsm::{NodePath, Revision};
use crate::pb::event_to_pb;
use crate::watch::{ActiveWatch, EventClass, History, TurnWaiters, WatchFilter, WatchSet};

/// Responses a stream queues before it stops reading the history until the connection took
/// them.
const RESPONSES_BUFFERED: usize = 64;
/// Most events in one response.
const EVENTS_PER_RESPONSE_MAX: usize = 1000;
/// Most watches on one stream.
const WATCHES_PER_STREAM_MAX: usize = 10_000;
/// Most paths the new events of one delivery may touch for watches of untouched paths to be
/// passed over without a read each (beyond it, every watch reads).
const PATHS_TOUCHED_MAX: usize = 4096;

pub struct WatchService {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    history: Arc<History>,
    turns: Arc<TurnWaiters>,
    progress_interval: Duration,
    budget: Arc<WatchBudget>,
    /// Becomes true when the member stops: every stream then ends with a retryable status.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl WatchService {
    pub fn new(
        consensus: Arc<Consensus>,
        access: Arc<Access>,
        (history, turns): (Arc<History>, Arc<TurnWaiters>),
        progress_interval: Duration,
        max_watches: usize,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> WatchService {
        WatchService {
            consensus,
            access,
            history,
            turns,
            progress_interval,
            stopping,
            budget: Arc::new(WatchBudget::new(max_watches)),
        }
    }
}

/// The event classes a watch asks for, by their wire kinds.
fn classes_of(kinds: &[i32]) -> Result<BTreeSet<EventClass>, String> {
    kinds
        .iter()
        .map(|kind| match pb::EventKind::try_from(*kind) {
            Ok(pb::EventKind::Created) => Ok(EventClass::Created),
            Ok(pb::EventKind::DataChanged) => Ok(EventClass::DataChanged),
            Ok(pb::EventKind::Deleted) => Ok(EventClass::Deleted),
            Ok(pb::EventKind::ChildrenChanged) => Ok(EventClass::ChildrenChanged),
            _ => Err(format!("unknown event kind {kind}")),
        })
        .collect()
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

impl WatchService {
    /// What this service counts (watches served now, events sent, too-slow cancellations,
    /// `AwaitTurn` wake-ups).
    pub fn counters(&self) -> Arc<WatchCounters> {
        self.budget.shared_counters()
    }
}

#[tonic::async_trait]
impl WatchApi for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let who = self.access.identify(&request)?;
        let applied = self.consensus.replica().applied_revision();
        let mut progress =
            tokio::time::interval(self.progress_interval.max(Duration::from_millis(10)));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let inputs = Inputs {
            inbound: request.into_inner(),
            stopping: self.stopping.clone(),
            applied,
            progress,
            behind: false,
            ended: false,
        };
        let session = StreamSession {
            consensus: self.consensus.clone(),
            access: self.access.clone(),
            caller: who.caller,
            remote: who.remote,
            history: self.history.clone(),
            budget: self.budget.clone(),
            outbox: VecDeque::new(),
            watches: WatchSet::default(),
            progress_interval: self.progress_interval,
        };
        let responses =
            futures::stream::unfold((session, inputs), |(mut session, mut inputs)| async move {
                let response = session.next_response(&mut inputs).await?;
                Some((response, (session, inputs)))
            });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn await_turn(
        &self,
        request: Request<pb::AwaitTurnRequest>,
    ) -> Result<Response<pb::AwaitTurnResponse>, Status> {
        let context = TurnContext {
            consensus: &self.consensus,
            access: &self.access,
            turns: &self.turns,
            budget: &self.budget,
            stopping: self.stopping.clone(),
        };
        await_turn(context, request).await
    }
}

/// One client stream and its watches: the stream's response body (see the module docs).
struct StreamSession {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    /// Who opened the stream: each event is delivered only if the policy current at delivery
    /// lets this caller read its path.
    caller: Caller,
    remote: Option<std::net::SocketAddr>,
    history: Arc<History>,
    budget: Arc<WatchBudget>,
    /// Responses the connection has not taken yet.
    outbox: VecDeque<Result<pb::WatchResponse, Status>>,
    watches: WatchSet,
    progress_interval: Duration,
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        self.budget.give_back(self.watches.len());
    }
}

/// What a session waits on between deliveries.
struct Inputs {
    inbound: Streaming<pb::WatchRequest>,
    /// Becomes true when the member stops.
    stopping: tokio::sync::watch::Receiver<bool>,
    applied: tokio::sync::watch::Receiver<Revision>,
    progress: Interval,
    /// Some watch had more to read at the last delivery: deliver again before waiting.
    behind: bool,
    /// The stream ends once the outbox is empty.
    ended: bool,
}

/// The client closed its side or went away, or the member is stopping: end the stream.
struct Gone;

impl StreamSession {
    /// The next response for the connection to send; `None` ends the stream.
    async fn next_response(
        &mut self,
        inputs: &mut Inputs,
    ) -> Option<Result<pb::WatchResponse, Status>> {
        loop {
            if let Some(response) = self.outbox.pop_front() {
                return Some(response);
            }
            if inputs.ended {
                return None;
            }
            if self.step(inputs).await.is_err() {
                inputs.ended = true;
            }
        }
    }

    /// Waits for a request, an applied revision, the progress tick or the member stopping
    /// (not while behind), then delivers up to the applied revision.
    async fn step(&mut self, inputs: &mut Inputs) -> Result<(), Gone> {
        if !inputs.behind {
            tokio::select! {
                message = inputs.inbound.message() => match message {
                    Ok(Some(request)) => self.handle(request),
                    // The client closed its side or went away.
                    Ok(None) | Err(_) => return Err(Gone),
                },
                changed = inputs.applied.changed() => changed.map_err(|_| Gone)?,
                _ = inputs.progress.tick() => self.notify_progress(),
                () = super::status::stopped(&mut inputs.stopping) => {
                    let member = self.consensus.member_id().0;
                    self.outbox.push_back(Err(going_away_status(member)));
                    return Err(Gone);
                }
            }
        }
        let applied = *inputs.applied.borrow_and_update();
        inputs.behind = self.deliver(applied);
        Ok(())
    }

    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        super::header::response_header(&self.consensus, Some(revision))
    }

    fn send(&mut self, response: pb::WatchResponse) {
        self.outbox.push_back(Ok(response));
    }

    fn cancel(
        &mut self,
        watch_id: u64,
        reason: pb::CancelReason,
        message: String,
        compact_revision: Revision,
    ) {
        if self.watches.remove(watch_id) {
            self.budget.give_back(1);
        }
        let applied = self.applied();
        self.send(pb::WatchResponse {
            header: Some(self.header(applied)),
            watch_id,
            canceled: true,
            cancel_reason: reason as i32,
            cancel_message: message,
            compact_revision: compact_revision.0,
            ..pb::WatchResponse::default()
        });
    }

    fn applied(&self) -> Revision {
        *self.consensus.replica().applied_revision().borrow()
    }

    fn handle(&mut self, request: pb::WatchRequest) {
        match request.request {
            Some(pb::watch_request::Request::Create(create)) => self.create(create),
            Some(pb::watch_request::Request::Cancel(cancel)) => {
                let message = if self.watches.contains(cancel.watch_id) {
                    "canceled as requested".to_owned()
                } else {
                    format!("no watch {} on this stream", cancel.watch_id)
                };
                self.cancel(
                    cancel.watch_id,
                    pb::CancelReason::Requested,
                    message,
                    Revision(0),
                )
            }
            None => {}
        }
    }

    fn create(&mut self, create: pb::WatchCreate) {
        let id = create.watch_id;
        let invalid = |message: String| (pb::CancelReason::Invalid, message, Revision(0));
        let checked = (|| {
            if self.watches.contains(id) {
                return Err(invalid(format!(
                    "watch id {id} is already in use on this stream"
                )));
            }
            if self.watches.len() >= WATCHES_PER_STREAM_MAX {
                return Err(invalid(format!(
                    "a stream carries at most {WATCHES_PER_STREAM_MAX} watches"
                )));
            }
            let path = NodePath::parse(&create.path)
                .map_err(|rule| invalid(format!("invalid path {:?}: {rule}", create.path)))?;
            self.permit(&path, create.recursive)
                .map_err(|status| invalid(status.message().to_owned()))?;
            let classes = classes_of(&create.kinds).map_err(invalid)?;
            let applied = self.applied();
            let next = match create.start_revision {
                0 => Revision(applied.0 + 1),
                start => Revision(start),
            };
            let first = self.history.first_revision();
            if next < first {
                return Err((
                    pb::CancelReason::Compacted,
                    format!(
                        "start revision {next} is older than the retained history, which \
                         begins at revision {first}"
                    ),
                    first,
                ));
            }
            if !self.budget.take() {
                tracing::warn!(
                    max = self.budget.max,
                    "watch refused: the member serves its most"
                );
                return Err(invalid(format!(
                    "this member serves at most {} watches (--max-watches); watch through \
                     another member or close some",
                    self.budget.max
                )));
            }
            Ok((path, classes, next))
        })();
        match checked {
            Err((reason, message, compact)) => self.cancel(id, reason, message, compact),
            Ok((path, classes, next)) => {
                let filter = WatchFilter {
                    path,
                    recursive: create.recursive,
                    classes,
                };
                let watch = ActiveWatch::new(filter, create.once, create.with_data, next);
                self.watches.insert(id, watch);
                let header = self.header(Revision(next.0.saturating_sub(1)));
                self.send(pb::WatchResponse {
                    header: Some(header),
                    watch_id: id,
                    created: true,
                    ..pb::WatchResponse::default()
                });
            }
        }
    }

    /// The watches with something to read up to `applied` (see `WatchSet`): the history is
    /// asked once which paths the new revisions touch.
    fn due(&mut self, applied: Revision) -> Vec<u64> {
        let touched = self
            .watches
            .current_from()
            .and_then(|from| self.history.paths_touched(from, applied, PATHS_TOUCHED_MAX));
        self.watches.due(touched.as_ref(), applied)
    }

    /// Queues every watch's events up to `applied`, a bounded amount at a time, until the
    /// outbox is full; returns whether some watch has more to read right away.
    fn deliver(&mut self, applied: Revision) -> bool {
        let mut more = false;
        for id in self.due(applied) {
            if self.outbox.len() >= RESPONSES_BUFFERED {
                // The watches left read at the next delivery, once the connection took these.
                more = true;
                break;
            }
            let (Some(watch), Some(next)) = (self.watches.get(id), self.watches.next_of(id)) else {
                continue;
            };
            let read = self
                .history
                .read(next, applied, EVENTS_PER_RESPONSE_MAX, &watch.filter);
            match read {
                Err(compacted) => {
                    let message = format!(
                        "the watcher fell behind: revisions before {} are no longer kept; \
                         resume from revision {} (or later)",
                        compacted.oldest, next
                    );
                    self.budget
                        .counters()
                        .cancelled_too_slow
                        .fetch_add(1, Ordering::Relaxed);
                    self.cancel(id, pb::CancelReason::TooSlow, message, compacted.oldest);
                }
                Ok(read) => {
                    more |= read.reached < applied && read.elided.is_none();
                    let fired = self.send_events(id, read.events, read.reached);
                    if let Some(elided) = read.elided {
                        let message = format!(
                            "revision {} changed {} nodes (under {}), more than the watch history \
                             keeps as events; read the watched nodes again and resume from \
                             revision {}",
                            elided.revision,
                            elided.events,
                            elided
                                .scope
                                .iter()
                                .map(|(path, _)| path.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            elided.revision.0 + 1
                        );
                        let resume = Revision(elided.revision.0 + 1);
                        self.cancel(id, pb::CancelReason::Compacted, message, resume);
                    } else if fired {
                        let message = "a one-shot watch fired".to_owned();
                        self.cancel(id, pb::CancelReason::Once, message, Revision(0));
                    }
                }
            }
        }
        self.watches.settle();
        more
    }

    /// Who the stream's caller is under the policy current now.
    fn identity(&self) -> Result<Identity, Status> {
        Ok(Identity {
            caller: self.caller.clone(),
            remote: self.remote,
            policy: self.access.policy()?,
        })
    }

    /// Whether the caller may watch `path`: a plain watch needs read on the path; a recursive
    /// one only an identity (once auth is on), since each event is filtered by its own path.
    fn permit(&self, path: &NodePath, recursive: bool) -> Result<(), Status> {
        let who = self.identity()?;
        if recursive && (who.caller.user().is_some() || !who.policy.is_enabled()) {
            return Ok(());
        }
        self.access.require(&who, Permission::Read, path.as_str())
    }

    /// Sends `events` of watch `id`, current to `reached`; returns whether a one-shot watch
    /// fired.
    fn send_events(
        &mut self,
        id: u64,
        events: Vec<crate::fsm::WatchEvent>,
        reached: Revision,
    ) -> bool {
        if !self.watches.contains(id) {
            return false;
        }
        self.watches.reached(id, reached);
        // Events of paths the caller may not read are never sent, whatever the watch covers.
        let events: Vec<crate::fsm::WatchEvent> = match self.identity() {
            Ok(who) => events
                .into_iter()
                .filter(|event| who.may_read(event.path.as_str()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let Some(watch) = self.watches.get_mut(id) else {
            return false;
        };
        if events.is_empty() {
            return false;
        }
        watch.last_sent = Instant::now();
        let once = watch.once;
        let with_data = watch.with_data;
        let events: Vec<pb::Event> = events
            .into_iter()
            .map(|event| event_to_pb(event, with_data))
            .collect();
        self.budget
            .counters()
            .events_sent
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let header = self.header(reached);
        self.send(pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            events,
            ..pb::WatchResponse::default()
        });
        once
    }

    /// Tells each watch that sent nothing for a progress interval how far it is current.
    fn notify_progress(&mut self) {
        let now = Instant::now();
        let Some(since) = now.checked_sub(self.progress_interval) else {
            return;
        };
        for (id, current) in self.watches.idle_since(since) {
            if let Some(watch) = self.watches.get_mut(id) {
                watch.last_sent = now;
            }
            let header = self.header(current);
            self.send(pb::WatchResponse {
                header: Some(header),
                watch_id: id,
                progress: true,
                ..pb::WatchResponse::default()
            });
        }
    }
}
