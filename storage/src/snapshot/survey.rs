//! The snapshot survey: every file of a snapshot directory accounted for, so that nothing
//! damaged is ever skipped in silence. The offline tools, replay and the server's start-up
//! all read a snapshot directory through it, so they agree on what is damaged.
//!
//! | file | meaning |
//! |---|---|
//! | `*.snap` | a snapshot: valid, or a damaged-snapshot finding (file, byte, reason) |
//! | `*.snap.damaged` | a damaged snapshot a server set aside at start: still a finding |
//! | `*.snap.superseded` | kept aside by a forced import; never read |
//! | `*.tmp` | a write or a transfer in progress (or cut short); removed when a store opens |
//! | anything else | a finding: not a snapshot file |

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::store::{describe, verify_file, SnapshotInfo, SUFFIX};
use crate::error::{Error, Result};
use crate::finding::{Finding, FindingKind};

/// Suffix a server gives a damaged snapshot it does not need when it sets it aside.
pub const DAMAGED_SUFFIX: &str = ".snap.damaged";
/// Suffix of snapshots a forced import set aside.
pub const SUPERSEDED_SUFFIX: &str = ".snap.superseded";

/// A file that should be a snapshot and is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSnapshot {
    /// File, byte offset and reason.
    pub finding: Finding,
    /// `(index, term)` of the last entry the snapshot held, as its file name says (the
    /// header may be what is damaged); `(0, 0)` for an initial or restored state. `None`
    /// when the name is not one the store gives.
    pub named_last: Option<(u64, u64)>,
    /// Already set aside (`*.snap.damaged`).
    pub set_aside: bool,
}

/// What a snapshot directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotSurvey {
    /// Valid snapshots, oldest first (structure checked; checksums too when asked).
    pub snapshots: Vec<SnapshotInfo>,
    pub damaged: Vec<DamagedSnapshot>,
    /// Files kept on purpose and never read: superseded snapshots, temporaries.
    pub kept: Vec<PathBuf>,
    /// Files that are no snapshot file at all.
    pub unknown: Vec<PathBuf>,
}

impl SnapshotSurvey {
    /// The newest valid snapshot.
    pub fn newest(&self) -> Option<&SnapshotInfo> {
        self.snapshots.last()
    }

    /// Every problem: damaged snapshots, then unknown files.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self.damaged.iter().map(|d| d.finding.clone()).collect();
        out.extend(self.unknown.iter().map(|p| {
            Finding::new(
                FindingKind::Inconsistent,
                p,
                0,
                "not a snapshot file (snapshots end in .snap); move it out of the snapshot directory",
            )
        }));
        out
    }

    /// Why the state cannot be rebuilt from these snapshots and a log whose entries up to
    /// `purged_through` were compacted away; `None` when it can. The starting state is the
    /// newest valid snapshot, so it must hold at least index `purged_through`. An
    /// uncompacted log starts at index 0, so no snapshot is needed — unless the only
    /// snapshot was a restored state (the origin of the log that follows it) and it is
    /// damaged.
    pub fn gap(&self, purged_through: Option<u64>) -> Option<CoverageGap> {
        let damaged = || -> Vec<DamagedSnapshot> { self.damaged.clone() };
        match purged_through {
            Some(p) => {
                let covered = self
                    .newest()
                    .and_then(|s| s.meta.last)
                    .is_some_and(|(i, _)| i >= p);
                (!covered).then(|| CoverageGap {
                    purged_through: Some(p),
                    newest_valid: self.newest().and_then(|s| s.meta.last),
                    damaged: damaged(),
                })
            }
            None => {
                let lost_origin = self.snapshots.is_empty()
                    && self
                        .damaged
                        .iter()
                        .any(|d| d.named_last.is_some_and(|(i, _)| i == 0));
                lost_origin.then(|| CoverageGap {
                    purged_through: None,
                    newest_valid: None,
                    damaged: damaged(),
                })
            }
        }
    }
}

