//! `Denied`: an access refused by the auth policy, saying what was missing.
//!
//! The message names the permission and the path but never anything about the policy beyond
//! them (which roles exist, who holds them), so a refused caller learns only what it lacks.

use std::fmt;

use super::permission::Permission;

/// A refused access: `user` (or nobody) lacks `permission` on `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The authenticated user, or `None` when the caller was anonymous.
    pub user: Option<String>,
    pub permission: Permission,
    pub path: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(
                formatter,
                "user {user:?} lacks {} on {}",
                self.permission, self.path
            ),
            None => write!(
                formatter,
                "authentication required: {} on {} needs a user (a client certificate or a \
                 token)",
                self.permission, self.path
            ),
        }
    }
}

impl std::error::Error for Denied {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_what_is_missing() {
        let user = Denied {
            user: Some("alice".to_owned()),
            permission: Permission::Read,
            path: "/other".to_owned(),
        };
        assert_eq!(user.to_string(), r#"user "alice" lacks read on /other"#);
        let anonymous = Denied {
            user: None,
            permission: Permission::Read,
            path: "/other".to_owned(),
        };
        assert_eq!(
            anonymous.to_string(),
            "authentication required: read on /other needs a user (a client certificate or a \
             token)"
        );
    }
}
