//! Watches: the member's recent history of applied events (`history.rs`) and what each watch
//! selects from it (`filter.rs`). The gRPC watch service streams from these; the state machine
//! extends the history through the apply observer the member wires in.

mod filter;
mod history;

pub use filter::{EventClass, WatchFilter};
pub use history::{Compacted, History, HistoryLimits};
