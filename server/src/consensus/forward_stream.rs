//! `ForwardStreams`: how a follower sends `ForwardBatcher`'s batches to the leader, over one
//! long-lived `Peer.ForwardStream` per leader address rather than a `Peer.Forward` call each.
//!
//! A unary call costs both members an HTTP/2 stream of its own: headers encoded and decoded
//! each way, a task spawned on the leader, a request and a response built around the message.
//! On the stream a batch is one message each way (`StreamedBatch`, `StreamedReply`), tagged so
//! that the leader answers each batch as soon as its writes are done, in any order.
//!
//! ```text
//!  batch ─► tag ─► pending[tag] ─► stream ─────────► leader: each batch at once,
//!  caller ◄── its reply ◄── the reader dispatches ◄── replies as they finish (tag)
//! ```
//!
//! - No task of its own reads the answers: a caller waiting for its batch's reply reads the
//!   stream itself, while no other caller does, and hands each reply it reads for another batch
//!   to that batch's caller. A lone writer's forward so takes no hand-off between tasks.
//! - Each batch keeps its deadline. One its caller gave up on is forgotten; its reply, if it
//!   comes, is dropped.
//! - A stream that fails (its status, its end, an unreadable reply) fails every batch still
//!   waiting on it as a failed `Peer.Forward` call would (outcome unknown), and the next batch
//!   opens a new stream. A batch that could not be handed to a closed stream never left: it
//!   goes on a new stream.
//! - A leader that answers UNIMPLEMENTED (a release before `ForwardStream`) gets each batch as
//!   a `Peer.Forward` call, and is asked again after `UNSUPPORTED_RECHECK`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use coord_proto::v1::peer::PeerMessage;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::forward_batch::{BatchReply, BatchSender};
use super::ids::MemberId;
use super::leader::{StreamedBatch, StreamedReply, WriteBatchCall};
use super::peer_client::{PeerCallError, PeerClients};
use super::wire::{decode_peer, encode_peer, MessageKind};

/// How long a leader that answered UNIMPLEMENTED gets single calls before it is asked again
/// (during a rolling upgrade it may be upgraded at the same address).
const UNSUPPORTED_RECHECK: Duration = Duration::from_secs(60);

/// The follower's forward streams, one per leader address (see the module doc).
pub struct ForwardStreams {
    peers: Arc<PeerClients>,
    links: Mutex<HashMap<String, Link>>,
    /// Per address: held while a stream to it is being opened, so that batches arriving
    /// meanwhile wait for that stream rather than open their own.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What this member knows of forwarding to one address.
enum Link {
    Open(Arc<ForwardStream>),
    /// The member there answered UNIMPLEMENTED: single calls until `ask_again`.
    Unsupported {
        ask_again: Instant,
    },
}

impl ForwardStreams {
    pub fn new(peers: Arc<PeerClients>) -> ForwardStreams {
        ForwardStreams {
            peers,
            links: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
        }
    }

