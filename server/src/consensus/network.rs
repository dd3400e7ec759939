//! `PeerNetwork`: openraft's network over tonic, to the `coord.v1.peer.Peer` service on each
//! member's peer port. Messages are openraft's own types in a versioned `PeerMessage`
//! (`wire.rs`); the remote's `Result` travels back the same way.
//!
//! Every call has a deadline (openraft's per-RPC TTL); a pipelined `AppendStream` is given up
//! only after `STREAM_PATIENCE_DEADLINES` of them without any answer. A connection that fails
//! is dropped and re-created lazily on the next call. openraft backs off from unreachable
//! members only between requests it hands a stream; a stream that cannot even be opened is
//! paced here (`Redial`).
//!
//! Invariant: an AppendEntries never tells a follower of a commit index beyond the entries on
//! this member's own disk (the third gate of `log_flush`): it waits for its own write, at most
//! half the call's deadline, and sends a lower commit index after that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_proto::v1::peer::peer_client::PeerClient;
use std::collections::VecDeque;
use std::future::Future;
use std::io::Cursor;

use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::stream_append_sequential;
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend, RaftNetworkV2};
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::election::AckClock;
use super::handoff::Standing;
use super::log_flush::LogFlusher;
use super::peer_channel::PeerChannel;
use super::peer_client::{peer_request, with_cluster_id, PeerDialer};
use super::types::{Member, TypeConfig};
use super::wire::{decode_peer, encode_peer, MessageKind, VoteCall};

pub struct PeerNetwork {
    member_id: u64,
    cluster_id: String,
    dialer: PeerDialer,
    /// Where answered AppendEntries are recorded, for the leader's quorum check.
    acks: Arc<AckClock>,
    /// This member's log flusher: how far the commit index sent may go.
    durable: Arc<LogFlusher>,
    /// Whether this member stands for election at its leader's request.
    standing: Arc<Standing>,
}

impl PeerNetwork {
    /// `dialer`: how outgoing peer connections are made (source address, mutual TLS).
    pub fn new(
        member_id: u64,
        cluster_id: String,
        dialer: PeerDialer,
        acks: Arc<AckClock>,
        durable: Arc<LogFlusher>,
        standing: Arc<Standing>,
    ) -> PeerNetwork {
        PeerNetwork {
            member_id,
            cluster_id,
            dialer,
            acks,
            durable,
            standing,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = StreamingLink;

    async fn new_client(&mut self, target: u64, member: &Member) -> StreamingLink {
        StreamingLink::new(PeerLink {
            from: self.member_id,
            target,
            address: member.addr.clone(),
            cluster_id: self.cluster_id.clone(),
            dialer: self.dialer.clone(),
            client: None,
            acks: self.acks.clone(),
            durable: self.durable.clone(),
            standing: self.standing.clone(),
            streams: true,
            redial: Redial::default(),
        })
    }
}

/// A lazily connected link to one peer.
pub struct PeerLink {
    from: u64,
    target: u64,
    address: String,
    cluster_id: String,
    dialer: PeerDialer,
    client: Option<PeerClient<PeerChannel>>,
    acks: Arc<AckClock>,
    durable: Arc<LogFlusher>,
    standing: Arc<Standing>,
    /// Whether the peer takes `AppendStream`: false once it answered UNIMPLEMENTED (an older
    /// member), until the connection is made again.
    streams: bool,
    /// When the next `AppendStream` may be opened, after the peer could not be reached.
    redial: Redial,
}

type CallError<E> = RPCError<TypeConfig, E>;

impl PeerLink {
    fn client(&mut self) -> Result<PeerClient<PeerChannel>, Unreachable<TypeConfig>> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = self
            .dialer
            .connect(&self.address)
            .map_err(|error| Unreachable::new(&AnyError::new(&error)))?;
        self.client = Some(client.clone());
        self.streams = true;
        Ok(client)
    }

    /// Gate three of `log_flush`: a commit index sent never runs ahead of this member's own
    /// disk. The own write began before the followers' round trip, so it is nearly always
    /// done; if not, wait for it (at most half the call's deadline, so that a slow disk delays
    /// the commit index to a later message rather than time the call out) rather than send a
    /// lower commit index at once. A failed write leaves the index capped; the member stops.
    async fn cap_commit(
        durable: &Arc<LogFlusher>,
        request: &mut AppendEntriesRequest<TypeConfig>,
        ttl: std::time::Duration,
    ) {
        if request.leader_commit > durable.durable() {
            if let Some(commit) = request.leader_commit {
                let _ = tokio::time::timeout(ttl / 2, durable.wait_through(commit.index)).await;
            }
            request.leader_commit = request.leader_commit.min(durable.durable());
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        method: PeerMethod,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let ttl = option.hard_ttl();
        let grpc_request = peer_request(&self.cluster_id, encode_peer(method.kind(), request), ttl);
        let call = async {
            match method {
                PeerMethod::AppendEntries => client.append_entries(grpc_request).await,
                PeerMethod::Vote | PeerMethod::TransferVote => client.vote(grpc_request).await,
                PeerMethod::InstallSnapshot => client.install_snapshot(grpc_request).await,
            }
        };
        let response = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(RPCError::Timeout(self.timeout(method.action(), ttl))),
            Ok(Err(status)) => {
                // Drop the connection so the next call reconnects from scratch.
                self.client = None;
                return Err(status_error(&self.address, &status));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let remote: Result<Resp, E> = decode_peer(&response, method.kind()).map_err(|error| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "undecodable reply: {error}"
            ))))
        })?;
        remote.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

