//! Generated wire types and gRPC stubs for the Coord API (`coord.v1`) and the member-to-member
//! peer protocol (`coord.v1.peer`).
//!
//! This crate owns the wire format and nothing else: no conversions, no behaviour.
//! Invariant: within `coord.v1` fields are only ever added, never renumbered or removed.

#![allow(missing_docs, reason = "generated code")]
#![allow(clippy::all, reason = "generated code")]

/// The public client API.
pub mod v1 {
    tonic::include_proto!("coord.v1");

    /// Member-to-member messages on the peer port.
    pub mod peer {
        tonic::include_proto!("coord.v1.peer");
    }
}

/// The gRPC metadata key that carries the machine-readable error code name of a failed call.
pub const ERROR_CODE_METADATA_KEY: &str = "coord-error";
