//! Fuzzes the decoding of peer messages: every request the peer service decodes, and every
//! reply a member decodes from another member.
//!
//! Input: a selector byte, then the payload. The low seven bits of the selector pick the
//! decoded type (below, modulo their number); the message carries this build's format and the
//! type's kind, unless the selector's high bit is set: then the next eight bytes give the
//! format and the kind (each a little-endian `u32`), to exercise their checks too.
//! Property: decoding never panics; what decodes encodes again, and a forwarded write's
//! limits check (the peer service's next step) does not panic either.

#![no_main]

use coord_proto::v1::peer::PeerMessage;
use coord_server::consensus::{
    decode_peer, encode_peer, ConsensusError, MembershipChange, MessageKind, TypeConfig, WriteCall,
    Written,
};
use coord_server::fsm::Limits;
use coord_server::membership::Hello;
use coord_server::sessions::{KeepAliveCall, LeaseView, ListSessionsCall};
use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `message` as a `T` of `kind`, and encodes what decodes.
fn decode<T: DeserializeOwned + Serialize>(message: &PeerMessage, kind: MessageKind) -> Option<T> {
    let value: T = decode_peer(message, kind).ok()?;
    let _ = encode_peer(kind, &value);
    Some(value)
}

/// Decodes `message` as a `T` of `kind`, and encodes what decodes; the value is not needed.
fn check<T: DeserializeOwned + Serialize>(message: &PeerMessage, kind: MessageKind) {
    let _ = decode::<T>(message, kind);
}

/// The decoded types: requests (as `grpc/peer_service.rs` decodes them), then replies (as
/// `consensus/network.rs` and `consensus/peer_client.rs` decode them).
const TYPES: [MessageKind; 16] = [
    MessageKind::AppendEntries,
    MessageKind::Vote,
    MessageKind::InstallSnapshot,
    MessageKind::ReadIndex,
    MessageKind::Hello,
    MessageKind::Write,
    MessageKind::Membership,
    MessageKind::KeepAlive,
    MessageKind::ListSessions,
    MessageKind::AppendEntries,
    MessageKind::Vote,
    MessageKind::InstallSnapshot,
    MessageKind::ReadIndex,
    MessageKind::Write,
    MessageKind::Membership,
    MessageKind::ListSessions,
];

fn decode_selected(selected: usize, message: &PeerMessage) {
    let kind = TYPES[selected];
    match selected {
        0 => check::<AppendEntriesRequest<TypeConfig>>(message, kind),
        1 => check::<VoteRequest<u64>>(message, kind),
        2 => check::<InstallSnapshotRequest<TypeConfig>>(message, kind),
        3 => check::<()>(message, kind),
        // Also the reply to a hello.
        4 => check::<Hello>(message, kind),
        5 => {
            if let Some(call) = decode::<WriteCall>(message, kind) {
                let _ = call.proposal.check_limits(&Limits::default());
            }
        }
        6 => check::<MembershipChange>(message, kind),
        7 => check::<KeepAliveCall>(message, kind),
        8 => check::<ListSessionsCall>(message, kind),
        9 => check::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(message, kind),
        10 => check::<Result<VoteResponse<u64>, RaftError<u64>>>(message, kind),
        11 => check::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(
            message, kind,
        ),
        // A read index, and also a keep-alive's reply (the same type).
        12 => check::<Result<u64, ConsensusError>>(message, kind),
        13 => check::<Result<Written, ConsensusError>>(message, kind),
        14 => check::<Result<(), ConsensusError>>(message, kind),
        15 => check::<Result<Vec<LeaseView>, ConsensusError>>(message, kind),
        _ => unreachable!("the selector is reduced modulo {}", TYPES.len()),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    let selected = usize::from(selector & 0x7f) % TYPES.len();
    let kind = TYPES[selected];
    let (format, kind, payload) = if selector & 0x80 == 0 {
        (encode_peer(kind, &()).format, kind.code(), rest)
    } else {
        let Some((header, payload)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let format = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let kind = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        (format, kind, payload)
    };
    let message = PeerMessage {
        payload: payload.to_vec(),
        format,
        kind,
    };
    decode_selected(selected, &message);
});
