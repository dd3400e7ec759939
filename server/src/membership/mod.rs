//! Membership knowledge beyond the Raft configuration: other members' client addresses and
//! reachability (`directory.rs`), learned by the `Greeter` (`greeter.rs`) over the peer port.

mod directory;
mod greeter;

pub use directory::{MemberDirectory, PEER_SILENCE_MAX};
pub use greeter::{Greeter, Hello, HELLO_INTERVAL};
