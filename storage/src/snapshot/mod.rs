//! Snapshots: a compressed, checksummed file per snapshot, a store that installs them
//! atomically and keeps the newest few, chunked transfer between nodes, export and import.
//!
//! - `format.rs`: the file layout (FORMAT.md § "Snapshot file").
//! - `store.rs`: [`SnapshotStore`], [`SnapshotWriter`], [`SnapshotReader`], export, import.
//! - `transfer.rs`: [`ChunkSender`], [`ChunkReceiver`], [`Chunk`].

mod format;
mod store;
mod transfer;

pub use format::{SnapshotMeta, SNAPSHOT_META_BYTES_MAX};
pub use store::{
    describe, export, list_dir, verify_file, SnapshotInfo, SnapshotOptions, SnapshotReader,
    SnapshotStore, SnapshotWriter,
};
pub use transfer::{
    Chunk, ChunkReceiver, ChunkSender, Progress, ReceiverLimits, CHUNK_BYTES_DEFAULT,
};