#[derive(Debug, Clone, Copy)]
enum PeerMethod {
    AppendEntries,
    Vote,
    TransferVote,
    InstallSnapshot,
}

impl PeerMethod {
    fn kind(self) -> MessageKind {
        match self {
            PeerMethod::AppendEntries => MessageKind::AppendEntries,
            PeerMethod::Vote => MessageKind::Vote,
            PeerMethod::TransferVote => MessageKind::TransferVote,
            PeerMethod::InstallSnapshot => MessageKind::InstallSnapshot,
        }
    }

    fn action(self) -> openraft::network::RPCTypes {
        match self {
            PeerMethod::AppendEntries => openraft::network::RPCTypes::AppendEntries,
            PeerMethod::Vote | PeerMethod::TransferVote => openraft::network::RPCTypes::Vote,
            PeerMethod::InstallSnapshot => openraft::network::RPCTypes::InstallSnapshot,
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, CallError<RaftError<TypeConfig>>> {
        // openraft counts this member's own copy of an entry before it is on disk; a follower
        // must not apply an entry that a crash here could still take from the majority.
        PeerLink::cap_commit(&self.durable, &mut request, option.hard_ttl()).await;
        let response = self
            .call(PeerMethod::AppendEntries, &request, &option)
            .await;
        // A follower that answers in the leader's term (success or a log conflict) counts
        // towards the leader's quorum; a higher vote or no answer does not.
        if matches!(&response, Ok(answer) if !matches!(answer, AppendEntriesResponse::HigherVote(_)))
        {
            self.acks.record(self.target);
        }
        response
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<TypeConfig>,
        CallError<RaftError<TypeConfig, InstallSnapshotError>>,
    > {
        self.call(PeerMethod::InstallSnapshot, &request, &option)
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, CallError<RaftError<TypeConfig>>> {
        // A hand-off's candidate asks voters to set their leases aside (see `handoff`).
        let method = if self.standing.is_set() || request.leadership_transfer {
            PeerMethod::TransferVote
        } else {
            PeerMethod::Vote
        };
        let response: Result<VoteResponse<TypeConfig>, _> =
            self.call(method, &VoteCall::from(request), &option).await;
        // A voter that granted this member's candidacy answers a new leader's quorum check.
        if matches!(&response, Ok(answer) if answer.vote_granted) {
            self.acks.record(self.target);
        }
        response
    }
}

/// Most AppendEntries a leader has on the way to one follower at once over `AppendStream`.
pub const APPEND_PIPELINE_DEPTH: usize = 32;

/// An answer to one request of an `AppendStream`, as openraft takes it.
type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// A link as openraft drives it: AppendEntries pipelined over `AppendStream` (one call at a
/// time to a member older than that call), snapshots sent in chunks by openraft-legacy's
/// sender in the layout 0.9 members read, votes and heartbeats as single calls.
pub struct StreamingLink {
    inner: Adapter<TypeConfig, PeerLink, Cursor<Vec<u8>>>,
}

impl StreamingLink {
    fn new(link: PeerLink) -> StreamingLink {
        StreamingLink {
            inner: Adapter::new(link),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for StreamingLink {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.inner.append_entries(request, option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, StreamItem>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            let input = if self.inner.inner().streams {
                match self.inner.inner_mut().open_stream(input, &option).await? {
                    Opened::Streaming(answers) => return Ok(answers),
                    Opened::Unsupported(input) => input,
                }
            } else {
                input
            };
            stream_append_sequential(self, input, option).await
        })
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.inner.vote(request, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: super::types::Vote,
        snapshot: super::types::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.inner
            .full_snapshot(vote, snapshot, cancel, option)
            .await
    }

    fn backoff(&self) -> Option<Backoff> {
        self.inner.backoff()
    }
}

/// What opening an `AppendStream` gave.
enum Opened<S> {
    Streaming(BoxStream<'static, StreamItem>),
    /// The peer predates `AppendStream` (UNIMPLEMENTED); the requests, none of them read.
    Unsupported(S),
}

impl PeerLink {
    /// Opens an `AppendStream` to the peer. The answers stream it returns also sends the
    /// requests, read from `input` only while it is polled and while fewer than
    /// `APPEND_PIPELINE_DEPTH` are unanswered, so dropping it stops reading `input` at once
    /// (openraft hands the same requests to the next stream).
    async fn open_stream<S>(
        &mut self,
        input: S,
        option: &RPCOption,
    ) -> Result<Opened<S>, RPCError<TypeConfig>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let pause = self.redial.pause_before(Instant::now());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let ttl = option.hard_ttl();
        let (sender, outgoing) = tokio::sync::mpsc::unbounded_channel();
        let call = with_cluster_id(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
                outgoing,
            )),
            &self.cluster_id,
        );
        let answers = match tokio::time::timeout(ttl, client.append_stream(call)).await {
            Err(_) => {
                return Err(RPCError::Timeout(
                    self.timeout(openraft::network::RPCTypes::AppendEntries, ttl),
                ))
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                self.streams = false;
                return Ok(Opened::Unsupported(input));
            }
            Ok(Err(status)) => {
                self.client = None;
                if status.code() == tonic::Code::Unavailable {
                    self.redial.failed(Instant::now());
                }
                return Err(status_error(&self.address, &status));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        self.redial = Redial::default();
        let patience = ttl * STREAM_PATIENCE_DEADLINES;
        let pump = Pump {
            input: Some(input),
            sender: Some(sender),
            answers,
            sent: VecDeque::new(),
            last_answer: None,
            done: false,
            peer: Peer {
                address: self.address.clone(),
                timeout: self.timeout(openraft::network::RPCTypes::AppendEntries, patience),
                target: self.target,
                acks: self.acks.clone(),
                durable: self.durable.clone(),
            },
            ttl,
            patience,
        };
        Ok(Opened::Streaming(Box::pin(futures::stream::unfold(
            pump,
            |mut pump| async move { pump.next_answer().await.map(|answer| (answer, pump)) },
        ))))
    }

    fn timeout(
        &self,
        action: openraft::network::RPCTypes,
        ttl: std::time::Duration,
    ) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.from,
            target: self.target,
            timeout: ttl,
        }
    }
}

/// The first pause before opening a stream again to a peer that could not be reached.
const REDIAL_PAUSE_FIRST: Duration = Duration::from_millis(20);

/// The longest such pause (openraft's own default backoff): a member back from a restart is
/// replicated to again within this.
const REDIAL_PAUSE_MAX: Duration = Duration::from_millis(200);

/// Paces the opening of `AppendStream`s to a peer that could not be reached.
///
/// openraft sleeps its backoff inside the request stream it hands `stream_append`, and only
/// when that stream is polled; a connection refused before that returned at once, and
/// openraft opened the next stream after the next message its core handled. A new leader
/// under load retried its stopped predecessor's port tens of thousands of times a second (a
/// release build under `coord-bench writes`), on a core its clients needed. Pauses double from
/// `REDIAL_PAUSE_FIRST` to `REDIAL_PAUSE_MAX` while attempts fail; a stream opened ends them.
/// openraft's heartbeats are one-request streams too: to a member that cannot be reached they
/// now time out within the pause instead of failing at once, which changes nothing for it.
#[derive(Debug, Default)]
struct Redial {
    /// The pause taken after the last failure (zero: the last attempt did not fail).
    pause: Duration,
    /// When the next attempt may start.
    not_before: Option<Instant>,
}

impl Redial {
    /// An attempt at `now` failed to reach the peer.
    fn failed(&mut self, now: Instant) {
        self.pause = if self.pause.is_zero() {
            REDIAL_PAUSE_FIRST
        } else {
            (self.pause * 2).min(REDIAL_PAUSE_MAX)
        };
        self.not_before = Some(now + self.pause);
    }

    /// How long an attempt about to start at `now` waits first.
    fn pause_before(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }
}

/// A failed peer call as openraft's error: a member that cannot be reached, or another failure.
fn status_error<E: std::error::Error>(
    address: &str,
    status: &tonic::Status,
) -> RPCError<TypeConfig, E> {
    let error = AnyError::error(format!("{address}: {}", status.message()));
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&error))
    } else {
        RPCError::Network(NetworkError::new(&error))
    }
}

/// What an `AppendStream`'s pump needs of its link.
struct Peer {
    address: String,
    /// The error for a request unanswered for too long.
    timeout: Timeout<TypeConfig>,
    target: u64,
    acks: Arc<AckClock>,
    durable: Arc<LogFlusher>,
}

/// How many AppendEntries deadlines (openraft's heartbeat interval) an `AppendStream` may go
/// without a single answer while requests wait, before it is given up.
///
/// A follower answers a pipelined request once its entries are on its disk, so one answer can
/// take a whole fsync, and a backlog of large entries several. Giving up on each request at its
/// own deadline, as a unary call would, made openraft open a new stream and send every entry
/// again, to the follower already busy writing them (the snapshot test saw up to 426 such
/// timeouts in one run); its answers, arriving late, never counted towards the leader's quorum
/// check either. A stream that still answers is therefore kept; one that is silent this long
/// (a paused, partitioned or dead peer) is given up, and openraft opens another. Heartbeats are
/// single-request streams that openraft bounds by the heartbeat interval itself.
const STREAM_PATIENCE_DEADLINES: u32 = 5;

/// Both halves of one `AppendStream`: the requests going out and the answers coming back.
struct Pump<S> {
    /// `None` once openraft ended the requests.
    input: Option<S>,
    /// Dropped once the input ended, so the peer sees the stream end.
    sender: Option<tokio::sync::mpsc::UnboundedSender<coord_proto::v1::peer::PeerMessage>>,
    answers: tonic::Streaming<coord_proto::v1::peer::PeerMessage>,
    /// When each unanswered request was sent, oldest first.
    sent: VecDeque<tokio::time::Instant>,
    /// When the last answer came.
    last_answer: Option<tokio::time::Instant>,
    /// Set after an error: the stream ends.
    done: bool,
    peer: Peer,
    /// openraft's deadline for one AppendEntries (its heartbeat interval).
    ttl: std::time::Duration,
    /// How long the stream may go without an answer while requests wait
    /// (`STREAM_PATIENCE_DEADLINES` deadlines).
    patience: std::time::Duration,
}

impl<S> Pump<S>
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin,
{
    /// The next answer, sending requests meanwhile; `None` once the input ended and every
    /// request sent was answered, or after an error.
    async fn next_answer(&mut self) -> Option<StreamItem> {
        loop {
            if self.done || (self.input.is_none() && self.sent.is_empty()) {
                return None;
            }
            let deadline = self
                .sent
                .front()
                .map(|oldest| silence_deadline(*oldest, self.last_answer, self.patience));
            let room = self.sent.len() < APPEND_PIPELINE_DEPTH;
            let overdue = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                answer = self.answers.next() => return Some(self.answered(answer)),
                () = overdue => {
                    self.done = true;
                    self.peer.acks.stream_given_up();
                    return Some(Err(RPCError::Timeout(self.peer.timeout.clone())));
                }
                request = next_request(&mut self.input), if room && self.input.is_some() => {
                    self.send(request).await;
                }
            }
        }
    }

