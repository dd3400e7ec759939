//! `WatchStreams`: the watches of one client share a few gRPC streams, as the protocol allows
//! (`WatchCreate.watch_id` tells them apart on a stream). A member then holds one HTTP/2
//! stream per [`WATCHES_PER_STREAM`] watches of a client, not per watch.
//!
//! One task per stream reads its responses and hands each to its watch through a small bounded
//! channel, without ever waiting: a watch whose channel is full (its reader is slow) is
//! cancelled on the server and its channel closed with the `overflowed` mark, so the watch
//! drains what it has and then resumes on its own from the revision it got to. A slow reader thus
//! never holds up the other watches of its stream, and nothing grows without bound.
//!
//! A stream lives while it carries watches: the last watch to go closes the client's side,
//! and the member ends the stream. A stream that fails hands the failure to each of its
//! watches, which reconnect one by one along the client's routing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use coord_proto::v1 as pb;
use coord_proto::v1::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::endpoints::{Target, Transport};
use crate::error::Error;
use crate::lock::lock;

/// Most watches of one client on one stream (a member accepts up to 10,000 per stream).
pub(crate) const WATCHES_PER_STREAM: usize = 1000;
/// Responses held for one watch before it counts as slow and is moved off its stream. The
/// channel allocates its slots in blocks of 32 as they fill, so an idle watch holds one block.
const RESPONSES_PER_WATCH: usize = 256;

/// What a watch receives: a response for it, or the failure of its stream (boxed, so that an
/// idle watch's channel, whose slots are allocated in blocks, stays small).
pub(crate) type Delivery = Result<Box<pb::WatchResponse>, Box<Error>>;

/// The shared streams of one client (see the module documentation).
#[derive(Default)]
pub(crate) struct WatchStreams {
    streams: Mutex<Vec<Shared>>,
}

/// One stream, shared by the watches on it.
struct Shared {
    endpoint: String,
    table: Arc<Mutex<Table>>,
}

/// The watches on one stream; shared by the stream's task and its subscriptions.
struct Table {
    slots: HashMap<u64, Slot>,
    next_id: u64,
    /// The client's side of the stream; `None` once it is closed (no watch left, or the
    /// stream failed), when no watch may join it any more.
    requests: Option<mpsc::UnboundedSender<pb::WatchRequest>>,
}

struct Slot {
    sender: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
}

impl Table {
    fn open(&self) -> bool {
        self.requests.is_some()
    }

    /// Takes watch `id` off the stream, telling the member to cancel it when `cancel`; closes
    /// the stream when it was the last.
    fn release(&mut self, id: u64, cancel: bool) {
        if self.slots.remove(&id).is_none() {
            return;
        }
        if cancel {
            if let Some(requests) = &self.requests {
                let _ = requests.send(pb::WatchRequest {
                    request: Some(pb::watch_request::Request::Cancel(pb::WatchCancel {
                        watch_id: id,
                    })),
                });
            }
        }
        if self.slots.is_empty() {
            self.requests = None;
        }
    }

    /// Hands `response` to its watch without waiting (see the module documentation).
    fn route(&mut self, response: pb::WatchResponse) {
        let id = response.watch_id;
        let Some(slot) = self.slots.get(&id) else {
            // Cancelled by this client; the member's last responses may still come.
            return;
        };
        let last = response.canceled;
        match slot.sender.try_send(Ok(Box::new(response))) {
            Ok(()) if last => self.release(id, false),
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                slot.overflowed.store(true, Ordering::Relaxed);
                self.release(id, !last);
            }
            Err(TrySendError::Closed(_)) => self.release(id, !last),
        }
    }
}

/// A watch's place on a shared stream; dropping it cancels the watch on the member.
pub(crate) struct Subscription {
    /// Responses for this watch, in the stream's order; closed when the watch left the
    /// stream (see [`Subscription::overflowed`]) or the stream ended.
    pub(crate) responses: mpsc::Receiver<Delivery>,
    overflowed: Arc<AtomicBool>,
    id: u64,
    table: Arc<Mutex<Table>>,
}

impl Subscription {
    /// Whether the watch was taken off its stream because its responses were not read fast
    /// enough (and not because the stream failed): it should resume, from the same member.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.table).release(self.id, true);
    }
}

