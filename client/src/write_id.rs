//! `WriteIds`: the client's identity and sequence numbers for exactly-once writes.
//!
//! Every write carries `(client id, sequence)`; the cluster applies each pair at most once and
//! answers a repeat with the first outcome, so a write whose reply was lost can be sent again.
//! Each write also says which sequences the client no longer needs (`answered_below`: the
//! lowest sequence still in flight), so the cluster can forget them.
//!
//! Invariant: a sequence stays in the in-flight set from the moment its id is issued until its
//! `InFlight` guard drops (the call finished or was cancelled), so `answered_below` never passes
//! a write that may still be retried.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use coord_proto::v1 as pb;

use crate::lock::lock;

#[derive(Debug)]
pub(crate) struct WriteIds {
    client_id: String,
    state: Arc<Mutex<Sequences>>,
}

#[derive(Debug, Default)]
struct Sequences {
    next: u64,
    in_flight: BTreeSet<u64>,
}

/// Keeps a sequence in flight until dropped.
pub(crate) struct InFlight {
    sequence: u64,
    state: Arc<Mutex<Sequences>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.state).in_flight.remove(&self.sequence);
    }
}

impl WriteIds {
    /// A fresh identity: the process id, the time, and per-process random bits, so two clients
    /// (even in one process) never share an id.
    pub(crate) fn new() -> WriteIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        let client_id = format!(
            "{:x}-{:x}-{:016x}",
            std::process::id(),
            nanos,
            hasher.finish()
        );
        WriteIds {
            client_id,
            state: Arc::new(Mutex::new(Sequences {
                next: 1,
                in_flight: BTreeSet::new(),
            })),
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The id for a new write, and the guard that keeps it in flight.
    pub(crate) fn issue(&self) -> (pb::WriteId, InFlight) {
        let mut state = lock(&self.state);
        let sequence = state.next;
        state.next += 1;
        state.in_flight.insert(sequence);
        let answered_below = *state
            .in_flight
            .first()
            .expect("the new sequence is in flight");
        let id = pb::WriteId {
            client_id: self.client_id.clone(),
            sequence,
            answered_below,
        };
        let guard = InFlight {
            sequence,
            state: self.state.clone(),
        };
        (id, guard)
    }
}

#[cfg(test)]
mod tests {
    use super::WriteIds;

    #[test]
    fn sequences_increase_and_the_oldest_in_flight_bounds_what_is_forgotten() {
        let ids = WriteIds::new();
        let (first, first_guard) = ids.issue();
        let (second, second_guard) = ids.issue();
        assert_eq!((first.sequence, first.answered_below), (1, 1));
        assert_eq!((second.sequence, second.answered_below), (2, 1));
        drop(first_guard);
        let (third, _third_guard) = ids.issue();
        assert_eq!((third.sequence, third.answered_below), (3, 2));
        drop(second_guard);
        let (fourth, _) = ids.issue();
        assert_eq!(fourth.answered_below, 3);
        assert_ne!(WriteIds::new().client_id(), ids.client_id());
    }
}
