//! The HTTP/2 channel a member's calls to one peer go over (openraft's and Coord's):
//! `coord_tls::Http2Channel`, which hands each call to the connection's task itself rather
//! than through tonic's `tower::buffer` task, with the peer port's flow-control windows.

use coord_tls::{ChannelConnector, Http2Channel, Http2Settings};
use tonic::codegen::http::Uri;

/// HTTP/2 flow-control windows of peer connections: a replication batch of a few MiB crosses
/// in a few round trips rather than hundreds of 64 KiB windows.
pub const PEER_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const PEER_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// The channel every call to one peer goes over.
pub type PeerChannel = Http2Channel;

/// A lazily connecting channel to the peer at `origin`.
pub fn peer_channel(origin: Uri, connector: ChannelConnector) -> PeerChannel {
    let settings = Http2Settings {
        stream_window_bytes: Some(PEER_STREAM_WINDOW_BYTES),
        connection_window_bytes: Some(PEER_CONNECTION_WINDOW_BYTES),
        keep_alive: None,
    };
    Http2Channel::new(origin, connector, settings)
}
