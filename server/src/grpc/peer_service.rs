//! The `coord.v1.peer.Peer` service: receives Raft messages from other members and hands them
//! to openraft; runs forwarded leader-only work (`LeaderCall`s, by message kind); answers
//! read-index and hello requests. Replies carry the remote `Result`, encoded like the request.
//! Traffic from another cluster (a different `coord-cluster-id`), in a format this member does
//! not read, or of the wrong kind for the method is refused with a status that says so.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use coord_proto::v1::peer::peer_server::Peer as PeerApi;
use coord_proto::v1::peer::PeerMessage;
use futures::{future, Stream, StreamExt};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult, VoteRequest,
};
use openraft_legacy::network_v1::{ChunkedSnapshotReceiver, InstallSnapshotRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::consensus::{
    decode_peer, encode_peer, peer_kind, Consensus, ConsensusError, FormatError, JoinCall,
    LeaderCall, MembershipChange, MessageKind, MoveLeader, PeerFeatures, PreVote, Refusal,
    StreamedBatch, StreamedReply, TimeoutNow, TypeConfig, VoteCall, WriteBatchCall, WriteCall,
    Written, CLUSTER_ID_METADATA_KEY, WRITES_PER_BATCH_MAX,
};
use crate::fsm::{Limits, OutcomeRecord, Revision};
use crate::membership::{Greeter, MemberDirectory};
use crate::sessions::{KeepAliveCall, ListSessionsCall, SessionKeeper};
use crate::throttle::LogThrottle;

pub struct PeerService {
    consensus: Arc<Consensus>,
    /// Runs the client writes forwarded to this member.
    writes: ForwardedWrites,
    refusals: Arc<RefusalLog>,
    keeper: Arc<SessionKeeper>,
    directory: Arc<MemberDirectory>,
    greeter: Arc<Greeter>,
}

fn refused(error: FormatError) -> Status {
    Status::invalid_argument(format!("peer message refused: {error}"))
}

/// Batches one `ForwardStream` runs at once; the next is read once one of them is answered
/// (a follower keeps at most `forward_batch::BATCHES_IN_FLIGHT` out).
const FORWARD_STREAM_BATCHES_MAX: usize = 16;

/// Refuses a forwarded batch of more writes than a follower sends.
fn check_batch_size(batch: &WriteBatchCall) -> Result<(), Status> {
    if batch.writes.len() > WRITES_PER_BATCH_MAX {
        return Err(Status::invalid_argument(format!(
            "peer message refused: a batch of {} forwarded writes, where at most \
             {WRITES_PER_BATCH_MAX} are sent",
            batch.writes.len()
        )));
    }
    Ok(())
}

/// Runs client writes forwarded to this member, alone or in batches.
#[derive(Clone)]
struct ForwardedWrites {
    consensus: Arc<Consensus>,
    /// This member's limits, checked again on writes forwarded to it.
    limits: Limits,
}

impl ForwardedWrites {
    /// A client write a follower forwarded: checked against this member's limits (the
    /// follower checked its own; the leader's hold), then written.
    async fn write(&self, call: WriteCall) -> Result<Written, ConsensusError> {
        match call.proposal.check_limits(&self.limits) {
            Ok(()) => self.consensus.write_for_client(call).await,
            Err(error) => Ok(Written {
                revision: Revision(0),
                outcome: OutcomeRecord::Refused(error),
            }),
        }
    }

    /// Each write of `batch` at once, as if forwarded alone; the answers in order.
    async fn batch(&self, batch: WriteBatchCall) -> Vec<Result<Written, ConsensusError>> {
        let writes = batch.writes.into_iter().map(|call| self.write(call));
        futures::future::join_all(writes).await
    }
}

/// Logs refused peer traffic, at most a line a second (`LogThrottle`).
#[derive(Default)]
struct RefusalLog {
    throttle: LogThrottle,
}

impl RefusalLog {
    fn note(&self, from: Option<std::net::SocketAddr>, what: &str, reason: &dyn std::fmt::Display) {
        self.throttle.warn(|suppressed| {
            let from =
                from.map_or_else(|| "an unknown address".to_owned(), |from| from.to_string());
            tracing::warn!(%from, what, %reason, suppressed, "peer message refused");
        });
    }
}

impl PeerService {
    pub fn new(
        consensus: Arc<Consensus>,
        limits: Limits,
        keeper: Arc<SessionKeeper>,
        directory: Arc<MemberDirectory>,
        greeter: Arc<Greeter>,
    ) -> PeerService {
        PeerService {
            writes: ForwardedWrites {
                consensus: consensus.clone(),
                limits,
            },
            consensus,
            refusals: Arc::default(),
            keeper,
            directory,
            greeter,
        }
    }

    /// Checks that a request comes from this cluster.
    fn check_cluster<B>(&self, request: &Request<B>) -> Result<(), Status> {
        let sender = request
            .metadata()
            .get(CLUSTER_ID_METADATA_KEY)
            .and_then(|value| value.to_str().ok());
        let ours = self.consensus.cluster_id();
        if sender != Some(ours) {
            let reason = format!(
                "peer traffic from cluster {:?} refused: this member belongs to cluster {ours}",
                sender.unwrap_or("<none>")
            );
            self.refusals.note(
                crate::listener::remote_address(request),
                "cluster id",
                &reason,
            );
            return Err(Status::permission_denied(reason));
        }
        Ok(())
    }

    /// Decodes a request of `kind` after checking that it comes from this cluster.
    fn accept<T: DeserializeOwned>(
        &self,
        request: &Request<PeerMessage>,
        kind: MessageKind,
    ) -> Result<T, Status> {
        self.check_cluster(request)?;
        decode_peer(request.get_ref(), kind).map_err(|error| {
            self.refusals.note(
                crate::listener::remote_address(request),
                "undecodable",
                &error,
            );
            refused(error)
        })
    }

    /// Refuses (and logs) a message that `admitted` says is impossible.
    fn admit(
        &self,
        request: &Request<PeerMessage>,
        admitted: Result<(), Refusal>,
    ) -> Result<(), Status> {
        admitted.map_err(|refusal| {
            self.refusals.note(
                crate::listener::remote_address(request),
                "impossible",
                &refusal,
            );
            Status::invalid_argument(format!("peer message refused: {refusal}"))
        })
    }

    /// Refuses Raft traffic, retryably, while this member joins (`Consensus::hold_raft_traffic`).
    fn check_raft_traffic(&self) -> Result<(), Status> {
        match self.consensus.raft_traffic_refused() {
            Some(reason) => Err(Status::unavailable(reason)),
            None => Ok(()),
        }
    }

    /// Client writes a follower forwarded together: each runs at once as if forwarded alone,
    /// and the reply answers each in order. A batch larger than a follower sends is refused.
    async fn forwarded_batch(&self, message: &PeerMessage) -> Result<PeerMessage, Status> {
        let kind = MessageKind::WriteBatch;
        let batch: WriteBatchCall = decode_peer(message, kind).map_err(refused)?;
        check_batch_size(&batch)?;
        let answers = self.writes.batch(batch).await;
        Ok(reply(kind, &Ok::<_, ConsensusError>(answers)))
    }

    /// Runs a forwarded call with `here` and encodes its reply.
    async fn run<C, F, Fut>(&self, message: &PeerMessage, here: F) -> Result<PeerMessage, Status>
    where
        C: LeaderCall,
        F: FnOnce(C) -> Fut,
        Fut: std::future::Future<Output = Result<C::Reply, ConsensusError>>,
    {
        let call: C = decode_peer(message, C::KIND).map_err(refused)?;
        Ok(reply(C::KIND, &here(call).await))
    }
}

/// The answers of an `AppendStream` or a `ForwardStream`, as tonic sends them.
type PeerReplies = Pin<Box<dyn Stream<Item = Result<PeerMessage, Status>> + Send + 'static>>;

/// One answer of an `AppendStream`: openraft's, or the text of the fatal error that stopped
/// Raft here (diagnostic only: error bodies differ between openraft releases).
type StreamAnswer = Result<StreamAppendResult<TypeConfig>, String>;

impl PeerService {
    /// A leader's pipelined AppendEntries. Each request is decoded and admitted as the unary
    /// call's are, and openraft takes them in order without waiting for the previous answer.
    /// An answer leaves only once the entries it matched are on this member's disk (the second
    /// gate of `log_flush`); one synced write covers every answer queued behind it. The first
    /// refused request ends the input, and the stream ends with its status after the answers
    /// to the requests before it.
    fn append_replies(
        &self,
        from: Option<SocketAddr>,
        incoming: Streaming<PeerMessage>,
    ) -> PeerReplies {
        let kind = MessageKind::AppendStream;
        let refusal: Arc<Mutex<Option<Status>>> = Arc::default();
        let (checker, refusals, refused_input) = (
            self.consensus.clone(),
            self.refusals.clone(),
            refusal.clone(),
        );
        let requests = incoming.map(move |message| {
            let message = message?;
            if let Some(reason) = checker.raft_traffic_refused() {
                return Err(Status::unavailable(reason));
            }
            let request: AppendEntriesRequest<TypeConfig> =
                decode_peer(&message, kind).map_err(|error| {
                    refusals.note(from, "undecodable", &error);
                    refused(error)
                })?;
            checker.admit_append(&request).map_err(|refusal| {
                refusals.note(from, "impossible", &refusal);
                Status::invalid_argument(format!("peer message refused: {refusal}"))
            })?;
            Ok(request)
        });
        let requests = until_refused(requests, refused_input);
        let consensus = self.consensus.clone();
        let answers = self
            .consensus
            .raft()
            .stream_append(requests)
            .then(move |answer| {
                let consensus = consensus.clone();
                async move {
                    if let Ok(Ok(Some(matched))) = &answer {
                        consensus
                            .log_durable_through(matched.index)
                            .await
                            .map_err(|fault| {
                                Status::internal(format!("the log could not be written: {fault}"))
                            })?;
                    }
                    let answer: StreamAnswer = answer.map_err(|fatal| fatal.to_string());
                    Ok(reply(kind, &answer))
                }
            });
        Box::pin(answers.chain(ending(refusal)))
    }

    /// A follower's forwarded batches (`StreamedBatch`), each decoded and checked as a
    /// `Peer.Forward` call's, and run as soon as it arrives, up to
    /// `FORWARD_STREAM_BATCHES_MAX` at once; each reply (`StreamedReply`) leaves as soon as
    /// its batch is done. The first refused message ends the input, and the stream ends with
    /// its status once the batches before it are answered.
    fn forward_replies(
        &self,
        from: Option<SocketAddr>,
        incoming: Streaming<PeerMessage>,
    ) -> PeerReplies {
        let kind = MessageKind::ForwardStream;
        let refusal: Arc<Mutex<Option<Status>>> = Arc::default();
        let (refusals, refused_input) = (self.refusals.clone(), refusal.clone());
        let batches = incoming.map(move |message| -> Result<StreamedBatch, Status> {
            let streamed: StreamedBatch = decode_peer(&message?, kind).map_err(|error| {
                refusals.note(from, "undecodable", &error);
                refused(error)
            })?;
            check_batch_size(&streamed.batch)?;
            Ok(streamed)
        });
        let batches = until_refused(batches, refused_input);
        let writes = self.writes.clone();
        let answers = batches
            .map(move |StreamedBatch { tag, batch }| {
                let writes = writes.clone();
                async move {
                    let reply = Ok(writes.batch(batch).await);
                    Ok(encode_peer(kind, &StreamedReply { tag, reply }))
                }
            })
            .buffer_unordered(FORWARD_STREAM_BATCHES_MAX);
        Box::pin(answers.chain(ending(refusal)))
    }
}

/// The checked messages of a stream's input, up to the first refused one, whose status goes
/// to `refusal` (and then, through `ending`, ends the answers).
fn until_refused<T: Send + 'static>(
    checked: impl Stream<Item = Result<T, Status>> + Send + 'static,
    refusal: Arc<Mutex<Option<Status>>>,
) -> impl Stream<Item = T> + Send + 'static {
    checked
        .take_while(move |checked| {
            if let Err(status) = checked {
                *refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(status.clone());
            }
            future::ready(checked.is_ok())
        })
        .filter_map(|checked| future::ready(checked.ok()))
}

