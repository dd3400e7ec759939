//! The auth API: the policy's status and changes to it (`coordctl auth ...`).

use coord_proto::v1 as pb;
use coord_proto::v1::auth_client::AuthClient;

use crate::client::{with_timeout, Client};
use crate::error::Error;

/// One change to the cluster's auth policy. Once auth is enabled only an admin (a user holding
/// the `root` role, or admin on `/`) may make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChange {
    /// Turns auth on: refused unless some user holds the `root` role.
    Enable,
    /// Turns auth off: every client may do everything again.
    Disable,
    /// Adds a user with no roles (a certificate's common name, or a token holder).
    UserAdd {
        /// The user's name.
        user: String,
    },
    /// Removes a user and its tokens.
    UserRemove {
        /// The user's name.
        user: String,
    },
    /// Gives `user` the role `role`.
    GrantRole {
        /// The user's name.
        user: String,
        /// The role's name (`root` is admin on `/`).
        role: String,
    },
    /// Takes the role `role` from `user`.
    RevokeRole {
        /// The user's name.
        user: String,
        /// The role's name.
        role: String,
    },
    /// Adds a role with no grants.
    RoleAdd {
        /// The role's name.
        role: String,
    },
    /// Removes a role no user holds.
    RoleRemove {
        /// The role's name.
        role: String,
    },
    /// Adds `permissions` (read, write, create, delete, admin) on `prefix` to `role`.
    Grant {
        /// The role's name.
        role: String,
        /// The path prefix: it covers itself and what is under `prefix/`.
        prefix: String,
        /// Permission names.
        permissions: Vec<String>,
    },
    /// Takes `permissions` on `prefix` from `role`.
    Revoke {
        /// The role's name.
        role: String,
        /// The path prefix of the grant.
        prefix: String,
        /// Permission names.
        permissions: Vec<String>,
    },
    /// Issues a token for `user`: the answer's `issued_token` is the only copy.
    TokenIssue {
        /// The user's name.
        user: String,
        /// What the token is for (shown in the policy, never the token).
        description: String,
    },
    /// Revokes one of `user`'s tokens by its id (the part after `coord_`).
    TokenRevoke {
        /// The user's name.
        user: String,
        /// The token's id.
        token_id: String,
    },
}

impl AuthChange {
    fn request(&self) -> pb::AuthChangeRequest {
        use pb::AuthAction as Action;
        let mut request = pb::AuthChangeRequest::default();
        let action = match self {
            AuthChange::Enable => Action::Enable,
            AuthChange::Disable => Action::Disable,
            AuthChange::UserAdd { user } => {
                request.user = user.clone();
                Action::UserAdd
            }
            AuthChange::UserRemove { user } => {
                request.user = user.clone();
                Action::UserRemove
            }
            AuthChange::GrantRole { user, role } => {
                (request.user, request.role) = (user.clone(), role.clone());
                Action::UserGrantRole
            }
            AuthChange::RevokeRole { user, role } => {
                (request.user, request.role) = (user.clone(), role.clone());
                Action::UserRevokeRole
            }
            AuthChange::RoleAdd { role } => {
                request.role = role.clone();
                Action::RoleAdd
            }
            AuthChange::RoleRemove { role } => {
                request.role = role.clone();
                Action::RoleRemove
            }
            AuthChange::Grant {
                role,
                prefix,
                permissions,
            } => {
                (request.role, request.prefix) = (role.clone(), prefix.clone());
                request.permissions = permissions.clone();
                Action::RoleGrant
            }
            AuthChange::Revoke {
                role,
                prefix,
                permissions,
            } => {
                (request.role, request.prefix) = (role.clone(), prefix.clone());
                request.permissions = permissions.clone();
                Action::RoleRevoke
            }
            AuthChange::TokenIssue { user, description } => {
                (request.user, request.description) = (user.clone(), description.clone());
                Action::TokenIssue
            }
            AuthChange::TokenRevoke { user, token_id } => {
                (request.user, request.token_id) = (user.clone(), token_id.clone());
                Action::TokenRevoke
            }
        };
        request.action = action as i32;
        request
    }
}

impl Client {
    /// Whether auth is enabled and who this client is; to an admin, the whole policy.
    pub async fn auth_status(&self) -> Result<pb::AuthStatusResponse, Error> {
        let response = self
            .call(true, |channel, timeout| {
                let request = with_timeout(pb::AuthStatusRequest {}, timeout);
                async move { AuthClient::new(channel).status(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Makes one change to the auth policy and returns the policy after it.
    ///
    /// ```no_run
    /// # async fn example(client: coord_client::Client) -> Result<(), coord_client::Error> {
    /// use coord_client::AuthChange;
    /// client.auth_change(AuthChange::UserAdd { user: "root".into() }).await?;
    /// client
    ///     .auth_change(AuthChange::GrantRole { user: "root".into(), role: "root".into() })
    ///     .await?;
    /// let issued = client
    ///     .auth_change(AuthChange::TokenIssue { user: "root".into(), description: "ops".into() })
    ///     .await?;
    /// println!("root's token, shown once: {}", issued.issued_token);
    /// client.auth_change(AuthChange::Enable).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn auth_change(&self, change: AuthChange) -> Result<pb::AuthStatusResponse, Error> {
        let request = change.request();
        // Not idempotent (a token issued twice is two tokens): retried only when not applied.
        let response = self
            .call(false, |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { AuthClient::new(channel).change(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }
}