    fn links(&self) -> MutexGuard<'_, HashMap<String, Link>> {
        // Every change to the map is one insert or remove: consistent after any panic.
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open stream to `address`, opening one if there is none (`None`: the member there
    /// does not take streams).
    async fn stream(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<Option<Arc<ForwardStream>>, PeerCallError> {
        if let Some(known) = self.known(address) {
            return Ok(known);
        }
        let opening = self
            .opening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_owned())
            .or_default()
            .clone();
        let _opening = opening.lock().await;
        // Opened by the caller this one waited for.
        if let Some(known) = self.known(address) {
            return Ok(known);
        }
        let opened = match tokio::time::timeout(timeout, self.open(address)).await {
            Ok(opened) => opened,
            Err(_) => Err(PeerCallError::failed(
                address,
                &tonic::Status::deadline_exceeded(format!(
                    "the forward stream was not accepted within {timeout:?}"
                )),
            )),
        };
        let mut links = self.links();
        match opened {
            Ok(stream) => {
                links.insert(address.to_owned(), Link::Open(stream.clone()));
                Ok(Some(stream))
            }
            Err(error) if error.is_unimplemented() => {
                tracing::info!(
                    address,
                    "the leader takes no forward stream (an older release): single calls"
                );
                let ask_again = Instant::now() + UNSUPPORTED_RECHECK;
                links.insert(address.to_owned(), Link::Unsupported { ask_again });
                Ok(None)
            }
            Err(error) => {
                links.remove(address);
                Err(error)
            }
        }
    }

    /// What is known of `address` without asking: its open stream, or `Some(None)` while it
    /// is known not to take streams; `None` when a stream must be opened.
    fn known(&self, address: &str) -> Option<Option<Arc<ForwardStream>>> {
        match self.links().get(address) {
            Some(Link::Open(stream)) if !stream.has_ended() => Some(Some(stream.clone())),
            Some(Link::Unsupported { ask_again }) if Instant::now() < *ask_again => Some(None),
            _ => None,
        }
    }

    async fn open(&self, address: &str) -> Result<Arc<ForwardStream>, PeerCallError> {
        let (requests, outgoing) = mpsc::unbounded_channel();
        let answers = self.peers.open_forward_stream(address, outgoing).await?;
        Ok(Arc::new(ForwardStream {
            address: address.to_owned(),
            requests,
            answers: tokio::sync::Mutex::new(Some(answers)),
            pending: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(0),
            ended: Mutex::new(None),
        }))
    }
}

impl BatchSender for ForwardStreams {
    async fn send_batch(
        &self,
        leader: MemberId,
        address: &str,
        batch: WriteBatchCall,
        timeout: Duration,
    ) -> BatchReply {
        let deadline = Instant::now() + timeout;
        let mut batch = batch;
        // A batch handed to a stream that had already closed never left: once more on a new
        // stream (the connection may have closed while idle, as when the leader restarted),
        // then as a single call.
        for _ in 0..2 {
            let Some(stream) = self.stream(address, timeout).await? else {
                break;
            };
            match stream.exchange(batch, deadline).await {
                Exchanged::Replied(reply) => return reply,
                Exchanged::Unsent(unsent) => batch = unsent,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.peers.send_batch(leader, address, batch, left).await
    }
}

/// What handing a batch to a stream gave.
enum Exchanged {
    Replied(BatchReply),
    /// The stream had closed; the batch never left.
    Unsent(WriteBatchCall),
}

/// One `Peer.ForwardStream`: its request half, its answers, and the batches waiting for one.
struct ForwardStream {
    address: String,
    requests: mpsc::UnboundedSender<PeerMessage>,
    /// The answers, read by one waiting caller at a time; `None` once the stream failed.
    answers: tokio::sync::Mutex<Option<tonic::Streaming<PeerMessage>>>,
    /// The batches sent and not answered, by tag.
    pending: Mutex<HashMap<u64, oneshot::Sender<BatchReply>>>,
    next_tag: AtomicU64,
    /// Why the stream failed, once it did.
    ended: Mutex<Option<PeerCallError>>,
}

impl ForwardStream {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<BatchReply>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ended(&self) -> Option<PeerCallError> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn has_ended(&self) -> bool {
        self.requests.is_closed() || self.ended().is_some()
    }

    /// Records why the stream failed and fails every batch waiting on it with that.
    fn end(&self, error: PeerCallError) {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.clone());
        let waiting: Vec<_> = self.pending().drain().map(|(_, waiter)| waiter).collect();
        for waiter in waiting {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    fn failed(&self, code: tonic::Code, message: String) -> PeerCallError {
        PeerCallError::failed(&self.address, &tonic::Status::new(code, message))
    }

    /// Sends `batch` and waits, until `deadline`, for its reply.
    async fn exchange(&self, batch: WriteBatchCall, deadline: Instant) -> Exchanged {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (waiter, mut replied) = oneshot::channel();
        self.pending().insert(tag, waiter);
        let _forget = Forget { stream: self, tag };
        // Checked once the batch is pending: `end` fails every batch pending after it is set.
        if let Some(error) = self.ended() {
            return Exchanged::Replied(Err(error));
        }
        let streamed = StreamedBatch { tag, batch };
        let message = encode_peer(MessageKind::ForwardStream, &streamed);
        if self.requests.send(message).is_err() {
            return Exchanged::Unsent(streamed.batch);
        }
        let answered = async {
            tokio::select! {
                biased;
                reply = &mut replied => reply.ok(),
                read = self.read_until(tag) => match read {
                    Some(reply) => Some(reply),
                    // Another caller read it, or the stream failed: either way it is here.
                    None => (&mut replied).await.ok(),
                },
            }
        };
        let reply = match tokio::time::timeout_at(deadline, answered).await {
            Ok(Some(reply)) => reply,
            Ok(None) => Err(self.ended().unwrap_or_else(|| {
                self.failed(
                    tonic::Code::Unavailable,
                    "the forward stream dropped the batch".into(),
                )
            })),
            Err(_) => Err(self.failed(
                tonic::Code::DeadlineExceeded,
                "the leader did not answer the forwarded batch in time".into(),
            )),
        };
        Exchanged::Replied(reply)
    }

    /// Reads answers, handing each to its batch's caller, until the one for `tag`, which it
    /// returns. `None` once `tag` is no longer pending: another caller read its reply, or the
    /// stream failed (`end`); either way its caller's channel holds the outcome.
    async fn read_until(&self, tag: u64) -> Option<BatchReply> {
        let mut answers = self.answers.lock().await;
        loop {
            if !self.pending().contains_key(&tag) {
                return None;
            }
            let stream = answers.as_mut()?;
            let error = match stream.next().await {
                Some(Ok(message)) => {
                    match decode_peer::<StreamedReply>(&message, MessageKind::ForwardStream) {
                        Ok(StreamedReply {
                            tag: answered,
                            reply,
                        }) => {
                            let waiter = self.pending().remove(&answered);
                            if answered == tag {
                                return Some(Ok(reply));
                            }
                            // None: its caller gave up on it.
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(Ok(reply));
                            }
                            continue;
                        }
                        Err(source) => PeerCallError::Reply {
                            address: self.address.clone(),
                            source,
                        },
                    }
                }
                Some(Err(status)) => PeerCallError::failed(&self.address, &status),
                None => self.failed(
                    tonic::Code::Unavailable,
                    "the forward stream ended with batches unanswered".into(),
                ),
            };
            *answers = None;
            self.end(error);
            return None;
        }
    }
}

/// Forgets a batch's tag once its caller is done with it, answered or not.
struct Forget<'a> {
    stream: &'a ForwardStream,
    tag: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.stream.pending().remove(&self.tag);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;

    use coord_proto::v1::peer::peer_server::{Peer, PeerServer};
    use futures::Stream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::consensus::error::ConsensusError;
    use crate::consensus::leader::{WriteCall, Written};
    use crate::consensus::peer_client::PeerDialer;
    use crate::fsm::{Command, DeleteCommand, OutcomeRecord, Output, Proposal, Revision};

    type Replies = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send>>;

    /// How the fake leader treats `ForwardStream`.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Answers batches two at a time, the second first.
        Reversed,
        /// Answers UNIMPLEMENTED, as a release before it.
        Older,
        /// Ends each stream with an error status after reading its first batch.
        Failing,
    }

