//! `PendingNode`: the drop guard of a recipe node from before its create is sent until it is
//! handed over (`disarm`) or deleted (`remove`).
//!
//! It makes every acquisition cancel-safe. If the acquiring future is dropped, returns an
//! error, or gives up, the guard deletes the node; from `Drop`, which cannot await, it spawns
//! a task that does so (bounded retries; without a Tokio runtime, the session's end removes
//! the node instead).
//!
//! A create whose outcome is unknown is never guessed at. It is sent again with the same write
//! id, which the cluster applies at most once and answers with the first outcome, so the
//! answer names the node if one was made. The write id stays in flight (`InFlight`) until the
//! question is settled, so the cluster keeps the first outcome.
//! If the cluster had already forgotten it (it keeps a bounded number of outcomes per client),
//! a second node may exist: after an uncertain create, nodes of this session in the directory
//! that carry this attempt's id are found and deleted (`sweep`).
//!
//! Invariant: when the guard drops, every node it may have created is deleted or being deleted,
//! unless it was handed over.

use coord_proto::v1 as pb;
use tokio::time::Instant;

use super::cleanup::{delete_eventually, delete_own, spawn_detached, CLEANUP_ATTEMPTS_MAX};
use super::directory::{child_path, list_directory};
use super::record::NodeRecord;
use super::role::Role;
use super::wait::{check_session, transient, Backoff};
use crate::client::Client;
use crate::error::Error;
use crate::session::SessionView;
use crate::types::{CreateOptions, Created, NodeKind};
use crate::write_id::InFlight;

/// A create whose outcome is not known yet, with what it takes to send it again.
struct Creating {
    path: String,
    data: Vec<u8>,
    options: CreateOptions,
    write_id: pb::WriteId,
    /// Keeps the write id answerable by the cluster until this is dropped.
    _in_flight: InFlight,
}

enum State {
    /// Nothing was created.
    Empty,
    /// A create was sent; it may or may not have been applied.
    Creating(Box<Creating>),
    Created {
        path: String,
        token: u64,
    },
    /// Handed over or deleted.
    Done,
}

/// See the module documentation.
pub(crate) struct PendingNode {
    client: Client,
    session: SessionView,
    state: State,
}

impl PendingNode {
    pub(crate) fn new(client: Client, session: SessionView) -> PendingNode {
        PendingNode {
            client,
            session,
            state: State::Empty,
        }
    }

    /// Creates an ephemeral sequential `role` node holding `record` in `directory`, creating
    /// the directory and its missing ancestors as persistent nodes if needed.
    /// `None` when `deadline` passed first; the guard then still owns whatever may exist.
    pub(crate) async fn create(
        &mut self,
        directory: &str,
        role: Role,
        record: &NodeRecord,
        deadline: Option<Instant>,
    ) -> Result<Option<Created>, Error> {
        debug_assert!(matches!(self.state, State::Empty), "one node per guard");
        let path = child_path(directory, role.prefix());
        let data = record.encode();
        let options = CreateOptions {
            kind: NodeKind::Ephemeral,
            sequential: true,
            make_parents: true,
            session_id: self.session.id(),
        };
        let (write_id, in_flight) = self.client.write_ids().issue();
        self.state = State::Creating(Box::new(Creating {
            path: path.clone(),
            data: data.clone(),
            options: options.clone(),
            write_id: write_id.clone(),
            _in_flight: in_flight,
        }));
        let mut uncertain = false;
        let mut backoff = Backoff::new();
        loop {
            check_session(&self.session)?;
            let attempt = self
                .client
                .create_as(&path, data.clone(), &options, write_id.clone())
                .await;
            match attempt {
                Ok(created) => {
                    self.state = State::Created {
                        path: created.path.clone(),
                        token: created.stat.create_revision,
                    };
                    if uncertain {
                        self.sweep(directory, &created, &record.attempt).await;
                    }
                    return Ok(Some(created));
                }
                // Sent again with the same write id: applied at most once, and a repeat is
                // answered with the first outcome.
                Err(error) if transient(&error) => {
                    uncertain |= error.is_outcome_unknown();
                    if !backoff.pause(deadline).await {
                        return Ok(None);
                    }
                }
                Err(error) => {
                    // Settled by the cluster: this write id created nothing.
                    self.state = State::Empty;
                    return Err(error);
                }
            }
        }
    }

    /// Deletes the node now if it was created; otherwise (or if the delete fails) leaves it to
    /// the drop, which retries in the background.
    pub(crate) async fn remove(&mut self) {
        if let State::Created { path, token } = &self.state {
            if delete_own(&self.client, path, *token).await.is_ok() {
                self.state = State::Done;
            }
        }
    }

    /// The node was handed over: the guard no longer deletes it.
    pub(crate) fn disarm(&mut self) {
        self.state = State::Done;
    }

    /// Deletes other nodes of this session in `directory` made by the same attempt: the
    /// duplicate a forgotten write id may have let through. Best effort: a node it misses
    /// goes with the session.
    async fn sweep(&self, directory: &str, own: &Created, attempt: &str) {
        let Ok(listing) = list_directory(&self.client, directory).await else {
            return;
        };
        for entry in listing.entries {
            if entry.stat.ephemeral_owner != self.session.id() || entry.path == own.path {
                continue;
            }
            let Ok(node) = self.client.get(&entry.path).await else {
                continue;
            };
            let same_attempt =
                NodeRecord::decode(&node.data).is_some_and(|record| record.attempt == attempt);
            if same_attempt {
                let _ = delete_own(&self.client, &entry.path, entry.stat.create_revision).await;
            }
        }
    }
}

impl Drop for PendingNode {
    fn drop(&mut self) {
        let client = self.client.clone();
        match std::mem::replace(&mut self.state, State::Done) {
            State::Empty | State::Done => {}
            State::Created { path, token } => {
                spawn_detached(delete_eventually(client, path, token));
            }
            State::Creating(creating) => spawn_detached(settle_and_delete(client, *creating)),
        }
    }
}

/// Learns what a create of unknown outcome did by sending it again with its write id, and
/// deletes the node if there is one.
async fn settle_and_delete(client: Client, creating: Creating) {
    let mut backoff = Backoff::new();
    for _ in 0..CLEANUP_ATTEMPTS_MAX {
        let attempt = client
            .create_as(
                &creating.path,
                creating.data.clone(),
                &creating.options,
                creating.write_id.clone(),
            )
            .await;
        match attempt {
            Ok(created) => {
                let token = created.stat.create_revision;
                return delete_eventually(client, created.path, token).await;
            }
            Err(error) if transient(&error) => {
                backoff.pause(None).await;
            }
            // Settled: nothing was created (for example, the session is gone).
            Err(_) => return,
        }
    }
}
