//! `AuthPolicy`: users, roles and the switch that turns checking on; the one place that decides
//! whether a caller may do something to a path.
//!
//! Invariants (checked by [`AuthPolicy::validate`], after every change in debug builds and on
//! every load):
//! - the role [`ROOT_ROLE`] exists and is exactly admin on `/`; no change can alter or remove it;
//! - every user and role name passes the naming rule, every grant prefix is a valid node path;
//! - every role a user holds is defined, so removing a role still held is refused;
//! - token ids are unique across all users;
//! - while `enabled`, at least one user holds `root`: enabling without one is refused, and so is
//!   revoking root from, or removing, its last holder, so a policy can never lock everyone out;
//! - users, roles, grants and tokens are bounded (`*_MAX`), which bounds every check.
//!
//! Every change is a pure function from a policy to a new policy or a typed [`PolicyError`];
//! the policy it was asked of is never modified.
//! Maps are `BTreeMap`s, so equal policies serialize to byte-equal JSON.
//! This module does no I/O and reads no clock: token randomness and times arrive as arguments.

use std::collections::{BTreeMap, BTreeSet};

use ring::rand::SecureRandom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::caller::Caller;
use super::denied::Denied;
use super::error::NameKind;
use super::error::PolicyError;
use super::grant::validate_prefix;
use super::name::validate_name;
use super::permission::{Permission, PermissionSet};
use super::role::{Role, GRANTS_PER_ROLE_MAX, ROOT_ROLE};
use super::token::{generate_token, token_id, TokenRecord};
use super::user::{User, ROLES_PER_USER_MAX, TOKENS_PER_USER_MAX};

/// Most users one policy may hold.
pub const USERS_MAX: usize = 10_000;
/// Most roles one policy may hold, `root` included.
pub const ROLES_MAX: usize = 1_000;

/// Who may do what; stored as JSON node data, changed only through its pure change functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// While false every request is allowed, authenticated or not.
    enabled: bool,
    users: BTreeMap<String, User>,
    /// Always holds `root`.
    roles: BTreeMap<String, Role>,
}

/// The stored shape of a policy, read before it is validated.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRecord {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    roles: BTreeMap<String, Role>,
}

/// The same shape, borrowed, so that serializing copies nothing.
#[derive(Serialize)]
struct PolicyRecordRef<'a> {
    enabled: bool,
    users: &'a BTreeMap<String, User>,
    roles: &'a BTreeMap<String, Role>,
}

/// The empty policy: disabled, no users, only the `root` role.
impl Default for AuthPolicy {
    fn default() -> AuthPolicy {
        AuthPolicy {
            enabled: false,
            users: BTreeMap::new(),
            roles: BTreeMap::from([(ROOT_ROLE.to_owned(), Role::root())]),
        }
    }
}

impl AuthPolicy {
    /// Reads a stored policy and checks every invariant. A missing `root` role is added (so a
    /// hand-written policy need not spell it out); grants are put in prefix order.
    pub fn from_json(bytes: &[u8]) -> Result<AuthPolicy, PolicyError> {
        let record: PolicyRecord =
            serde_json::from_slice(bytes).map_err(|error| PolicyError::Json {
                reason: error.to_string(),
            })?;
        AuthPolicy::from_record(record)
    }

