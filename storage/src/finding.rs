//! A problem found on disk by the read-only checks (`inspect`, the snapshot survey): what
//! kind, which file, which byte, why. Shared by every file type so that tools print them the
//! same way.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A partial last write at the end of the log, past everything acknowledged; a normal
    /// open cuts it (`repair` too).
    TornTail,
    /// Records whose append was acknowledged as durable are damaged or missing (at or
    /// below the acknowledged watermark): never cut by a normal open.
    AcknowledgedDamaged,
    /// Damage with valid data after it, a broken header, footer, metadata or snapshot file.
    Corruption,
    /// Files that are each intact but do not fit together (gaps, overlaps, terms going
    /// down, a purge point past the data, a compacted log no snapshot covers).
    Inconsistent,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl Finding {
    pub(crate) fn new(
        kind: FindingKind,
        file: &Path,
        offset: u64,
        reason: impl Into<String>,
    ) -> Finding {
        Finding {
            kind,
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// The finding an error about damaged bytes describes; other errors (I/O, …) are
    /// returned as they are.
    pub(crate) fn from_error(e: Error) -> std::result::Result<Finding, Error> {
        match e {
            Error::Corruption {
                file,
                offset,
                reason,
            } => Ok(Finding {
                kind: FindingKind::Corruption,
                file,
                offset,
                reason,
            }),
            Error::AcknowledgedDamaged {
                file,
                offset,
                first,
                last,
                reason,
                ..
            } => Ok(Finding {
                kind: FindingKind::AcknowledgedDamaged,
                file,
                offset,
                reason: format!("indexes {first}..={last}: {reason}"),
            }),
            Error::UnsupportedVersion {
                file,
                found,
                supported,
            } => Ok(Finding {
                kind: FindingKind::Corruption,
                file,
                offset: 8,
                reason: format!("format version {found}, this build reads {supported}"),
            }),
            other => Err(other),
        }
    }
}