    async fn send(&mut self, request: Option<AppendEntriesRequest<TypeConfig>>) {
        let Some(mut request) = request else {
            self.input = None;
            self.sender = None;
            return;
        };
        PeerLink::cap_commit(&self.peer.durable, &mut request, self.ttl).await;
        if let Some(sender) = &self.sender {
            // A closed call reports itself through the answers.
            let _ = sender.send(encode_peer(MessageKind::AppendStream, &request));
        }
        self.sent.push_back(tokio::time::Instant::now());
    }

    fn answered(
        &mut self,
        answer: Option<Result<coord_proto::v1::peer::PeerMessage, tonic::Status>>,
    ) -> StreamItem {
        self.done = true;
        let message = match answer {
            None => {
                return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                    format!(
                        "{}: the append stream ended with requests unanswered",
                        self.peer.address
                    ),
                ))))
            }
            Some(Err(status)) => return Err(status_error(&self.peer.address, &status)),
            Some(Ok(message)) => message,
        };
        self.sent.pop_front();
        self.last_answer = Some(tokio::time::Instant::now());
        let answer: Result<StreamAppendResult<TypeConfig>, String> =
            decode_peer(&message, MessageKind::AppendStream).map_err(|error| {
                RPCError::Network(NetworkError::new(&AnyError::error(format!(
                    "undecodable reply: {error}"
                ))))
            })?;
        let answer = answer.map_err(|fatal| {
            RPCError::Network(NetworkError::new(&AnyError::error(format!(
                "{}: Raft stopped there: {fatal}",
                self.peer.address
            ))))
        })?;
        // As for single calls: an answer in the leader's term counts towards its quorum.
        if !matches!(answer, Err(StreamAppendError::HigherVote(_))) {
            self.peer.acks.record(self.peer.target);
        }
        // openraft ends the stream after a conflict or a higher vote.
        self.done = answer.is_err();
        Ok(answer)
    }
}

