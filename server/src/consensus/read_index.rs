//! `ReadIndexBatcher`: concurrent linearizable reads share one leadership confirmation.
//!
//! Each read takes a ticket. A round confirms leadership with a quorum and yields a read index;
//! it covers every ticket taken before the round started, because a write acknowledged before
//! any of those reads began is committed, hence at or below that index. A read that arrives
//! while a round is in flight waits for the next round (the one in flight may have started
//! before the read, and could miss a write acknowledged in between). Rounds run one at a time,
//! so under load each round answers every read queued behind it.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

use super::error::ConsensusError;

#[derive(Default)]
pub struct ReadIndexBatcher {
    /// Tickets handed out so far.
    issued: AtomicU64,
    /// The last finished round: the highest ticket it covers and its result.
    last_round: Mutex<Option<(u64, Result<u64, ConsensusError>)>>,
}

impl ReadIndexBatcher {
    /// Returns a read index valid for a read that starts now, running `confirm` (one quorum
    /// round) only when no round started after this call has finished.
    pub async fn read_index<F, Fut>(&self, confirm: F) -> Result<u64, ConsensusError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<u64, ConsensusError>>,
    {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        // Holding the lock for the whole round makes later readers queue behind it.
        let mut last_round = self.last_round.lock().await;
        if let Some((covered, result)) = last_round.as_ref() {
            if *covered >= ticket {
                return result.clone();
            }
        }
        let covering = self.issued.load(Ordering::SeqCst);
        let result = confirm().await;
        *last_round = Some((covering, result.clone()));
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_rounds_and_later_reads_get_new_ones() {
        let batcher = Arc::new(ReadIndexBatcher::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for _ in 0..50 {
            let batcher = batcher.clone();
            let rounds = rounds.clone();
            readers.push(tokio::spawn(async move {
                batcher
                    .read_index(|| async move {
                        let round = rounds.fetch_add(1, Ordering::SeqCst) as u64;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok(round)
                    })
                    .await
            }));
        }
        for reader in readers {
            reader.await.unwrap().unwrap();
        }
        let shared = rounds.load(Ordering::SeqCst);
        assert!(shared < 50, "50 concurrent reads took {shared} rounds");
        // A read that starts after every round finished always gets a fresh round.
        let fresh = batcher.read_index(|| async { Ok(999) }).await.unwrap();
        assert_eq!(fresh, 999);
    }
}
