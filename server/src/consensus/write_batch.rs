//! `WriteBatcher`: on the leader, writes that arrive while earlier ones are being proposed go
//! together into one log entry (`Command::Batch`), so that one append, one fsync and one
//! replication round serve them all.
//!
//! openraft 0.9 takes proposals one at a time, and each is one log entry that every follower
//! must receive, fsync and answer (the log's own writes are grouped by `log_flush`, but a
//! follower's round is per AppendEntries, one in flight). The batcher keeps the queue on its side:
//! at most `IN_FLIGHT_MAX` entries are being proposed at once, and what arrives meanwhile goes
//! in the next entry. A write that finds nothing queued and no entry being proposed is
//! proposed at once by its own task, alone, as a plain proposal: a lone writer waits for
//! nothing and takes no extra hand-off between tasks. With entries out, writes come in bursts,
//! and the batching task gathers each whole (`InFlight`).
//!
//! Invariants:
//! - each write gets the revision and outcome of its own item, or, when the entry could not be
//!   proposed, the error every item of that entry shares;
//! - items keep their arrival order within an entry, and entries are proposed in the order
//!   their first item arrived;
//! - an entry holds at most `BATCH_ITEMS_MAX` items and, unless it holds one, at most
//!   `BATCH_BYTES_MAX` bytes of node data and paths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::error::{client_write_error, ConsensusError};
use super::in_flight::InFlight;
use super::proposal::WriteOutcome;
use super::state_machine::CoordRaft;
use super::types::TypeConfig;
use crate::fsm::{BatchItem, Command, Proposal, BATCH_ITEMS_MAX};

/// Entries the batcher proposes at once. Measured (`coord-bench`, release, 3 members): with 4
/// rather than 2, lock hand-offs rose from 239 and 223 to 277 and 307 a second (a release no
/// longer waits behind the next holder's stamp and the last holder's new node), while 64
/// writers stayed at 7,300 to 10,000 writes/s either way.
pub const IN_FLIGHT_MAX: usize = 4;
/// Most node data and path bytes gathered into one entry (a larger write goes alone).
pub const BATCH_BYTES_MAX: u64 = 1024 * 1024;

/// One write's revision and outcome.
pub type WriteResult = Result<WriteOutcome, ConsensusError>;

struct Queued {
    proposal: Proposal,
    reply: oneshot::Sender<WriteResult>,
}

/// A handle to the batching task; dropping the last one stops it once the queue is empty.
pub struct WriteBatcher {
    queue: mpsc::UnboundedSender<Queued>,
    timeout: Duration,
    /// Entries being proposed, at most `IN_FLIGHT_MAX`.
    in_flight: InFlight,
    /// Writes queued and not yet in an entry.
    waiting: Arc<AtomicUsize>,
    proposer: Proposer,
}

impl WriteBatcher {
    /// Starts the task that proposes through `raft`, failing an entry not applied within
    /// `timeout`, and counting each entry's writes in `writes_per_entry`.
    pub fn start(raft: CoordRaft, timeout: Duration, writes_per_entry: Histogram) -> WriteBatcher {
        let (queue, receiver) = mpsc::unbounded_channel();
        let proposer = Proposer {
            raft,
            timeout,
            writes_per_entry,
        };
        let in_flight = InFlight::new(IN_FLIGHT_MAX);
        let waiting = Arc::new(AtomicUsize::new(0));
        let batching = Batching {
            proposer: proposer.clone(),
            in_flight: in_flight.clone(),
            waiting: waiting.clone(),
        };
        tokio::spawn(batching.run(receiver));
        WriteBatcher {
            queue,
            timeout,
            in_flight,
            waiting,
            proposer,
        }
    }

    /// Proposes `proposal` in the next entry and waits, at most the request timeout in all,
    /// until it is applied on this member. A write given up on may still be applied later.
    pub async fn write(&self, proposal: Proposal) -> WriteResult {
        let (reply, answer) = oneshot::channel();
        let queued = Queued { proposal, reply };
        if let Some(permit) = self.in_flight.alone(self.waiting.load(Ordering::Acquire)) {
            // Nothing waits and no entry is out: this write goes alone, proposed by its own task
            // (no hand-off to the batching task on a lone writer's path).
            self.proposer.clone().propose(vec![queued], permit).await;
            return answer.await.unwrap_or(Err(ConsensusError::ShuttingDown));
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.queue
            .send(queued)
            .map_err(|_| ConsensusError::ShuttingDown)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(answer) => answer.unwrap_or(Err(ConsensusError::ShuttingDown)),
            Err(_) => Err(ConsensusError::Timeout {
                what: "write".into(),
                timeout: self.timeout,
            }),
        }
    }

    /// Proposes `proposal` as an entry of its own, at once and outside `IN_FLIGHT_MAX`: how
    /// every write went before batching, and still goes while a member of the cluster cannot
    /// apply batches (`features.rs`).
    pub async fn write_alone(&self, proposal: Proposal) -> WriteResult {
        let (reply, answer) = oneshot::channel();
        self.proposer
            .clone()
            .propose_entry(vec![Queued { proposal, reply }])
            .await;
        answer.await.unwrap_or(Err(ConsensusError::ShuttingDown))
    }
}

/// What proposing an entry takes.
#[derive(Clone)]
struct Proposer {
    raft: CoordRaft,
    timeout: Duration,
    writes_per_entry: Histogram,
}

/// The task that gathers queued writes into entries.
struct Batching {
    proposer: Proposer,
    in_flight: InFlight,
    waiting: Arc<AtomicUsize>,
}

