//! The `coord.v1.Watch` service: a bidirectional stream carrying any number of watches.
//!
//! Each watch reads this member's applied events from the shared `EventHistory`, from its next
//! revision up to the applied revision, so events come in revision order, each once, with no
//! gap: the stream only ever moves a watch's position past revisions it has read.
//!
//! Back-pressure: responses go out through a small bounded channel; a watcher that does not
//! read stalls only its own stream, which stops reading the history. If the history evicts
//! revisions the watch has not read yet, the watch is cancelled with `TOO_SLOW` and the
//! revision to resume from; server memory does not grow with a slow watcher.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::watch_server::Watch as WatchApi;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::access::{Access, Identity};
use super::status::going_away_status;
use crate::auth::{Caller, Permission};
use crate::consensus::Consensus;
use crate::fsm::{NodePath, Revision};
use crate::pb::event_to_pb;
use crate::watch::{ActiveWatch, EventClass, History, WatchFilter, WatchSet};

/// Responses buffered per stream before it stops reading the history.
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
    progress_interval: Duration,
    budget: Arc<WatchBudget>,
    /// Becomes true when the member stops: every stream then ends with a retryable status.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl WatchService {
    pub fn new(
        consensus: Arc<Consensus>,
        access: Arc<Access>,
        history: Arc<History>,
        progress_interval: Duration,
        max_watches: usize,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> WatchService {
        WatchService {
            consensus,
            access,
            history,
            progress_interval,
            stopping,
            budget: Arc::new(WatchBudget {
                counters: Arc::new(WatchCounters::default()),
                max: max_watches,
            }),
        }
    }
}

/// The watches this member serves over all streams, against `--max-watches`.
/// What the watch service counts, shared with the metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Watches served now (`coord_watches_active`).
    pub active: AtomicUsize,
    /// Events delivered to watchers (`coord_watch_events_sent_total`).
    pub events_sent: AtomicU64,
    /// Watches cancelled because their watcher fell too far behind
    /// (`coord_watches_cancelled_too_slow_total`).
    pub cancelled_too_slow: AtomicU64,
}

struct WatchBudget {
    counters: Arc<WatchCounters>,
    max: usize,
}

impl WatchBudget {
    /// Takes one watch's place; false when the member serves its most already.
    fn take(&self) -> bool {
        self.counters
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |active| {
                (active < self.max).then_some(active + 1)
            })
            .is_ok()
    }

    fn give_back(&self, watches: usize) {
        self.counters.active.fetch_sub(watches, Ordering::Relaxed);
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
    /// What this service counts (watches served now, events sent, too-slow cancellations).
    pub fn counters(&self) -> Arc<WatchCounters> {
        self.budget.counters.clone()
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
        let (responses, stream) = mpsc::channel(RESPONSES_BUFFERED);
        let session = StreamSession {
            consensus: self.consensus.clone(),
            access: self.access.clone(),
            caller: who.caller,
            remote: who.remote,
            history: self.history.clone(),
            budget: self.budget.clone(),
            responses,
            watches: WatchSet::default(),
            progress_interval: self.progress_interval,
        };
        tokio::spawn(session.run(request.into_inner(), self.stopping.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

/// One client stream and its watches.
struct StreamSession {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    /// Who opened the stream: each event is delivered only if the policy current at delivery
    /// lets this caller read its path.
    caller: Caller,
    remote: Option<std::net::SocketAddr>,
    history: Arc<History>,
    budget: Arc<WatchBudget>,
    responses: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watches: WatchSet,
    progress_interval: Duration,
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        self.budget.give_back(self.watches.len());
    }
}

/// The client went away: stop.
struct Gone;

impl StreamSession {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::WatchRequest>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut applied = self.consensus.replica().applied_revision();
        let mut progress =
            tokio::time::interval(self.progress_interval.max(Duration::from_millis(10)));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut behind = false;
        loop {
            if !behind {
                tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(request)) => {
                            if self.handle(request).await.is_err() {
                                return;
                            }
                        }
                        // The client closed its side or went away.
                        Ok(None) | Err(_) => return,
                    },
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = progress.tick() => {
                        if self.notify_progress().await.is_err() {
                            return;
                        }
                    }
                    () = super::status::stopped(&mut stopping) => {
                        let member = self.consensus.member_id().0;
                        let _ = self.responses.send(Err(going_away_status(member))).await;
                        return;
                    }
                }
            }
            let applied_now = *applied.borrow_and_update();
            match self.deliver(applied_now).await {
                Ok(more) => behind = more,
                Err(Gone) => return,
            }
        }
    }

    fn header(&self, revision: Revision) -> pb::ResponseHeader {
        super::header::response_header(&self.consensus, Some(revision))
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), Gone> {
        self.responses.send(Ok(response)).await.map_err(|_| Gone)
    }

    async fn cancel(
        &mut self,
        watch_id: u64,
        reason: pb::CancelReason,
        message: String,
        compact_revision: Revision,
    ) -> Result<(), Gone> {
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
        })
        .await
    }

    fn applied(&self) -> Revision {
        *self.consensus.replica().applied_revision().borrow()
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), Gone> {
        match request.request {
            Some(pb::watch_request::Request::Create(create)) => self.create(create).await,
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
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: pb::WatchCreate) -> Result<(), Gone> {
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
            Err((reason, message, compact)) => self.cancel(id, reason, message, compact).await,
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
                })
                .await
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

    /// Sends every watch its events up to `applied`, a bounded amount at a time; returns
    /// whether some watch has more to read right away.
    async fn deliver(&mut self, applied: Revision) -> Result<bool, Gone> {
        let mut more = false;
        for id in self.due(applied) {
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
                        .counters
                        .cancelled_too_slow
                        .fetch_add(1, Ordering::Relaxed);
                    self.cancel(id, pb::CancelReason::TooSlow, message, compacted.oldest)
                        .await?;
                }
                Ok(read) => {
                    more |= read.reached < applied && read.elided.is_none();
                    let fired = self.send_events(id, read.events, read.reached).await?;
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
                        self.cancel(id, pb::CancelReason::Compacted, message, resume)
                            .await?;
                    } else if fired {
                        let message = "a one-shot watch fired".to_owned();
                        self.cancel(id, pb::CancelReason::Once, message, Revision(0))
                            .await?;
                    }
                }
            }
        }
        self.watches.settle();
        Ok(more)
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
    async fn send_events(
        &mut self,
        id: u64,
        events: Vec<crate::fsm::WatchEvent>,
        reached: Revision,
    ) -> Result<bool, Gone> {
        if !self.watches.contains(id) {
            return Ok(false);
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
            return Ok(false);
        };
        if events.is_empty() {
            return Ok(false);
        }
        watch.last_sent = Instant::now();
        let once = watch.once;
        let with_data = watch.with_data;
        let events: Vec<pb::Event> = events
            .into_iter()
            .map(|event| event_to_pb(event, with_data))
            .collect();
        self.budget
            .counters
            .events_sent
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let header = self.header(reached);
        self.send(pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            events,
            ..pb::WatchResponse::default()
        })
        .await?;
        Ok(once)
    }

    /// Tells each watch that sent nothing for a progress interval how far it is current.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let now = Instant::now();
        let Some(since) = now.checked_sub(self.progress_interval) else {
            return Ok(());
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
            })
            .await?;
        }
        Ok(())
    }
}
