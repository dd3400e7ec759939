//! `AwaitTurn` of the `coord.v1.Watch` service: a recipe waiter's turn, decided on the member
//! instead of by the client from a watch event and a listing of its own.
//!
//! A lock hand-off used to cost the next waiter a watch event, then a listing round trip to
//! learn whether the turn was really its own (an earlier waiter may have abandoned). Here the
//! member checks the turn (`Namespace::turn`, pure) after each applied change of a path that
//! can end the wait, and answers once; the client's recipe confirms its session as before.
//!
//! ```text
//!  barrier (min_revision) ─► register under the watch paths ─► check ─► granted: answer
//!                                   ▲                             │
//!                                   └── a watched path changed ◄──┤ waiting
//!                                       (woken by the observer)   └─► wait over: answer (not granted)
//! ```
//!
//! Invariants:
//! - every check reads this member's applied tree at or after the barrier, and a check runs
//!   after the registration it relies on, so no change that could grant the turn is missed
//!   (see `TurnWaiters`);
//! - a wait holds one place of `--max-watches` and ends by itself within `WAIT_MAX`, or with a
//!   retryable status when the member stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::access::Access;
use super::namespace_service::{parse_path, read_barrier};
use super::status::{fsm_status, going_away_status};
use super::watch_budget::{BudgetPlace, WatchBudget};
use crate::auth::Permission;
use crate::consensus::Consensus;
use crate::fsm::{FsmError, Revision, Turn, TurnRule};
use crate::watch::{TurnRegistration, TurnWaiters};

/// The longest one `AwaitTurn` waits; a client that wants longer asks again.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// What `AwaitTurn` needs of the watch service.
pub(super) struct TurnContext<'a> {
    pub(super) consensus: &'a Consensus,
    pub(super) access: &'a Access,
    pub(super) turns: &'a Arc<TurnWaiters>,
    pub(super) budget: &'a Arc<WatchBudget>,
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
}

/// A request's checked parts.
struct Asked {
    directory: crate::fsm::NodePath,
    name: String,
    token: Revision,
    rule: TurnRule,
    wait: Duration,
}

fn check(request: &pb::AwaitTurnRequest) -> Result<Asked, Status> {
    let directory = parse_path(&request.directory)?;
    let rule = TurnRule::new(request.blocking_prefixes.clone(), request.permits)
        .map_err(|error| fsm_status(&error))?;
    Ok(Asked {
        directory,
        name: request.name.clone(),
        token: Revision(request.token),
        rule,
        wait: Duration::from_millis(request.wait_ms).min(WAIT_MAX),
    })
}

/// Serves one `AwaitTurn` (see the module docs).
pub(super) async fn await_turn(
    mut context: TurnContext<'_>,
    request: Request<pb::AwaitTurnRequest>,
) -> Result<Response<pb::AwaitTurnResponse>, Status> {
    let who = context.access.identify(&request)?;
    let request = request.into_inner();
    context
        .access
        .require(&who, Permission::Read, &request.directory)?;
    let asked = check(&request)?;
    read_barrier(context.consensus, request.read).await?;
    let deadline = tokio::time::Instant::now() + asked.wait;
    let wake = Arc::new(Notify::new());
    let mut registration: Option<TurnRegistration> = None;
    let mut place: Option<BudgetPlace> = None;
    loop {
        let (revision, turn) = context.consensus.replica().read(|namespace| {
            let turn = namespace.turn(&asked.directory, &asked.name, asked.token, &asked.rule);
            (namespace.revision(), turn)
        });
        let (blockers, watch) = match turn.map_err(|error| fsm_status(&error))? {
            Turn::Granted => return Ok(answer(context.consensus, revision, None, place.is_some())),
            Turn::Waiting { blockers, watch } => (blockers, watch),
        };
        if asked.wait.is_zero() {
            return Ok(answer(context.consensus, revision, Some(blockers), true));
        }
        if place.is_none() {
            place = Some(context.budget.place().ok_or_else(|| {
                tracing::warn!(
                    max = context.budget.max,
                    "AwaitTurn refused: the member serves its most watches"
                );
                fsm_status(&FsmError::LimitExceeded {
                    what: "watches on this member (--max-watches; a waiting AwaitTurn is one)"
                        .into(),
                    size: (context.budget.max as u64).saturating_add(1),
                    limit: context.budget.max as u64,
                })
            })?);
        }
        if registration.as_ref().map(TurnRegistration::paths) != Some(watch.as_slice()) {
            // File the wait first, then check again: a change between the check above and
            // the registration would otherwise go unseen.
            registration = Some(context.turns.register(watch, wake.clone()));
            continue;
        }
        tokio::select! {
            () = wake.notified() => {
                context
                    .budget
                    .counters()
                    .turn_wakeups
                    .fetch_add(1, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok(answer(context.consensus, revision, Some(blockers), true));
            }
            () = super::status::stopped(&mut context.stopping) => {
                return Err(going_away_status(context.consensus.member_id().0));
            }
        }
    }
}

/// The answer for a check at `revision`: granted, or `blockers` still ahead; `waited` when
/// an earlier check did not grant the turn.
fn answer(
    consensus: &Consensus,
    revision: Revision,
    blockers: Option<u64>,
    waited: bool,
) -> Response<pb::AwaitTurnResponse> {
    Response::new(pb::AwaitTurnResponse {
        header: Some(super::header::response_header(consensus, Some(revision))),
        granted: blockers.is_none(),
        blockers: blockers.unwrap_or(0),
        waited,
    })
}
