//! Watches: the member's recent history of applied events (`history.rs`), what each watch
//! selects from it (`filter.rs`), and a stream's watches with where each stands (`set.rs`). The gRPC watch service streams from these; the state machine
//! extends the history through the apply observer the member wires in.

mod filter;
mod history;
mod set;

pub use filter::{EventClass, WatchFilter};
pub use history::{Compacted, History, HistoryLimits};
pub use set::{ActiveWatch, WatchSet};
