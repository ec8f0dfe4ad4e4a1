//! Generates the protobuf types, the RingService client/server and the proto3 JSON
//! (serde) impls from `proto/` with protox: no system `protoc` needed.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 3] = [
    "ringside/v1/events.proto",
    "ringside/v1/export.proto",
    "ringside/v1/ring_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or("events/ has no parent directory")?
        .join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    // The embedded stream/KV definitions (see src/provision.rs) are part of the build too.
    println!("cargo:rerun-if-changed=../nats/streams");
    println!("cargo:rerun-if-changed=../nats/kv");

    let fds = protox::compile(PROTOS, [&root])?;
    let descriptors = fds.encode_to_vec();
    // For gRPC server reflection (`grpcurl list`): the files and everything they import.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ringside_descriptors.bin"), &descriptors)?;

    tonic_prost_build::configure()
        // Deterministic encoding: map fields iterate in key order, never hash order.
        .btree_map(".")
        // Well-known types come from pbjson-types so they serialize as proto3 JSON
        // (RFC 3339 timestamps, "1.5s" durations). The order matters: enabling
        // well-known types first avoids a duplicate extern path for .google.protobuf.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // ... but for Timestamp, whose JSON pbjson-types writes with `+00:00`: ours
        // writes the `Z` the mapping prescribes (src/timestamp.rs).
        .extern_path(".google.protobuf.Timestamp", "crate::timestamp::Timestamp")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .btree_map(["."])
        // Readers ignore JSON fields they do not know: add-only evolution (docs/events.md).
        .ignore_unknown_fields()
        .build(&[".ringside"])?;
    Ok(())
}
