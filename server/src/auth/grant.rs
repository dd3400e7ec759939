//! `Grant`: permissions on one prefix of the tree, and the rule of which paths a prefix covers.
//!
//! Invariant: a grant on prefix `P` covers the path `P` itself and every path under `P + "/"`,
//! never a sibling with a longer name: `/app` covers `/app` and `/app/x/y` but not `/apple`.
//! The prefix `/` covers every path.
//! Coverage compares whole segments, so no choice of names can widen a grant.
//! Prefixes inside a policy are valid node paths ([`validate_prefix`]).
//! [`Grant::covers`] does not validate the path it is asked about, as callers pass node paths
//! they have already validated; a path that is not absolute is covered by no grant at all.

use serde::{Deserialize, Serialize};

use super::error::PolicyError;
use super::permission::PermissionSet;
use crate::fsm::NodePath;

/// Permissions on one prefix of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A valid absolute node path: no trailing `/` except `/` itself, no empty segment.
    pub prefix: String,
    /// Never empty inside a policy: revoking the last permission removes the grant.
    pub permissions: PermissionSet,
}

impl Grant {
    /// Whether this grant applies to `path`: `path` is the prefix or lies below it.
    pub fn covers(&self, path: &str) -> bool {
        prefix_covers(&self.prefix, path)
    }
}

/// Whether `prefix` covers `path`: they are equal, or `path` continues `prefix` with a `/`.
/// The root `/` already ends in `/`, so it covers every absolute path.
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
    }
}

/// Checks that `prefix` is a valid node path, the only kind of prefix a grant may have; a
/// trailing `/` or an empty segment would make coverage ambiguous.
pub fn validate_prefix(prefix: &str) -> Result<(), PolicyError> {
    match NodePath::parse(prefix) {
        Ok(_) => Ok(()),
        Err(rule) => Err(PolicyError::InvalidPrefix {
            prefix: prefix.to_owned(),
            rule,
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::permission::Permission;
    use super::*;
    use crate::fsm::PathRule;

    fn grant(prefix: &str) -> Grant {
        Grant {
            prefix: prefix.to_owned(),
            permissions: PermissionSet::of(&[Permission::Read]),
        }
    }

    #[test]
    fn a_prefix_covers_itself_and_below_never_a_longer_sibling() {
        let app = grant("/app");
        assert!(app.covers("/app"));
        assert!(app.covers("/app/x"));
        assert!(app.covers("/app/x/y"));
        assert!(!app.covers("/apple"));
        assert!(!app.covers("/apple/x"));
        assert!(!app.covers("/ap"));
        assert!(!app.covers("/"));
        assert!(!app.covers("/other/app"));
        assert!(!app.covers("app"));
    }

    #[test]
    fn a_nested_prefix_covers_only_its_own_subtree() {
        let nested = grant("/app/config");
        assert!(nested.covers("/app/config"));
        assert!(nested.covers("/app/config/db"));
        assert!(!nested.covers("/app"));
        assert!(!nested.covers("/app/configs"));
        assert!(!nested.covers("/app/other"));
    }

    #[test]
    fn the_root_prefix_covers_every_path() {
        let root = grant("/");
        for path in ["/", "/a", "/apple/x/y", "/coord/auth"] {
            assert!(root.covers(path), "{path}");
        }
    }

    #[test]
    fn prefixes_must_be_valid_node_paths() {
        assert_eq!(validate_prefix("/"), Ok(()));
        assert_eq!(validate_prefix("/app"), Ok(()));
        assert_eq!(validate_prefix("/app/x"), Ok(()));
        let cases = [
            ("", PathRule::Empty),
            ("app", PathRule::NotAbsolute),
            ("/app/", PathRule::TrailingSlash),
            ("/app//x", PathRule::EmptySegment),
            ("//", PathRule::TrailingSlash),
        ];
        for (prefix, rule) in cases {
            assert_eq!(
                validate_prefix(prefix),
                Err(PolicyError::InvalidPrefix {
                    prefix: prefix.to_owned(),
                    rule
                }),
                "{prefix:?}"
            );
        }
    }

    /// Absolute paths of up to four segments over a tiny alphabet, so that prefixes and paths
    /// often share leading characters (`/a` against `/ab`) and whole segments.
    fn node_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{1,3}", 0..4).prop_map(|segments| {
            if segments.is_empty() {
                "/".to_owned()
            } else {
                format!("/{}", segments.join("/"))
            }
        })
    }

    fn segments(path: &str) -> Vec<&str> {
        path.split('/')
            .filter(|segment| !segment.is_empty())
            .collect()
    }

    proptest! {
        #[test]
        fn a_grant_covers_exactly_its_prefix_and_paths_below_it(
            prefix in node_path(),
            path in node_path(),
        ) {
            prop_assert_eq!(validate_prefix(&prefix), Ok(()));
            let by_text =
                prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"));
            // The same rule said in segments: the prefix's segments lead the path's.
            let prefix_segments = segments(&prefix);
            let path_segments = segments(&path);
            let by_segments = path_segments.len() >= prefix_segments.len()
                && path_segments[..prefix_segments.len()] == prefix_segments[..];
            prop_assert_eq!(by_text, by_segments);
            prop_assert_eq!(grant(&prefix).covers(&path), by_text);
        }
    }
}
