//! Fuzzes the decoding of what consensus stores in its log: entries (`Entry`, whose normal
//! payload is an `fsm::Proposal`) and the records beside them (the vote, the committed and
//! purged log ids). The input is the stored value: a 4-byte little-endian format version, then
//! the body.
//!
//! The server's own decoders (`decode_log_entry`, `decode_log_meta` in `consensus/wire.rs`)
//! are not public. Until they are, this target checks the version as they do and decodes the
//! body with the codec they share with peer messages (bincode with fixed-width integers,
//! bounded by the input's length, no trailing bytes), reached through the public
//! `decode_peer`. Property: decoding never panics, and whatever decodes encodes again.

#![no_main]

use coord_proto::v1::peer::PeerMessage;
use coord_server::consensus::{decode_peer, encode_peer, Entry, MessageKind};
use libfuzzer_sys::fuzz_target;
use openraft::{LogId, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The log's format version (`LOG_ENTRY_FORMAT` in `consensus/wire.rs`).
const LOG_ENTRY_FORMAT: u32 = 1;

/// Decodes a stored body the way `decode_log_entry` and `decode_log_meta` do, and encodes
/// what decodes.
fn decode_stored<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let kind = MessageKind::AppendEntries;
    let message = PeerMessage {
        payload: body.to_vec(),
        format: encode_peer(kind, &()).format,
        kind: kind.code(),
    };
    let value: T = decode_peer(&message, kind).ok()?;
    let _ = encode_peer(kind, &value);
    Some(value)
}

fuzz_target!(|bytes: &[u8]| {
    let Some((version, body)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    if u32::from_le_bytes(*version) != LOG_ENTRY_FORMAT {
        return;
    }
    let _ = decode_stored::<Entry>(body);
    let _ = decode_stored::<Vote<u64>>(body);
    let _ = decode_stored::<Option<LogId<u64>>>(body);
});
