//! The HTTP/2 channel a member's calls to one peer go over (openraft's and Coord's):
//! `coord_tls::Http2Channel`, which hands each call to the connection's task itself rather
//! than through tonic's `tower::buffer` task, with the peer port's flow-control windows and
//! HTTP/2 keep-alive pings. Each connection opened adds one to the member's count of peer
//! connections (`coord_peer_connections_opened_total`).
//!
//! Invariant: a connection whose peer stops answering pings (paused, cut off, or wedged
//! anywhere between the two members' connection tasks) is closed within
//! `PEER_KEEPALIVE_INTERVAL + PEER_KEEPALIVE_TIMEOUT`, failing every call on it, and the next
//! call dials a new one. openraft's deadlines end calls, never connections: before the pings a
//! link whose calls kept timing out kept sending them down the same silent connection.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use coord_tls::{ChannelConnector, Http2Channel, Http2Settings, KeepAlive};
use tonic::codegen::http::Uri;

/// HTTP/2 flow-control windows of peer connections: a replication batch of a few MiB crosses
/// in a few round trips rather than hundreds of 64 KiB windows.
pub const PEER_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const PEER_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// How often a peer connection is pinged, busy or idle, and how long a ping may go unanswered
/// before the connection is closed. A member answers pings from its connection's task, however
/// slow its Raft core or its disk, so only a connection that cannot carry anything fails them;
/// about one and a half election timeouts (default 1 s) in all.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The channel every call to one peer goes over.
pub type PeerChannel = Http2Channel;

/// A lazily connecting channel to the peer at `origin`, counting the connections it opens
/// into `opened`.
pub fn peer_channel(
    origin: Uri,
    connector: ChannelConnector,
    opened: Arc<AtomicU64>,
) -> PeerChannel {
    let settings = Http2Settings {
        stream_window_bytes: Some(PEER_STREAM_WINDOW_BYTES),
        connection_window_bytes: Some(PEER_CONNECTION_WINDOW_BYTES),
        keep_alive: Some(KeepAlive {
            interval: PEER_KEEPALIVE_INTERVAL,
            timeout: PEER_KEEPALIVE_TIMEOUT,
        }),
    };
    Http2Channel::counting(origin, connector, settings, opened)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use coord_proto::v1::peer::peer_client::PeerClient;
    use coord_proto::v1::peer::PeerMessage;
    use coord_tls::TcpConnector;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A peer that accepts connections and reads everything sent on them but never answers
    /// (a paused process, or a middlebox that silently stopped forwarding); returns its address
    /// and how many connections it accepted.
    async fn silent_peer() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut sink = vec![0u8; 64 * 1024];
                    while matches!(connection.read(&mut sink).await, Ok(read) if read > 0) {}
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn a_call_to_a_peer_that_went_silent_fails_and_the_next_call_dials_anew() {
        let (address, accepted) = silent_peer().await;
        let origin: Uri = format!("http://{address}").parse().unwrap();
        let connector = ChannelConnector::Tcp(TcpConnector::new(Duration::from_secs(1)));
        let opened = Arc::new(AtomicU64::new(0));
        let channel = peer_channel(origin.clone(), connector, opened.clone());
        let mut client = PeerClient::with_origin(channel, origin);
        // Far longer than the pings take to give up (1.5 s), and bounded.
        let bound = Duration::from_secs(20);

        // A call with no deadline of its own: the pings end it, not openraft.
        let first = tokio::time::timeout(bound, client.read_index(PeerMessage::default()))
            .await
            .expect("the keep-alive pings close the silent connection");
        let status = first.expect_err("a silent peer answers nothing");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{status:?}");
        assert_eq!(
            opened.load(Ordering::SeqCst),
            1,
            "the connection is counted once"
        );

        // The next call goes over a new connection rather than the dead one.
        let second = tokio::time::timeout(bound, client.read_index(PeerMessage::default()))
            .await
            .expect("the keep-alive pings close the second connection too");
        assert!(second.is_err());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(
            opened.load(Ordering::SeqCst),
            2,
            "the new connection is counted"
        );
    }
}
