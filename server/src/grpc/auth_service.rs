//! The `coord.v1.Auth` service: the auth policy's status, and changes to it.
//!
//! A change reads the policy at `/_coord/auth` after a linearizable barrier, applies the pure
//! change (`auth::AuthPolicy`), and writes it back with the version it read, so two changes
//! made at once never lose one another (the later retries on the newer policy). Issued tokens
//! are shown once, in the answer; only their hashes are replicated.
//!
//! Invariant: once auth is enabled, only an admin changes the policy; before, anyone who can
//! reach the client port can (the bootstrap: add a root user, then enable).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use coord_proto::v1 as pb;
use coord_proto::v1::auth_server::Auth as AuthApi;
use tonic::{Request, Response, Status};

use super::access::{Access, Identity, AUTH_PATH};
use super::status::{consensus_status, fsm_status, invalid_argument};
use crate::auth::{AuthPolicy, PermissionSet};
use crate::consensus::{Consensus, Consistency};
use crate::fsm::{
    Command, CreateCommand, FsmError, NodeKind, NodePath, Proposal, Revision, SessionId, SetCommand,
};

/// How many times a change is tried again when another change won the race.
const CHANGE_ATTEMPTS_MAX: usize = 5;

pub struct AuthService {
    consensus: Arc<Consensus>,
    access: Arc<Access>,
}

impl AuthService {
    pub fn new(consensus: Arc<Consensus>, access: Arc<Access>) -> AuthService {
        AuthService { consensus, access }
    }

    fn header(&self, revision: Option<Revision>) -> pb::ResponseHeader {
        super::header::response_header(&self.consensus, revision)
    }

    /// The policy and the version of its node (`None`: never written), as of now.
    async fn current(&self) -> Result<(AuthPolicy, Option<u64>), Status> {
        self.consensus
            .read_barrier(Consistency::Linearizable)
            .await
            .map_err(|error| consensus_status(&error))?;
        let path = NodePath::parse(AUTH_PATH).expect("the auth path is valid");
        let node = self.consensus.replica().read(|namespace| {
            namespace
                .get(&path)
                .map(|node| (node.data.clone(), node.stat.version))
        });
        match node {
            None => Ok((AuthPolicy::default(), None)),
            Some((data, version)) => AuthPolicy::from_json(&data)
                .map(|policy| (policy, Some(version)))
                .map_err(|error| Status::internal(format!("the stored auth policy: {error}"))),
        }
    }

    /// Writes `policy` if its node is still at `version`; `Ok(None)` when it moved on.
    async fn store(
        &self,
        policy: &AuthPolicy,
        version: Option<u64>,
    ) -> Result<Option<Revision>, Status> {
        let data = policy.to_json();
        let command = match version {
            Some(version) => Command::Set(SetCommand {
                path: AUTH_PATH.to_owned(),
                data,
                expected_version: Some(version),
            }),
            None => Command::Create(CreateCommand {
                path: AUTH_PATH.to_owned(),
                data,
                kind: NodeKind::Persistent,
                sequential: false,
                make_parents: true,
                session: SessionId(0),
            }),
        };
        let (revision, outcome) = self
            .consensus
            .write(Proposal::from(command))
            .await
            .map_err(|error| consensus_status(&error))?;
        match outcome {
            Ok(_) => Ok(Some(revision)),
            Err(FsmError::BadVersion { .. } | FsmError::NodeExists { .. }) => Ok(None),
            Err(error) => Err(fsm_status(&error)),
        }
    }

    fn answer(
        &self,
        who: &Identity,
        policy: &AuthPolicy,
        revision: Option<Revision>,
        issued_token: String,
    ) -> pb::AuthStatusResponse {
        let admin = !policy.is_enabled() || policy.is_admin(&who.caller);
        let mut response = pb::AuthStatusResponse {
            header: Some(self.header(revision)),
            enabled: policy.is_enabled(),
            caller: who.caller.user().unwrap_or_default().to_owned(),
            admin,
            issued_token,
            ..pb::AuthStatusResponse::default()
        };
        if admin {
            response.users = users_to_pb(policy);
            response.roles = roles_to_pb(policy);
        }
        response
    }
}

