//! `Role`: a named bundle of grants that users hold; and the built-in `root` role.
//!
//! Invariants of a role inside a policy (checked by [`Role::validate`], except the order, which
//! changes keep and loading restores):
//! - at most one grant per prefix, kept sorted by prefix, so equal roles serialize equally;
//! - no grant has an empty permission set (revoking the last permission removes the grant);
//! - at most [`GRANTS_PER_ROLE_MAX`] grants, which bounds the cost of every access check;
//! - the role named [`ROOT_ROLE`] is exactly [`Role::root`]: admin on `/`, never changed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::error::PolicyError;
use super::grant::{validate_prefix, Grant};
use super::permission::{Permission, PermissionSet};

/// The name of the built-in role that is admin on `/`.
pub const ROOT_ROLE: &str = "root";

/// Most grants one role may hold.
pub const GRANTS_PER_ROLE_MAX: usize = 256;

/// A named bundle of grants (the name is its key in the policy).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Sorted by prefix, one grant per prefix.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl Role {
    /// The built-in `root` role: admin on `/`, which covers everything.
    pub fn root() -> Role {
        Role {
            grants: vec![Grant {
                prefix: "/".to_owned(),
                permissions: PermissionSet::of(&[Permission::Admin]),
            }],
        }
    }

    /// Whether some grant of this role covers `path` and allows `permission` (directly or
    /// through admin).
    pub fn allows(&self, permission: Permission, path: &str) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.covers(path) && grant.permissions.allows(permission))
    }

    /// The grant on exactly `prefix`, if any.
    pub fn grant_on(&self, prefix: &str) -> Option<&Grant> {
        self.grants.iter().find(|grant| grant.prefix == prefix)
    }

    /// This role with `permissions` added to its grant on `prefix` (a new grant if it had
    /// none), keeping the grants sorted. The caller has validated `prefix` and checked limits.
    pub(super) fn with_permissions(&self, prefix: &str, permissions: PermissionSet) -> Role {
        let mut role = self.clone();
        match role
            .grants
            .binary_search_by(|grant| grant.prefix.as_str().cmp(prefix))
        {
            Ok(index) => {
                let grant = &mut role.grants[index];
                grant.permissions = grant.permissions.union(permissions);
            }
            Err(index) => role.grants.insert(
                index,
                Grant {
                    prefix: prefix.to_owned(),
                    permissions,
                },
            ),
        }
        role
    }

    /// This role with `permissions` taken from its grant on `prefix`, dropping the grant if
    /// nothing is left; `None` if it has no grant on `prefix`.
    pub(super) fn without_permissions(
        &self,
        prefix: &str,
        permissions: PermissionSet,
    ) -> Option<Role> {
        let mut role = self.clone();
        let index = role
            .grants
            .iter()
            .position(|grant| grant.prefix == prefix)?;
        let remaining = role.grants[index].permissions.difference(permissions);
        if remaining.is_empty() {
            role.grants.remove(index);
        } else {
            role.grants[index].permissions = remaining;
        }
        Some(role)
    }

    /// Checks the invariants in the module doc; `name` is this role's key in the policy.
    pub fn validate(&self, name: &str) -> Result<(), PolicyError> {
        if name == ROOT_ROLE && *self != Role::root() {
            return Err(PolicyError::RootRoleAltered);
        }
        if self.grants.len() > GRANTS_PER_ROLE_MAX {
            return Err(PolicyError::TooMany {
                what: "grants in one role",
                limit: GRANTS_PER_ROLE_MAX,
            });
        }
        let mut prefixes = BTreeSet::new();
        for grant in &self.grants {
            validate_prefix(&grant.prefix)?;
            if grant.permissions.is_empty() {
                return Err(PolicyError::NoPermissions {
                    role: name.to_owned(),
                    prefix: grant.prefix.clone(),
                });
            }
            if !prefixes.insert(grant.prefix.as_str()) {
                return Err(PolicyError::DuplicateGrant {
                    role: name.to_owned(),
                    prefix: grant.prefix.clone(),
                });
            }
        }
        Ok(())
    }

    /// Puts the grants in prefix order, the one order a stored role may be normalized to.
    pub(super) fn sort_grants(&mut self) {
        self.grants
            .sort_by(|left, right| left.prefix.cmp(&right.prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(permissions: &[Permission]) -> PermissionSet {
        PermissionSet::of(permissions)
    }

    #[test]
    fn root_is_admin_on_everything() {
        let root = Role::root();
        assert_eq!(root.validate(ROOT_ROLE), Ok(()));
        for permission in Permission::ALL {
            assert!(root.allows(permission, "/"));
            assert!(root.allows(permission, "/any/path"));
        }
    }

    #[test]
    fn a_changed_root_role_is_refused() {
        let wider = Role::root().with_permissions("/", set(&[Permission::Read]));
        assert_eq!(wider.validate(ROOT_ROLE), Err(PolicyError::RootRoleAltered));
        assert_eq!(
            Role::default().validate(ROOT_ROLE),
            Err(PolicyError::RootRoleAltered)
        );
        // The same grants under another name are an ordinary role.
        assert_eq!(Role::root().validate("operators"), Ok(()));
    }

    #[test]
    fn admin_on_a_prefix_implies_the_rest_only_there() {
        let role = Role::default().with_permissions("/app", set(&[Permission::Admin]));
        for permission in Permission::ALL {
            assert!(role.allows(permission, "/app/x"));
            assert!(!role.allows(permission, "/apple"));
            assert!(!role.allows(permission, "/"));
        }
    }

    #[test]
    fn grants_merge_per_prefix_and_stay_sorted() {
        let role = Role::default()
            .with_permissions("/b", set(&[Permission::Read]))
            .with_permissions("/a", set(&[Permission::Write]))
            .with_permissions("/b", set(&[Permission::Delete]));
        let prefixes: Vec<&str> = role
            .grants
            .iter()
            .map(|grant| grant.prefix.as_str())
            .collect();
        assert_eq!(prefixes, ["/a", "/b"]);
        assert_eq!(
            role.grant_on("/b").map(|grant| grant.permissions),
            Some(set(&[Permission::Read, Permission::Delete]))
        );
        assert_eq!(role.validate("app"), Ok(()));
    }

    #[test]
    fn revoking_the_last_permission_drops_the_grant() {
        let role =
            Role::default().with_permissions("/a", set(&[Permission::Read, Permission::Write]));
        let fewer = role
            .without_permissions("/a", set(&[Permission::Write]))
            .unwrap();
        assert_eq!(
            fewer.grant_on("/a").map(|grant| grant.permissions),
            Some(set(&[Permission::Read]))
        );
        let none = fewer
            .without_permissions("/a", set(&[Permission::Read, Permission::Admin]))
            .unwrap();
        assert!(none.grants.is_empty());
        assert_eq!(
            role.without_permissions("/b", set(&[Permission::Read])),
            None
        );
    }

    #[test]
    fn validate_refuses_bad_prefixes_duplicates_and_empty_sets() {
        let bad_prefix = Role {
            grants: vec![Grant {
                prefix: "/a/".to_owned(),
                permissions: set(&[Permission::Read]),
            }],
        };
        assert!(matches!(
            bad_prefix.validate("app"),
            Err(PolicyError::InvalidPrefix { .. })
        ));
        let grant = Grant {
            prefix: "/a".to_owned(),
            permissions: set(&[Permission::Read]),
        };
        let duplicate = Role {
            grants: vec![grant.clone(), grant],
        };
        assert_eq!(
            duplicate.validate("app"),
            Err(PolicyError::DuplicateGrant {
                role: "app".to_owned(),
                prefix: "/a".to_owned()
            })
        );
        let empty = Role {
            grants: vec![Grant {
                prefix: "/a".to_owned(),
                permissions: PermissionSet::empty(),
            }],
        };
        assert_eq!(
            empty.validate("app"),
            Err(PolicyError::NoPermissions {
                role: "app".to_owned(),
                prefix: "/a".to_owned()
            })
        );
    }
}
