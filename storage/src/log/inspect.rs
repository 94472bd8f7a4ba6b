//! Read-only inspection of a log directory, for offline tools: never takes the lock, never
//! writes, never repairs. Checks every segment header and footer, every record checksum,
//! index and term continuity, and the purge point, and reports each problem with file,
//! byte offset and reason, telling a torn tail (damage at the very end of the log, nothing
//! valid after it) from corruption in the middle. Optionally hands every valid entry to a
//! visitor, in index order.

use std::path::{Path, PathBuf};

use super::acked::{self, Slots, ACKED_FILE};
use super::layout::{self, TailFacts, Verdict};
use super::record::{self, Header, RECORD_HEADER_BYTES};
use super::recovery::Watermark;
use super::segment::{self, SealedSegment, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::finding::{Finding, FindingKind};
use crate::meta::{Loss, MetaFile, Metadata, Owed};
use crate::options::RECORD_BYTES_LIMIT;
use crate::snapshot::{survey, SnapshotSurvey};

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub first_index: u64,
    /// `None` when the segment holds no valid record.
    pub last_index: Option<u64>,
    pub records: u64,
    pub file_bytes: u64,
    /// Bytes of the header and valid records.
    pub data_bytes: u64,
    pub sealed: bool,
    /// Payload bytes as stored (after compression) and as written by the caller.
    pub stored_payload_bytes: u64,
    pub payload_bytes: u64,
    pub compressed_records: u64,
    /// The last segment's durable watermark, from the acknowledgment file (an unsealed
    /// last segment only).
    pub watermark: Option<Watermark>,
}

/// Everything [`inspect`] found.
#[derive(Debug, Clone, Default)]
pub struct InspectReport {
    pub log_id: Option<u64>,
    pub metadata: Option<Metadata>,
    /// Every index up to and including this one was purged.
    pub purged_through: Option<u64>,
    /// Acknowledged entries this log lost and must fetch again from its cluster.
    pub owed: Option<Owed>,
    /// Losses of acknowledged entries an operator accepted, oldest first.
    pub losses: Vec<Loss>,
    pub segments: Vec<SegmentReport>,
    /// Every file under `snapshots/`, checksums verified.
    pub snapshots: SnapshotSurvey,
    /// Log damage, snapshot damage, and a compacted log no valid snapshot covers.
    pub findings: Vec<Finding>,
}

impl InspectReport {
    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.last_index.is_some())
            .map(|s| s.first_index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(|s| s.last_index)
    }

    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// The last segment's durable watermark, when it has one.
    pub fn watermark(&self) -> Option<Watermark> {
        self.segments.last().and_then(|s| s.watermark)
    }

    /// Whether anything but a torn tail was found.
    pub fn damaged(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind != FindingKind::TornTail)
    }
}

/// One valid entry handed to a visitor.
pub struct Visit<'a> {
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
    /// Bytes the record takes on disk.
    pub record_bytes: u64,
}

fn finding(kind: FindingKind, file: &Path, offset: u64, reason: impl Into<String>) -> Finding {
    Finding::new(kind, file, offset, reason)
}

fn from_error(e: Error) -> std::result::Result<Finding, Error> {
    Finding::from_error(e)
}

