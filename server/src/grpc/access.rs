//! `Access`: who a request comes from and whether it may do what it asks, on every RPC of the
//! client port.
//!
//! ```text
//!  request ─► identify: token (authorization: Bearer …) ─► user
//!                       else certificate common name     ─► user
//!                       else                             ─► anonymous
//!          ─► require / require_proposal / may_read (AuthPolicy, read from /_coord/auth)
//!          ─► Ok, or PERMISSION_DENIED / UNAUTHENTICATED naming what is missing (logged, counted)
//! ```
//!
//! The policy is the JSON of the node `/_coord/auth` in the local replica, parsed again only
//! when that node's revision changes. A policy that cannot be parsed fails closed: every
//! request is refused until it is fixed.
//!
//! Invariants:
//! - whether or not auth is enabled, no namespace write reaches `/_coord` or below (only the
//!   `Auth` service writes there); its only ancestor is the root, which no delete removes
//!   (`ROOT_READ_ONLY`), so the policy can be neither forged nor deleted through the namespace
//!   API;
//! - a write (every operation and compare of a txn, in both branches) is checked whole before
//!   it is proposed: a txn with one forbidden part is refused whole and changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tonic::{Request, Status};

use super::status::{denied_status, permission_denied_status, unauthenticated_status};
use crate::auth::{AuthPolicy, Caller, Denied, Permission};
use crate::consensus::Consensus;
use crate::fsm::{
    Command, CreateCommand, DeleteCommand, NodePath, Proposal, Revision, SessionId, TxnOp,
};
use crate::listener::{certificate_name, remote_address};
use crate::throttle::LogThrottle;

/// The subtree Coord keeps for itself.
pub const RESERVED_ROOT: &str = "/_coord";
/// The node holding the auth policy (JSON).
pub const AUTH_PATH: &str = "/_coord/auth";
/// The metadata key carrying a bearer token.
pub const TOKEN_METADATA_KEY: &str = "authorization";

/// Refusals counted since the member started.
#[derive(Debug, Default)]
pub struct AccessCounters {
    pub denied: AtomicU64,
    pub unauthenticated: AtomicU64,
}

/// Who a request comes from, with the policy it is judged by (one policy for the whole
/// request, even if it changes meanwhile).
pub struct Identity {
    pub caller: Caller,
    pub remote: Option<SocketAddr>,
    pub policy: Arc<AuthPolicy>,
}

impl Identity {
    /// Whether this caller may read `path` (watch filtering).
    pub fn may_read(&self, path: &str) -> bool {
        if is_reserved(path) && self.policy.is_enabled() {
            return self.policy.is_admin(&self.caller);
        }
        self.policy.may_read(&self.caller, path)
    }

    /// Whether this caller may administer (always, while auth is disabled).
    pub fn is_admin(&self) -> bool {
        !self.policy.is_enabled() || self.policy.is_admin(&self.caller)
    }

    /// The owner recorded on the sessions this caller opens: its user once auth is enabled.
    pub fn session_owner(&self) -> Option<String> {
        match (&self.caller, self.policy.is_enabled()) {
            (Caller::User(user), true) => Some(format!("user:{user}")),
            _ => None,
        }
    }
}

/// Whether `path` is the reserved subtree or inside it.
pub fn is_reserved(path: &str) -> bool {
    path == RESERVED_ROOT
        || path
            .strip_prefix(RESERVED_ROOT)
            .is_some_and(|rest| rest.starts_with('/'))
}

type CachedPolicy = (Option<Revision>, Result<Arc<AuthPolicy>, String>);

/// See the module documentation.
pub struct Access {
    consensus: Arc<Consensus>,
    cached: Mutex<Option<CachedPolicy>>,
    /// Failed authentications and denied requests, each logged at most once a second.
    authentication_failures: LogThrottle,
    denials: LogThrottle,
    pub counters: AccessCounters,
}

impl Access {
    pub fn new(consensus: Arc<Consensus>) -> Access {
        Access {
            consensus,
            cached: Mutex::new(None),
            authentication_failures: LogThrottle::default(),
            denials: LogThrottle::default(),
            counters: AccessCounters::default(),
        }
    }

