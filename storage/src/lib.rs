//! Cathedral's storage engine: a segmented, checksummed, group-committed log of
//! `(index, term, payload)` records, with metadata kept beside it.
//!
//! The crate knows nothing of Raft or jobs. Byte layouts are in `storage/FORMAT.md`.
//!
//! # Layout
//!
//! - `log`: the [`Log`] — its public surface (`log/mod.rs`), the record codec
//!   (`log/record.rs`), segment files with headers, footers and memory-mapped reads
//!   (`log/segment.rs`), the acknowledgment file that holds the durable watermark
//!   (`log/acked.rs`), the group-commit writer thread (`log/writer.rs`), recovery on open
//!   (`log/recovery/`), read-only inspection (`log/inspect.rs`), and the directory
//!   listing and damage rules those two share (`log/layout.rs`).
//! - `meta`: the metadata (vote, committed, purged; owed entries, accepted losses),
//!   replaced atomically, in two copies.
//! - `snapshot`: snapshot files, the [`SnapshotStore`], chunked transfer, export and import.
//! - `compaction`: the [`CompactionPolicy`], a pure function deciding snapshots and purges.
//! - `options`: [`Options`] and the named bounds.
//! - `fsutil`: file-system calls with failpoints, atomic replace, and the directory lock.
//! - `finding`: [`Finding`] — a problem the read-only checks found (file, byte, reason).
//! - `error`: [`Error`] and [`Result`].
//!
//! # A data directory
//!
//! ```text
//! <dir>/LOCK               flock held while a Log is open
//! <dir>/meta               metadata, atomically replaced
//! <dir>/meta.mirror        its second copy
//! <dir>/log/<first>.seg    segments named by their first index, 20 digits
//! <dir>/log/prealloc.tmp   the next segment, preallocated ahead of need
//! <dir>/log/acked          the active segment's durable watermark
//! <dir>/snapshots/*.snap   snapshots (a SnapshotStore opened on this directory)
//! <dir>/salvage/<time>/    what salvage mode moved aside
//! ```
//!
//! # Example
//!
//! ```
//! use cathedral_storage::{Durability, Entry, Log, Options};
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Options::default()).unwrap();
//! log.append(&[Entry { index: 1, term: 1, payload: b"hello" }], Durability::Durable).unwrap();
//! assert_eq!(log.get(1).unwrap().unwrap().payload, b"hello");
//! ```

mod compaction;
#[cfg(feature = "disk-faults")]
pub mod disk_faults;
mod error;
mod finding;
mod fsutil;
mod log;
mod meta;
mod options;
mod snapshot;

pub use compaction::{CompactionDecision, CompactionPolicy};
pub use error::{Error, Result};
pub use finding::{Finding, FindingKind};
pub use fsutil::{replace_atomically, DirLock};
pub use log::{
    inspect, inspect_with_progress, AcknowledgedCut, Entry, InspectReport, Log, Record,
    RecoveryReport, Salvaged, SegmentReport, Stats, TornTail, Visit, Watermark, ACKED_FILE,
    ACKED_SYNC_MS,
};
pub use meta::{
    read_metadata, read_purge_point, Loss, Metadata, Owed, LOSSES_MAX, META_FIELD_BYTES_MAX,
};
pub use options::{
    Durability, Options, RecoveryMode, SyncObserver, RECORD_BYTES_LIMIT, SEGMENT_BYTES_LIMIT,
    SEGMENT_BYTES_MIN,
};
pub use snapshot::{
    describe as describe_snapshot, export as export_snapshot, snapshots_dir,
    survey as survey_snapshots, verify_file as verify_snapshot, Chunk, ChunkReceiver, ChunkSender,
    CoverageGap, DamagedSnapshot, Progress, ReceiverLimits, SnapshotInfo, SnapshotMeta,
    SnapshotOptions, SnapshotReader, SnapshotStats, SnapshotStore, SnapshotSurvey, SnapshotWriter,
    CHUNK_BYTES_DEFAULT, DAMAGED_SUFFIX, SNAPSHOTS_DIR, SNAPSHOT_META_BYTES_MAX, SUPERSEDED_SUFFIX,
};
