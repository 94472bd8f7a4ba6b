//! The log's part of a data directory, and the judgements that opening a log
//! (`recovery/`, which repairs) and inspecting one (`inspect.rs`, which only reports)
//! both make: which files are segments, where the metadata is, what a gap between
//! segments or a missing metadata file is called, and when damage is a torn tail.
//!
//! ```text
//! DIR/meta, DIR/meta.mirror  log id, purge point, caller's metadata (meta.rs)
//! DIR/log/<first index>.seg  segments, sorted by their first index (FORMAT.md)
//! DIR/log/acked              the active segment's durable watermark (acked.rs)
//! DIR/log/*.tmp              leftovers of an interrupted write; open removes them
//! ```

use std::path::{Path, PathBuf};

use super::acked::{Slot, ACKED_FILE};
use super::segment::{self, Scan};
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
        } else if name == ACKED_FILE {
            // The acknowledgment file: read by recovery and inspect on their own.
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

/// What damage (or a short end) at the tail of the log is, by the durable watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing acknowledged is lost: a write the crash interrupted (or bytes after it).
    /// Cut it.
    Torn,
    /// Records whose append had been acknowledged as durable are damaged or missing:
    /// indexes `first..=last`, `term` being entry `last`'s. Never cut silently.
    Acknowledged { first: u64, last: u64, term: u64 },
    /// Damage that is neither: refuse, with the reason given.
    Corruption(String),
}

/// The facts [`judge`] decides on, about one segment.
#[derive(Debug, Clone, Copy)]
pub struct TailFacts {
    /// The segment is the log's last.
    pub last_segment: bool,
    /// Its header could be read.
    pub header_ok: bool,
    /// The log keeps an acknowledgment file (a directory from before it has none).
    pub has_watermark: bool,
    /// The newest valid slot naming the segment: `(acknowledged next index, term)`.
    pub watermark: Option<(u64, u64)>,
    /// One past the last valid record found.
    pub valid_next: u64,
    /// The damage found after the valid records has no valid record after it; with a
    /// watermark, false when the records disagree with it about a record it names.
    pub torn: bool,
}

/// Decides what a segment's damage, or its records ending short of the watermark, is —
/// the one rule open (`recovery/`) and inspect (`inspect.rs`) share. Never guesses in the
/// dangerous direction: only what lies past everything acknowledged is torn.
///
/// - Not the last segment: corruption (only the last is ever written to).
/// - With a watermark: records missing below it are acknowledged entries damaged; damage
///   past it is torn — whatever follows it, it was never acknowledged; whole records that
///   disagree with it about the last acknowledged record (`torn: false`) are corruption. No
///   slot naming the segment: corruption (a segment's first slot is durable before the
///   segment exists).
/// - Without an acknowledgment file (a directory from before it, opened once): torn when
///   nothing valid follows the damage (the writer starts a write only after the previous
///   one completed).
pub fn judge(f: TailFacts) -> Verdict {
    if !f.last_segment {
        return Verdict::Corruption("damage before the log's last segment".into());
    }
    if !f.has_watermark {
        return if f.torn && f.header_ok {
            Verdict::Torn
        } else {
            Verdict::Corruption("damage with valid records after it".into())
        };
    }
    match f.watermark {
        None => Verdict::Corruption(
            "no readable slot of the acknowledgment file names the segment: a torn write \
             cannot be told from damaged acknowledged records"
                .into(),
        ),
        Some((acked_next, term)) if acked_next > f.valid_next => Verdict::Acknowledged {
            first: f.valid_next,
            last: acked_next - 1,
            term,
        },
        Some(_) if !f.header_ok => {
            Verdict::Corruption("segment header damaged (no record was acknowledged in it)".into())
        }
        // Whole records that disagree with the watermark about the last acknowledged one
        // (its end or its term): not a write cut short, but records replaced.
        Some(_) if !f.torn => Verdict::Corruption(
            "the records disagree with the acknowledgment file about an acknowledged record".into(),
        ),
        Some(_) => Verdict::Torn,
    }
}

/// A clean scan that still disagrees with the watermark: records missing below it (the
/// segment ends early — zeroed, cut), or the record it names not where, or not of the
/// term, it says. `None` when they agree (or there is no watermark).
pub(crate) fn watermark_problem(
    scan: &Scan,
    map: &[u8],
    first: u64,
    watermark: Option<Slot>,
) -> Option<(u64, String)> {
    let w = watermark?;
    let valid_next = first + scan.offsets.len() as u64;
    if w.acked_next > valid_next {
        return Some((
            scan.end,
            format!(
                "the records end at byte {} with index {}, but every record through index {} \
                 (ending at byte {}) had been made durable and acknowledged",
                scan.end,
                valid_next.saturating_sub(1),
                w.acked_next - 1,
                w.acked_end
            ),
        ));
    }
    if w.acked_next > first {
        let k = (w.acked_next - 1 - first) as usize;
        let end = scan.offsets.get(k + 1).map_or(scan.end, |&o| o as u64);
        let at = scan.offsets[k] as usize;
        let term = u64::from_le_bytes(map[at + 16..at + 24].try_into().unwrap());
        if end != w.acked_end || term != w.acked_term {
            return Some((
                scan.offsets[k] as u64,
                format!(
                    "the acknowledgment file says record {} ends at byte {} with term {}, the \
                     segment's ends at byte {end} with term {term}",
                    w.acked_next - 1,
                    w.acked_end,
                    w.acked_term
                ),
            ));
        }
    }
    None
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

    fn facts(watermark: Option<(u64, u64)>, valid_next: u64, torn: bool) -> TailFacts {
        TailFacts {
            last_segment: true,
            header_ok: true,
            has_watermark: true,
            watermark,
            valid_next,
            torn,
        }
    }

    #[test]
    fn the_watermark_decides_torn_versus_acknowledged() {
        // Damage past the watermark is torn (the scan reports every damage torn when a
        // watermark judges it, valid records after it or not).
        assert_eq!(judge(facts(Some((50, 3)), 50, true)), Verdict::Torn);
        assert_eq!(judge(facts(Some((50, 3)), 60, true)), Verdict::Torn);
        // Whole records disagreeing with it about the record it names: corruption.
        assert!(matches!(
            judge(facts(Some((50, 3)), 60, false)),
            Verdict::Corruption(_)
        ));
        // Records missing at or below it are acknowledged entries damaged.
        assert_eq!(
            judge(facts(Some((50, 3)), 41, true)),
            Verdict::Acknowledged {
                first: 41,
                last: 49,
                term: 3
            }
        );
        // No readable slot, or not the last segment: corruption.
        assert!(matches!(
            judge(facts(None, 41, true)),
            Verdict::Corruption(_)
        ));
        let mut f = facts(Some((50, 3)), 50, true);
        f.last_segment = false;
        assert!(matches!(judge(f), Verdict::Corruption(_)));
        // A damaged header over acknowledged records is acknowledged damage; over none,
        // corruption (a header is durable before any record).
        let mut f = facts(Some((50, 3)), 40, false);
        f.header_ok = false;
        assert!(matches!(judge(f), Verdict::Acknowledged { first: 40, .. }));
        let mut f = facts(Some((40, 3)), 40, false);
        f.header_ok = false;
        assert!(matches!(judge(f), Verdict::Corruption(_)));
        // Version 1: the old rule.
        let mut f = facts(None, 41, true);
        f.has_watermark = false;
        assert_eq!(judge(f), Verdict::Torn);
        f.torn = false;
        assert!(matches!(judge(f), Verdict::Corruption(_)));
    }
}
