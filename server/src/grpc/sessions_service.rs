//! The `coord.v1.Sessions` service: open, keep alive (a long-lived stream to any member; each
//! keep-alive is forwarded to the leader), close, and list sessions.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_proto::v1::sessions_server::Sessions as SessionsApi;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::access::Access;
use super::header::response_header;
use super::propose::propose;
use super::status::{consensus_status, fsm_status, going_away_status, invalid_argument};
use crate::consensus::Consensus;
use crate::fsm::{
    millis, CloseSessionCommand, Command, FsmError, Limits, OpenSessionCommand, Output, SessionEnd,
    SessionId,
};
use crate::pb::with_write_id;
use crate::sessions::SessionKeeper;

/// Keep-alive replies buffered per stream before the member stops reading requests.
const KEEPALIVE_REPLIES_BUFFERED: usize = 16;

/// The TTLs the cluster grants.
#[derive(Debug, Clone, Copy)]
pub struct TtlBounds {
    pub min: Duration,
    pub max: Duration,
}

/// How many sessions may be open at once: in all, and per owner (a client id, or a client's
/// address when it sends none). Checked before an open is proposed.
#[derive(Debug, Clone, Copy)]
pub struct SessionCaps {
    pub total_max: usize,
    pub per_client_max: usize,
}

impl TtlBounds {
    /// `requested` raised or lowered into the bounds.
    fn clamp(&self, requested: Duration) -> Duration {
        requested.clamp(self.min, self.max.max(self.min))
    }
}

