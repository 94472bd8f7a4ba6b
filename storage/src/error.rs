//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What failed, and on which object.
///
/// The type is `Clone` because a log that failed stop hands the same error to every later
/// caller (the I/O source is shared behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// Bytes on disk are not what the format says they must be. `offset` is the byte offset
    /// within `file` where the bad structure begins.
    #[error("corruption in {} at byte offset {offset}: {reason}", file.display())]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Records whose append had been acknowledged as durable are damaged or missing
    /// (indexes `first..=last`, from byte `offset` of `file` on). A crash tears only a
    /// write that was never acknowledged, so this is never cut as a torn tail: restore the
    /// entries from a peer or an export, or accept the loss (`cathedral-log repair
    /// --accept-loss`).
    #[error("acknowledged entries damaged: indexes {first}..={last} in {} from byte offset {offset}: {reason}", file.display())]
    AcknowledgedDamaged {
        file: PathBuf,
        offset: u64,
        first: u64,
        last: u64,
        /// The term of entry `last` (what a cluster member must fetch again through).
        term: u64,
        reason: String,
    },

    /// A file written by a newer (or unknown) format version.
    #[error("{} has format version {found}; this build reads version {supported}", file.display())]
    UnsupportedVersion {
        file: PathBuf,
        found: u16,
        supported: u16,
    },

    /// Another process (or another handle in this one) holds the directory.
    #[error("{} is locked by another process (lock file {}); stop it first", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },

    /// Input past a named bound. Nothing of the request was written.
    #[error("{bound} exceeded: {value} > {limit}")]
    LimitExceeded {
        bound: &'static str,
        value: u64,
        limit: u64,
    },

    /// An append whose first index is not the next index of the log.
    #[error("non-contiguous append: expected index {expected}, got {got}")]
    NonContiguous { expected: u64, got: u64 },

    /// A read or truncate below the first index still held (compacted away).
    #[error("index {index} is purged: the log starts at {first_index}")]
    Purged { index: u64, first_index: u64 },

    /// A call whose arguments are invalid on their own.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A snapshot chunk was refused; the receiver is unchanged and can take the right one.
    #[error("snapshot chunk at offset {offset} rejected: {reason}")]
    ChunkRejected { offset: u64, reason: String },

    /// An import of a snapshot older than one already held, without force.
    #[error("snapshot {given} is older than {held}, already held; force the import to install it anyway")]
    SnapshotOlder { given: String, held: String },

    /// The log failed stop after the error in `cause`; it accepts no more calls.
    #[error("log stopped after a fatal error: {cause}")]
    Stopped { cause: Arc<Error> },

    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl fmt::Display,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn limit(bound: &'static str, value: u64, limit: u64) -> Error {
        Error::LimitExceeded {
            bound,
            value,
            limit,
        }
    }

    /// True for errors that leave the log unusable (it failed stop or was closed).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Stopped { .. } | Error::Closed)
    }
}
