//! `Role`: what a recipe node stands for, read from its name (a prefix such as `lock-` and the
//! sequence suffix the server appends), and which roles queue together.
//!
//! Pure: no I/O. Invariant: `Role::parse(prefix + digits)` gives back the role and the number
//! for every role, and `None` for any other name, so foreign children of a recipe directory
//! are never mistaken for recipe nodes.

/// What a recipe node stands for; the node's name is the role's prefix and a sequence suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A [`crate::recipes::Mutex`] holder or waiter (`lock-`); an `RwLock` treats it as a writer.
    Lock,
    /// An [`crate::recipes::RwLock`] reader (`read-`).
    Read,
    /// An [`crate::recipes::RwLock`] writer (`write-`).
    Write,
    /// A [`crate::recipes::Semaphore`] permit holder or waiter (`permit-`).
    Permit,
    /// An [`crate::recipes::Election`] candidate (`candidate-`); the lowest leads.
    Candidate,
    /// A [`crate::recipes::DoubleBarrier`] participant (`member-`).
    Member,
}

/// Roles that queue together: entries of other families in a directory are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Locks,
    Permits,
    Candidates,
    Members,
}

impl Role {
    pub(crate) const ALL: [Role; 6] = [
        Role::Lock,
        Role::Read,
        Role::Write,
        Role::Permit,
        Role::Candidate,
        Role::Member,
    ];

    /// The prefix of this role's node names; the server appends a zero-padded sequence.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Lock => "lock-",
            Role::Read => "read-",
            Role::Write => "write-",
            Role::Permit => "permit-",
            Role::Candidate => "candidate-",
            Role::Member => "member-",
        }
    }

    /// The role and sequence of a recipe node's name, or `None` for any other name.
    pub fn parse(name: &str) -> Option<(Role, u64)> {
        Role::ALL.into_iter().find_map(|role| {
            let digits = name.strip_prefix(role.prefix())?;
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            Some((role, digits.parse().ok()?))
        })
    }

    pub(crate) fn family(self) -> Family {
        match self {
            Role::Lock | Role::Read | Role::Write => Family::Locks,
            Role::Permit => Family::Permits,
            Role::Candidate => Family::Candidates,
            Role::Member => Family::Members,
        }
    }

    /// Whether a reader must wait for this role.
    pub(crate) fn excludes_readers(self) -> bool {
        matches!(self, Role::Lock | Role::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_roles_and_sequences() {
        assert_eq!(Role::parse("lock-0000000003"), Some((Role::Lock, 3)));
        assert_eq!(Role::parse("write-0000000012"), Some((Role::Write, 12)));
        assert_eq!(
            Role::parse("candidate-12345678901"),
            Some((Role::Candidate, 12_345_678_901))
        );
        for name in [
            "lock-",
            "lock-12a",
            "ready",
            "lock0000000001",
            "Lock-0000000001",
        ] {
            assert_eq!(Role::parse(name), None, "{name}");
        }
        for role in Role::ALL {
            let name = format!("{}{:010}", role.prefix(), 42);
            assert_eq!(Role::parse(&name), Some((role, 42)));
        }
    }
}
