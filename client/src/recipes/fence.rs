//! Fencing: how a downstream resource refuses a stale lock holder.
//!
//! **A lease (a session) alone is not mutual exclusion.** A holder can check its lock, pause
//! (a garbage-collection pause, a stopped VM, a slow disk), wake after its session expired and
//! another process took the lock, and then act while still believing it holds it. No check on
//! the holder's side can close that gap, because the pause can fall right after the check.
//! The resource must check. Every lock, permit and leadership carries a fencing token, its
//! node's create revision, which is strictly greater for every later holder of the same name,
//! so the resource can refuse a token older than one it has already seen:
//!
//! - data kept in Coord: make every write a fenced txn ([`crate::recipes::LockGuard::fence`],
//!   [`Sequencer::write`]); the cluster refuses it with [`Error::FenceRejected`] once the node
//!   is no longer current. [`Client::check_fence`] ([`Sequencer::is_current`]) asks the same
//!   question as a read, but its answer can be stale by the time you act on it;
//! - anything else (a database row, files, another service): remember the highest token seen
//!   per lock and refuse lower ones, with a [`TokenVerifier`] inside one process, or with
//!   [`admit`] inside the resource's own transaction.
//!
//! A holder passes its [`Sequencer`] (name, node path and token) along with each request.
//!
//! ```no_run
//! # async fn example() -> Result<(), coord_client::Error> {
//! use std::time::Duration;
//! use coord_client::{Client, HeldNode, Mutex, Op, Txn};
//! let client = Client::connect(["127.0.0.1:7400"]).await?;
//! let session = client.open_session(Duration::from_secs(10)).await?;
//! let guard = Mutex::new(&client, &session, "/locks/config").acquire().await?;
//! // Applied only while this guard's node is still the holder; a paused former holder's
//! // identical call fails with Error::LockLost.
//! guard
//!     .sequencer()
//!     .write(&client, Txn::new().then(Op::set("/config/mode", "maintenance", None)))
//!     .await?;
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: `TokenVerifier` and `admit` accept a token only if it is at least the highest
//! seen for its name (equal: the same holder continuing), and the highest never decreases.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::client::Client;
use crate::error::Error;
use crate::lock::lock;
use crate::txn::{Txn, TxnResult};

/// A token that is older than one already seen: its holder has lost the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleToken {
    /// The lock's name (empty when returned by [`admit`], which is not told the name).
    pub name: String,
    /// The refused token.
    pub token: u64,
    /// The highest token seen for the name.
    pub highest: u64,
}

impl std::fmt::Display for StaleToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(formatter, "token {} is stale", self.token)?;
        } else {
            write!(formatter, "token {} of {} is stale", self.token, self.name)?;
        }
        write!(formatter, ": token {} was already seen", self.highest)
    }
}

impl std::error::Error for StaleToken {}

/// Whether a resource that has seen `highest_seen` (none yet: `None`) may accept `token`;
/// on success, the new highest to store. Pure, so it fits inside a database transaction that
/// reads and writes the stored highest.
///
/// ```
/// use coord_client::recipes::admit;
/// // Inside the resource's transaction: read the highest token stored for the lock, ...
/// let stored: Option<u64> = Some(41);
/// // ... admit the request's token, store the new highest, and do the work.
/// assert_eq!(admit(stored, 57), Ok(57));
/// assert_eq!(admit(Some(57), 57), Ok(57)); // the same holder again
/// // A former holder whose request arrives late is refused.
/// let stale = admit(Some(57), 41).unwrap_err();
/// assert_eq!((stale.token, stale.highest), (41, 57));
/// ```
pub fn admit(highest_seen: Option<u64>, token: u64) -> Result<u64, StaleToken> {
    match highest_seen {
        Some(highest) if token < highest => Err(StaleToken {
            name: String::new(),
            token,
            highest,
        }),
        _ => Ok(token),
    }
}