impl WatchStreams {
    /// Creates the watch `create` (its `watch_id` is chosen here) on a stream to `target` that
    /// has room, opening one if none has.
    pub(crate) fn subscribe(&self, target: &Target, mut create: pb::WatchCreate) -> Subscription {
        let mut streams = lock(&self.streams);
        streams.retain(|shared| lock(&shared.table).open());
        let roomy = streams.iter().find(|shared| {
            shared.endpoint == target.address
                && lock(&shared.table).slots.len() < WATCHES_PER_STREAM
        });
        let table = match roomy {
            Some(shared) => shared.table.clone(),
            None => {
                let shared = Shared::open(target);
                let table = shared.table.clone();
                streams.push(shared);
                table
            }
        };
        let (sender, responses) = mpsc::channel(RESPONSES_PER_WATCH);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut guard = lock(&table);
        let id = guard.next_id;
        guard.next_id += 1;
        create.watch_id = id;
        match &guard.requests {
            Some(requests) => {
                let _ = requests.send(pb::WatchRequest {
                    request: Some(pb::watch_request::Request::Create(create)),
                });
                let slot = Slot {
                    sender,
                    overflowed: overflowed.clone(),
                };
                guard.slots.insert(id, slot);
            }
            // A new stream's task may already have failed (a refused connection).
            None => {
                let _ = sender.try_send(Err(Box::new(Error::ConnectionLost {
                    endpoint: target.address.clone(),
                    message: "the watch stream ended as it opened".into(),
                })));
            }
        }
        drop(guard);
        Subscription {
            responses,
            overflowed,
            id,
            table,
        }
    }

    /// Streams open now (for tests and diagnostics).
    #[cfg(test)]
    fn open_streams(&self) -> usize {
        lock(&self.streams)
            .iter()
            .filter(|shared| lock(&shared.table).open())
            .count()
    }
}

impl Shared {
    /// A new stream to `target`; its task connects and routes the responses.
    fn open(target: &Target) -> Shared {
        let (requests, outbound) = mpsc::unbounded_channel();
        let table = Arc::new(Mutex::new(Table {
            slots: HashMap::new(),
            next_id: 1,
            requests: Some(requests),
        }));
        let client = WatchClient::new(target.channel.clone());
        tokio::spawn(run(client, outbound, table.clone(), target.address.clone()));
        Shared {
            endpoint: target.address.clone(),
            table,
        }
    }
}

