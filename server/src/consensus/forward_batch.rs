//! `ForwardBatcher`: a follower sends the client writes it forwards to the leader several to a
//! batch (`WriteBatchCall`), instead of one call each. A forwarded write used to cost a unary
//! call of its own on both members, about as much CPU as the write itself; under load a batch
//! now carries many writes. Batches go on the follower's `Peer.ForwardStream` to the leader
//! (`forward_stream.rs`), or as `Peer.Forward` calls to a leader without it.
//!
//! ```text
//!  write ─► queue (one per leader) ─► drain task ─► batch ─► ForwardStreams
//!                                                              │ leader: each write at once,
//!  caller ◄── its own answer ◄── answers, in order ◄───────────┘ as if forwarded alone
//! ```
//!
//! - No write waits for company: a write leaves at once unless `BATCHES_IN_FLIGHT` batches to
//!   that leader are unanswered; the writes that arrive meanwhile leave together, up to
//!   `WRITES_PER_BATCH_MAX` writes and about `BATCH_BYTES` bytes. While batches are out,
//!   the writes decoded in one turn of the worker (a burst) leave together too (`InFlight`).
//! - A write that finds nothing queued and no batch out leaves on its caller's task, a batch of
//!   one, without the queue and the drain task: a lone writer's forward takes no hand-off
//!   between tasks on the way out or back (`InFlight::alone`, as the leader's `WriteBatcher`).
//! - Each write keeps its deadline and gets its own answer. One its caller gave up on before
//!   it left (a leader change, `Consensus::forward_while_leading`) is not sent.
//! - A batch that fails in transit fails each of its writes as a forward alone would:
//!   `NoLeader` when it never left, `LeaderUnreachable` (outcome unknown) otherwise. So is a
//!   reply that does not answer every write.
//! - Only to a leader that said it takes batches (`FeatureBook::takes_write_batches`), and
//!   only writes of at most `ALONE_BYTES`; the others go one call each (`WriteForwarder`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::Either;
use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::error::ConsensusError;
use super::features::FeatureBook;
use super::ids::MemberId;
use super::in_flight::InFlight;
use super::leader::{Forwarder, WriteBatchCall, WriteCall, Written};
use super::peer_client::{PeerCallError, PeerClients, PeerMethod};
use super::wire::{encoded_len, MessageKind};

/// Most writes in one batch; a leader refuses a batch of more.
pub const WRITES_PER_BATCH_MAX: usize = 64;
/// A batch takes no more writes once it holds this many bytes.
const BATCH_BYTES: u64 = 1024 * 1024;
/// A write larger than this is forwarded alone.
const ALONE_BYTES: u64 = 64 * 1024;
/// Batches to one leader unanswered at once; the writes that arrive meanwhile wait.
const BATCHES_IN_FLIGHT: usize = 4;

/// A batch's reply as it arrives: the leader's answers, its refusal of the whole batch, or a
/// failure in transit.
pub type BatchReply =
    Result<Result<Vec<Result<Written, ConsensusError>>, ConsensusError>, PeerCallError>;

/// Sends one batch to a leader: `ForwardStreams` over `Peer.ForwardStream`, `PeerClients` over
/// `Peer.Forward`; tests use their own.
pub trait BatchSender: Send + Sync + 'static {
    fn send_batch(
        &self,
        leader: MemberId,
        address: &str,
        batch: WriteBatchCall,
        timeout: Duration,
    ) -> impl Future<Output = BatchReply> + Send;
}

impl BatchSender for PeerClients {
    async fn send_batch(
        &self,
        _leader: MemberId,
        address: &str,
        batch: WriteBatchCall,
        timeout: Duration,
    ) -> BatchReply {
        let kind = MessageKind::WriteBatch;
        self.call(address, PeerMethod::Forward, kind, &batch, timeout)
            .await
    }
}

/// A write waiting for its batch.
struct Queued {
    call: WriteCall,
    bytes: u64,
    deadline: Instant,
    answer: oneshot::Sender<Result<Written, ConsensusError>>,
}

/// The follower's queues of writes for the leader, one per leader (see the module doc).
pub struct ForwardBatcher<S: BatchSender> {
    sender: Arc<S>,
    /// Per leader: the lane to it.
    lanes: Mutex<HashMap<MemberId, Lane<S>>>,
    writes_per_forward: Histogram,
}

