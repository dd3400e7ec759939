//! Generated wire types and gRPC stubs for the Coord API (`coord.v1`) and the member-to-member
//! peer protocol (`coord.v1.peer`).
//!
//! This crate owns the wire format, and the one textual format every binary's flags share
//! (`parse_duration`); no conversions, no behaviour.
//! Invariant: within `coord.v1` fields are only ever added, never renumbered or removed.

#![allow(missing_docs, reason = "generated code")]
#![allow(clippy::all, reason = "generated code")]

pub mod codec;

/// The public client API.
pub mod v1 {
    tonic::include_proto!("coord.v1");

    /// Member-to-member messages on the peer port.
    pub mod peer {
        tonic::include_proto!("coord.v1.peer");
    }
}

/// The encoded `FileDescriptorSet` of `coord/v1/coord.proto`: what gRPC server reflection on
/// the client port describes.
pub const CLIENT_API_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coord_v1_descriptor.bin"));

/// The gRPC metadata key that carries the machine-readable error code name of a failed call.
pub const ERROR_CODE_METADATA_KEY: &str = "coord-error";

/// Parses `500ms`, `10s`, `1m`, `2h` (a number and a unit).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 1m"))?;
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} has no unit: use ms, s, m or h")),
    };
    let millis = number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    Ok(std::time::Duration::from_millis(millis))
}
