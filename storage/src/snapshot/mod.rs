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
    describe, export, verify_file, SnapshotInfo, SnapshotOptions, SnapshotReader, SnapshotStore,
    SnapshotWriter,
};
pub use survey::{
    survey, CoverageGap, DamagedSnapshot, SnapshotSurvey, DAMAGED_SUFFIX, SUPERSEDED_SUFFIX,
};
pub use transfer::{
    Chunk, ChunkReceiver, ChunkSender, Progress, ReceiverLimits, CHUNK_BYTES_DEFAULT,
};
