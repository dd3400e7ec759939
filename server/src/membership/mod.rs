//! Membership knowledge beyond the Raft configuration: other members' client addresses and
//! reachability (`directory.rs`), learned by the `Greeter` (`greeter.rs`) over the peer port;
//! and a new member joining on its own (`joiner.rs`, `--join-via`).

mod directory;
mod greeter;
mod joiner;

pub use directory::{MemberDirectory, PEER_SILENCE_MAX};
pub use greeter::{Greeter, Hello, HELLO_INTERVAL};
pub use joiner::{join, JoinPlan};