impl Batching {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match queue.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let permit = self.in_flight.turn().await;
            let mut batch = vec![first];
            let mut bytes = payload_bytes(&batch[0].proposal.command);
            while batch.len() < BATCH_ITEMS_MAX {
                let Ok(next) = queue.try_recv() else { break };
                let next_bytes = payload_bytes(&next.proposal.command);
                if bytes + next_bytes > BATCH_BYTES_MAX {
                    carried = Some(next);
                    break;
                }
                bytes += next_bytes;
                batch.push(next);
            }
            self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
            tokio::spawn(self.proposer.clone().propose(batch, permit));
        }
    }
}

impl Proposer {
    /// Proposes `batch` as one entry and answers each write; the permit is held until then.
    async fn propose(self, batch: Vec<Queued>, _permit: OwnedSemaphorePermit) {
        self.propose_entry(batch).await;
    }

    /// Proposes `batch` as one entry and answers each write.
    async fn propose_entry(self, batch: Vec<Queued>) {
        self.writes_per_entry.observe(batch.len() as f64);
        let (proposal, replies) = entry_of(batch);
        let timeout = self.timeout;
        let written = tokio::time::timeout(timeout, self.raft.client_write(proposal)).await;
        answer(replies, written_results(written, timeout));
    }
}

type Written = Result<
    Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>,
    >,
    tokio::time::error::Elapsed,
>;

/// Each write's result from what proposing its entry returned.
fn written_results(
    written: Written,
    timeout: Duration,
) -> Result<Vec<WriteOutcome>, ConsensusError> {
    match written {
        Err(_) => Err(ConsensusError::Timeout {
            what: "write".into(),
            timeout,
        }),
        Ok(Err(error)) => Err(client_write_error(error)),
        Ok(Ok(response)) => Ok(response.data.writes),
    }
}

/// Answers each write of an entry: its own result, or the error they share.
fn answer(
    replies: Vec<oneshot::Sender<WriteResult>>,
    writes: Result<Vec<WriteOutcome>, ConsensusError>,
) {
    let writes = writes.and_then(|writes| {
        if writes.len() == replies.len() {
            Ok(writes)
        } else {
            Err(ConsensusError::Fatal {
                reason: format!(
                    "an entry of {} writes applied as {}",
                    replies.len(),
                    writes.len()
                ),
            })
        }
    });
    match writes {
        Ok(writes) => {
            for (reply, write) in replies.into_iter().zip(writes) {
                let _ = reply.send(Ok(write));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The entry for `batch`: its one proposal as it is, or a batch of all.
fn entry_of(batch: Vec<Queued>) -> (Proposal, Vec<oneshot::Sender<WriteResult>>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for queued in batch {
        replies.push(queued.reply);
        items.push(queued.proposal);
    }
    let proposal = if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        let items = items
            .into_iter()
            .map(|proposal| BatchItem {
                write_id: proposal.write_id,
                command: proposal.command,
            })
            .collect();
        Proposal::from(Command::Batch(items))
    };
    (proposal, replies)
}

/// The bytes of node data and paths `command` carries: what makes an entry large.
fn payload_bytes(command: &Command) -> u64 {
    let bytes = match command {
        Command::Create(create) => create.path.len() + create.data.len(),
        Command::Set(set) => set.path.len() + set.data.len(),
        Command::Delete(delete) => delete.path.len(),
        Command::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(|op| match op {
                crate::fsm::TxnOp::Create(create) => create.path.len() + create.data.len(),
                crate::fsm::TxnOp::Set(set) => set.path.len() + set.data.len(),
                crate::fsm::TxnOp::Delete(delete) => delete.path.len(),
                crate::fsm::TxnOp::Get { path } => path.len(),
            })
            .sum(),
        Command::OpenSession(open) => open.owner.len(),
        Command::CheckpointSessions(checkpoint) => checkpoint.remaining.len() * 16,
        Command::CloseSession(_) => 0,
        // Batches are made here, never queued; count one as too large to join another.
        Command::Batch(_) => return BATCH_BYTES_MAX,
    };
    bytes as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::{DeleteCommand, SetCommand};

    fn queued(command: Command) -> (Queued, oneshot::Receiver<WriteResult>) {
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal::from(command);
        (Queued { proposal, reply }, answer)
    }

    fn set(path: &str, bytes: usize) -> Command {
        Command::Set(SetCommand {
            path: path.into(),
            data: vec![7; bytes],
            expected_version: None,
        })
    }

    #[test]
    fn one_write_goes_as_it_is_and_several_as_a_batch_in_order() {
        let (alone, _answer) = queued(set("/a", 1));
        let (proposal, replies) = entry_of(vec![alone]);
        assert_eq!(proposal, Proposal::from(set("/a", 1)));
        assert_eq!(replies.len(), 1);

        let delete = Command::Delete(DeleteCommand {
            path: "/b".into(),
            expected_version: None,
            recursive: false,
        });
        let (first, _a) = queued(set("/a", 1));
        let (second, _b) = queued(delete.clone());
        let (proposal, replies) = entry_of(vec![first, second]);
        assert_eq!(replies.len(), 2);
        let Command::Batch(items) = proposal.command else {
            panic!("two writes make a batch");
        };
        let commands: Vec<Command> = items.into_iter().map(|item| item.command).collect();
        assert_eq!(commands, vec![set("/a", 1), delete]);
    }

    #[test]
    fn a_large_write_counts_as_large_and_a_batch_never_joins_one() {
        assert_eq!(payload_bytes(&set("/a", 10)), 12);
        assert!(payload_bytes(&set("/a", BATCH_BYTES_MAX as usize)) > BATCH_BYTES_MAX);
        assert_eq!(payload_bytes(&Command::Batch(Vec::new())), BATCH_BYTES_MAX);
    }
}
