//! `HoldState`: whether the holder of a recipe node may act now, and the pure rule
//! (`HoldState::next`) by which a holding's monitor moves it, modelled on Curator's connection
//! states (SUSPENDED, RECONNECTED, LOST):
//!
//! ```text
//!   Held ──(session Suspended)──► Suspended ──(session Connected, node confirmed)──► Held
//!     │                               │
//!     └──(session Expired, node gone, keep-alives stopped past safe_until)──► Lost (final)
//! ```
//!
//! A leaf of the recipes: it knows the session's states and `LostReason`, nothing else.
//! Invariants: `Lost` is final; `Suspended` turns `Held` only after a linearizable read showed
//! the node still there with its token while the session was confirmed alive, so the holding
//! resumes with the same token only when nobody else can have held it in between.

use super::lost_reason::LostReason;
use crate::session::SessionState;

/// Whether the holder of a lock, permit, leadership or barrier place may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// The node is held and the session confirmed alive in time: act as the holder (passing
    /// the token downstream).
    Held,
    /// The session cannot be confirmed alive in time ([`SessionState::Suspended`]): stop
    /// acting as the holder now. The node may still be held; if a keep-alive is acknowledged
    /// again and the node is still there, the holding returns to `Held` with the same token.
    Suspended,
    /// The node is no longer held, for the reason given. Final: acquire anew.
    Lost(LostReason),
}

/// What a holding's monitor observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldEvent {
    /// The session's state at this instant.
    Session(SessionState),
    /// A linearizable read found the node with its token (`current`) or not, and the session
    /// was in state `session` once the read returned.
    NodeConfirmed {
        current: bool,
        session: SessionState,
    },
    /// The node's watch saw it deleted, for this reason.
    NodeGone(LostReason),
    /// The session's keep-alives stopped for good (its `Session` was dropped) and its
    /// `safe_until` passed: it will expire and cannot recover.
    KeepAlivesStopped,
}

impl HoldState {
    /// The state after `event` (see the module documentation).
    pub(crate) fn next(self, event: HoldEvent) -> HoldState {
        if let HoldState::Lost(reason) = self {
            return HoldState::Lost(reason);
        }
        match event {
            HoldEvent::NodeGone(reason) => HoldState::Lost(reason),
            HoldEvent::KeepAlivesStopped => HoldState::Lost(LostReason::SessionUnsafe),
            HoldEvent::Session(SessionState::Expired)
            | HoldEvent::NodeConfirmed {
                session: SessionState::Expired,
                ..
            } => HoldState::Lost(LostReason::SessionExpired),
            HoldEvent::NodeConfirmed { current: false, .. } => {
                HoldState::Lost(LostReason::NodeDeleted)
            }
            HoldEvent::Session(SessionState::Suspended)
            | HoldEvent::NodeConfirmed {
                session: SessionState::Suspended,
                ..
            } => HoldState::Suspended,
            // Confirmed alive, but a suspended holding waits for its node to be confirmed.
            HoldEvent::Session(SessionState::Connected) => self,
            HoldEvent::NodeConfirmed {
                current: true,
                session: SessionState::Connected,
            } => HoldState::Held,
        }
    }

    /// Whether the node must be confirmed before the holding can be `Held` again: it is
    /// suspended and the session is confirmed alive.
    pub(crate) fn awaits_confirmation(self, session: SessionState) -> bool {
        self == HoldState::Suspended && session == SessionState::Connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use HoldEvent::{KeepAlivesStopped, NodeConfirmed, NodeGone, Session};
    use SessionState::{Connected, Expired, Suspended};

    fn run(events: &[HoldEvent]) -> Vec<HoldState> {
        let mut state = HoldState::Held;
        events
            .iter()
            .map(|event| {
                state = state.next(*event);
                state
            })
            .collect()
    }

    #[test]
    fn a_suspension_resumes_only_once_the_node_is_confirmed() {
        let states = run(&[
            Session(Connected),
            Session(Suspended),
            Session(Connected),
            NodeConfirmed {
                current: true,
                session: Connected,
            },
        ]);
        assert_eq!(
            states,
            [
                HoldState::Held,
                HoldState::Suspended,
                HoldState::Suspended,
                HoldState::Held
            ]
        );
        assert!(HoldState::Suspended.awaits_confirmation(Connected));
        assert!(!HoldState::Suspended.awaits_confirmation(Suspended));
        assert!(!HoldState::Held.awaits_confirmation(Connected));
    }

    #[test]
    fn a_confirmation_while_suspended_again_does_not_resume() {
        let states = run(&[
            Session(Suspended),
            NodeConfirmed {
                current: true,
                session: Suspended,
            },
        ]);
        assert_eq!(states, [HoldState::Suspended, HoldState::Suspended]);
    }

    #[test]
    fn loss_is_final_and_says_why() {
        let expired = HoldState::Lost(LostReason::SessionExpired);
        assert_eq!(run(&[Session(Suspended), Session(Expired)])[1], expired);
        let gone = run(&[
            Session(Suspended),
            NodeConfirmed {
                current: false,
                session: Connected,
            },
            Session(Connected),
            NodeConfirmed {
                current: true,
                session: Connected,
            },
        ]);
        assert!(gone[1..]
            .iter()
            .all(|state| *state == HoldState::Lost(LostReason::NodeDeleted)));
        let deleted = run(&[NodeGone(LostReason::NodeDeleted), Session(Connected)]);
        assert_eq!(deleted[1], HoldState::Lost(LostReason::NodeDeleted));
        let abandoned = run(&[Session(Suspended), KeepAlivesStopped]);
        assert_eq!(abandoned[1], HoldState::Lost(LostReason::SessionUnsafe));
        let expired_during_check = run(&[
            Session(Suspended),
            NodeConfirmed {
                current: true,
                session: Expired,
            },
        ]);
        assert_eq!(expired_during_check[1], expired);
    }
}