pub struct SessionsService {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
    keeper: Arc<SessionKeeper>,
    ttl: TtlBounds,
    caps: SessionCaps,
    /// This member's limits (the quota refuses new sessions too).
    limits: Limits,
    /// Becomes true when the member stops: keep-alive streams then end with a retryable status.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl SessionsService {
    pub fn new(
        consensus: Arc<Consensus>,
        access: Arc<Access>,
        keeper: Arc<SessionKeeper>,
        ttl: TtlBounds,
        caps: SessionCaps,
        limits: Limits,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> SessionsService {
        SessionsService {
            consensus,
            access,
            keeper,
            ttl,
            caps,
            limits,
            stopping,
        }
    }

    /// Refuses an open by `owner` that would pass a cap, naming it.
    fn check_caps(&self, owner: &str) -> Result<(), Status> {
        let (total, owned) = self.consensus.replica().read(|namespace| {
            let sessions = namespace.sessions();
            let owned = sessions
                .values()
                .filter(|record| record.owner == owner)
                .count();
            (sessions.len(), owned)
        });
        let exceeded = |what: String, size: usize, limit: usize| {
            tracing::warn!(%owner, what, size, limit, "session open refused");
            fsm_status(&FsmError::LimitExceeded {
                what,
                size: size as u64,
                limit: limit as u64,
            })
        };
        if total >= self.caps.total_max {
            return Err(exceeded(
                "open sessions (--max-sessions)".into(),
                total,
                self.caps.total_max,
            ));
        }
        if owned >= self.caps.per_client_max {
            return Err(exceeded(
                format!("open sessions of {owner} (--max-sessions-per-client)"),
                owned,
                self.caps.per_client_max,
            ));
        }
        Ok(())
    }
}

/// Who opens a session: the client id its write id names, else the client's address.
fn owner_of(request: &Request<pb::SessionOpenRequest>) -> String {
    match &request.get_ref().write_id {
        Some(write_id) if !write_id.client_id.is_empty() => write_id.client_id.clone(),
        _ => crate::listener::remote_address(request)
            .map_or_else(|| "unknown".to_owned(), |address| address.ip().to_string()),
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SessionsApi for SessionsService {
    async fn open(
        &self,
        request: Request<pb::SessionOpenRequest>,
    ) -> Result<Response<pb::SessionOpenResponse>, Status> {
        let who = self.access.identify(&request)?;
        self.access.require_user(&who)?;
        // With auth on, a session belongs to its user, who alone (or an admin) may close it.
        let owner = who.session_owner().unwrap_or_else(|| owner_of(&request));
        let request = request.into_inner();
        if request.ttl_ms == 0 {
            return Err(invalid_argument(format!(
                "ttl_ms is 0: give a session TTL in milliseconds (granted between {} and {})",
                millis(self.ttl.min),
                millis(self.ttl.max)
            )));
        }
        self.check_caps(&owner)?;
        let ttl = self.ttl.clamp(Duration::from_millis(request.ttl_ms));
        let open = Command::OpenSession(OpenSessionCommand {
            ttl_ms: millis(ttl),
            owner,
        });
        let command = with_write_id(open, request.write_id);
        match propose(&self.consensus, &self.limits, command).await? {
            (revision, Output::SessionOpened { session, ttl_ms }) => {
                Ok(Response::new(pb::SessionOpenResponse {
                    header: Some(response_header(&self.consensus, Some(revision))),
                    session_id: session.0,
                    ttl_ms,
                }))
            }
            (_, output) => Err(Status::internal(format!("unexpected output {output:?}"))),
        }
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let who = self.access.identify(&request)?;
        self.access.require_user(&who)?;
        let access = self.access.clone();
        let mut inbound = request.into_inner();
        let (replies, stream) = tokio::sync::mpsc::channel(KEEPALIVE_REPLIES_BUFFERED);
        let consensus = self.consensus.clone();
        let keeper = self.keeper.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            // Ends when the client closes its side, the client goes away, a keep-alive fails
            // (the client then opens a new stream, maybe to another member) or the member
            // stops (the client is told to go elsewhere).
            loop {
                let message = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(message)) => message,
                        Ok(None) | Err(_) => break,
                    },
                    () = super::status::stopped(&mut stopping) => {
                        let member = consensus.member_id().0;
                        let _ = replies.send(Err(going_away_status(member))).await;
                        break;
                    }
                };
                let session = SessionId(message.session_id);
                if let Err(denied) = access.require_session(&who, session) {
                    let _ = replies.send(Err(denied)).await;
                    break;
                }
                let reply = match keeper.keep_alive(session).await {
                    Ok(ttl_ms) => Ok(pb::KeepAliveResponse {
                        header: Some(response_header(&consensus, None)),
                        session_id: session.0,
                        ttl_ms,
                    }),
                    Err(error) => Err(consensus_status(&error)),
                };
                let failed = reply.is_err();
                if replies.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn close(
        &self,
        request: Request<pb::SessionCloseRequest>,
    ) -> Result<Response<pb::SessionCloseResponse>, Status> {
        let who = self.access.identify(&request)?;
        let request = request.into_inner();
        self.access
            .require_session(&who, SessionId(request.session_id))?;
        let close = Command::CloseSession(CloseSessionCommand {
            session: SessionId(request.session_id),
            end: SessionEnd::Closed,
        });
        let command = with_write_id(close, request.write_id);
        match propose(&self.consensus, &self.limits, command).await? {
            (revision, Output::SessionClosed { deleted }) => {
                Ok(Response::new(pb::SessionCloseResponse {
                    header: Some(response_header(&self.consensus, Some(revision))),
                    deleted,
                }))
            }
            (_, output) => Err(Status::internal(format!("unexpected output {output:?}"))),
        }
    }

    async fn list(
        &self,
        request: Request<pb::SessionListRequest>,
    ) -> Result<Response<pb::SessionListResponse>, Status> {
        let who = self.access.identify(&request)?;
        self.access.require_user(&who)?;
        // A user who does not administer sees only the sessions it opened.
        let mine: Option<std::collections::BTreeSet<SessionId>> = who
            .session_owner()
            .filter(|_| !who.is_admin())
            .map(|owner| {
                self.consensus.replica().read(|namespace| {
                    namespace
                        .sessions()
                        .iter()
                        .filter(|(_, record)| record.owner == owner)
                        .map(|(session, _)| *session)
                        .collect()
                })
            });
        let sessions = self
            .keeper
            .list()
            .await
            .map_err(|error| consensus_status(&error))?;
        Ok(Response::new(pb::SessionListResponse {
            header: Some(response_header(&self.consensus, None)),
            sessions: sessions
                .into_iter()
                .filter(|view| {
                    mine.as_ref()
                        .is_none_or(|mine| mine.contains(&view.session))
                })
                .map(|view| pb::SessionInfo {
                    session_id: view.session.0,
                    ttl_ms: view.ttl_ms,
                    last_keepalive_age_ms: view.last_keepalive_age_ms,
                    ephemeral_nodes: view.ephemerals,
                    remaining_ms: view.remaining_ms,
                })
                .collect(),
        }))
    }
}
