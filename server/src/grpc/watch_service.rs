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

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::watch_server::Watch as WatchApi;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::fsm::{DeleteReason, EventKind, NodePath, Revision, WatchEvent};
use crate::pb::stat_to_pb;
use crate::raft::Consensus;

/// Responses buffered per stream before it stops reading the history.
const RESPONSES_BUFFERED: usize = 64;
/// Most events in one response.
const EVENTS_PER_RESPONSE_MAX: usize = 1000;
/// Most watches on one stream.
const WATCHES_PER_STREAM_MAX: usize = 10_000;

pub struct WatchService {
    consensus: Arc<Consensus>,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(consensus: Arc<Consensus>, progress_interval: Duration) -> WatchService {
        WatchService {
            consensus,
            progress_interval,
        }
    }
}

/// The event kinds a watch asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Created,
    DataChanged,
    Deleted,
    ChildrenChanged,
}

fn kind_of(event: &WatchEvent) -> Kind {
    match event.kind {
        EventKind::Created => Kind::Created,
        EventKind::DataChanged => Kind::DataChanged,
        EventKind::Deleted(_) => Kind::Deleted,
        EventKind::ChildrenChanged => Kind::ChildrenChanged,
    }
}

struct ActiveWatch {
    path: NodePath,
    recursive: bool,
    /// Empty: every kind.
    kinds: BTreeSet<Kind>,
    once: bool,
    with_data: bool,
    /// The next revision to read.
    next: Revision,
    /// When something was last sent for this watch (for progress notifications).
    last_sent: Instant,
}

impl ActiveWatch {
    fn matches(&self, event: &WatchEvent) -> bool {
        let on_path = if self.recursive {
            self.path.is_root()
                || event.path == self.path
                || event
                    .path
                    .as_str()
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        } else {
            event.path == self.path
        };
        on_path && (self.kinds.is_empty() || self.kinds.contains(&kind_of(event)))
    }

    fn to_pb(&self, event: WatchEvent) -> pb::Event {
        let (kind, delete_reason) = match event.kind {
            EventKind::Created => (pb::EventKind::Created, pb::DeleteReason::Unspecified),
            EventKind::DataChanged => (pb::EventKind::DataChanged, pb::DeleteReason::Unspecified),
            EventKind::ChildrenChanged => (
                pb::EventKind::ChildrenChanged,
                pb::DeleteReason::Unspecified,
            ),
            EventKind::Deleted(reason) => (
                pb::EventKind::Deleted,
                match reason {
                    DeleteReason::Deleted => pb::DeleteReason::Deleted,
                    DeleteReason::SessionClosed => pb::DeleteReason::SessionClosed,
                    DeleteReason::SessionExpired => pb::DeleteReason::SessionExpired,
                    DeleteReason::ContainerEmpty => pb::DeleteReason::ContainerEmpty,
                },
            ),
        };
        pb::Event {
            kind: kind as i32,
            path: event.path.to_string(),
            revision: event.revision.0,
            stat: Some(stat_to_pb(&event.stat)),
            data: if self.with_data {
                event.data
            } else {
                Vec::new()
            },
            delete_reason: delete_reason as i32,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl WatchApi for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let (responses, stream) = mpsc::channel(RESPONSES_BUFFERED);
        let session = StreamSession {
            consensus: self.consensus.clone(),
            responses,
            watches: BTreeMap::new(),
            progress_interval: self.progress_interval,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

/// One client stream and its watches.
struct StreamSession {
    consensus: Arc<Consensus>,
    responses: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watches: BTreeMap<u64, ActiveWatch>,
    progress_interval: Duration,
}

/// The client went away: stop.
struct Gone;

impl StreamSession {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
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
        super::response_header(&self.consensus, Some(revision))
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
        self.watches.remove(&watch_id);
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
                let message = if self.watches.contains_key(&cancel.watch_id) {
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
            if self.watches.contains_key(&id) {
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
            let mut kinds = BTreeSet::new();
            for kind in &create.kinds {
                kinds.insert(match pb::EventKind::try_from(*kind) {
                    Ok(pb::EventKind::Created) => Kind::Created,
                    Ok(pb::EventKind::DataChanged) => Kind::DataChanged,
                    Ok(pb::EventKind::Deleted) => Kind::Deleted,
                    Ok(pb::EventKind::ChildrenChanged) => Kind::ChildrenChanged,
                    _ => return Err(invalid(format!("unknown event kind {kind}"))),
                });
            }
            let applied = self.applied();
            let next = match create.start_revision {
                0 => Revision(applied.0 + 1),
                start => Revision(start),
            };
            let first = self.consensus.replica().first_event_revision();
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
            Ok((path, kinds, next))
        })();
        match checked {
            Err((reason, message, compact)) => self.cancel(id, reason, message, compact).await,
            Ok((path, kinds, next)) => {
                self.watches.insert(
                    id,
                    ActiveWatch {
                        path,
                        recursive: create.recursive,
                        kinds,
                        once: create.once,
                        with_data: create.with_data,
                        next,
                        last_sent: Instant::now(),
                    },
                );
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

    /// Sends every watch its events up to `applied`, a bounded amount at a time; returns
    /// whether some watch has more to read right away.
    async fn deliver(&mut self, applied: Revision) -> Result<bool, Gone> {
        let mut more = false;
        let ids: Vec<u64> = self.watches.keys().copied().collect();
        for id in ids {
            let Some(watch) = self.watches.get(&id) else {
                continue;
            };
            if watch.next > applied {
                continue;
            }
            let read = self.consensus.replica().read_events(
                watch.next,
                applied,
                EVENTS_PER_RESPONSE_MAX,
                |event| watch.matches(event),
            );
            match read {
                Err(compacted) => {
                    let message = format!(
                        "the watcher fell behind: revisions before {} are no longer kept; \
                         resume from revision {} (or later)",
                        compacted.oldest, watch.next
                    );
                    self.cancel(id, pb::CancelReason::TooSlow, message, compacted.oldest)
                        .await?;
                }
                Ok((events, reached)) => {
                    more |= reached < applied;
                    let watch = self.watches.get_mut(&id).expect("read above");
                    watch.next = Revision(reached.0 + 1);
                    if events.is_empty() {
                        continue;
                    }
                    watch.last_sent = Instant::now();
                    let once = watch.once;
                    let events: Vec<pb::Event> =
                        events.into_iter().map(|event| watch.to_pb(event)).collect();
                    let header = self.header(reached);
                    self.send(pb::WatchResponse {
                        header: Some(header),
                        watch_id: id,
                        events,
                        ..pb::WatchResponse::default()
                    })
                    .await?;
                    if once {
                        let message = "a one-shot watch fired".to_owned();
                        self.cancel(id, pb::CancelReason::Once, message, Revision(0))
                            .await?;
                    }
                }
            }
        }
        Ok(more)
    }

    /// Tells each watch that sent nothing for a progress interval how far it is current.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        let now = Instant::now();
        let idle: Vec<(u64, Revision)> = self
            .watches
            .iter()
            .filter(|(_, watch)| now.duration_since(watch.last_sent) >= self.progress_interval)
            .map(|(id, watch)| (*id, Revision(watch.next.0.saturating_sub(1))))
            .collect();
        for (id, current) in idle {
            if let Some(watch) = self.watches.get_mut(&id) {
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