/// The status that ended a stream's input, if one did, as the stream's last item.
fn ending(
    refusal: Arc<Mutex<Option<Status>>>,
) -> impl Stream<Item = Result<PeerMessage, Status>> + Send + 'static {
    futures::stream::once(async move {
        refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    })
    .filter_map(|refused| future::ready(refused.map(Err)))
}

fn reply<T: Serialize>(kind: MessageKind, value: &T) -> PeerMessage {
    encode_peer(kind, value)
}

#[tonic::async_trait]
impl PeerApi for PeerService {
    async fn append_entries(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::AppendEntries;
        self.check_raft_traffic()?;
        let append: AppendEntriesRequest<TypeConfig> = self.accept(&request, kind)?;
        self.admit(&request, self.consensus.admit_append(&append))?;
        let sent_through = append
            .entries
            .last()
            .map(|entry| entry.log_id)
            .or(append.prev_log_id);
        let result = self.consensus.raft().append_entries(append).await;
        // The leader counts a success as a copy on this member's disk: answer only once it is.
        let matched = match &result {
            Ok(AppendEntriesResponse::Success) => sent_through,
            Ok(AppendEntriesResponse::PartialSuccess(matching)) => *matching,
            _ => None,
        };
        if let Some(matched) = matched {
            self.consensus
                .log_durable_through(matched.index)
                .await
                .map_err(|fault| {
                    Status::internal(format!("the log could not be written: {fault}"))
                })?;
        }
        Ok(Response::new(reply(kind, &result)))
    }

