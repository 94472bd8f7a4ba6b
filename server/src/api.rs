//! Code generated from `server/proto` (see build.rs).

/// The public API, package `cathedral.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cathedral.v1");
}

/// Node-to-node calls, package `cathedral.internal.v1`.
pub mod internal {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cathedral.internal.v1");
}

/// The encoded descriptor set of every proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cathedral_descriptor.bin"));