/// Remembers the highest fencing token seen per lock name and refuses older ones: the check a
/// downstream service makes before acting on a request from a lock holder.
///
/// It only remembers what this value saw: a resource with several replicas or restarts needs
/// the highest kept where its data is, with [`admit`]. Tokens of readers of a
/// [`crate::recipes::RwLock`] and of semaphore permits overlap and do not fit this check.
/// Memory grows with the number of names checked.
///
/// ```
/// use coord_client::recipes::TokenVerifier;
/// let verifier = TokenVerifier::new();
/// // Requests carry the lock name and the holder's token (`HeldNode::sequencer`).
/// assert!(verifier.check("/locks/db", 120).is_ok());
/// assert!(verifier.check("/locks/db", 120).is_ok()); // the same holder continues
/// assert!(verifier.check("/locks/db", 180).is_ok()); // the next holder
/// let stale = verifier.check("/locks/db", 120).unwrap_err(); // the old holder woke up
/// assert_eq!((stale.token, stale.highest), (120, 180));
/// assert_eq!(verifier.highest("/locks/db"), Some(180));
/// ```
#[derive(Debug, Default)]
pub struct TokenVerifier {
    /// A std mutex: held only for a map lookup, never across an await.
    highest: Mutex<BTreeMap<String, u64>>,
}

impl TokenVerifier {
    /// A verifier that has seen no token yet.
    pub fn new() -> TokenVerifier {
        TokenVerifier::default()
    }

    /// Accepts `token` for `name` if it is at least the highest seen, and remembers it.
    pub fn check(&self, name: &str, token: u64) -> Result<(), StaleToken> {
        let mut highest = lock(&self.highest);
        let seen = highest.get(name).copied();
        let admitted = admit(seen, token).map_err(|stale| StaleToken {
            name: name.to_owned(),
            ..stale
        })?;
        highest.insert(name.to_owned(), admitted);
        Ok(())
    }

    /// The highest token accepted for `name`.
    pub fn highest(&self, name: &str) -> Option<u64> {
        let highest = lock(&self.highest);
        highest.get(name).copied()
    }
}

/// What a holder hands to a downstream resource with each request (after Chubby's
/// sequencer): the lock's name, the holder's node and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequencer {
    /// The lock's (or election's) name: the key a [`TokenVerifier`] remembers tokens by.
    pub name: String,
    /// The holder's node.
    pub path: String,
    /// The node's create revision.
    pub token: u64,
}

impl Sequencer {
    /// Adds the fence to `txn`: the cluster runs it only if the node is still the holder.
    pub fn fence(&self, txn: Txn) -> Txn {
        txn.fence(&self.path, self.token)
    }

    /// Runs `txn` fenced by this sequencer; a refused fence is [`Error::LockLost`].
    pub async fn write(&self, client: &Client, txn: Txn) -> Result<TxnResult, Error> {
        client
            .txn(self.fence(txn))
            .await
            .map_err(|error| match error {
                Error::FenceRejected { .. } => Error::LockLost {
                    path: self.path.clone(),
                    token: self.token,
                },
                other => other,
            })
    }

    /// Asks the cluster (a linearizable read) whether this is still the holder. The answer may
    /// be stale by the time it arrives; prefer [`Sequencer::write`] for writes.
    pub async fn is_current(&self, client: &Client) -> Result<bool, Error> {
        Ok(client.check_fence(&self.path, self.token).await?.current)
    }

    /// Checks this sequencer against a verifier's highest token for its name.
    pub fn check(&self, verifier: &TokenVerifier) -> Result<(), StaleToken> {
        verifier.check(&self.name, self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_accepts_equal_or_higher_and_refuses_lower() {
        assert_eq!(admit(None, 0), Ok(0));
        assert_eq!(admit(None, 9), Ok(9));
        assert_eq!(admit(Some(9), 9), Ok(9));
        assert_eq!(admit(Some(9), 10), Ok(10));
        assert_eq!(
            admit(Some(9), 8),
            Err(StaleToken {
                name: String::new(),
                token: 8,
                highest: 9
            })
        );
    }

    #[test]
    fn the_verifier_keeps_one_highest_per_name() {
        let verifier = TokenVerifier::new();
        assert_eq!(verifier.highest("/a"), None);
        assert!(verifier.check("/a", 5).is_ok());
        assert!(verifier.check("/b", 3).is_ok());
        let stale = verifier.check("/a", 4).unwrap_err();
        assert_eq!(
            stale,
            StaleToken {
                name: "/a".into(),
                token: 4,
                highest: 5
            }
        );
        assert_eq!(
            stale.to_string(),
            "token 4 of /a is stale: token 5 was already seen"
        );
        // A refused token does not lower the highest.
        assert_eq!(verifier.highest("/a"), Some(5));
        assert!(verifier.check("/b", 4).is_ok());
        assert_eq!(verifier.highest("/b"), Some(4));
        let sequencer = Sequencer {
            name: "/a".into(),
            path: "/a/lock-0000000001".into(),
            token: 6,
        };
        assert!(sequencer.check(&verifier).is_ok());
        assert_eq!(verifier.highest("/a"), Some(6));
    }
}
