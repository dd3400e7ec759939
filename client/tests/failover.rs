//! The client's routing against fake members on loopback: a member that is paused (accepts
//! connections, never answers), knows no leader, was removed or is starting must not hold a
//! call up; calls stay with the member that answered; a membership change checks a silent
//! member before sending it; keep-alives move on when their member goes silent, and a session
//! that cannot be confirmed is suspended, then recovers.
//!
//! The fakes implement only the `Cluster` and `Sessions` services, enough to drive `call_as`,
//! the connection probe and the keep-alive task. Assertions are about which member answered
//! and how many requests each member saw, never about durations; every wait is bounded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_client::{Client, ClientOptions, SessionState};
use coord_proto::v1 as pb;
use pb::cluster_server::{Cluster, ClusterServer};
use pb::sessions_server::{Sessions, SessionsServer};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Longest bounded wait of these tests.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// How a fake member answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Healthy,
    NoLeader,
    NotAMember,
    Starting,
}

#[derive(Default)]
struct Counters {
    status: AtomicUsize,
    member_list: AtomicUsize,
    move_leader: AtomicUsize,
    keep_alives: AtomicUsize,
}

/// A fake member. While `paused`, it swallows every request (accepted, never answered), as a
/// stopped process does once the kernel has accepted the connection.
#[derive(Clone)]
struct FakeMember {
    id: u64,
    behaviour: Arc<Mutex<Behaviour>>,
    paused: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl FakeMember {
    fn new(id: u64) -> FakeMember {
        FakeMember {
            id,
            behaviour: Arc::new(Mutex::new(Behaviour::Healthy)),
            paused: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
        }
    }

    fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            member_id: self.id,
            leader_id: 2,
            ..pb::ResponseHeader::default()
        })
    }

    /// Waits forever while paused, then answers as the behaviour says: `Ok` when healthy.
    async fn gate(&self) -> Result<(), Status> {
        if self.paused.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let (code, message) = match *self.behaviour.lock().unwrap() {
            Behaviour::Healthy => return Ok(()),
            Behaviour::NoLeader => (pb::ErrorCode::NoLeader, "no leader known"),
            Behaviour::NotAMember => (pb::ErrorCode::NotAMember, "this member was removed"),
            Behaviour::Starting => (pb::ErrorCode::Unavailable, "starting"),
        };
        let detail = pb::ErrorDetail {
            code: code as i32,
            message: message.into(),
            retryable: true,
            ..pb::ErrorDetail::default()
        };
        Err(Status::with_details(
            tonic::Code::Unavailable,
            message,
            detail.encode_to_vec().into(),
        ))
    }

    /// Serves the fake on a free loopback port; returns its `host:port`.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let router = tonic::transport::Server::builder()
            .add_service(ClusterServer::new(self.clone()))
            .add_service(SessionsServer::new(self.clone()));
        tokio::spawn(router.serve_with_incoming(incoming));
        address
    }
}

#[tonic::async_trait]
impl Cluster for FakeMember {
    async fn status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.counters.status.fetch_add(1, Ordering::SeqCst);
        self.gate().await?;
        Ok(Response::new(pb::ClusterStatusResponse {
            header: self.header(),
            leader_id: 2,
            ..pb::ClusterStatusResponse::default()
        }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        self.counters.member_list.fetch_add(1, Ordering::SeqCst);
        self.gate().await?;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: Vec::new(),
        }))
    }

    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn member_move_leader(
        &self,
        _request: Request<pb::MemberMoveLeaderRequest>,
    ) -> Result<Response<pb::MemberMoveLeaderResponse>, Status> {
        self.counters.move_leader.fetch_add(1, Ordering::SeqCst);
        self.gate().await?;
        Ok(Response::new(pb::MemberMoveLeaderResponse {
            header: self.header(),
            leader_id: self.id,
            term: 7,
        }))
    }
}

type KeepAliveReplies = ReceiverStream<Result<pb::KeepAliveResponse, Status>>;

#[tonic::async_trait]
impl Sessions for FakeMember {
    async fn open(
        &self,
        request: Request<pb::SessionOpenRequest>,
    ) -> Result<Response<pb::SessionOpenResponse>, Status> {
        self.gate().await?;
        Ok(Response::new(pb::SessionOpenResponse {
            header: self.header(),
            session_id: 42,
            ttl_ms: request.into_inner().ttl_ms,
        }))
    }

    type KeepAliveStream = KeepAliveReplies;