/// The task of one stream: routes its responses until it ends, then hands the reason to every
/// watch still on it.
async fn run(
    mut client: WatchClient<Transport>,
    outbound: mpsc::UnboundedReceiver<pb::WatchRequest>,
    table: Arc<Mutex<Table>>,
    endpoint: String,
) {
    let failure = match client.watch(UnboundedReceiverStream::new(outbound)).await {
        Err(status) => Error::from_status(&status, &endpoint),
        Ok(response) => {
            let mut responses = response.into_inner();
            loop {
                match responses.message().await {
                    Ok(Some(response)) => lock(&table).route(response),
                    Ok(None) => {
                        break Error::ConnectionLost {
                            endpoint: endpoint.clone(),
                            message: "the member ended the watch stream".into(),
                        }
                    }
                    Err(status) => break Error::from_status(&status, &endpoint),
                }
            }
        }
    };
    let slots = {
        let mut table = lock(&table);
        table.requests = None;
        std::mem::take(&mut table.slots)
    };
    for slot in slots.values() {
        let _ = slot.sender.try_send(Err(Box::new(failure.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Table, mpsc::UnboundedReceiver<pb::WatchRequest>) {
        let (requests, outbound) = mpsc::unbounded_channel();
        let table = Table {
            slots: HashMap::new(),
            next_id: 1,
            requests: Some(requests),
        };
        (table, outbound)
    }

    fn join(
        table: &mut Table,
        capacity: usize,
    ) -> (u64, mpsc::Receiver<Delivery>, Arc<AtomicBool>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = table.next_id;
        table.next_id += 1;
        let slot = Slot {
            sender,
            overflowed: overflowed.clone(),
        };
        table.slots.insert(id, slot);
        (id, receiver, overflowed)
    }

    fn events(id: u64, revision: u64) -> pb::WatchResponse {
        pb::WatchResponse {
            watch_id: id,
            header: Some(pb::ResponseHeader {
                revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cancelled_ids(outbound: &mut mpsc::UnboundedReceiver<pb::WatchRequest>) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Ok(request) = outbound.try_recv() {
            if let Some(pb::watch_request::Request::Cancel(cancel)) = request.request {
                ids.push(cancel.watch_id);
            }
        }
        ids
    }

    #[test]
    fn responses_reach_only_their_own_watch() {
        let (mut table, _outbound) = table();
        let (first, mut first_rx, _) = join(&mut table, 4);
        let (second, mut second_rx, _) = join(&mut table, 4);
        table.route(events(second, 7));
        table.route(events(first, 8));
        let got = first_rx.try_recv().unwrap().unwrap();
        assert_eq!(got.header.unwrap().revision, 8);
        assert!(first_rx.try_recv().is_err());
        let got = second_rx.try_recv().unwrap().unwrap();
        assert_eq!(got.header.unwrap().revision, 7);
    }

    #[test]
    fn a_slow_watch_is_moved_off_without_holding_up_the_others() {
        let (mut table, mut outbound) = table();
        let (slow, mut slow_rx, slow_overflowed) = join(&mut table, 2);
        let (fast, mut fast_rx, fast_overflowed) = join(&mut table, 2);
        for revision in 1..=5 {
            table.route(events(slow, revision));
            table.route(events(fast, revision));
            let got = fast_rx.try_recv().unwrap().unwrap();
            assert_eq!(got.header.unwrap().revision, revision);
        }
        assert!(slow_overflowed.load(Ordering::Relaxed));
        assert!(!fast_overflowed.load(Ordering::Relaxed));
        assert_eq!(cancelled_ids(&mut outbound), vec![slow]);
        // What was buffered before the overflow is still delivered, in order, then the end.
        let revisions: Vec<u64> = std::iter::from_fn(|| slow_rx.try_recv().ok())
            .map(|delivery| delivery.unwrap().header.unwrap().revision)
            .collect();
        assert_eq!(revisions, vec![1, 2]);
        assert!(matches!(
            slow_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(table.open(), "the fast watch is still on the stream");
    }

    #[test]
    fn the_last_watch_to_leave_closes_the_stream() {
        let (mut table, mut outbound) = table();
        let (first, _first_rx, _) = join(&mut table, 2);
        let (second, _second_rx, _) = join(&mut table, 2);
        table.release(first, true);
        assert!(table.open());
        // A one-shot watch the member ended is not cancelled again.
        let mut ended = events(second, 3);
        ended.canceled = true;
        table.route(ended);
        assert!(!table.open());
        assert_eq!(cancelled_ids(&mut outbound), vec![first]);
    }

    #[test]
    fn responses_for_a_dropped_watch_are_ignored_and_cancel_it() {
        let (mut table, mut outbound) = table();
        let (gone, gone_rx, _) = join(&mut table, 2);
        let (_stays, _stays_rx, _) = join(&mut table, 2);
        drop(gone_rx);
        table.route(events(gone, 1));
        table.route(events(gone, 2));
        assert_eq!(cancelled_ids(&mut outbound), vec![gone]);
        assert!(table.open());
    }

    #[tokio::test]
    async fn watches_fill_a_stream_before_another_is_opened() {
        let dial = crate::endpoints::Dial {
            connect_timeout: std::time::Duration::from_secs(1),
            tls: None,
            credentials: crate::endpoints::Credentials::default(),
        };
        let endpoints = crate::endpoints::Endpoints::new(vec!["127.0.0.1:1".into()], dial)
            .expect("a valid address");
        let target = endpoints
            .next(&mut crate::endpoints::Route::new())
            .expect("one endpoint");
        let streams = WatchStreams::default();
        let mut held = Vec::new();
        for _ in 0..WATCHES_PER_STREAM {
            held.push(streams.subscribe(&target, pb::WatchCreate::default()));
        }
        assert_eq!(streams.open_streams(), 1);
        held.push(streams.subscribe(&target, pb::WatchCreate::default()));
        assert_eq!(streams.open_streams(), 2);
        drop(held);
        assert_eq!(streams.open_streams(), 0);
    }
}
