//! `Caller`: who is asking, as the edge of the server established it.
//!
//! This module only names the caller; deciding who it is (verifying a client certificate,
//! matching a token) happens before, and deciding what it may do happens in
//! [`AuthPolicy::check`](super::AuthPolicy::check).

use std::fmt;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No certificate identity and no token: allowed everything while auth is disabled, nothing
    /// while it is enabled.
    Anonymous,
    /// An authenticated user: a certificate common name or a token's owner. The name need not
    /// be in the policy; an unknown user simply holds no roles.
    User(String),
}

impl Caller {
    /// The user's name, or `None` for an anonymous caller.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(name) => Some(name),
        }
    }
}

/// `anonymous`, or the user's name in quotes as in `user "alice"`.
impl fmt::Display for Caller {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anonymous => formatter.write_str("anonymous"),
            Caller::User(name) => write!(formatter, "user {name:?}"),
        }
    }
}