    /// A leader that answers each write of a batch with revision `100 * tag + position`
    /// (single calls: `tag` 0), and counts the streams and single calls it took.
    #[derive(Clone)]
    struct FakeLeader {
        mode: Mode,
        streams: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    fn answers(tag: u64, batch: &WriteBatchCall) -> Vec<Result<Written, ConsensusError>> {
        (0..batch.writes.len() as u64)
            .map(|position| {
                Ok(Written {
                    revision: Revision(100 * tag + position),
                    outcome: OutcomeRecord::Done(Output::Deleted { count: 1 }),
                })
            })
            .collect()
    }

    fn streamed_reply(message: &PeerMessage) -> PeerMessage {
        let StreamedBatch { tag, batch } =
            decode_peer(message, MessageKind::ForwardStream).expect("a streamed batch");
        let reply = StreamedReply {
            tag,
            reply: Ok(answers(tag, &batch)),
        };
        encode_peer(MessageKind::ForwardStream, &reply)
    }

    #[tonic::async_trait]
    impl Peer for FakeLeader {
        async fn append_entries(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn vote(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn install_snapshot(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn forward(
            &self,
            request: Request<PeerMessage>,
        ) -> Result<Response<PeerMessage>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let kind = MessageKind::WriteBatch;
            let batch: WriteBatchCall = decode_peer(request.get_ref(), kind).expect("a batch");
            let reply: Result<_, ConsensusError> = Ok(answers(0, &batch));
            Ok(Response::new(encode_peer(kind, &reply)))
        }
        async fn read_index(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn hello(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn pre_vote(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn timeout_now(
            &self,
            _: Request<PeerMessage>,
        ) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn features(&self, _: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type AppendStreamStream = Replies;
        async fn append_stream(
            &self,
            _: Request<Streaming<PeerMessage>>,
        ) -> Result<Response<Replies>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type ForwardStreamStream = Replies;
        async fn forward_stream(
            &self,
            request: Request<Streaming<PeerMessage>>,
        ) -> Result<Response<Replies>, Status> {
            let incoming = request.into_inner();
            let replies: Replies = match self.mode {
                Mode::Older => return Err(Status::unimplemented("Peer/ForwardStream")),
                Mode::Reversed => Box::pin(incoming.chunks(2).flat_map(|pair| {
                    let replies: Vec<_> = pair
                        .iter()
                        .rev()
                        .map(|message| Ok(streamed_reply(message.as_ref().expect("a message"))))
                        .collect();
                    futures::stream::iter(replies)
                })),
                Mode::Failing => Box::pin(
                    incoming
                        .take(1)
                        .map(|_| Err(Status::internal("the fake leader fails the stream"))),
                ),
            };
            self.streams.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(replies))
        }
    }

    /// Serves `leader` on a free loopback port until the test's runtime ends.
    async fn serve(leader: FakeLeader) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let incoming = Box::pin(futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(connection, _)| connection);
            Some((accepted, listener))
        }));
        let server = tonic::transport::Server::builder()
            .add_service(PeerServer::new(leader))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        address
    }

