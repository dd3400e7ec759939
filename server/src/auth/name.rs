//! The one naming rule for users and roles.
//!
//! Invariant: every user and role name inside an [`AuthPolicy`](super::AuthPolicy) passes
//! [`validate_name`]: 1 to [`NAME_CHARS_MAX`] characters of `A-Z a-z 0-9 . _ - @`.
//! `@` is allowed so that certificate common names such as `alice@example` are user names as
//! they are; `/`, spaces and control characters are not, so a name can never be confused with a
//! path or break a log line.

use super::error::{NameKind, PolicyError, NAME_CHARS_MAX};

/// Checks `name` against the naming rule.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), PolicyError> {
    let allowed = |character: char| {
        character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-' | '@')
    };
    if name.is_empty() || name.len() > NAME_CHARS_MAX || !name.chars().all(allowed) {
        return Err(PolicyError::InvalidName {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_certificate_common_names() {
        for name in [
            "alice",
            "alice@example",
            "ops-team_2.eu",
            "A",
            "@",
            &"x".repeat(64),
        ] {
            assert_eq!(validate_name(NameKind::User, name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_names_with_a_typed_error() {
        for name in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "é",
            "tab\t",
            "a:b",
            "a\nb",
        ] {
            assert_eq!(
                validate_name(NameKind::Role, name),
                Err(PolicyError::InvalidName {
                    kind: NameKind::Role,
                    name: name.to_owned()
                }),
                "{name:?}"
            );
        }
    }
}