    /// The policy in the local replica now (disabled when none was ever written).
    pub fn policy(&self) -> Result<Arc<AuthPolicy>, Status> {
        let path = NodePath::parse(AUTH_PATH).expect("the auth path is valid");
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let known = cached.as_ref().map(|(revision, _)| *revision);
        let changed = self.consensus.replica().read(|namespace| {
            let node = namespace.get(&path);
            let revision = node.map(|node| node.stat.mod_revision);
            (known != Some(revision)).then(|| (revision, node.map(|node| node.data.clone())))
        });
        if let Some((revision, data)) = changed {
            let parsed = match data {
                None => Ok(Arc::new(AuthPolicy::default())),
                Some(data) => AuthPolicy::from_json(&data).map(Arc::new).map_err(|error| {
                    tracing::error!(%error, "the auth policy at {AUTH_PATH} cannot be read; refusing every request");
                    error.to_string()
                }),
            };
            *cached = Some((revision, parsed));
        }
        match cached.as_ref().map(|(_, policy)| policy.clone()) {
            Some(Ok(policy)) => Ok(policy),
            Some(Err(reason)) => Err(Status::internal(format!(
                "the auth policy at {AUTH_PATH} cannot be read ({reason}); requests are refused \
                 until it is fixed"
            ))),
            None => Err(Status::internal("the auth policy was not read")),
        }
    }

