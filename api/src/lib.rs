//! Cathedral's gRPC API as code: generated from `proto/` (see build.rs) — the public
//! `cathedral.v1` services the CLI and every client use, and the node-to-node
//! `cathedral.internal.v1` calls — plus the bounds the API states. The server and the
//! clients both build on this crate, so a client does not compile the server.

/// The public API, package `cathedral.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cathedral.v1");
    include!(concat!(env!("OUT_DIR"), "/cathedral.v1.serde.rs"));
}

/// Node-to-node calls, package `cathedral.internal.v1`.
pub mod internal {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cathedral.internal.v1");
}

/// The encoded descriptor set of every proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cathedral_descriptor.bin"));

/// Jobs per `ListJobs` page when the request names no size.
pub const LIST_PAGE_SIZE_DEFAULT: u32 = 100;
/// Most jobs per `ListJobs` page; a larger page size is `INVALID_ARGUMENT`.
pub const LIST_PAGE_SIZE_MAX: u32 = 1000;