    fn fake(mode: Mode) -> FakeLeader {
        FakeLeader {
            mode,
            streams: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn streams() -> ForwardStreams {
        let peers = PeerClients::new("test".into(), PeerDialer::default());
        ForwardStreams::new(Arc::new(peers))
    }

    fn batch(writes: usize) -> WriteBatchCall {
        let delete = WriteCall {
            proposal: Proposal::from(Command::Delete(DeleteCommand {
                path: "/a".into(),
                expected_version: None,
                recursive: false,
            })),
        };
        WriteBatchCall {
            writes: vec![delete; writes],
        }
    }

    fn revisions(reply: BatchReply) -> Vec<u64> {
        reply
            .expect("delivered")
            .expect("answered")
            .into_iter()
            .map(|written| written.expect("written").revision.0)
            .collect()
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_on_one_stream_each_get_their_own_reply_whatever_the_order() {
        let leader = fake(Mode::Reversed);
        let address = serve(leader.clone()).await;
        let streams = streams();
        let send = |writes| streams.send_batch(MemberId(1), &address, batch(writes), BOUND);
        // Two batches out at once: the leader answers the second first.
        let (first, second) = tokio::join!(send(1), send(3));
        let (mut first, mut second) = (revisions(first), revisions(second));
        // Which went first on the stream is the runtime's choice; each got its own answers.
        if first.len() == 3 {
            std::mem::swap(&mut first, &mut second);
        }
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 3);
        let (first_tag, second_tag) = (first[0] / 100, second[0] / 100);
        assert_ne!(first_tag, second_tag);
        assert_eq!(
            second,
            [0, 1, 2].map(|position| 100 * second_tag + position)
        );
        // Two more, on the same stream, with the next tags.
        let (third, fourth) = tokio::join!(send(2), send(2));
        let mut tags = [revisions(third)[0] / 100, revisions(fourth)[0] / 100];
        tags.sort_unstable();
        assert_eq!(tags, [2, 3]);
        assert_eq!(leader.streams.load(Ordering::SeqCst), 1);
        assert_eq!(leader.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_leader_without_the_stream_gets_single_calls() {
        let leader = fake(Mode::Older);
        let address = serve(leader.clone()).await;
        let streams = streams();
        for _ in 0..3 {
            let reply = streams
                .send_batch(MemberId(1), &address, batch(2), BOUND)
                .await;
            assert_eq!(revisions(reply), [0, 1], "answered by a single call");
        }
        assert_eq!(leader.calls.load(Ordering::SeqCst), 3);
        assert!(
            matches!(
                streams.links().get(&address),
                Some(Link::Unsupported { .. })
            ),
            "asked once, not again on every batch"
        );
    }

    #[tokio::test]
    async fn a_failed_stream_fails_its_batch_as_unknown_and_the_next_opens_another() {
        let leader = fake(Mode::Failing);
        let address = serve(leader.clone()).await;
        let streams = streams();
        for opened in 1..=2 {
            let reply = streams
                .send_batch(MemberId(1), &address, batch(1), BOUND)
                .await;
            let error = reply.expect_err("the stream failed under the batch");
            assert!(
                error.to_string().contains("fails the stream"),
                "the leader's status: {error}"
            );
            let unknown = error.clone().for_leader_call(MemberId(1));
            assert!(
                matches!(unknown, ConsensusError::LeaderUnreachable { .. }),
                "the batch may have been applied: {unknown:?}"
            );
            assert_eq!(leader.streams.load(Ordering::SeqCst), opened);
        }
    }

    #[tokio::test]
    async fn a_leader_that_cannot_be_reached_means_nothing_was_sent() {
        // A port nothing listens on: bound, then closed.
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address").to_string()
        };
        let reply = streams()
            .send_batch(MemberId(1), &address, batch(1), BOUND)
            .await;
        let error = reply.expect_err("nothing listens there");
        let nothing_sent = error.clone().for_leader_call(MemberId(1));
        assert!(
            matches!(nothing_sent, ConsensusError::NoLeader { .. }),
            "{error}"
        );
    }
}
