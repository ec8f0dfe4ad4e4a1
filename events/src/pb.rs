//! Generated protobuf types of `proto/ringside/v1` (prost), the RingService client and
//! server (tonic), and their proto3 JSON serde impls (pbjson).
//!
//! Generated code is exempt from the crate's doc and visibility lints; the contract is
//! documented in the `.proto` files and docs/events.md.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/ringside.v1.rs"));

/// The encoded `FileDescriptorSet` of `proto/` and its imports, for gRPC server
/// reflection (what `grpcurl list` and `grpcurl describe` ask).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ringside_descriptors.bin"));
include!(concat!(env!("OUT_DIR"), "/ringside.v1.serde.rs"));
