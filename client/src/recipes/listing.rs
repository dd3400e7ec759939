//! Introspection: which locks and elections exist under a prefix, who holds or leads each,
//! since when, with what token, and who waits.
//!
//! A recipe directory is any node at or under the prefix with children named like recipe
//! nodes (`lock-`, `read-`, `write-`, `permit-`, `candidate-` followed by digits). The walk
//! lists each node's children page by page with stats, descends only into nodes that have
//! children (recipe nodes are ephemeral, so never), and stops with `Error::LimitExceeded`
//! after `LISTED_DIRECTORIES_MAX` directories.
//!
//! Invariant: holders are decided by the same rule the recipes use (`queue::decide`), on the
//! listing read; a listing is a picture of one moment, and read page by page, not one
//! revision, so it may show a holder that has just left or miss one that just came.

use std::collections::VecDeque;
use std::time::Duration;

use super::directory::{child_path, list_directory, Entry, Listing};
use super::queue::{decide, Decision, Rule};
use super::record::{age_of, NodeRecord};
use super::role::Role;
use super::semaphore::decode_permits;
use crate::client::Client;
use crate::error::Error;

/// The most directories one listing walks.
const LISTED_DIRECTORIES_MAX: usize = 10_000;

/// One holder, waiter or candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Its node.
    pub path: String,
    /// What its node stands for, from the node's name prefix.
    pub role: Role,
    /// The description its creator gave (for a candidate: its value), as text.
    pub holder: String,
    /// Its fencing token (the node's create revision).
    pub token: u64,
    /// Its session.
    pub session: u64,
    /// When it was granted, or for a waiter when it queued, on its creator's wall clock
    /// (milliseconds since the Unix epoch; 0 if unknown). A holder that waited shows when it
    /// queued during its first second of holding, until its grant time is written.
    pub since_unix_ms: u64,
}

impl Participant {
    /// How long ago `since_unix_ms` was on this machine's wall clock: for display only.
    pub fn age(&self) -> Duration {
        age_of(self.since_unix_ms)
    }
}

/// What kind of lock a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Only `lock-` nodes.
    Mutex,
    /// `read-` or `write-` nodes (and maybe `lock-` nodes, which count as writers).
    RwLock,
    /// `permit-` nodes, with the number of permits the directory records (`None` if it records
    /// none, in which case every participant is listed as waiting).
    Semaphore {
        /// The number of permits recorded in the directory, if any.
        permits: Option<u64>,
    },
}

/// A lock and its participants, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock's name (its directory).
    pub name: String,
    /// Which recipe its nodes belong to.
    pub kind: LockKind,
    /// Those whose turn has come (one for a mutex or writer; several readers or permits).
    pub holders: Vec<Participant>,
    /// Those whose turn has not come yet, in queue order.
    pub waiters: Vec<Participant>,
}

impl LockInfo {
    /// The first holder, if any.
    pub fn holder(&self) -> Option<&Participant> {
        self.holders.first()
    }
}

/// An election and its candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionInfo {
    /// The election's name (its directory).
    pub name: String,
    /// The candidate that leads (the lowest in the queue); `None` when every candidate left
    /// while the listing was read.
    pub leader: Option<Participant>,
    /// The other candidates, in the order they would lead.
    pub followers: Vec<Participant>,
}

