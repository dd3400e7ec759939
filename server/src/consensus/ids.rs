//! `MemberId` and `Term`: the identities and orderings of consensus that cross module
//! boundaries, so that no bare `u64` (and no openraft type) leaves `consensus/`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a member (openraft's `NodeId`); ids start at 1.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MemberId(pub u64);

/// A Raft term: the leadership epoch. `Term(0)` is the term before any election.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}