/// When a stream whose oldest unanswered request went out at `oldest` is given up: `patience`
/// after that request or after the last answer, whichever came later. A follower working
/// through a backlog answers in order, so each answer restarts the wait for the next.
fn silence_deadline(
    oldest: tokio::time::Instant,
    last_answer: Option<tokio::time::Instant>,
    patience: Duration,
) -> tokio::time::Instant {
    last_answer.map_or(oldest, |answered| answered.max(oldest)) + patience
}

/// The next request from openraft, or `None` once it ends them.
async fn next_request<S>(input: &mut Option<S>) -> Option<AppendEntriesRequest<TypeConfig>>
where
    S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    match input {
        Some(input) => input.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_given_up_after_its_patience_of_silence_not_at_each_requests_deadline() {
        let patience = Duration::from_millis(500);
        let oldest = tokio::time::Instant::now();
        // Nothing answered yet: silence counts from the oldest unanswered request.
        assert_eq!(silence_deadline(oldest, None, patience), oldest + patience);
        // An answer since that request went out restarts the wait, however late the request.
        let answered = oldest + Duration::from_millis(450);
        assert_eq!(
            silence_deadline(oldest, Some(answered), patience),
            answered + patience
        );
        // An answer from before it does not extend it.
        let sent_later = oldest + Duration::from_millis(600);
        assert_eq!(
            silence_deadline(sent_later, Some(answered), patience),
            sent_later + patience
        );
    }

    #[test]
    fn redialling_pauses_double_while_attempts_fail_up_to_the_cap() {
        let start = Instant::now();
        let mut redial = Redial::default();
        assert_eq!(redial.pause_before(start), Duration::ZERO);

        let mut pauses = Vec::new();
        let mut now = start;
        for _ in 0..6 {
            redial.failed(now);
            pauses.push(redial.pause_before(now));
            now += redial.pause_before(now);
        }
        let millis: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [20, 40, 80, 160, 200, 200]);
        // Time already waited elsewhere counts.
        redial.failed(now);
        assert_eq!(
            redial.pause_before(now + Duration::from_millis(150)),
            Duration::from_millis(50)
        );
        assert_eq!(
            redial.pause_before(now + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
