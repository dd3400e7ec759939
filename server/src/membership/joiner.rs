//! `join`: how a member with a new data directory and `--join-via` becomes a voter with no
//! operator at hand (a StatefulSet scaled up, a pod given a new volume).
//!
//! 1. It asks, through any member's peer port, to be added as a learner (`Join` relays the
//!    call to the leader; see `consensus/join.rs`). Until one answers it tries every address,
//!    round after round, a second apart. A name that does not resolve (a pod not there yet, or
//!    an ordinal beyond the replica count) is just one more address that did not answer.
//! 2. If the answer counts it as a voter already, its old data directory was lost: it has
//!    itself removed first, so that a voter never comes back with an empty log (it could then
//!    vote twice in a term, or forget entries it acknowledged), and asks again.
//! 3. It asks to be promoted; the leader waits until it has caught up before it does so.
//!
//! Until step 1 (or 2) says the cluster counts it as a learner, the member refuses Raft traffic
//! (`Consensus::hold_raft_traffic`): a leader that still counts it as a voter must never see its
//! log go back (it would count entries the member no longer has towards the commit quorum).
//!
//! The founder (the lowest id of `--initial-cluster`) asks too, for two election timeouts,
//! before founding: if a cluster answers, its own data directory was lost and it joins that
//! cluster instead of founding a second one under the same name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::consensus::{
    Consensus, ConsensusError, JoinCall, MemberId, MembershipChange, MembershipView, MessageKind,
    PeerCallError, PeerMethod,
};

/// The pause between rounds of attempts (one per address).
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// At most one progress line this often while the cluster does not answer.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a new member joins with.
pub struct JoinPlan {
    /// Peer addresses to ask through (`--join-via`).
    pub via: Vec<String>,
    /// This member's peer address as the others should use it (`--advertise-peer`).
    pub peer_address: String,
    /// For the founder: the members to found with if no cluster answers.
    pub founding: Option<BTreeMap<MemberId, String>>,
}

/// Makes this member a voter (or founds the cluster), then returns. The member aborts it when
/// it stops.
pub async fn join(consensus: Arc<Consensus>, plan: JoinPlan) {
    let me = consensus.member_id();
    let asker = Asker {
        consensus: consensus.clone(),
        via: plan.via,
    };
    let add = MembershipChange::AddLearner {
        id: me,
        peer_address: plan.peer_address,
    };
    let give_up_at = plan
        .founding
        .as_ref()
        .map(|_| Instant::now() + consensus.election_timeout() * 2);
    let Some(mut view) = asker.ask(add.clone(), give_up_at).await else {
        if let Some(members) = plan.founding {
            tracing::info!("no cluster answers at --join-via: founding it");
            consensus.admit_raft_traffic();
            if let Err(error) = consensus.found(members).await {
                tracing::error!(%error, "could not found the cluster");
            }
        }
        return;
    };
    if view.is_voter(me) {
        tracing::warn!(
            member = %me,
            "the cluster counts this member as a voter, but its data directory is new (lost?): \
             having it removed and added again as a learner"
        );
        asker.ask(MembershipChange::Remove { id: me }, None).await;
        match asker.ask(add, None).await {
            Some(added) => view = added,
            None => return,
        }
    }
    // The cluster counts this member as a learner now: it may take the log.
    consensus.admit_raft_traffic();
    if !view.is_voter(me) {
        tracing::info!(member = %me, "added as a learner; asking to be promoted once caught up");
        if asker
            .ask(MembershipChange::Promote { id: me }, None)
            .await
            .is_none()
        {
            return;
        }
    }
    tracing::info!(member = %me, "joined the cluster as a voter");
}

/// Sends a member's own membership changes through the `--join-via` addresses.
struct Asker {
    consensus: Arc<Consensus>,
    via: Vec<String>,
}

impl Asker {
    /// Asks until a member answers with the change made, trying every address once a round;
    /// `None` when `give_up_at` passes first.
    async fn ask(
        &self,
        change: MembershipChange,
        give_up_at: Option<Instant>,
    ) -> Option<MembershipView> {
        let call = JoinCall {
            change,
            relayed: false,
        };
        let mut logged: Option<Instant> = None;
        loop {
            let mut reasons = Vec::new();
            for address in &self.via {
                match self.ask_once(address, &call).await {
                    Ok(view) => return Some(view),
                    Err(None) => return None,
                    Err(Some(reason)) => reasons.push(format!("{address}: {reason}")),
                }
            }
            if give_up_at.is_some_and(|at| Instant::now() >= at) {
                return None;
            }
            if logged.is_none_or(|at| at.elapsed() >= LOG_INTERVAL) {
                tracing::info!(change = ?call.change, answers = %reasons.join("; "), "joining: no member could make the change yet; retrying");
                logged = Some(Instant::now());
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// One try at `address`: the membership after the change, or why not (`None`: stop).
    async fn ask_once(
        &self,
        address: &str,
        call: &JoinCall,
    ) -> Result<MembershipView, Option<String>> {
        let timeout = self.consensus.request_timeout();
        let answer: Result<Result<MembershipView, ConsensusError>, PeerCallError> = self
            .consensus
            .peers()
            .call(
                address,
                PeerMethod::Forward,
                MessageKind::Join,
                call,
                timeout,
            )
            .await;
        match answer {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(ConsensusError::ShuttingDown)) => Err(None),
            Ok(Err(error)) => Err(Some(error.to_string())),
            Err(error) => Err(Some(error.to_string())),
        }
    }
}