/// Every lock (mutex, read-write lock, semaphore) at or under `prefix`, by name. A directory
/// with both lock and permit nodes appears once for each.
///
/// ```no_run
/// # async fn example(client: coord_client::Client) -> Result<(), coord_client::Error> {
/// use coord_client::recipes::list_locks;
/// for lock in list_locks(&client, "/locks").await? {
///     for holder in &lock.holders {
///         println!(
///             "{} held by {} (token {}, session {}) for {:?}",
///             lock.name, holder.holder, holder.token, holder.session, holder.age()
///         );
///     }
///     println!("{} waiting", lock.waiters.len());
/// }
/// # Ok(())
/// # }
/// ```
pub async fn list_locks(client: &Client, prefix: &str) -> Result<Vec<LockInfo>, Error> {
    let mut locks = Vec::new();
    for (name, listing) in recipe_directories(client, prefix).await? {
        let has = |roles: &[Role]| {
            listing
                .entries
                .iter()
                .any(|entry| roles.contains(&entry.role))
        };
        if has(&[Role::Lock, Role::Read, Role::Write]) {
            let kind = if has(&[Role::Read, Role::Write]) {
                LockKind::RwLock
            } else {
                LockKind::Mutex
            };
            let (holders, waiters) = split_turns(&listing.entries, kind);
            locks.push(LockInfo {
                name: name.clone(),
                kind,
                holders: participants(client, holders).await?,
                waiters: participants(client, waiters).await?,
            });
        }
        if has(&[Role::Permit]) {
            let permits = match client.get(&name).await {
                Ok(directory) => decode_permits(&directory.data),
                Err(Error::NoNode { .. }) => continue,
                Err(error) => return Err(error),
            };
            let kind = LockKind::Semaphore { permits };
            let (holders, waiters) = split_turns(&listing.entries, kind);
            locks.push(LockInfo {
                name,
                kind,
                holders: participants(client, holders).await?,
                waiters: participants(client, waiters).await?,
            });
        }
    }
    Ok(locks)
}

/// Every election at or under `prefix`, by name, with its leader and followers.
///
/// ```no_run
/// # async fn example(client: coord_client::Client) -> Result<(), coord_client::Error> {
/// use coord_client::recipes::list_elections;
/// for election in list_elections(&client, "/elections").await? {
///     match &election.leader {
///         Some(leader) => println!("{}: {} leads (token {})", election.name, leader.holder, leader.token),
///         None => println!("{}: no leader", election.name),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn list_elections(client: &Client, prefix: &str) -> Result<Vec<ElectionInfo>, Error> {
    let mut elections = Vec::new();
    for (name, listing) in recipe_directories(client, prefix).await? {
        let candidates: Vec<&Entry> = listing
            .entries
            .iter()
            .filter(|entry| entry.role == Role::Candidate)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let mut candidates = participants(client, candidates).await?.into_iter();
        elections.push(ElectionInfo {
            name,
            leader: candidates.next(),
            followers: candidates.collect(),
        });
    }
    Ok(elections)
}

/// The directories at or under `prefix` that hold recipe nodes, in name order, each with its
/// listing.
async fn recipe_directories(
    client: &Client,
    prefix: &str,
) -> Result<Vec<(String, Listing)>, Error> {
    let mut found = Vec::new();
    let mut unvisited = VecDeque::from([prefix.to_owned()]);
    let mut visited = 0;
    while let Some(directory) = unvisited.pop_front() {
        visited += 1;
        if visited > LISTED_DIRECTORIES_MAX {
            return Err(Error::LimitExceeded {
                message: format!(
                    "more than {LISTED_DIRECTORIES_MAX} directories under {prefix}; list a \
                     narrower prefix"
                ),
            });
        }
        let listing = match list_directory(client, &directory).await {
            Ok(listing) => listing,
            // Gone since its parent was listed (or the prefix does not exist).
            Err(Error::NoNode { .. }) => continue,
            Err(error) => return Err(error),
        };
        for (name, stat) in &listing.others {
            if stat.num_children > 0 {
                unvisited.push_back(child_path(&directory, name));
            }
        }
        if !listing.entries.is_empty() {
            found.push((directory, listing));
        }
    }
    found.sort_by(|left, right| left.0.cmp(&right.0));
    Ok(found)
}

/// The entries of `kind`'s family whose turn has come, and the others, in queue order.
fn split_turns(entries: &[Entry], kind: LockKind) -> (Vec<&Entry>, Vec<&Entry>) {
    let mut holders = Vec::new();
    let mut waiters = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let rule = match (kind, entry.role) {
            (LockKind::Mutex | LockKind::RwLock, Role::Lock | Role::Write) => Some(Rule::Exclusive),
            (LockKind::Mutex | LockKind::RwLock, Role::Read) => Some(Rule::Shared),
            (LockKind::Semaphore { permits }, Role::Permit) => {
                Some(Rule::Permits(permits.unwrap_or(0)))
            }
            _ => None,
        };
        let Some(rule) = rule else {
            continue;
        };
        if decide(rule, entries, index) == Decision::Granted {
            holders.push(entry);
        } else {
            waiters.push(entry);
        }
    }
    (holders, waiters)
}