/// A log whose beginning is held by no valid snapshot: the state cannot be rebuilt here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageGap {
    /// The log's purge point (`None`: a log that begins after a restored state).
    pub purged_through: Option<u64>,
    /// The last index of the newest valid snapshot, if any.
    pub newest_valid: Option<(u64, u64)>,
    /// The damaged snapshots that may have held it.
    pub damaged: Vec<DamagedSnapshot>,
}

impl std::fmt::Display for CoverageGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.purged_through {
            Some(p) => write!(
                f,
                "the log is compacted through index {p} (entries 0..={p} exist only in a snapshot) and no valid snapshot holds them"
            )?,
            None => write!(
                f,
                "the log begins after a restored state and the snapshot holding that state is damaged"
            )?,
        }
        if let Some((i, t)) = self.newest_valid {
            write!(
                f,
                "; the newest valid snapshot ends at index {i} (term {t})"
            )?;
        }
        if self.damaged.is_empty() {
            write!(f, "; there is no snapshot file")
        } else {
            let names: Vec<String> = self
                .damaged
                .iter()
                .map(|d| {
                    format!(
                        "{} (byte {}: {})",
                        d.finding.file.display(),
                        d.finding.offset,
                        d.finding.reason
                    )
                })
                .collect();
            write!(f, "; damaged: {}", names.join("; "))
        }
    }
}

/// The `(index, term)` a store-given snapshot name carries:
/// `<index:020>-<term:020>-<created_ms:013>-<crc:08x>.snap[.damaged]`.
pub(crate) fn named_last(name: &str) -> Option<(u64, u64)> {
    let stem = name
        .strip_suffix(DAMAGED_SUFFIX)
        .or_else(|| name.strip_suffix(SUFFIX))?;
    let mut parts = stem.split('-');
    let index = parts.next().filter(|p| p.len() == 20)?.parse().ok()?;
    let term = parts.next().filter(|p| p.len() == 20)?.parse().ok()?;
    Some((index, term))
}

/// Surveys the snapshot directory `dir` (read-only; empty when `dir` does not exist). With
/// `checksums`, every snapshot's whole-file checksum is verified too (reading every byte);
/// without, headers and trailers only. I/O errors other than damage are returned.
pub fn survey(dir: &Path, checksums: bool) -> Result<SnapshotSurvey> {
    let mut out = SnapshotSurvey::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    names.sort();
    for (name, path) in names {
        if name.ends_with(SUFFIX) || name.ends_with(DAMAGED_SUFFIX) {
            let set_aside = name.ends_with(DAMAGED_SUFFIX);
            let checked = if checksums || set_aside {
                verify_file(&path)
            } else {
                describe(&path)
            };
            let damage = match checked {
                Ok(info) if !set_aside => {
                    out.snapshots.push(info);
                    continue;
                }
                Ok(_) => Finding::new(
                    FindingKind::Corruption,
                    &path,
                    0,
                    "set aside as damaged by a server at start (it now passes the checks: it was damaged when set aside, or replaced since)",
                ),
                Err(e) => {
                    let mut f = Finding::from_error(e)?;
                    if set_aside {
                        f.reason = format!("set aside as damaged by a server at start: {}", f.reason);
                    }
                    f
                }
            };
            out.damaged.push(DamagedSnapshot {
                finding: damage,
                named_last: named_last(&name),
                set_aside,
            });
        } else if name.ends_with(SUPERSEDED_SUFFIX) || name.ends_with(".tmp") {
            out.kept.push(path);
        } else {
            out.unknown.push(path);
        }
    }
    out.snapshots.sort_by_key(|i| i.key());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_position() {
        let n = format!("{:020}-{:020}-{:013}-{:08x}.snap", 150, 3, 17, 0xabcdu32);
        assert_eq!(named_last(&n), Some((150, 3)));
        assert_eq!(named_last(&format!("{n}.damaged")), Some((150, 3)));
        let d = format!(
            "{:020}-{:020}-{:013}-{:08x}{DAMAGED_SUFFIX}",
            7, 1, 17, 1u32
        );
        assert_eq!(named_last(&d), Some((7, 1)));
        assert_eq!(named_last("backup.snap"), None);
        assert_eq!(named_last("1-2.snap"), None);
    }
}
