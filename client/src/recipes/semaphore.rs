//! `Semaphore`: a counting semaphore of N permits on a directory of ephemeral sequential
//! `permit-` nodes; a node holds a permit when fewer than N nodes precede it.
//!
//! Invariants: the directory records N as `permits=N`, and a participant that asks for
//! another N is refused with `Error::PermitsMismatch` rather than served by a different count
//! (the record stays with the directory: to change N, delete the directory while nobody uses
//! it); success is reported only after the re-check of `recipes`.
//!
//! Herd trade-off: any one of the nodes ahead may leave and let a waiter in, so watching one
//! node is not enough (the one watched may be the last to leave). Waiters watch the directory's
//! child list instead, so every release wakes every waiter, which lists the directory again:
//! O(waiters) reads per release. Fine for the tens of waiters semaphores usually have.

use std::time::Duration;

use super::directory::check_name;
use super::guard::LockGuard;
use super::queue::{Queue, Rule};
use super::record::default_holder;
use super::role::Role;
use super::wait::{check_session, persist_while_safe, Patience};
use crate::client::Client;
use crate::error::Error;
use crate::session::{Session, SessionView};
use crate::types::CreateOptions;

/// How many races (the directory vanishing, or changing data) one check tolerates.
const RACES_MAX: u32 = 8;

/// A distributed counting semaphore named by a path such as `/limits/exports`.
///
/// Up to `permits` holders at once; others queue in arrival order (see the module notes on
/// why waiters watch the whole directory). Every participant must agree on `permits`: the
/// first records it in the directory, and a later participant asking for another number gets
/// [`Error::PermitsMismatch`]. Permits are [`LockGuard`]s; their tokens overlap, so they do not
/// suit a [`crate::recipes::TokenVerifier`] that expects one holder at a time.
///
/// ```no_run
/// # async fn example() -> Result<(), coord_client::Error> {
/// use std::time::Duration;
/// use coord_client::{Client, Semaphore};
/// let client = Client::connect(["127.0.0.1:7400"]).await?;
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let exports = Semaphore::new(&client, &session, "/limits/exports", 3);
/// let permit = exports.acquire().await?;
/// // ... at most three processes are here at once ...
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    client: Client,
    session: SessionView,
    name: String,
    permits: u64,
    holder: String,
}

impl Semaphore {
    /// A semaphore named `name` (a path; not the root) with `permits` permits (at least one),
    /// taken on behalf of `session`.
    pub fn new(
        client: &Client,
        session: &Session,
        name: impl Into<String>,
        permits: u64,
    ) -> Semaphore {
        Semaphore {
            client: client.clone(),
            session: session.view(),
            name: name.into(),
            permits,
            holder: default_holder(),
        }
    }

    /// Describes the holder in its node, for listings (default `pid:{process id}`).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Semaphore {
        self.holder = holder.into();
        self
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of permits this participant expects.
    pub fn permits(&self) -> u64 {
        self.permits
    }

    /// Waits for and takes a permit.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let acquired = self.acquire_within(Patience::Forever).await?;
        Ok(acquired.expect("waiting without a deadline ends in success or an error"))
    }

    /// Takes a permit if one is free now; `None` (and no node left behind) otherwise.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        self.acquire_within(Patience::Try).await
    }

    /// Takes a permit within `timeout`; `None` (and no node left behind) if none was free.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>, Error> {
        self.acquire_within(Patience::after(timeout)).await
    }

    async fn acquire_within(&self, patience: Patience) -> Result<Option<LockGuard>, Error> {
        if self.permits == 0 {
            return Err(Error::InvalidArgument {
                message: format!("semaphore {} needs at least one permit", self.name),
            });
        }
        check_name(&self.name)?;
        check_session(&self.session)?;
        let directory_data = encode_permits(self.permits);
        persist_while_safe(&self.session, || self.check_permits(&directory_data)).await?;
        let queue = Queue {
            client: &self.client,
            session: &self.session,
            name: &self.name,
            role: Role::Permit,
            rule: Rule::Permits(self.permits),
            payload: self.holder.as_bytes(),
        };
        LockGuard::acquire(&queue, patience).await
    }

    /// Makes sure the directory exists and records this participant's number of permits.
    async fn check_permits(&self, directory_data: &[u8]) -> Result<(), Error> {
        for _ in 0..RACES_MAX {
            // Read first: creating an existing directory would cost a failed write each time.
            let directory = match self.client.get(&self.name).await {
                Ok(directory) => directory,
                Err(Error::NoNode { .. }) => {
                    let options = CreateOptions {
                        make_parents: true,
                        ..CreateOptions::default()
                    };
                    match self
                        .client
                        .create(&self.name, directory_data, &options)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        // Another participant was first: read what it recorded.
                        Err(Error::NodeExists { .. }) => continue,
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            };
            if directory.data.is_empty() {
                // Made by something else (a mutex, `make_parents`): record ours, unless
                // another participant does first.
                let version = Some(directory.stat.version);
                match self.client.set(&self.name, directory_data, version).await {
                    Ok(_) => return Ok(()),
                    Err(Error::BadVersion { .. } | Error::NoNode { .. }) => continue,
                    Err(error) => return Err(error),
                }
            }
            let recorded = decode_permits(&directory.data).ok_or_else(|| Error::BadRecipeData {
                path: self.name.clone(),
                message: format!(
                    "expected a semaphore's `permits=N`, found {:?}",
                    String::from_utf8_lossy(&directory.data)
                ),
            })?;
            if recorded != self.permits {
                return Err(Error::PermitsMismatch {
                    name: self.name.clone(),
                    recorded,
                    requested: self.permits,
                });
            }
            return Ok(());
        }
        // Retried by the caller, like any unavailability, while the session is safe.
        Err(Error::Unavailable {
            message: format!("semaphore directory {} kept changing under us", self.name),
            leader_hint: None,
        })
    }
}

/// A semaphore directory's data.
pub(crate) fn encode_permits(permits: u64) -> Vec<u8> {
    format!("permits={permits}").into_bytes()
}

/// The permits a semaphore directory records, if its data is in the format.
pub(crate) fn decode_permits(data: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(data).ok()?.strip_prefix("permits=")?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|permits| *permits > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_round_trip_and_foreign_data_is_refused() {
        assert_eq!(encode_permits(3), b"permits=3");
        assert_eq!(decode_permits(&encode_permits(3)), Some(3));
        assert_eq!(decode_permits(&encode_permits(u64::MAX)), Some(u64::MAX));
        for data in [
            &b""[..],
            b"3",
            b"permits=",
            b"permits=0",
            b"permits=-1",
            b"permits=3 ",
        ] {
            assert_eq!(decode_permits(data), None, "{data:?}");
        }
    }
}
