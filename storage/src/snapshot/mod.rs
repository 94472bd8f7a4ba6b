//! Snapshots: a compressed, checksummed file per snapshot, a store that installs them
//! atomically and keeps the newest few, chunked transfer between nodes, export and import.
//!
//! - `format.rs`: the file layout (FORMAT.md § "Snapshot file").
//! - `store.rs`: [`SnapshotStore`], [`SnapshotWriter`], [`SnapshotReader`], export, import.
//! - `survey.rs`: [`survey`] — every file of a snapshot directory, valid or a finding, and
//!   whether the snapshots cover a compacted log ([`SnapshotSurvey::gap`]).
//! - `transfer.rs`: [`ChunkSender`], [`ChunkReceiver`], [`Chunk`].

mod format;
mod store;
mod survey;
mod transfer;

pub use format::{SnapshotMeta, SNAPSHOT_META_BYTES_MAX};
pub use store::{
    describe, export, verify_file, SnapshotInfo, SnapshotOptions, SnapshotReader, SnapshotStats,
    SnapshotStore, SnapshotWriter,
};
pub use survey::{
    survey, CoverageGap, DamagedSnapshot, SnapshotSurvey, DAMAGED_SUFFIX, SUPERSEDED_SUFFIX,
};
pub use transfer::{
    Chunk, ChunkReceiver, ChunkSender, Progress, ReceiverLimits, CHUNK_BYTES_DEFAULT,
};

/// The snapshot store's directory inside a data directory: `DATA_DIR/snapshots`.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// The snapshot directory of data directory `data_dir` (every reader and the server use
/// this; the name is part of the on-disk layout in FORMAT.md).
pub fn snapshots_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(SNAPSHOTS_DIR)
}
