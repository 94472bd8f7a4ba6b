//! The log's part of a data directory, and the judgements that opening a log
//! (`recovery.rs`, which repairs) and inspecting one (`inspect.rs`, which only reports)
//! both make: which files are segments, where the metadata is, what a gap between
//! segments or a missing metadata file is called, and when damage is a torn tail.
//!
//! ```text
//! DIR/meta                   log id, purge point, caller's metadata (meta.rs)
//! DIR/log/<first index>.seg  segments, sorted by their first index (FORMAT.md)
//! DIR/log/*.tmp              leftovers of an interrupted write; open removes them
//! ```

use std::path::{Path, PathBuf};

use super::segment;
use crate::error::{Error, Result};

/// The log's directory under the data directory.
pub const LOG_DIR: &str = "log";
/// The metadata file under the data directory.
pub const META_FILE: &str = "meta";

/// What [`list`] found in the log directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segment files by first index, ascending.
    pub segments: Vec<(u64, PathBuf)>,
    /// `*.tmp` files: leftovers of an interrupted write.
    pub temporary: Vec<PathBuf>,
    /// Anything else (kept and warned about; never read).
    pub unknown: Vec<PathBuf>,
}

/// Lists `log_dir`; a directory that does not exist lists empty.
pub fn list(log_dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(Error::io("list", log_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", log_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first) = segment::parse_file_name(&name) {
            listing.segments.push((first, entry.path()));
        } else if name.ends_with(".tmp") {
            listing.temporary.push(entry.path());
        } else {
            listing.unknown.push(entry.path());
        }
    }
    listing.segments.sort();
    Ok(listing)
}

/// The reason given when segments exist without a metadata file.
pub fn missing_meta(segments: usize) -> String {
    format!("metadata file is missing but {segments} segment files exist")
}

/// The reason given when a segment does not start where the previous one ended.
pub fn discontinuity(first: u64, expected: u64) -> String {
    format!(
        "segment starts at index {first}, expected {expected} (one past the previous segment's last record)"
    )
}

/// Damage is a torn tail — a write the crash interrupted, cut off by open — only when it
/// was seen as torn (nothing valid after it) in the last segment; anywhere else it is
/// corruption.
pub fn is_torn_tail(torn: bool, last_segment: bool) -> bool {
    torn && last_segment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_sorted_leftovers_and_strangers_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(LOG_DIR);
        assert!(
            list(&dir).unwrap().segments.is_empty(),
            "missing lists empty"
        );
        std::fs::create_dir(&dir).unwrap();
        for name in [
            segment::file_name(20),
            segment::file_name(3),
            "x.tmp".into(),
            "notes".into(),
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let l = list(&dir).unwrap();
        let firsts: Vec<u64> = l.segments.iter().map(|(f, _)| *f).collect();
        assert_eq!(firsts, [3, 20]);
        assert_eq!(l.temporary, [dir.join("x.tmp")]);
        assert_eq!(l.unknown, [dir.join("notes")]);
    }

    #[test]
    fn only_the_last_segment_has_a_torn_tail() {
        assert!(is_torn_tail(true, true));
        assert!(!is_torn_tail(true, false));
        assert!(!is_torn_tail(false, true));
    }
}
