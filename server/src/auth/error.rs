//! `PolicyError`: every way a change to the auth policy, or a stored policy, can be refused.
//!
//! These are API errors: expected, stable and shown to whoever asked for the change.
//! A refused change leaves the policy it was asked of untouched (changes return a new policy).
//! An access denied by a valid policy is not a `PolicyError` but a [`Denied`](super::Denied).

use std::fmt;

use thiserror::Error;

use crate::fsm::PathRule;

/// Longest user or role name, in characters (all allowed characters are one byte).
pub const NAME_CHARS_MAX: usize = 64;

/// What a name names, so an error can say which rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    User,
    Role,
}

impl fmt::Display for NameKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            NameKind::User => "user",
            NameKind::Role => "role",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error(
        "invalid {kind} name {name:?}: a name is 1 to {NAME_CHARS_MAX} characters of \
         A-Z a-z 0-9 . _ - @"
    )]
    InvalidName { kind: NameKind, name: String },
    #[error("invalid prefix {prefix:?}: {rule}")]
    InvalidPrefix { prefix: String, rule: PathRule },
    #[error("unknown permission {name:?} (known: read, write, create, delete, admin)")]
    UnknownPermission { name: String },
    #[error("no permissions given for role {role:?} on {prefix}")]
    NoPermissions { role: String, prefix: String },
    #[error("user {user:?} already exists")]
    UserExists { user: String },
    #[error("user {user:?} does not exist")]
    NoSuchUser { user: String },
    #[error("role {role:?} already exists")]
    RoleExists { role: String },
    #[error("role {role:?} does not exist")]
    NoSuchRole { role: String },
    #[error("the built-in role \"root\" (admin on /) cannot be changed or removed")]
    RootRoleFixed,
    #[error("role {role:?} is still held by users {users:?}; revoke it from them first")]
    RoleInUse { role: String, users: Vec<String> },
    #[error("user {user:?} already holds role {role:?}")]
    RoleAlreadyHeld { user: String, role: String },
    #[error("user {user:?} does not hold role {role:?}")]
    RoleNotHeld { user: String, role: String },
    #[error("user {user:?} holds role {role:?}, which is not defined")]
    UndefinedRoleHeld { user: String, role: String },
    #[error("role {role:?} has no grant on {prefix}")]
    NoGrant { role: String, prefix: String },
    #[error("role {role:?} has more than one grant on {prefix}")]
    DuplicateGrant { role: String, prefix: String },
    #[error(
        "auth cannot be enabled while no user holds the root role: nobody could administer \
         the cluster afterwards"
    )]
    NoRootUser,
    #[error(
        "user {user:?} is the last holder of the root role while auth is enabled; grant root to \
         another user first, or disable auth"
    )]
    LastRootUser { user: String },
    #[error("user {user:?} has no token {id:?}")]
    NoSuchToken { user: String, id: String },
    #[error("token id {id:?} is already in use")]
    TokenIdTaken { id: String },
    #[error("invalid token record {id:?} of user {user:?}: {reason}")]
    InvalidTokenRecord {
        user: String,
        id: String,
        reason: &'static str,
    },
    #[error("token description is {bytes} bytes, over the limit of {limit}")]
    DescriptionTooLong { bytes: usize, limit: usize },
    #[error("the stored root role is not exactly admin on /")]
    RootRoleAltered,
    #[error("too many {what}: the limit is {limit}")]
    TooMany { what: &'static str, limit: usize },
    #[error("the auth policy is not valid JSON of the expected shape: {reason}")]
    Json { reason: String },
    #[error("the system random source failed, no token was issued")]
    RandomUnavailable,
}