    type AppendStreamStream = PeerReplies;

    async fn append_stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<PeerReplies>, Status> {
        self.check_cluster(&request)?;
        self.check_raft_traffic()?;
        let from = crate::listener::remote_address(&request);
        Ok(Response::new(
            self.append_replies(from, request.into_inner()),
        ))
    }

    type ForwardStreamStream = PeerReplies;

    async fn forward_stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<PeerReplies>, Status> {
        self.check_cluster(&request)?;
        let from = crate::listener::remote_address(&request);
        Ok(Response::new(
            self.forward_replies(from, request.into_inner()),
        ))
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        // A hand-off's candidate sends a TransferVote: voters set their leases aside for it.
        let kind = match peer_kind(request.get_ref()) {
            Ok(MessageKind::TransferVote) => MessageKind::TransferVote,
            _ => MessageKind::Vote,
        };
        self.check_raft_traffic()?;
        let mut vote: VoteRequest<TypeConfig> = self.accept::<VoteCall>(&request, kind)?.into();
        vote.leadership_transfer = kind == MessageKind::TransferVote;
        self.admit(&request, self.consensus.admit_vote(&vote))?;
        let result = self.consensus.raft().vote(vote).await;
        Ok(Response::new(reply(kind, &result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::InstallSnapshot;
        self.check_raft_traffic()?;
        let chunk: InstallSnapshotRequest<TypeConfig> = self.accept(&request, kind)?;
        self.admit(&request, self.consensus.admit_snapshot(&chunk))?;
        let result = self.consensus.raft().install_snapshot(chunk).await;
        Ok(Response::new(reply(kind, &result)))
    }

    async fn forward(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        self.check_cluster(&request)?;
        let message = request.get_ref();
        let consensus = &self.consensus;
        let keeper = &self.keeper;
        let answer = match peer_kind(message).map_err(refused)? {
            MessageKind::Write => {
                self.run::<WriteCall, _, _>(message, |call| self.writes.write(call))
                    .await?
            }
            MessageKind::WriteBatch => self.forwarded_batch(message).await?,
            MessageKind::Membership => {
                self.run::<MembershipChange, _, _>(message, |change| {
                    consensus.change_membership_here(change)
                })
                .await?
            }
            MessageKind::KeepAlive => {
                self.run::<KeepAliveCall, _, _>(message, |call| keeper.keep_alive_here(call))
                    .await?
            }
            MessageKind::ListSessions => {
                self.run::<ListSessionsCall, _, _>(message, |call| async { keeper.list_here(call) })
                    .await?
            }
            MessageKind::Join => {
                self.run::<JoinCall, _, _>(message, |call| consensus.join(call))
                    .await?
            }
            MessageKind::MoveLeader => {
                self.run::<MoveLeader, _, _>(message, |call| consensus.move_leader_here(call))
                    .await?
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "peer message refused: {other:?} is not leader work"
                )))
            }
        };
        Ok(Response::new(answer))
    }

    async fn read_index(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::ReadIndex;
        let () = self.accept(&request, kind)?;
        let result = self.consensus.leader_read_index().await;
        Ok(Response::new(reply(kind, &result)))
    }

    async fn pre_vote(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::PreVote;
        let pre_vote: PreVote = self.accept(&request, kind)?;
        let answer = self.consensus.pre_vote(pre_vote).await;
        Ok(Response::new(reply(kind, &answer)))
    }

    async fn timeout_now(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::TimeoutNow;
        let timeout_now: TimeoutNow = self.accept(&request, kind)?;
        let result = self.consensus.timeout_now(timeout_now);
        Ok(Response::new(reply(kind, &result)))
    }

    async fn features(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::Features;
        let () = self.accept(&request, kind)?;
        Ok(Response::new(reply(kind, &PeerFeatures::this_build())))
    }

    async fn hello(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let kind = MessageKind::Hello;
        let hello: crate::membership::Hello = self.accept(&request, kind)?;
        self.directory
            .heard_from(hello.member_id, hello.client_address);
        Ok(Response::new(reply(kind, &self.greeter.hello())))
    }
}
