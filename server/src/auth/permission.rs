//! `Permission`, one kind of access to nodes, and `PermissionSet`, the permissions a grant gives.
//!
//! Invariant: a `PermissionSet` only ever holds bits of the five permissions (enforced by its
//! constructors; the bit field is private), so equal sets are equal values and serialize to the
//! same list of names, in the fixed order of [`Permission::ALL`].
//! `Admin` implies every other permission on the same prefix; the set stores only what was
//! granted and [`PermissionSet::allows`] applies the implication, so revoking `read` from a set
//! that also holds `admin` still leaves reading allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// One kind of access to the nodes under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Get a node, test that it exists, list its children, watch it, check a fence on it.
    Read,
    /// Set a node's data.
    Write,
    /// Create a node at the path.
    Create,
    /// Delete the node at the path.
    Delete,
    /// Everything above on the prefix; on `/` also cluster administration, closing other
    /// clients' sessions and changing the auth policy itself.
    Admin,
}

impl Permission {
    /// Every permission, in the order sets list them.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Write,
        Permission::Create,
        Permission::Delete,
        Permission::Admin,
    ];

    /// The name used in policies, errors and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Create => "create",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }

    /// The permission called `name` (exactly as [`Permission::name`] spells it).
    pub fn parse(name: &str) -> Result<Permission, PolicyError> {
        Permission::ALL
            .into_iter()
            .find(|permission| permission.name() == name)
            .ok_or_else(|| PolicyError::UnknownPermission {
                name: name.to_owned(),
            })
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 1 << 1,
            Permission::Create => 1 << 2,
            Permission::Delete => 1 << 3,
            Permission::Admin => 1 << 4,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Permission {
    type Err = PolicyError;

    fn from_str(name: &str) -> Result<Permission, PolicyError> {
        Permission::parse(name)
    }
}

/// A set of permissions, stored as bits; in JSON a list of names such as `["read", "write"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct PermissionSet {
    bits: u8,
}

impl PermissionSet {
    /// The set holding no permission.
    pub fn empty() -> PermissionSet {
        PermissionSet { bits: 0 }
    }

    /// The set holding exactly `permissions`.
    pub fn of(permissions: &[Permission]) -> PermissionSet {
        permissions.iter().copied().collect()
    }

    /// Parses names such as `["read", "write"]`; a repeated name counts once.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<PermissionSet, PolicyError> {
        let mut set = PermissionSet::empty();
        for name in names {
            set = set.with(Permission::parse(name.as_ref())?);
        }
        Ok(set)
    }

    /// Whether `permission` itself is in the set (no implication applied).
    pub fn contains(self, permission: Permission) -> bool {
        self.bits & permission.bit() != 0
    }

    /// Whether the set grants `permission`: it holds it, or it holds `Admin`.
    pub fn allows(self, permission: Permission) -> bool {
        self.contains(permission) || self.contains(Permission::Admin)
    }

    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// This set plus `permission`.
    pub fn with(self, permission: Permission) -> PermissionSet {
        PermissionSet {
            bits: self.bits | permission.bit(),
        }
    }

    /// Every permission in either set.
    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet {
            bits: self.bits | other.bits,
        }
    }

    /// The permissions of `self` that are not in `other`.
    pub fn difference(self, other: PermissionSet) -> PermissionSet {
        PermissionSet {
            bits: self.bits & !other.bits,
        }
    }

    /// The permissions in the set, in the order of [`Permission::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |permission| self.contains(*permission))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(permissions: I) -> PermissionSet {
        permissions
            .into_iter()
            .fold(PermissionSet::empty(), PermissionSet::with)
    }
}

impl TryFrom<Vec<String>> for PermissionSet {
    type Error = PolicyError;

    fn try_from(names: Vec<String>) -> Result<PermissionSet, PolicyError> {
        PermissionSet::parse(&names)
    }
}

impl From<PermissionSet> for Vec<String> {
    fn from(set: PermissionSet) -> Vec<String> {
        set.iter()
            .map(|permission| permission.name().to_owned())
            .collect()
    }
}

/// Names joined by commas, such as `read,write`; `(none)` for the empty set.
impl fmt::Display for PermissionSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return formatter.write_str("(none)");
        }
        let names: Vec<&str> = self.iter().map(Permission::name).collect();
        formatter.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_typed_errors() {
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(permission.name()), Ok(permission));
            assert_eq!(permission.name().parse::<Permission>(), Ok(permission));
        }
        assert_eq!(
            Permission::parse("Read"),
            Err(PolicyError::UnknownPermission {
                name: "Read".to_owned()
            })
        );
        assert!(Permission::parse("").is_err());
    }

    #[test]
    fn every_permission_has_its_own_bit() {
        let mut seen = 0u8;
        for permission in Permission::ALL {
            assert_eq!(seen & permission.bit(), 0, "{permission} shares a bit");
            seen |= permission.bit();
        }
    }

    #[test]
    fn contains_is_exact_and_allows_applies_admin() {
        let read = PermissionSet::of(&[Permission::Read]);
        assert!(read.contains(Permission::Read));
        assert!(!read.contains(Permission::Write));
        assert!(!read.allows(Permission::Write));
        assert!(!read.allows(Permission::Admin));

        let admin = PermissionSet::of(&[Permission::Admin]);
        for permission in Permission::ALL {
            assert!(admin.allows(permission), "admin must imply {permission}");
        }
        assert!(!admin.contains(Permission::Read));
        assert!(!PermissionSet::empty().allows(Permission::Read));
    }

    #[test]
    fn union_and_difference() {
        let read_write = PermissionSet::of(&[Permission::Read, Permission::Write]);
        let write_delete = PermissionSet::of(&[Permission::Write, Permission::Delete]);
        assert_eq!(
            read_write.union(write_delete),
            PermissionSet::of(&[Permission::Read, Permission::Write, Permission::Delete])
        );
        assert_eq!(
            read_write.difference(write_delete),
            PermissionSet::of(&[Permission::Read])
        );
        assert!(read_write.difference(read_write).is_empty());
    }

    #[test]
    fn serializes_as_a_list_of_names_in_fixed_order() {
        let set = PermissionSet::of(&[Permission::Admin, Permission::Read, Permission::Read]);
        assert_eq!(serde_json::to_string(&set).unwrap(), r#"["read","admin"]"#);
        let back: PermissionSet = serde_json::from_str(r#"["admin","read","admin"]"#).unwrap();
        assert_eq!(back, set);
        assert_eq!(set.to_string(), "read,admin");
        assert_eq!(PermissionSet::empty().to_string(), "(none)");
        assert!(serde_json::from_str::<PermissionSet>(r#"["read","own"]"#).is_err());
        assert!(serde_json::from_str::<PermissionSet>("3").is_err());
    }
}