    async fn keep_alive(
        &self,
        request: Request<tonic::Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<KeepAliveReplies>, Status> {
        self.gate().await?;
        let mut inbound = request.into_inner();
        let (replies, stream) = mpsc::channel(4);
        let member = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(keep_alive)) = inbound.message().await {
                // A paused member reads nothing more; its stream stays silent.
                if member.paused.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                member.counters.keep_alives.fetch_add(1, Ordering::SeqCst);
                let reply = pb::KeepAliveResponse {
                    header: member.header(),
                    session_id: keep_alive.session_id,
                    ttl_ms: 3_000,
                };
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn close(
        &self,
        _request: Request<pb::SessionCloseRequest>,
    ) -> Result<Response<pb::SessionCloseResponse>, Status> {
        Ok(Response::new(pb::SessionCloseResponse {
            header: self.header(),
            deleted: 0,
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::SessionListRequest>,
    ) -> Result<Response<pb::SessionListResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        discover_members: false,
        ..ClientOptions::default()
    }
}

/// Polls `done` every 50 ms until it holds; panics after `WAIT_MAX`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_call_passes_a_paused_member_and_later_calls_stay_with_the_one_that_answered() {
    // A paused process: the kernel accepts connections, nobody ever answers.
    let paused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (second, third) = (FakeMember::new(2), FakeMember::new(3));
    let endpoints = [
        paused.local_addr().unwrap().to_string(),
        second.serve().await,
        third.serve().await,
    ];
    let client = Client::connect_with(&endpoints, options()).await.unwrap();
    for _ in 0..5 {
        let status = client.cluster_status().await.unwrap();
        assert_eq!(status.header.unwrap().member_id, 2);
    }
    assert_eq!(third.counters.status.load(Ordering::SeqCst), 0);
    assert_eq!(third.counters.member_list.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn members_without_a_leader_removed_or_starting_pass_a_call_on_at_once() {
    let members: Vec<FakeMember> = [1, 4, 5, 2].into_iter().map(FakeMember::new).collect();
    let mut endpoints = Vec::new();
    for member in &members {
        endpoints.push(member.serve().await);
    }
    let client = Client::connect_with(&endpoints, options()).await.unwrap();
    // Connected through the first; now it knows no leader, and the next two are out.
    members[0].behave(Behaviour::NoLeader);
    members[1].behave(Behaviour::NotAMember);
    members[2].behave(Behaviour::Starting);
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.header.unwrap().member_id, 2);
    for member in &members[..3] {
        assert_eq!(
            member.counters.status.load(Ordering::SeqCst),
            1,
            "member {} was asked once, then passed",
            member.id
        );
    }
    // Later calls start with the member that answered.
    client.cluster_status().await.unwrap();
    assert_eq!(members[0].counters.status.load(Ordering::SeqCst), 1);
    assert_eq!(members[3].counters.status.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_membership_change_checks_a_silent_member_before_sending_it() {
    let (first, second) = (FakeMember::new(1), FakeMember::new(2));
    let endpoints = [first.serve().await, second.serve().await];
    let client = Client::connect_with(&endpoints, options()).await.unwrap();
    first.pause(true);
    // Let the first member's answer to the connection probe grow stale.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (leader, term) = client.member_move_leader(0).await.unwrap();
    assert_eq!((leader, term), (2, 7));
    assert_eq!(first.counters.move_leader.load(Ordering::SeqCst), 0);
    assert_eq!(second.counters.move_leader.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn keep_alives_move_on_when_their_member_goes_silent() {
    let (first, second) = (FakeMember::new(1), FakeMember::new(2));
    let endpoints = [first.serve().await, second.serve().await];
    let client = Client::connect_with(&endpoints, options()).await.unwrap();
    let session = client.open_session(Duration::from_secs(3)).await.unwrap();
    eventually("a keep-alive to the first member", || {
        first.counters.keep_alives.load(Ordering::SeqCst) > 0
    })
    .await;
    first.pause(true);
    eventually("two keep-alives acknowledged by the second member", || {
        second.counters.keep_alives.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(session.is_safe());
    assert_ne!(session.state(), SessionState::Expired);
}

#[tokio::test]
async fn a_session_that_cannot_be_confirmed_is_suspended_and_recovers() {
    let member = FakeMember::new(1);
    let endpoints = [member.serve().await];
    let client = Client::connect_with(&endpoints, options()).await.unwrap();
    let session = client.open_session(Duration::from_secs(3)).await.unwrap();
    member.pause(true);
    eventually("the session to be suspended", || {
        session.state() == SessionState::Suspended
    })
    .await;
    member.pause(false);
    eventually("the session to be confirmed again", || {
        session.state() == SessionState::Connected
    })
    .await;
    assert!(session.is_safe());
}