/// Inspects the data directory `dir` (holding `meta`, `log/` and `snapshots/`). With
/// `visit`, every valid entry's decoded payload is passed to it in index order; entries
/// after a finding inside a segment are not visited. Every snapshot's checksum is verified,
/// every file under `snapshots/` is a valid snapshot or a finding, and a compacted log
/// whose start no valid snapshot holds is a finding. I/O errors are returned; damage is
/// reported.
pub fn inspect(dir: &Path, visit: Option<&mut dyn FnMut(Visit<'_>)>) -> Result<InspectReport> {
    inspect_with_progress(dir, visit, &mut |_, _| {})
}

/// [`inspect`], calling `progress(bytes_done, bytes_total)` of the segment files as it goes
/// (after each segment, and once before the first).
pub fn inspect_with_progress(
    dir: &Path,
    mut visit: Option<&mut dyn FnMut(Visit<'_>)>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<InspectReport> {
    let mut report = InspectReport::default();
    let meta_path = dir.join(layout::META_FILE);
    let meta = MetaFile::survey(&meta_path)?;
    for problem in meta.problems {
        report.findings.push(from_error(problem)?);
    }
    let meta_acked_in_use = meta.current.as_ref().is_some_and(|m| m.acked_in_use);
    if let Some(m) = meta.current {
        report.log_id = Some(m.log_id);
        report.purged_through = m.purged_through;
        report.owed = m.owed;
        report.losses = m.losses;
        report.metadata = Some(m.user);
    }
    let segs = layout::list(&dir.join(layout::LOG_DIR))?.segments;
    let total: u64 = segs
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut done = 0u64;
    progress(0, total);
    if report.metadata.is_none() && !segs.is_empty() && report.findings.is_empty() {
        report.findings.push(finding(
            FindingKind::Corruption,
            &meta_path,
            0,
            layout::missing_meta(segs.len()),
        ));
    }
    let log_dir = dir.join(layout::LOG_DIR);
    let mut walk = Walk {
        acked: check_acked(&mut report, &log_dir, meta_acked_in_use)?,
        ..Walk::default()
    };
    let count = segs.len();
    for (n, (first, path)) in segs.into_iter().enumerate() {
        let seg = inspect_segment(&mut report, &mut walk, (n, count), first, path, &mut visit)?;
        done += seg.file_bytes;
        progress(done.min(total), total);
        report.segments.push(seg);
    }
    report.snapshots = survey(&crate::snapshots_dir(dir), true)?;
    report.findings.extend(report.snapshots.findings());
    // The log is compacted through its purge point: the state before it must be in a
    // valid snapshot. (Without a purge point nothing was compacted away: the storage
    // engine lets a log begin at any index.)
    if let Some(gap) = report.snapshots.gap(report.purged_through) {
        report.findings.push(finding(
            FindingKind::Inconsistent,
            &crate::snapshots_dir(dir),
            0,
            gap.to_string(),
        ));
    }
    Ok(report)
}

/// What the walk over the segments carries from one to the next.
#[derive(Default)]
struct Walk {
    /// The index the next segment should start at.
    expected: Option<u64>,
    /// The last valid record's term.
    prev_term: Option<u64>,
    /// The acknowledgment file's slots (`None`: no file).
    acked: Option<Slots>,
}

/// Checks one segment — header, continuity with the one before, footer, every record —
/// adding what it finds to `report`, and visits its valid entries. `(n, count)`: its
/// position among the segments.
///
/// Long on purpose: the checks follow FORMAT.md's order for one segment and share its
/// bytes and its report; each finding sits beside the rule it reports.
fn inspect_segment(
    report: &mut InspectReport,
    walk: &mut Walk,
    (n, count): (usize, usize),
    first: u64,
    path: PathBuf,
    visit: &mut Option<&mut dyn FnMut(Visit<'_>)>,
) -> Result<SegmentReport> {
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let mut seg = SegmentReport {
        path: path.clone(),
        first_index: first,
        last_index: None,
        records: 0,
        file_bytes: bytes.len() as u64,
        data_bytes: SEGMENT_HEADER_BYTES.min(bytes.len() as u64),
        sealed: segment::looks_sealed(&bytes),
        stored_payload_bytes: 0,
        payload_bytes: 0,
        compressed_records: 0,
        watermark: None,
    };
    // Without readable metadata, take the log id from the first segment's header.
    let log_id = match report.log_id {
        Some(id) => id,
        None if bytes.len() >= 24 => {
            let id = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
            report.log_id = Some(id);
            id
        }
        None => 0,
    };
    let last_segment = n + 1 == count;
    if let Err(e) = segment::check_header(&bytes, &path, log_id, first) {
        let mut f = from_error(e)?;
        // The last segment's watermark may say records were acknowledged in it: then that
        // is what its header's damage costs.
        let w = walk.acked.as_ref().and_then(|s| s.current(first));
        if let Some(w) = w.filter(|w| last_segment && !seg.sealed && w.acked_next > first) {
            f.kind = FindingKind::AcknowledgedDamaged;
            f.reason = format!(
                "indexes {first}..={}: {} (the acknowledgment file says they were acknowledged)",
                w.acked_next - 1,
                f.reason
            );
        }
        report.findings.push(f);
        walk.expected = None;
        return Ok(seg);
    }
    match walk.expected {
        Some(e) if e != first => report.findings.push(finding(
            FindingKind::Inconsistent,
            &path,
            24,
            layout::discontinuity(first, e),
        )),
        None if n == 0 => {
            if let Some(p) = report.purged_through.filter(|p| first > p + 1) {
                report.findings.push(finding(
                    FindingKind::Inconsistent,
                    &path,
                    24,
                    format!(
                        "the log starts at index {first} but only indexes through {p} were purged"
                    ),
                ));
            }
        }
        _ => {}
    }
    if segment::footer_with_damaged_magic(&bytes) {
        report.findings.push(finding(
            FindingKind::Corruption,
            &path,
            seg.file_bytes - 8,
            "sealed segment whose footer magic is damaged (the footer checksum matches)",
        ));
    }
    let acked = walk.acked.as_ref().filter(|_| last_segment);
    let records = valid_records(
        &bytes,
        &mut seg,
        log_id,
        walk.prev_term,
        (last_segment, acked),
        report,
    )?;
    for (offset, h) in records {
        if let Some(t) = walk.prev_term.filter(|t| h.term < *t) {
            report.findings.push(finding(
                FindingKind::Inconsistent,
                &path,
                offset,
                format!(
                    "record {} has term {} below the previous term {t}",
                    h.index, h.term
                ),
            ));
        }
        let start = (offset as usize) + RECORD_HEADER_BYTES;
        let stored = &bytes[start..start + h.stored_len as usize];
        seg.records += 1;
        seg.last_index = Some(h.index);
        seg.data_bytes = offset + h.record_bytes();
        seg.stored_payload_bytes += h.stored_len as u64;
        if h.compressed {
            seg.compressed_records += 1;
        }
        if visit.is_some() || h.compressed {
            match record::payload(&h, stored, RECORD_BYTES_LIMIT) {
                Ok(p) => {
                    seg.payload_bytes += p.len() as u64;
                    if let Some(v) = visit.as_mut() {
                        v(Visit {
                            index: h.index,
                            term: h.term,
                            payload: &p,
                            record_bytes: h.record_bytes(),
                        });
                    }
                }
                Err(reason) => {
                    report
                        .findings
                        .push(finding(FindingKind::Corruption, &path, offset, reason))
                }
            }
        } else {
            seg.payload_bytes += h.stored_len as u64;
        }
        walk.prev_term = Some(h.term);
    }
    walk.expected = seg.last_index.map(|l| l + 1).or(Some(first));
    Ok(seg)
}

/// Reads the acknowledgment file: its damaged slots, a wrong length, or its absence where
/// the metadata says the log keeps one, are findings.
fn check_acked(report: &mut InspectReport, log_dir: &Path, in_use: bool) -> Result<Option<Slots>> {
    let path = log_dir.join(ACKED_FILE);
    // Readable metadata that does not name the file: whatever is there was left by a first
    // open that did not finish, and the next open makes it anew (as recovery judges it).
    if report.log_id.is_some() && !in_use {
        return Ok(None);
    }
    // Without readable metadata, the log id comes from the first segment (later).
    let log_id = report.log_id.unwrap_or_else(|| {
        layout::list(log_dir)
            .ok()
            .and_then(|l| l.segments.first().cloned())
            .and_then(|(_, p)| std::fs::read(p).ok())
            .filter(|b| b.len() >= 24)
            .map_or(0, |b| u64::from_le_bytes(b[16..24].try_into().unwrap()))
    });
    let slots = acked::read(log_dir, log_id)?;
    match &slots {
        None if in_use => report.findings.push(finding(
            FindingKind::Corruption,
            &path,
            0,
            "the acknowledgment file is missing: what this log acknowledged cannot be told",
        )),
        None => {}
        Some(s) => {
            if let Some(len) = s.wrong_length {
                report.findings.push(finding(
                    FindingKind::Corruption,
                    &path,
                    len.min(acked::ACKED_FILE_BYTES),
                    format!(
                        "the acknowledgment file is {len} bytes, not {}",
                        acked::ACKED_FILE_BYTES
                    ),
                ));
            }
            for at in &s.damaged {
                report.findings.push(finding(
                    FindingKind::Corruption,
                    &path,
                    *at,
                    "damaged slot in the acknowledgment file",
                ));
            }
        }
    }
    Ok(slots)
}

/// The valid records of a segment, `(offset, header)`, up to its first damage (reported):
/// a sealed one through its footer's index, an unsealed one by a scan — the last one
/// judged against its watermark in the acknowledgment file (`last`: whether it is the
/// last segment, and the file's slots when the log keeps one; `layout::judge`, the rule
/// open follows).
fn valid_records(
    bytes: &[u8],
    seg: &mut SegmentReport,
    log_id: u64,
    prev_term: Option<u64>,
    (last_segment, acked): (bool, Option<&Slots>),
    report: &mut InspectReport,
) -> Result<Vec<(u64, Header)>> {
    let (path, first) = (seg.path.clone(), seg.first_index);
    let mut records = Vec::new();
    if seg.sealed {
        match SealedSegment::open(&path, log_id, first) {
            Ok(s) => {
                for i in 0..s.count {
                    match s.record(first + i) {
                        Ok((h, _)) => records.push((s.offset_of(i) as u64, h)),
                        Err(e) => {
                            report.findings.push(from_error(e)?);
                            break;
                        }
                    }
                }
            }
            Err(e) => report.findings.push(from_error(e)?),
        }
        return Ok(records);
    }
    let watermark = acked.and_then(|s| s.current(first));
    seg.watermark = watermark.map(|s| Watermark {
        acked_next: s.acked_next,
        term: s.acked_term,
        end: s.acked_end,
        seq: s.seq,
    });
    let scan = segment::scan(bytes, first, RECORD_BYTES_LIMIT, prev_term, acked.is_none());
    for &o in &scan.offsets {
        let h = record::decode_header(
            bytes[o as usize..o as usize + RECORD_HEADER_BYTES]
                .try_into()
                .unwrap(),
        )
        .expect("scanned records have headers");
        records.push((o as u64, h));
    }
    let valid_next = first + scan.offsets.len() as u64;
    // Damage after the valid records, or (with a watermark) the records ending short of
    // it or disagreeing with it.
    let problem = match &scan.damage {
        Some(d) => Some((d.offset, d.reason.clone(), d.torn)),
        None if acked.is_some() => {
            match layout::watermark_problem(&scan, bytes, first, watermark) {
                // Disagreeing about a record the watermark names is not torn.
                Some((offset, reason)) => Some((
                    offset,
                    reason,
                    watermark.is_some_and(|w| w.acked_next > valid_next),
                )),
                None if watermark.is_none() => Some((
                    0,
                    format!(
                        "no valid slot in the acknowledgment file names this segment (first index {first})"
                    ),
                    true,
                )),
                None => None,
            }
        }
        None => None,
    };
    if let Some((offset, reason, torn)) = problem {
        let verdict = layout::judge(TailFacts {
            last_segment,
            header_ok: true,
            has_watermark: acked.is_some(),
            watermark: watermark.map(|s| (s.acked_next, s.acked_term)),
            valid_next,
            torn,
        });
        let (kind, reason) = match verdict {
            Verdict::Torn => (FindingKind::TornTail, reason),
            Verdict::Acknowledged { first, last, .. } => (
                FindingKind::AcknowledgedDamaged,
                format!("indexes {first}..={last}: {reason}"),
            ),
            Verdict::Corruption(why) if acked.is_some() => {
                (FindingKind::Corruption, format!("{reason} ({why})"))
            }
            Verdict::Corruption(_) => (FindingKind::Corruption, reason),
        };
        report.findings.push(finding(kind, &path, offset, reason));
    }
    Ok(records)
}