/// Reads each entry's node for its description and time; entries gone meanwhile are left out.
async fn participants(client: &Client, entries: Vec<&Entry>) -> Result<Vec<Participant>, Error> {
    let mut participants = Vec::with_capacity(entries.len());
    for entry in entries {
        let node = match client.get(&entry.path).await {
            Ok(node) if node.stat.create_revision == entry.stat.create_revision => node,
            Ok(_) | Err(Error::NoNode { .. }) => continue,
            Err(error) => return Err(error),
        };
        participants.push(participant(entry, &node.data));
    }
    Ok(participants)
}

fn participant(entry: &Entry, data: &[u8]) -> Participant {
    let (since_unix_ms, payload) = match NodeRecord::decode(data) {
        Some(record) => (record.since_unix_ms, record.payload),
        None => (0, data.to_vec()),
    };
    Participant {
        path: entry.path.clone(),
        role: entry.role,
        holder: String::from_utf8_lossy(&payload).into_owned(),
        token: entry.stat.create_revision,
        session: entry.stat.ephemeral_owner,
        since_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Stat;

    fn listing(names: &[&str]) -> Listing {
        let children = names.iter().enumerate().map(|(index, name)| {
            let stat = Stat {
                create_revision: 10 + index as u64,
                ephemeral_owner: 3,
                ..Stat::default()
            };
            ((*name).to_owned(), stat)
        });
        Listing::from_children("/l", (1, 1), children)
    }

    fn names(entries: &[&Entry]) -> Vec<String> {
        entries.iter().map(|entry| entry.name.clone()).collect()
    }

    #[test]
    fn holders_follow_the_recipes_rules() {
        let rw = listing(&[
            "read-0000000001",
            "read-0000000002",
            "write-0000000003",
            "read-0000000004",
            "permit-0000000005",
        ]);
        let (holders, waiters) = split_turns(&rw.entries, LockKind::RwLock);
        assert_eq!(names(&holders), ["read-0000000001", "read-0000000002"]);
        assert_eq!(names(&waiters), ["write-0000000003", "read-0000000004"]);

        let (holders, waiters) = split_turns(&rw.entries, LockKind::Semaphore { permits: Some(2) });
        assert_eq!(names(&holders), ["permit-0000000005"]);
        assert!(waiters.is_empty());

        let (holders, waiters) = split_turns(&rw.entries, LockKind::Semaphore { permits: None });
        assert!(holders.is_empty());
        assert_eq!(names(&waiters), ["permit-0000000005"]);

        let mutex = listing(&["lock-0000000007", "lock-0000000009"]);
        let (holders, waiters) = split_turns(&mutex.entries, LockKind::Mutex);
        assert_eq!(names(&holders), ["lock-0000000007"]);
        assert_eq!(names(&waiters), ["lock-0000000009"]);
    }

    #[test]
    fn participants_show_the_record_or_the_raw_data() {
        let listing = listing(&["lock-0000000001"]);
        let entry = &listing.entries[0];
        let record = NodeRecord {
            since_unix_ms: 1_000,
            attempt: "c.1".into(),
            payload: b"backup on host-7".to_vec(),
        };
        let shown = participant(entry, &record.encode());
        assert_eq!(
            shown,
            Participant {
                path: "/l/lock-0000000001".into(),
                role: Role::Lock,
                holder: "backup on host-7".into(),
                token: 10,
                session: 3,
                since_unix_ms: 1_000,
            }
        );
        assert!(shown.age() > Duration::from_secs(1));
        let foreign = participant(entry, b"something else");
        assert_eq!(
            (foreign.holder.as_str(), foreign.since_unix_ms),
            ("something else", 0)
        );
    }
}