    /// The policy as pretty-printed JSON; equal policies give equal bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.record_ref())
            .expect("string-keyed maps of plain values always serialize")
    }

    fn from_record(record: PolicyRecord) -> Result<AuthPolicy, PolicyError> {
        let mut roles = record.roles;
        if !roles.contains_key(ROOT_ROLE) {
            roles.insert(ROOT_ROLE.to_owned(), Role::root());
        }
        for role in roles.values_mut() {
            role.sort_grants();
        }
        let policy = AuthPolicy {
            enabled: record.enabled,
            users: record.users,
            roles,
        };
        policy.validate()?;
        Ok(policy)
    }

    fn record_ref(&self) -> PolicyRecordRef<'_> {
        PolicyRecordRef {
            enabled: self.enabled,
            users: &self.users,
            roles: &self.roles,
        }
    }

    /// Whether checks are on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Decides whether `caller` may use `permission` on `path` (a valid node path).
    ///
    /// Disabled: allowed. Enabled: an anonymous caller is denied; a user is allowed if one of
    /// its roles has a grant covering `path` that holds `permission` or `Admin`. A user name
    /// not in the policy holds no roles.
    pub fn check(&self, caller: &Caller, permission: Permission, path: &str) -> Result<(), Denied> {
        if !self.enabled {
            return Ok(());
        }
        let denied = |user: Option<&String>| Denied {
            user: user.cloned(),
            permission,
            path: path.to_owned(),
        };
        match caller {
            Caller::Anonymous => Err(denied(None)),
            Caller::User(name) if self.user_allows(name, permission, path) => Ok(()),
            Caller::User(name) => Err(denied(Some(name))),
        }
    }

    /// Whether `caller` may read `path`: which watch events it may be sent.
    pub fn may_read(&self, caller: &Caller, path: &str) -> bool {
        self.check(caller, Permission::Read, path).is_ok()
    }

    /// Whether `caller` is admin on `/`: may administer the cluster, close other clients'
    /// sessions and change this policy. Everyone is, while auth is disabled.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        self.check(caller, Permission::Admin, "/").is_ok()
    }

    fn user_allows(&self, user_name: &str, permission: Permission, path: &str) -> bool {
        let Some(user) = self.users.get(user_name) else {
            return false;
        };
        user.roles
            .iter()
            .filter_map(|role_name| self.roles.get(role_name))
            .any(|role| role.allows(permission, path))
    }

    /// The names of the users holding `root`.
    pub fn root_users(&self) -> impl Iterator<Item = &str> {
        self.users
            .iter()
            .filter(|(_, user)| user.roles.contains(ROOT_ROLE))
            .map(|(name, _)| name.as_str())
    }

    /// Checks every invariant in the module doc.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_roles()?;
        self.validate_users()?;
        if self.enabled && self.root_users().next().is_none() {
            return Err(PolicyError::NoRootUser);
        }
        Ok(())
    }

    fn validate_roles(&self) -> Result<(), PolicyError> {
        if self.roles.len() > ROLES_MAX {
            return Err(PolicyError::TooMany {
                what: "roles",
                limit: ROLES_MAX,
            });
        }
        if !self.roles.contains_key(ROOT_ROLE) {
            return Err(PolicyError::RootRoleAltered);
        }
        for (name, role) in &self.roles {
            validate_name(NameKind::Role, name)?;
            role.validate(name)?;
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), PolicyError> {
        if self.users.len() > USERS_MAX {
            return Err(PolicyError::TooMany {
                what: "users",
                limit: USERS_MAX,
            });
        }
        let mut token_ids = BTreeSet::new();
        for (name, user) in &self.users {
            validate_name(NameKind::User, name)?;
            check_count(
                user.roles.len(),
                ROLES_PER_USER_MAX,
                "roles held by one user",
            )?;
            check_count(user.tokens.len(), TOKENS_PER_USER_MAX, "tokens of one user")?;
            if let Some(role) = user
                .roles
                .iter()
                .find(|role| !self.roles.contains_key(*role))
            {
                return Err(PolicyError::UndefinedRoleHeld {
                    user: name.clone(),
                    role: role.clone(),
                });
            }
            for record in &user.tokens {
                record.validate(name)?;
                if !token_ids.insert(record.id.as_str()) {
                    return Err(PolicyError::TokenIdTaken {
                        id: record.id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every change ends here: in debug builds (so in every test) the new policy is validated.
    fn checked(self) -> AuthPolicy {
        debug_assert_eq!(
            self.validate(),
            Ok(()),
            "a change broke the policy: {self:?}"
        );
        self
    }
}

/// Changes to users, roles, grants and the switch.
impl AuthPolicy {
    /// Adds a user holding no roles and no tokens.
    pub fn add_user(&self, user: &str) -> Result<AuthPolicy, PolicyError> {
        validate_name(NameKind::User, user)?;
        if self.users.contains_key(user) {
            return Err(PolicyError::UserExists {
                user: user.to_owned(),
            });
        }
        check_count(self.users.len() + 1, USERS_MAX, "users")?;
        let mut policy = self.clone();
        policy.users.insert(user.to_owned(), User::default());
        Ok(policy.checked())
    }

    /// Removes a user and its tokens; refused for the last `root` holder while enabled.
    pub fn remove_user(&self, user: &str) -> Result<AuthPolicy, PolicyError> {
        let held = self.user_or_error(user)?;
        if held.roles.contains(ROOT_ROLE) {
            self.refuse_losing_last_root_user(user)?;
        }
        let mut policy = self.clone();
        policy.users.remove(user);
        Ok(policy.checked())
    }

    /// Lets `user` hold `role`.
    pub fn grant_role(&self, user: &str, role: &str) -> Result<AuthPolicy, PolicyError> {
        let held = self.user_or_error(user)?;
        self.role_or_error(role)?;
        if held.roles.contains(role) {
            return Err(PolicyError::RoleAlreadyHeld {
                user: user.to_owned(),
                role: role.to_owned(),
            });
        }
        check_count(
            held.roles.len() + 1,
            ROLES_PER_USER_MAX,
            "roles held by one user",
        )?;
        let mut policy = self.clone();
        policy.user_mut(user).roles.insert(role.to_owned());
        Ok(policy.checked())
    }

    /// Takes `role` from `user`; refused for `root` from its last holder while enabled.
    pub fn revoke_role(&self, user: &str, role: &str) -> Result<AuthPolicy, PolicyError> {
        let held = self.user_or_error(user)?;
        if !held.roles.contains(role) {
            return Err(PolicyError::RoleNotHeld {
                user: user.to_owned(),
                role: role.to_owned(),
            });
        }
        if role == ROOT_ROLE {
            self.refuse_losing_last_root_user(user)?;
        }
        let mut policy = self.clone();
        policy.user_mut(user).roles.remove(role);
        Ok(policy.checked())
    }

    /// Adds a role with no grants.
    pub fn add_role(&self, role: &str) -> Result<AuthPolicy, PolicyError> {
        validate_name(NameKind::Role, role)?;
        if self.roles.contains_key(role) {
            return Err(PolicyError::RoleExists {
                role: role.to_owned(),
            });
        }
        check_count(self.roles.len() + 1, ROLES_MAX, "roles")?;
        let mut policy = self.clone();
        policy.roles.insert(role.to_owned(), Role::default());
        Ok(policy.checked())
    }

    /// Removes a role no user holds; `root` cannot be removed.
    pub fn remove_role(&self, role: &str) -> Result<AuthPolicy, PolicyError> {
        refuse_root(role)?;
        self.role_or_error(role)?;
        let holders: Vec<String> = self
            .users
            .iter()
            .filter(|(_, user)| user.roles.contains(role))
            .map(|(name, _)| name.clone())
            .collect();
        if !holders.is_empty() {
            return Err(PolicyError::RoleInUse {
                role: role.to_owned(),
                users: holders,
            });
        }
        let mut policy = self.clone();
        policy.roles.remove(role);
        Ok(policy.checked())
    }

    /// Adds `permissions` on `prefix` to `role`, merged into its grant on that prefix if it has
    /// one; `root` cannot be changed.
    pub fn grant(
        &self,
        role: &str,
        prefix: &str,
        permissions: PermissionSet,
    ) -> Result<AuthPolicy, PolicyError> {
        let current = self.changeable_role(role, prefix, permissions)?;
        if current.grant_on(prefix).is_none() {
            check_count(
                current.grants.len() + 1,
                GRANTS_PER_ROLE_MAX,
                "grants in one role",
            )?;
        }
        let changed = current.with_permissions(prefix, permissions);
        let mut policy = self.clone();
        policy.roles.insert(role.to_owned(), changed);
        Ok(policy.checked())
    }

    /// Takes `permissions` from `role`'s grant on `prefix`, removing the grant once it is
    /// empty. Only the named bits go: a grant that keeps `admin` still allows everything.
    pub fn revoke(
        &self,
        role: &str,
        prefix: &str,
        permissions: PermissionSet,
    ) -> Result<AuthPolicy, PolicyError> {
        let current = self.changeable_role(role, prefix, permissions)?;
        let changed = current
            .without_permissions(prefix, permissions)
            .ok_or_else(|| PolicyError::NoGrant {
                role: role.to_owned(),
                prefix: prefix.to_owned(),
            })?;
        let mut policy = self.clone();
        policy.roles.insert(role.to_owned(), changed);
        Ok(policy.checked())
    }

    /// Turns checking on; refused unless some user holds `root`, so that enabling can never
    /// lock everyone out.
    pub fn enable(&self) -> Result<AuthPolicy, PolicyError> {
        if self.root_users().next().is_none() {
            return Err(PolicyError::NoRootUser);
        }
        let mut policy = self.clone();
        policy.enabled = true;
        Ok(policy.checked())
    }

    /// Turns checking off: every request is allowed again. Users and roles are kept.
    pub fn disable(&self) -> AuthPolicy {
        let mut policy = self.clone();
        policy.enabled = false;
        policy.checked()
    }

    /// The role a grant or revoke may change, after checking its arguments.
    fn changeable_role(
        &self,
        role: &str,
        prefix: &str,
        permissions: PermissionSet,
    ) -> Result<&Role, PolicyError> {
        refuse_root(role)?;
        let current = self.role_or_error(role)?;
        validate_prefix(prefix)?;
        if permissions.is_empty() {
            return Err(PolicyError::NoPermissions {
                role: role.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Ok(current)
    }

    fn refuse_losing_last_root_user(&self, user: &str) -> Result<(), PolicyError> {
        let others = self.root_users().filter(|name| *name != user).count();
        if self.enabled && others == 0 {
            return Err(PolicyError::LastRootUser {
                user: user.to_owned(),
            });
        }
        Ok(())
    }

    fn user_or_error(&self, user: &str) -> Result<&User, PolicyError> {
        self.users.get(user).ok_or_else(|| PolicyError::NoSuchUser {
            user: user.to_owned(),
        })
    }

    fn role_or_error(&self, role: &str) -> Result<&Role, PolicyError> {
        self.roles.get(role).ok_or_else(|| PolicyError::NoSuchRole {
            role: role.to_owned(),
        })
    }

    /// The user to change; callers have checked that it exists.
    fn user_mut(&mut self, user: &str) -> &mut User {
        self.users
            .get_mut(user)
            .expect("the caller checked that the user exists")
    }
}

/// Tokens: issuing, storing, revoking and recognising them.
impl AuthPolicy {
    /// Makes a token for `user` without changing the policy: the caller gives the token to the
    /// user once and stores only the record, through [`AuthPolicy::add_token`]. Split this way,
    /// the token itself never has to be replicated.
    pub fn issue_token(
        &self,
        random: &dyn SecureRandom,
        user: &str,
        description: &str,
        now_unix_ms: u64,
    ) -> Result<(String, TokenRecord), PolicyError> {
        let holder = self.user_or_error(user)?;
        check_count(
            holder.tokens.len() + 1,
            TOKENS_PER_USER_MAX,
            "tokens of one user",
        )?;
        let (token, record) = generate_token(random, description, now_unix_ms)?;
        // 64 random bits make a collision unlikely, not impossible; the caller may retry.
        if self.token_owner(&record.id).is_some() {
            return Err(PolicyError::TokenIdTaken { id: record.id });
        }
        Ok((token, record))
    }

    /// Stores a token record for `user`.
    pub fn add_token(&self, user: &str, record: TokenRecord) -> Result<AuthPolicy, PolicyError> {
        record.validate(user)?;
        let holder = self.user_or_error(user)?;
        check_count(
            holder.tokens.len() + 1,
            TOKENS_PER_USER_MAX,
            "tokens of one user",
        )?;
        if self.token_owner(&record.id).is_some() {
            return Err(PolicyError::TokenIdTaken { id: record.id });
        }
        let mut policy = self.clone();
        policy.user_mut(user).tokens.push(record);
        Ok(policy.checked())
    }

    /// Forgets `user`'s token `id`; the token stops authenticating at once.
    pub fn revoke_token(&self, user: &str, id: &str) -> Result<AuthPolicy, PolicyError> {
        let holder = self.user_or_error(user)?;
        let Some(index) = holder.tokens.iter().position(|record| record.id == id) else {
            return Err(PolicyError::NoSuchToken {
                user: user.to_owned(),
                id: id.to_owned(),
            });
        };
        let mut policy = self.clone();
        policy.user_mut(user).tokens.remove(index);
        Ok(policy.checked())
    }

    /// The user `token` authenticates, or `None` if it is malformed, unknown or revoked.
    /// Whether auth is enabled does not matter here; it matters to [`AuthPolicy::check`].
    pub fn authenticate_token(&self, token: &str) -> Option<&str> {
        let id = token_id(token)?;
        let (user, record) = self.token_owner(id)?;
        record.matches(token).then_some(user)
    }

    /// The user holding token `id`, and its record. A linear scan: bounded by `USERS_MAX`
    /// times `TOKENS_PER_USER_MAX`, and in practice a few records.
    fn token_owner(&self, id: &str) -> Option<(&str, &TokenRecord)> {
        self.users
            .iter()
            .find_map(|(name, user)| user.token(id).map(|record| (name.as_str(), record)))
    }
}

/// Serialized exactly as [`AuthPolicy::to_json`] writes it.
impl Serialize for AuthPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.record_ref().serialize(serializer)
    }
}

/// Deserializing validates, as [`AuthPolicy::from_json`] does, so no path builds a policy
/// that breaks the invariants.
impl<'de> Deserialize<'de> for AuthPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AuthPolicy, D::Error> {
        let record = PolicyRecord::deserialize(deserializer)?;
        AuthPolicy::from_record(record).map_err(serde::de::Error::custom)
    }
}

fn refuse_root(role: &str) -> Result<(), PolicyError> {
    if role == ROOT_ROLE {
        return Err(PolicyError::RootRoleFixed);
    }
    Ok(())
}

/// Refuses a count over its limit.
fn check_count(count: usize, limit: usize, what: &'static str) -> Result<(), PolicyError> {
    if count > limit {
        return Err(PolicyError::TooMany { what, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    use super::*;
    use crate::auth::grant::prefix_covers;

    const READ: Permission = Permission::Read;
    const WRITE: Permission = Permission::Write;
    const CREATE: Permission = Permission::Create;
    const DELETE: Permission = Permission::Delete;
    const ADMIN: Permission = Permission::Admin;

    fn set(permissions: &[Permission]) -> PermissionSet {
        PermissionSet::of(permissions)
    }

    fn user(name: &str) -> Caller {
        Caller::User(name.to_owned())
    }

    /// Enabled: `admin` holds root; `alice` holds `app` (read and write on /app).
    fn sample() -> AuthPolicy {
        AuthPolicy::default()
            .add_user("admin")
            .unwrap()
            .grant_role("admin", ROOT_ROLE)
            .unwrap()
            .add_role("app")
            .unwrap()
            .grant("app", "/app", set(&[READ, WRITE]))
            .unwrap()
            .add_user("alice")
            .unwrap()
            .grant_role("alice", "app")
            .unwrap()
            .enable()
            .unwrap()
    }

    #[test]
    fn the_default_policy_is_disabled_and_holds_only_root() {
        let policy = AuthPolicy::default();
        assert!(!policy.is_enabled());
        assert!(policy.users().is_empty());
        assert_eq!(policy.roles().keys().collect::<Vec<_>>(), [ROOT_ROLE]);
        assert_eq!(policy.role(ROOT_ROLE), Some(&Role::root()));
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn a_disabled_policy_allows_everyone_everything() {
        let policy = sample().disable();
        for caller in [Caller::Anonymous, user("alice"), user("nobody")] {
            for permission in Permission::ALL {
                assert_eq!(policy.check(&caller, permission, "/other"), Ok(()));
            }
            assert!(policy.is_admin(&caller));
            assert!(policy.may_read(&caller, "/"));
        }
    }

    #[test]
    fn anonymous_callers_are_denied_when_enabled() {
        let policy = sample();
        assert_eq!(
            policy.check(&Caller::Anonymous, READ, "/app"),
            Err(Denied {
                user: None,
                permission: READ,
                path: "/app".to_owned()
            })
        );
        assert!(!policy.may_read(&Caller::Anonymous, "/"));
        assert!(!policy.is_admin(&Caller::Anonymous));
    }

    #[test]
    fn a_user_may_do_what_a_role_grants_on_covered_paths_only() {
        let policy = sample();
        let alice = user("alice");
        for path in ["/app", "/app/x", "/app/x/y"] {
            assert_eq!(policy.check(&alice, READ, path), Ok(()), "{path}");
            assert_eq!(policy.check(&alice, WRITE, path), Ok(()), "{path}");
            assert!(policy.check(&alice, CREATE, path).is_err(), "{path}");
            assert!(policy.check(&alice, DELETE, path).is_err(), "{path}");
            assert!(policy.check(&alice, ADMIN, path).is_err(), "{path}");
        }
        assert_eq!(
            policy.check(&alice, READ, "/apple"),
            Err(Denied {
                user: Some("alice".to_owned()),
                permission: READ,
                path: "/apple".to_owned()
            })
        );
        assert!(!policy.may_read(&alice, "/"));
        assert!(!policy.may_read(&alice, "/other"));
        assert!(!policy.is_admin(&alice));
    }

    #[test]
    fn an_unknown_user_holds_no_roles() {
        let policy = sample();
        let stranger = user("stranger");
        for permission in Permission::ALL {
            assert!(policy.check(&stranger, permission, "/app").is_err());
        }
        assert!(!policy.is_admin(&stranger));
    }

    #[test]
    fn root_holders_may_do_everything() {
        let policy = sample();
        let admin = user("admin");
        for permission in Permission::ALL {
            for path in ["/", "/app", "/other/deep"] {
                assert_eq!(policy.check(&admin, permission, path), Ok(()));
            }
        }
        assert!(policy.is_admin(&admin));
    }

    #[test]
    fn admin_on_a_prefix_implies_every_permission_there_only() {
        let policy = sample()
            .add_role("app-admin")
            .unwrap()
            .grant("app-admin", "/app", set(&[ADMIN]))
            .unwrap()
            .add_user("bob")
            .unwrap()
            .grant_role("bob", "app-admin")
            .unwrap();
        let bob = user("bob");
        for permission in Permission::ALL {
            assert_eq!(policy.check(&bob, permission, "/app/x"), Ok(()));
            assert!(policy.check(&bob, permission, "/apple").is_err());
            assert!(policy.check(&bob, permission, "/").is_err());
        }
        assert!(!policy.is_admin(&bob));
    }

    #[test]
    fn permissions_from_several_roles_add_up() {
        let policy = sample()
            .add_role("cleaner")
            .unwrap()
            .grant("cleaner", "/app/tmp", set(&[DELETE]))
            .unwrap()
            .grant_role("alice", "cleaner")
            .unwrap();
        let alice = user("alice");
        assert_eq!(policy.check(&alice, DELETE, "/app/tmp/x"), Ok(()));
        assert_eq!(policy.check(&alice, READ, "/app/tmp/x"), Ok(()));
        assert!(policy.check(&alice, DELETE, "/app/x").is_err());
    }

    #[test]
    fn the_root_role_cannot_be_changed_or_removed() {
        let policy = sample();
        let admin_set = set(&[ADMIN]);
        assert_eq!(
            policy.grant(ROOT_ROLE, "/x", admin_set),
            Err(PolicyError::RootRoleFixed)
        );
        assert_eq!(
            policy.revoke(ROOT_ROLE, "/", admin_set),
            Err(PolicyError::RootRoleFixed)
        );
        assert_eq!(
            policy.remove_role(ROOT_ROLE),
            Err(PolicyError::RootRoleFixed)
        );
        assert_eq!(
            policy.add_role(ROOT_ROLE),
            Err(PolicyError::RoleExists {
                role: ROOT_ROLE.to_owned()
            })
        );
        assert_eq!(policy.role(ROOT_ROLE), Some(&Role::root()));
    }

    #[test]
    fn enabling_needs_a_root_holder() {
        let policy = AuthPolicy::default().add_user("alice").unwrap();
        assert_eq!(policy.enable(), Err(PolicyError::NoRootUser));
        let enabled = policy
            .grant_role("alice", ROOT_ROLE)
            .unwrap()
            .enable()
            .unwrap();
        assert!(enabled.is_enabled());
        assert!(!enabled.disable().is_enabled());
    }

    #[test]
    fn the_last_root_holder_cannot_be_lost_while_enabled() {
        let policy = sample();
        let last = Err(PolicyError::LastRootUser {
            user: "admin".to_owned(),
        });
        assert_eq!(policy.revoke_role("admin", ROOT_ROLE), last);
        assert_eq!(policy.remove_user("admin"), last);
        // With a second holder, or while disabled, either is fine.
        let two = policy.grant_role("alice", ROOT_ROLE).unwrap();
        assert!(two.revoke_role("admin", ROOT_ROLE).is_ok());
        assert!(two.remove_user("admin").is_ok());
        let disabled = policy.disable();
        assert!(disabled.revoke_role("admin", ROOT_ROLE).is_ok());
        assert!(disabled.remove_user("admin").is_ok());
        // Non-root holders can always go.
        assert!(policy.remove_user("alice").is_ok());
    }

    #[test]
    fn a_role_still_held_cannot_be_removed() {
        let policy = sample();
        assert_eq!(
            policy.remove_role("app"),
            Err(PolicyError::RoleInUse {
                role: "app".to_owned(),
                users: vec!["alice".to_owned()]
            })
        );
        let removed = policy
            .revoke_role("alice", "app")
            .unwrap()
            .remove_role("app")
            .unwrap();
        assert_eq!(removed.role("app"), None);
        assert!(removed.check(&user("alice"), READ, "/app").is_err());
        assert_eq!(
            removed.remove_role("app"),
            Err(PolicyError::NoSuchRole {
                role: "app".to_owned()
            })
        );
    }

    #[test]
    fn user_and_role_changes_refuse_bad_or_repeated_requests() {
        let policy = sample();
        assert_eq!(
            policy.add_user("alice"),
            Err(PolicyError::UserExists {
                user: "alice".to_owned()
            })
        );
        assert!(matches!(
            policy.add_user("bad name"),
            Err(PolicyError::InvalidName {
                kind: NameKind::User,
                ..
            })
        ));
        assert!(matches!(
            policy.add_role("a/b"),
            Err(PolicyError::InvalidName {
                kind: NameKind::Role,
                ..
            })
        ));
        assert_eq!(
            policy.grant_role("alice", "app"),
            Err(PolicyError::RoleAlreadyHeld {
                user: "alice".to_owned(),
                role: "app".to_owned()
            })
        );
        assert_eq!(
            policy.revoke_role("alice", ROOT_ROLE),
            Err(PolicyError::RoleNotHeld {
                user: "alice".to_owned(),
                role: ROOT_ROLE.to_owned()
            })
        );
        assert_eq!(
            policy.grant_role("alice", "missing"),
            Err(PolicyError::NoSuchRole {
                role: "missing".to_owned()
            })
        );
        assert_eq!(
            policy.grant_role("nobody", "app"),
            Err(PolicyError::NoSuchUser {
                user: "nobody".to_owned()
            })
        );
        assert!(policy.add_user("alice@example").is_ok());
    }

    #[test]
    fn grants_merge_and_revokes_take_only_the_named_permissions() {
        let policy = sample().grant("app", "/app", set(&[CREATE])).unwrap();
        let grant = policy.role("app").unwrap().grant_on("/app").unwrap();
        assert_eq!(grant.permissions, set(&[READ, WRITE, CREATE]));
        assert_eq!(policy.role("app").unwrap().grants.len(), 1);

        let fewer = policy.revoke("app", "/app", set(&[WRITE, DELETE])).unwrap();
        let alice = user("alice");
        assert!(fewer.check(&alice, WRITE, "/app").is_err());
        assert_eq!(fewer.check(&alice, CREATE, "/app"), Ok(()));

        let none = fewer.revoke("app", "/app", set(&[READ, CREATE])).unwrap();
        assert!(none.role("app").unwrap().grants.is_empty());
        assert_eq!(
            none.revoke("app", "/app", set(&[READ])),
            Err(PolicyError::NoGrant {
                role: "app".to_owned(),
                prefix: "/app".to_owned()
            })
        );
    }

    #[test]
    fn revoking_read_leaves_admin_implying_it() {
        let policy = sample()
            .grant("app", "/app", set(&[ADMIN]))
            .unwrap()
            .revoke("app", "/app", set(&[READ]))
            .unwrap();
        assert_eq!(policy.check(&user("alice"), READ, "/app/x"), Ok(()));
    }

    #[test]
    fn grants_check_their_arguments() {
        let policy = sample();
        assert!(matches!(
            policy.grant("app", "/app/", set(&[READ])),
            Err(PolicyError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            policy.grant("app", "app", set(&[READ])),
            Err(PolicyError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            policy.revoke("app", "/a//b", set(&[READ])),
            Err(PolicyError::InvalidPrefix { .. })
        ));
        assert_eq!(
            policy.grant("app", "/x", PermissionSet::empty()),
            Err(PolicyError::NoPermissions {
                role: "app".to_owned(),
                prefix: "/x".to_owned()
            })
        );
        assert_eq!(
            policy.grant("missing", "/x", set(&[READ])),
            Err(PolicyError::NoSuchRole {
                role: "missing".to_owned()
            })
        );
    }

    #[test]
    fn a_refused_change_leaves_the_policy_untouched() {
        let policy = sample();
        let before = policy.clone();
        assert!(policy.remove_role("app").is_err());
        assert!(policy.revoke_role("admin", ROOT_ROLE).is_err());
        let changed = policy.add_user("carol").unwrap();
        assert_eq!(policy, before);
        assert_ne!(changed, before);
    }

    #[test]
    fn json_round_trips_byte_for_byte() {
        let random = SystemRandom::new();
        let policy = sample();
        let (_, record) = policy.issue_token(&random, "alice", "ci", 5).unwrap();
        let policy = policy.add_token("alice", record).unwrap();
        let json = policy.to_json();
        let back = AuthPolicy::from_json(&json).unwrap();
        assert_eq!(back, policy);
        assert_eq!(back.to_json(), json);
        let through_serde: AuthPolicy = serde_json::from_slice(&json).unwrap();
        assert_eq!(through_serde, policy);
        assert_eq!(serde_json::to_vec_pretty(&policy).unwrap(), json);
    }

    #[test]
    fn the_stored_shape_is_plain_json() {
        let json = r#"{
            "enabled": true,
            "users": {
                "admin": { "roles": ["root"] },
                "alice@example": { "roles": ["app"], "tokens": [] }
            },
            "roles": {
                "app": { "grants": [
                    { "prefix": "/z", "permissions": ["read"] },
                    { "prefix": "/app", "permissions": ["write", "read"] }
                ] }
            }
        }"#;
        let policy = AuthPolicy::from_json(json.as_bytes()).unwrap();
        assert!(policy.is_enabled());
        assert_eq!(policy.role(ROOT_ROLE), Some(&Role::root()), "root is added");
        let prefixes: Vec<&str> = policy
            .role("app")
            .unwrap()
            .grants
            .iter()
            .map(|grant| grant.prefix.as_str())
            .collect();
        assert_eq!(prefixes, ["/app", "/z"], "grants are sorted");
        assert!(policy.may_read(&user("alice@example"), "/app/x"));
        let compact = serde_json::to_string(&policy).unwrap();
        assert!(
            compact
                .contains(r#""app":{"grants":[{"prefix":"/app","permissions":["read","write"]}"#),
            "{compact}"
        );
    }

    #[test]
    fn a_stored_policy_breaking_an_invariant_is_refused() {
        let owned = str::to_owned;
        let token = r#"{"id": "0123456789abcdef", "sha256_hex": "HASH", "created_unix_ms": 0}"#
            .replace("HASH", &"0".repeat(64));
        let shared_token = format!(
            r#"{{"users": {{"a": {{"tokens": [{token}]}}, "b": {{"tokens": [{token}]}}}}}}"#
        );
        let cases: Vec<(String, Option<PolicyError>)> = vec![
            (owned("{"), None),
            (owned(r#"{"enabled": false, "extra": 1}"#), None),
            (
                owned(r#"{"roles": {"r": {"grants": [{"prefix": "/", "permissions": ["own"]}]}}}"#),
                None,
            ),
            (owned(r#"{"enabled": true}"#), Some(PolicyError::NoRootUser)),
            (
                owned(r#"{"users": {"a": {"roles": ["missing"]}}}"#),
                Some(PolicyError::UndefinedRoleHeld {
                    user: owned("a"),
                    role: owned("missing"),
                }),
            ),
            (
                owned(r#"{"users": {"a b": {}}}"#),
                Some(PolicyError::InvalidName {
                    kind: NameKind::User,
                    name: owned("a b"),
                }),
            ),
            (
                owned(r#"{"roles": {"a/b": {}}}"#),
                Some(PolicyError::InvalidName {
                    kind: NameKind::Role,
                    name: owned("a/b"),
                }),
            ),
            (
                owned(r#"{"roles": {"root": {"grants": []}}}"#),
                Some(PolicyError::RootRoleAltered),
            ),
            (
                owned(
                    r#"{"roles": {"r": {"grants": [{"prefix": "/a/", "permissions": ["read"]}]}}}"#,
                ),
                Some(PolicyError::InvalidPrefix {
                    prefix: owned("/a/"),
                    rule: crate::fsm::PathRule::TrailingSlash,
                }),
            ),
            (
                owned(r#"{"roles": {"r": {"grants": [{"prefix": "/a", "permissions": []}]}}}"#),
                Some(PolicyError::NoPermissions {
                    role: owned("r"),
                    prefix: owned("/a"),
                }),
            ),
            (
                owned(
                    r#"{"roles": {"r": {"grants": [{"prefix": "/a", "permissions": ["read"]},
                        {"prefix": "/a", "permissions": ["write"]}]}}}"#,
                ),
                Some(PolicyError::DuplicateGrant {
                    role: owned("r"),
                    prefix: owned("/a"),
                }),
            ),
            (
                shared_token,
                Some(PolicyError::TokenIdTaken {
                    id: owned("0123456789abcdef"),
                }),
            ),
        ];
        for (json, expected) in cases {
            let outcome = AuthPolicy::from_json(json.as_bytes());
            match expected {
                Some(error) => assert_eq!(outcome, Err(error), "{json}"),
                None => assert!(
                    matches!(outcome, Err(PolicyError::Json { .. })),
                    "{json}: {outcome:?}"
                ),
            }
            assert!(serde_json::from_str::<AuthPolicy>(&json).is_err(), "{json}");
        }
    }

    #[test]
    fn a_token_authenticates_its_user_until_revoked() {
        let random = SystemRandom::new();
        let policy = sample();
        let (token, record) = policy.issue_token(&random, "alice", "laptop", 42).unwrap();
        assert_eq!(
            policy.authenticate_token(&token),
            None,
            "issuing stores nothing"
        );
        let id = record.id.clone();
        let stored = policy.add_token("alice", record).unwrap();
        assert_eq!(stored.authenticate_token(&token), Some("alice"));
        assert_eq!(stored.disable().authenticate_token(&token), Some("alice"));
        let kept = &stored.user("alice").unwrap().tokens[0];
        assert_eq!(
            (kept.created_unix_ms, kept.description.as_str()),
            (42, "laptop")
        );
        assert!(!stored
            .to_json()
            .windows(token.len())
            .any(|window| window == token.as_bytes()));

        let revoked = stored.revoke_token("alice", &id).unwrap();
        assert_eq!(revoked.authenticate_token(&token), None);
        assert_eq!(
            revoked.revoke_token("alice", &id),
            Err(PolicyError::NoSuchToken {
                user: "alice".to_owned(),
                id
            })
        );
        assert_eq!(
            stored
                .remove_user("alice")
                .unwrap()
                .authenticate_token(&token),
            None
        );
    }

    #[test]
    fn a_wrong_or_malformed_token_authenticates_nobody() {
        let random = SystemRandom::new();
        let policy = sample();
        let (token, record) = policy.issue_token(&random, "alice", "", 0).unwrap();
        let policy = policy.add_token("alice", record.clone()).unwrap();
        // Right id, wrong secret.
        let secret_start = token.len() - 64;
        let forged = format!("{}{}", &token[..secret_start], "0".repeat(64));
        assert_ne!(forged, token);
        assert_eq!(policy.authenticate_token(&forged), None);
        // Unknown id, and not a token at all.
        let (other, _) = policy.issue_token(&random, "alice", "", 0).unwrap();
        assert_eq!(policy.authenticate_token(&other), None);
        assert_eq!(policy.authenticate_token(""), None);
        assert_eq!(policy.authenticate_token(&token.to_uppercase()), None);
        assert_eq!(policy.authenticate_token(&format!("{token} ")), None);
        // A record can be stored once, under one user.
        assert_eq!(
            policy.add_token("admin", record.clone()),
            Err(PolicyError::TokenIdTaken { id: record.id })
        );
    }

    #[test]
    fn tokens_are_issued_only_to_known_users() {
        let random = SystemRandom::new();
        assert_eq!(
            sample().issue_token(&random, "nobody", "", 0),
            Err(PolicyError::NoSuchUser {
                user: "nobody".to_owned()
            })
        );
    }

    proptest! {
        #[test]
        fn a_grant_allows_exactly_the_paths_its_prefix_covers(
            prefix in prop::collection::vec("[ab]{1,2}", 0..3),
            path in prop::collection::vec("[ab]{1,2}", 0..4),
        ) {
            let prefix = format!("/{}", prefix.join("/"));
            let path = format!("/{}", path.join("/"));
            let policy = sample().grant("app", &prefix, set(&[DELETE])).unwrap();
            let covered =
                path == prefix || prefix == "/" || path.starts_with(&format!("{prefix}/"));
            prop_assert_eq!(prefix_covers(&prefix, &path), covered);
            prop_assert_eq!(policy.check(&user("alice"), DELETE, &path).is_ok(), covered);
        }
    }
}