/// The way to one leader at one address: its queue, drained by its own task, and the batches
/// out to it, whether the drain task or a lone write's caller sent them.
struct Lane<S> {
    queue: mpsc::UnboundedSender<Queued>,
    drain: Arc<Drain<S>>,
    in_flight: InFlight,
    /// Writes in the queue, not yet gathered into a batch.
    waiting: Arc<AtomicUsize>,
}

impl<S> Clone for Lane<S> {
    fn clone(&self) -> Lane<S> {
        Lane {
            queue: self.queue.clone(),
            drain: self.drain.clone(),
            in_flight: self.in_flight.clone(),
            waiting: self.waiting.clone(),
        }
    }
}

impl<S: BatchSender> ForwardBatcher<S> {
    pub fn new(sender: Arc<S>, writes_per_forward: Histogram) -> ForwardBatcher<S> {
        ForwardBatcher {
            sender,
            lanes: Mutex::new(HashMap::new()),
            writes_per_forward,
        }
    }

    /// Forwards `call` (`bytes` encoded) to `leader` at `address` in a batch with the writes
    /// queued with it, and returns the leader's answer to it; gives up after `timeout`, outcome
    /// unknown.
    pub async fn forward(
        &self,
        leader: MemberId,
        address: &str,
        call: WriteCall,
        bytes: u64,
        timeout: Duration,
    ) -> Result<Written, ConsensusError> {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            call,
            bytes,
            deadline: Instant::now() + timeout,
            answer,
        };
        let unanswered = |reason: String| ConsensusError::LeaderUnreachable { leader, reason };
        let lane = self.lane(leader, address);
        let answered = match lane.in_flight.alone(lane.waiting.load(Ordering::Acquire)) {
            // Nothing queued and nothing out: this write leaves alone, sent by its caller's task.
            Some(permit) => Either::Left(async move {
                lane.drain.send(vec![queued], permit).await;
                answered.await
            }),
            None => {
                lane.waiting.fetch_add(1, Ordering::AcqRel);
                if lane.queue.send(queued).is_err() {
                    lane.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(ConsensusError::NoLeader { leader_hint: None });
                }
                Either::Right(answered)
            }
        };
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unanswered(
                "the batch carrying the write ended unanswered".into(),
            )),
            Err(_) => Err(unanswered(format!(
                "the leader did not answer the forwarded write within {timeout:?}"
            ))),
        }
    }

    /// The lane to `leader` at `address`, with its drain task started on first use.
    fn lane(&self, leader: MemberId, address: &str) -> Lane<S> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(&leader) {
            if lane.drain.address == address && !lane.queue.is_closed() {
                return lane.clone();
            }
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        let lane = Lane {
            queue,
            drain: Arc::new(Drain {
                sender: self.sender.clone(),
                leader,
                address: address.to_owned(),
                writes_per_forward: self.writes_per_forward.clone(),
            }),
            in_flight: InFlight::new(BATCHES_IN_FLIGHT),
            waiting: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(lane.clone().drain_queue(receiver));
        // A lane to the leader's old address ends once its queued writes have left.
        lanes.insert(leader, lane.clone());
        lane
    }
}

impl<S: BatchSender> Lane<S> {
    /// Sends the writes queued on this lane until every handle to the queue is gone.
    async fn drain_queue(self, mut receiver: mpsc::UnboundedReceiver<Queued>) {
        let Lane {
            queue,
            drain,
            in_flight,
            waiting,
        } = self;
        // The task holds no sender of its own: it ends once the lane is replaced and its last
        // queued write has left.
        drop(queue);
        while let Some(first) = receiver.recv().await {
            let permit = in_flight.turn().await;
            let batch = gather(first, &mut receiver, &waiting);
            if !batch.is_empty() {
                tokio::spawn(drain.clone().send_owned(batch, permit));
            }
        }
    }
}

/// Sends batches to one leader: those the drain task gathers and lone writes alike.
struct Drain<S> {
    sender: Arc<S>,
    leader: MemberId,
    address: String,
    writes_per_forward: Histogram,
}

