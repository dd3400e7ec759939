//! A leader that is gone rather than slow: the fast path of failover.
//!
//! When a leader's process dies (kill -9, a crash, the OOM killer) while its host stays up,
//! the host's kernel answers every new connection to the dead process's peer port with a
//! reset. A leader that is merely paused, overloaded or cut off never does that: its listening
//! socket still completes connections (the kernel does it for a stopped process), or the
//! attempt times out. So a refused connection is evidence no election timeout can add to: no
//! process is there to lead.
//!
//! ```text
//!  follower, no AppendEntries for a random 2 to 4 heartbeats:
//!    connect to the last known leader's peer port (at most once a heartbeat)
//!      refused ─► pre-vote now (a voter grants when it too heard nothing for 2 heartbeats
//!                 and its own connection to that port is refused)
//!      anything else (accepted, timed out, no route) ─► wait for the election timeout
//! ```
//!
//! Only the moment of asking changes: a voter that hears from a leader still refuses the
//! pre-vote, Raft's vote still decides, and a member back from a pause or a partition still
//! finds the leader's followers refusing. When the leader's host is gone as well (nothing
//! refuses), failover takes the election timeout as before.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpSocket;

/// The leader this member last knew (id and peer address), kept after the leader is lost so
/// that the member can tell whether it is gone.
#[derive(Debug, Default)]
pub struct KnownLeader(Mutex<Option<(u64, String)>>);

impl KnownLeader {
    pub fn set(&self, leader: (u64, String)) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if known.as_ref() != Some(&leader) {
            *known = Some(leader);
        }
    }

    pub fn get(&self) -> Option<(u64, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether a TCP connection to `address` (host:port) is refused: nothing listens there on a
/// host that answers. Timeouts, unreachable hosts, names that do not resolve and accepted
/// connections all say no. An accepted connection is closed at once, before any byte.
pub async fn refuses(address: &str, source: Option<IpAddr>, within: Duration) -> bool {
    let attempt = async {
        let target = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the name")
            })?;
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = source.filter(|source| source.is_ipv4() == target.is_ipv4()) {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        socket.connect(target).await.map(drop)
    };
    matches!(
        tokio::time::timeout(within, attempt).await,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_refuses_and_a_listening_one_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let closed = {
            let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().to_string()
        };
        let within = Duration::from_secs(5);
        assert!(refuses(&closed, None, within).await);
        assert!(!refuses(&open, None, within).await);
        let loopback = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(refuses(&closed, loopback, within).await);
        assert!(!refuses("no-such-host.invalid:7401", None, within).await);
        assert!(!refuses("not an address", None, within).await);
    }

    #[test]
    fn the_known_leader_is_kept_until_another_is_known() {
        let known = KnownLeader::default();
        assert_eq!(known.get(), None);
        known.set((1, "a:1".into()));
        known.set((2, "b:1".into()));
        assert_eq!(known.get(), Some((2, "b:1".into())));
    }
}
