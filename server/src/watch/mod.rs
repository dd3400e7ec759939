//! Watches: the member's recent history of applied events (`history.rs`), what each watch
//! selects from it (`filter.rs`), a stream's watches with where each stands (`set.rs`), and the
//! `AwaitTurn` waits by the paths that can end them (`turns.rs`). The gRPC watch service
//! streams from these; the state machine extends the history and wakes the turn waits through
//! the apply observer the member wires in.

mod filter;
mod history;
mod set;
mod turns;

pub use filter::{EventClass, WatchFilter};
pub use history::{Compacted, History, HistoryLimits};
pub use set::{ActiveWatch, WatchSet};
pub use turns::{TurnRegistration, TurnWaiters};