impl<S: BatchSender> Drain<S> {
    async fn send_owned(self: Arc<Self>, batch: Vec<Queued>, permit: OwnedSemaphorePermit) {
        self.send(batch, permit).await;
    }

    /// Sends `batch` and answers each of its writes; the turn is held until then.
    async fn send(&self, batch: Vec<Queued>, _permit: OwnedSemaphorePermit) {
        let now = Instant::now();
        let timeout = batch
            .iter()
            .map(|queued| queued.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        let (writes, answers): (Vec<WriteCall>, Vec<_>) = batch
            .into_iter()
            .map(|queued| (queued.call, queued.answer))
            .unzip();
        let count = writes.len();
        self.writes_per_forward.observe(count as f64);
        let reply = self
            .sender
            .send_batch(
                self.leader,
                &self.address,
                WriteBatchCall { writes },
                timeout,
            )
            .await;
        for (answer, result) in answers
            .into_iter()
            .zip(answers_of(self.leader, count, reply))
        {
            let _ = answer.send(result);
        }
    }
}

/// `first` and the writes queued behind it, within the batch limits, less those whose caller
/// gave up.
fn gather(
    first: Queued,
    queue: &mut mpsc::UnboundedReceiver<Queued>,
    waiting: &AtomicUsize,
) -> Vec<Queued> {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < WRITES_PER_BATCH_MAX && bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(next) => {
                bytes += next.bytes;
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    waiting.fetch_sub(batch.len(), Ordering::AcqRel);
    batch.retain(|queued| !queued.answer.is_closed());
    batch
}

/// Each of a batch's `count` writes' answer from the batch's reply.
fn answers_of(
    leader: MemberId,
    count: usize,
    reply: BatchReply,
) -> Vec<Result<Written, ConsensusError>> {
    match reply {
        Ok(Ok(answers)) if answers.len() == count => answers,
        Ok(Ok(answers)) => vec![
            Err(ConsensusError::LeaderUnreachable {
                leader,
                reason: format!(
                    "the leader answered {} of a batch of {count} forwarded writes",
                    answers.len()
                ),
            });
            count
        ],
        Ok(Err(error)) => vec![Err(error); count],
        Err(error) => vec![Err(error.for_leader_call(leader)); count],
    }
}

/// How `Consensus::write` forwards a client write: in a batch to a leader that takes them,
/// one call of its own otherwise or when the write is larger than `ALONE_BYTES`.
pub struct WriteForwarder<'a, S: BatchSender> {
    pub batcher: &'a ForwardBatcher<S>,
    pub peers: &'a PeerClients,
    pub features: &'a FeatureBook,
}

impl<S: BatchSender> Forwarder<WriteCall> for WriteForwarder<'_, S> {
    async fn forward(
        &self,
        leader: MemberId,
        address: &str,
        call: &WriteCall,
        timeout: Duration,
    ) -> Result<Written, ConsensusError> {
        let bytes = encoded_len(call);
        if bytes <= ALONE_BYTES && self.features.takes_write_batches(leader) {
            self.batcher
                .forward(leader, address, call.clone(), bytes, timeout)
                .await
        } else {
            self.batcher.writes_per_forward.observe(1.0);
            self.peers.forward(leader, address, call, timeout).await
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;
    use crate::fsm::{Command, OutcomeRecord, Output, Revision, SetCommand};

    /// A leader that answers each write with the number in its path as the revision, after
    /// `hold` lets the batch go; records every batch's numbers.
    struct FakeLeader {
        batches: Mutex<Vec<Vec<u64>>>,
        hold: Semaphore,
        reply: fn(Vec<Result<Written, ConsensusError>>) -> BatchReply,
    }

    impl BatchSender for FakeLeader {
        async fn send_batch(
            &self,
            _leader: MemberId,
            _address: &str,
            batch: WriteBatchCall,
            _timeout: Duration,
        ) -> BatchReply {
            let numbers: Vec<u64> = batch.writes.iter().map(number).collect();
            self.batches.lock().unwrap().push(numbers.clone());
            self.hold.acquire().await.unwrap().forget();
            let answers = numbers
                .into_iter()
                .map(|number| {
                    Ok(Written {
                        revision: Revision(number),
                        outcome: OutcomeRecord::Done(Output::Deleted { count: 0 }),
                    })
                })
                .collect();
            (self.reply)(answers)
        }
    }

    fn write(number: u64) -> WriteCall {
        let set = SetCommand {
            path: format!("/k{number}"),
            data: b"v".to_vec(),
            expected_version: None,
        };
        WriteCall {
            proposal: Command::Set(set).into(),
        }
    }

    fn number(call: &WriteCall) -> u64 {
        match &call.proposal.command {
            Command::Set(set) => set.path[2..].parse().unwrap(),
            other => panic!("not a test write: {other:?}"),
        }
    }

    fn batcher(
        released: usize,
        reply: fn(Vec<Result<Written, ConsensusError>>) -> BatchReply,
    ) -> Arc<ForwardBatcher<FakeLeader>> {
        let leader = FakeLeader {
            batches: Mutex::new(Vec::new()),
            hold: Semaphore::new(released),
            reply,
        };
        let histogram = Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
        Arc::new(ForwardBatcher::new(Arc::new(leader), histogram))
    }

    fn spawn_write(
        batcher: &Arc<ForwardBatcher<FakeLeader>>,
        number: u64,
    ) -> tokio::task::JoinHandle<Result<Written, ConsensusError>> {
        let batcher = batcher.clone();
        tokio::spawn(async move {
            let call = write(number);
            let bytes = encoded_len(&call);
            let timeout = Duration::from_secs(10);
            batcher
                .forward(MemberId(1), "leader:1", call, bytes, timeout)
                .await
        })
    }

    /// Lets every spawned task run until it waits (the test runtime has one thread).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Writes 1 to `BATCHES_IN_FLIGHT`, one at a time, so that each leaves alone and every
    /// batch the queue may have out is taken (the fake leader holds them).
    async fn fill_in_flight(
        batcher: &Arc<ForwardBatcher<FakeLeader>>,
    ) -> Vec<tokio::task::JoinHandle<Result<Written, ConsensusError>>> {
        let mut out = Vec::new();
        for number in 1..=BATCHES_IN_FLIGHT as u64 {
            out.push(spawn_write(batcher, number));
            settle().await;
        }
        out
    }

    fn batches(batcher: &ForwardBatcher<FakeLeader>) -> Vec<Vec<u64>> {
        batcher.sender.batches.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_lone_write_leaves_at_once_and_writes_queued_behind_busy_batches_leave_together() {
        let batcher = batcher(0, |answers| Ok(Ok(answers)));
        let first = fill_in_flight(&batcher).await;
        let alone: Vec<Vec<u64>> = (1..=BATCHES_IN_FLIGHT as u64).map(|n| vec![n]).collect();
        assert_eq!(batches(&batcher), alone, "each left alone, unanswered");
        let waiting: Vec<_> = (10..20)
            .map(|number| spawn_write(&batcher, number))
            .collect();
        settle().await;
        assert_eq!(
            batches(&batcher),
            alone,
            "all batches are out: the rest wait"
        );
        batcher.sender.hold.add_permits(100);
        for (number, task) in (1..).zip(first) {
            assert_eq!(task.await.unwrap().unwrap().revision, Revision(number));
        }
        for (number, task) in (10..).zip(waiting) {
            assert_eq!(
                task.await.unwrap().unwrap().revision,
                Revision(number),
                "each write gets its own answer"
            );
        }
        let mut expected = alone;
        expected.push((10..20).collect());
        assert_eq!(
            batches(&batcher),
            expected,
            "the waiting writes left together, in order"
        );
    }

    /// On one thread, nothing else runs while the forward is polled: the batch reaches the
    /// leader within the forward's first poll only if the caller's task sent it itself.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_write_is_sent_by_its_callers_own_task() {
        let batcher = batcher(0, |answers| Ok(Ok(answers)));
        let call = write(1);
        let bytes = encoded_len(&call);
        let timeout = Duration::from_secs(10);
        let forward = batcher.forward(MemberId(1), "leader:1", call, bytes, timeout);
        let mut forward = std::pin::pin!(forward);
        assert!(
            futures::poll!(forward.as_mut()).is_pending(),
            "the leader holds the batch"
        );
        assert_eq!(
            batches(&batcher),
            vec![vec![1]],
            "sent within the first poll"
        );
        batcher.sender.hold.add_permits(1);
        assert_eq!(forward.await.unwrap().revision, Revision(1));
    }

    /// Waits (at most about 5 s, in short sleeps) until `batcher` has sent `writes` writes in
    /// all; the batches sent.
    async fn sent(batcher: &ForwardBatcher<FakeLeader>, writes: usize) -> Vec<Vec<u64>> {
        for _ in 0..2500 {
            let sent = batches(batcher);
            if sent.iter().map(Vec::len).sum::<usize>() >= writes {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{writes} writes not sent: {:?}", batches(batcher));
    }

    /// As a member runs: one worker, whose last woken task runs next (tokio's LIFO slot), so
    /// that the drain would otherwise run between the writes of one burst.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn writes_that_arrive_together_while_a_batch_is_out_leave_together() {
        let batcher = batcher(0, |answers| Ok(Ok(answers)));
        let first = spawn_write(&batcher, 1);
        assert_eq!(
            sent(&batcher, 1).await,
            vec![vec![1]],
            "a lone write leaves at once"
        );
        // A burst: requests decoded from one read, each handled by its own task, all spawned
        // in one turn of the worker.
        let spawner = {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                (10..20)
                    .map(|number| spawn_write(&batcher, number))
                    .collect::<Vec<_>>()
            })
        };
        let burst = spawner.await.unwrap();
        let mut together = sent(&batcher, 11).await;
        assert_eq!(
            together.len(),
            2,
            "the burst left in one batch: {together:?}"
        );
        together[1].sort_unstable();
        assert_eq!(together[1], (10..20).collect::<Vec<_>>());
        batcher.sender.hold.add_permits(100);
        first.await.unwrap().unwrap();
        for task in burst {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_its_limit_and_a_write_given_up_is_not_sent() {
        let batcher = batcher(0, |answers| Ok(Ok(answers)));
        let out = fill_in_flight(&batcher).await;
        let sent_out = batches(&batcher).len();
        assert_eq!(sent_out, BATCHES_IN_FLIGHT, "every batch is out");
        let total = WRITES_PER_BATCH_MAX as u64 + 10;
        let waiting: Vec<_> = (100..100 + total)
            .map(|number| spawn_write(&batcher, number))
            .collect();
        settle().await;
        // The caller of write 100 gives up (as a forward does when the leader changes).
        waiting[0].abort();
        settle().await;
        batcher.sender.hold.add_permits(1000);
        for task in out.into_iter().chain(waiting.into_iter().skip(1)) {
            task.await.unwrap().unwrap();
        }
        let later: Vec<Vec<u64>> = batches(&batcher).split_off(sent_out);
        assert!(
            later
                .iter()
                .all(|batch| batch.len() <= WRITES_PER_BATCH_MAX),
            "{later:?}"
        );
        let sent: Vec<u64> = later.into_iter().flatten().collect();
        assert_eq!(
            sent,
            (101..100 + total).collect::<Vec<_>>(),
            "all but write 100, in order"
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_write_as_a_forward_alone_would() {
        let short = batcher(100, |mut answers| {
            answers.pop();
            Ok(Ok(answers))
        });
        let refused = batcher(100, |_| {
            Ok(Err(ConsensusError::NoLeader { leader_hint: None }))
        });
        let lost = batcher(100, |_| {
            Err(PeerCallError::Failed {
                address: "leader:1".into(),
                code: "Unknown".into(),
                message: "connection reset".into(),
            })
        });
        let never_sent = batcher(100, |_| {
            Err(PeerCallError::Failed {
                address: "leader:1".into(),
                code: "Unavailable".into(),
                message: "tcp connect error: Connection refused".into(),
            })
        });
        for (batcher, unknown) in [
            (short, true),
            (refused, false),
            (lost, true),
            (never_sent, false),
        ] {
            let error = spawn_write(&batcher, 1).await.unwrap().unwrap_err();
            assert_eq!(
                matches!(error, ConsensusError::LeaderUnreachable { .. }),
                unknown,
                "{error:?}"
            );
        }
    }
}