fn users_to_pb(policy: &AuthPolicy) -> Vec<pb::AuthUser> {
    policy
        .users()
        .iter()
        .map(|(name, user)| pb::AuthUser {
            name: name.clone(),
            roles: user.roles.iter().cloned().collect(),
            tokens: user
                .tokens
                .iter()
                .map(|token| pb::AuthToken {
                    id: token.id.clone(),
                    description: token.description.clone(),
                    created_unix_ms: token.created_unix_ms,
                })
                .collect(),
        })
        .collect()
}

fn roles_to_pb(policy: &AuthPolicy) -> Vec<pb::AuthRole> {
    policy
        .roles()
        .iter()
        .map(|(name, role)| pb::AuthRole {
            name: name.clone(),
            grants: role
                .grants
                .iter()
                .map(|grant| pb::AuthGrant {
                    prefix: grant.prefix.clone(),
                    permissions: grant
                        .permissions
                        .iter()
                        .map(|permission| permission.name().to_owned())
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// `change` applied to `policy`: the new policy, and the token issued, if any.
fn apply(
    policy: &AuthPolicy,
    change: &pb::AuthChangeRequest,
) -> Result<(AuthPolicy, String), Status> {
    use pb::AuthAction as Action;
    let refused = |error: crate::auth::PolicyError| invalid_argument(error.to_string());
    let permissions = || PermissionSet::parse(&change.permissions).map_err(refused);
    let action = Action::try_from(change.action)
        .map_err(|_| invalid_argument(format!("unknown auth action {}", change.action)))?;
    let changed = match action {
        Action::Unspecified => return Err(invalid_argument("no auth action given")),
        Action::Enable => policy.enable(),
        Action::Disable => Ok(policy.disable()),
        Action::UserAdd => policy.add_user(&change.user),
        Action::UserRemove => policy.remove_user(&change.user),
        Action::UserGrantRole => policy.grant_role(&change.user, &change.role),
        Action::UserRevokeRole => policy.revoke_role(&change.user, &change.role),
        Action::RoleAdd => policy.add_role(&change.role),
        Action::RoleRemove => policy.remove_role(&change.role),
        Action::RoleGrant => policy.grant(&change.role, &change.prefix, permissions()?),
        Action::RoleRevoke => policy.revoke(&change.role, &change.prefix, permissions()?),
        Action::TokenRevoke => policy.revoke_token(&change.user, &change.token_id),
        Action::TokenIssue => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                });
            let random = ring::rand::SystemRandom::new();
            let (token, record) = policy
                .issue_token(&random, &change.user, &change.description, now)
                .map_err(refused)?;
            let issued = policy.add_token(&change.user, record).map_err(refused)?;
            return Ok((issued, token));
        }
    };
    changed
        .map(|policy| (policy, String::new()))
        .map_err(refused)
}

#[tonic::async_trait]
impl AuthApi for AuthService {
    async fn status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let who = self.access.identify(&request)?;
        let policy = who.policy.clone();
        Ok(Response::new(self.answer(
            &who,
            &policy,
            None,
            String::new(),
        )))
    }

    async fn change(
        &self,
        request: Request<pb::AuthChangeRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let who = self.access.identify(&request)?;
        if who.policy.is_enabled() {
            self.access.require_admin(&who)?;
        }
        let change = request.into_inner();
        for _ in 0..CHANGE_ATTEMPTS_MAX {
            let (policy, version) = self.current().await?;
            let (changed, token) = apply(&policy, &change)?;
            if let Some(revision) = self.store(&changed, version).await? {
                tracing::info!(user = %who.caller, action = ?change.action(), "auth policy changed");
                return Ok(Response::new(self.answer(
                    &who,
                    &changed,
                    Some(revision),
                    token,
                )));
            }
        }
        Err(Status::aborted(
            "the auth policy kept changing under this change; try again",
        ))
    }
}
