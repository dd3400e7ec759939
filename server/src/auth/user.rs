//! `User`: someone who can be authenticated, the roles they hold and their tokens.
//!
//! Invariants of a user inside a policy (checked by the policy, which knows the roles):
//! - every role held is defined in the policy, and at most [`ROLES_PER_USER_MAX`] are held;
//! - at most [`TOKENS_PER_USER_MAX`] tokens, each with an id unique in the whole policy.
//!
//! A user's identity comes from outside this module: the common name of a verified client
//! certificate, or a token that [`AuthPolicy::authenticate_token`](super::AuthPolicy) matched.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::token::TokenRecord;

/// Most roles one user may hold; with [`GRANTS_PER_ROLE_MAX`](super::GRANTS_PER_ROLE_MAX) it
/// bounds the work of one access check.
pub const ROLES_PER_USER_MAX: usize = 64;

/// Most tokens one user may have at once.
pub const TOKENS_PER_USER_MAX: usize = 64;

/// A user (the name is its key in the policy).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Names of the roles this user holds.
    #[serde(default)]
    pub roles: BTreeSet<String>,
    /// Tokens that authenticate as this user; only their hashes are kept.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl User {
    /// The token record with id `id`, if this user has one.
    pub fn token(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.iter().find(|record| record.id == id)
    }
}