    /// Who `request` comes from. A token that is unknown or revoked is refused at once (while
    /// auth is enabled), rather than treated as anonymous.
    pub fn identify<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let policy = self.policy()?;
        let remote = remote_address(request);
        let token = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let caller = match token {
            Some(token) if policy.is_enabled() => match policy.authenticate_token(token) {
                Some(user) => Caller::User(user.to_owned()),
                None => {
                    return Err(self.unauthenticated(
                        remote,
                        "the token is unknown or revoked: issue a new one with `coordctl auth token issue`",
                    ))
                }
            },
            _ => match certificate_name(request) {
                Some(name) => Caller::User(name.to_owned()),
                None => Caller::Anonymous,
            },
        };
        Ok(Identity {
            caller,
            remote,
            policy,
        })
    }

    fn unauthenticated(&self, remote: Option<SocketAddr>, reason: &str) -> Status {
        self.counters
            .unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        self.authentication_failures.warn(|suppressed| {
            tracing::warn!(?remote, reason, suppressed, "authentication failed");
        });
        unauthenticated_status(reason)
    }

    /// Refuses (logs and counts) what `who` was denied.
    fn refuse(&self, who: &Identity, denied: Denied) -> Status {
        if matches!(who.caller, Caller::Anonymous) {
            return self.unauthenticated(who.remote, &denied.to_string());
        }
        self.counters.denied.fetch_add(1, Ordering::Relaxed);
        self.denials.warn(|suppressed| {
            tracing::warn!(remote = ?who.remote, user = %who.caller, permission = denied.permission.name(),
                path = %denied.path, suppressed, "request denied");
        });
        denied_status(&denied)
    }

    /// Requires `permission` on `path` (admin for the reserved subtree).
    pub fn require(
        &self,
        who: &Identity,
        permission: Permission,
        path: &str,
    ) -> Result<(), Status> {
        let needed = if is_reserved(path) {
            Permission::Admin
        } else {
            permission
        };
        let checked_path = if is_reserved(path) { "/" } else { path };
        who.policy
            .check(&who.caller, needed, checked_path)
            .map_err(|denied| {
                self.refuse(
                    who,
                    Denied {
                        path: path.to_owned(),
                        ..denied
                    },
                )
            })
    }

    /// Requires an identity once auth is enabled (any user will do).
    pub fn require_user(&self, who: &Identity) -> Result<(), Status> {
        if who.policy.is_enabled() && who.caller.user().is_none() {
            return Err(self.unauthenticated(
                who.remote,
                "authentication required: present a client certificate or a token \
                 (coordctl --cert/--key, or --token)",
            ));
        }
        Ok(())
    }

    /// Requires admin on `/` (cluster administration, others' sessions, auth changes).
    pub fn require_admin(&self, who: &Identity) -> Result<(), Status> {
        self.require(who, Permission::Admin, "/")
    }

    /// Requires that session `session` was opened by `who` (or that `who` administers).
    pub fn require_session(&self, who: &Identity, session: SessionId) -> Result<(), Status> {
        let Some(owner) = who.session_owner() else {
            return self.require_admin(who);
        };
        let recorded = self.consensus.replica().read(|namespace| {
            namespace
                .sessions()
                .get(&session)
                .map(|record| record.owner.clone())
        });
        // A session that does not exist is the namespace's to report (SESSION_EXPIRED).
        if recorded.is_none() || recorded.as_deref() == Some(owner.as_str()) || who.is_admin() {
            return Ok(());
        }
        Err(self.refuse(
            who,
            Denied {
                user: who.caller.user().map(str::to_owned),
                permission: Permission::Admin,
                path: format!("session {}", session.0),
            },
        ))
    }

    /// Requires everything `proposal` would do: checked whole before it is proposed.
    pub fn require_proposal(&self, who: &Identity, proposal: &Proposal) -> Result<(), Status> {
        match &proposal.command {
            Command::Create(create) => self.require_create(who, create),
            Command::Set(set) => self.require_write(who, Permission::Write, &set.path),
            Command::Delete(delete) => self.require_delete(who, delete),
            Command::Txn(txn) => {
                for compare in &txn.compares {
                    self.require(who, Permission::Read, &compare.path)?;
                }
                for fence in &txn.fences {
                    self.require(who, Permission::Read, &fence.path)?;
                }
                for op in txn.success.iter().chain(&txn.failure) {
                    match op {
                        TxnOp::Create(create) => self.require_create(who, create)?,
                        TxnOp::Set(set) => self.require_write(who, Permission::Write, &set.path)?,
                        TxnOp::Delete(delete) => self.require_delete(who, delete)?,
                        TxnOp::Get { path } => self.require(who, Permission::Read, path)?,
                    }
                }
                Ok(())
            }
            Command::OpenSession(_) | Command::CloseSession(_) | Command::CheckpointSessions(_) => {
                Err(Status::internal(
                    "session commands do not come through the namespace",
                ))
            }
            Command::Batch(_) => Err(Status::internal(
                "batches are made by the leader, never sent by a client",
            )),
        }
    }

    /// A namespace write of `path`: never in the reserved subtree.
    fn require_write(
        &self,
        who: &Identity,
        permission: Permission,
        path: &str,
    ) -> Result<(), Status> {
        if is_reserved(path) {
            return Err(reserved(path));
        }
        self.require(who, permission, path)
    }

    fn require_create(&self, who: &Identity, create: &CreateCommand) -> Result<(), Status> {
        self.require_write(who, Permission::Create, &create.path)?;
        if create.session.0 != 0 {
            self.require_session(who, create.session)?;
        }
        if create.make_parents {
            for parent in self.missing_ancestors(&create.path) {
                self.require_write(who, Permission::Create, &parent)?;
            }
        }
        Ok(())
    }

    fn require_delete(&self, who: &Identity, delete: &DeleteCommand) -> Result<(), Status> {
        // The reserved subtree's only ancestor is the root, which a delete never removes.
        const _: () = assert!(RESERVED_ROOT.len() > 1);
        self.require_write(who, Permission::Delete, &delete.path)
    }

    /// The ancestors of `path` that do not exist yet (a create with `make_parents` makes them).
    fn missing_ancestors(&self, path: &str) -> Vec<String> {
        let ancestors: Vec<String> = path
            .match_indices('/')
            .skip(1)
            .map(|(index, _)| path[..index].to_owned())
            .collect();
        self.consensus.replica().read(|namespace| {
            ancestors
                .into_iter()
                .filter(|ancestor| {
                    NodePath::parse(ancestor)
                        .map(|parsed| namespace.get(&parsed).is_none())
                        .unwrap_or(false)
                })
                .collect()
        })
    }
}

/// The refusal of a namespace write to the reserved subtree.
fn reserved(path: &str) -> Status {
    permission_denied_status(
        path,
        format!(
            "{path}: {RESERVED_ROOT} is reserved for Coord (the auth policy lives there; change \
             it with `coordctl auth`), and no namespace write may touch it"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_subtree() {
        assert!(is_reserved("/_coord"));
        assert!(is_reserved("/_coord/auth"));
        assert!(!is_reserved("/_coordinator"));
        assert!(!is_reserved("/app"));
        assert!(!is_reserved("/"));
        // Its only ancestor is the root, which no delete removes.
        assert_eq!(RESERVED_ROOT.matches('/').count(), 1);
    }
}
