//! Opening a log: lock, metadata, leftovers, segment footers, a scan of the active segment
//! and its acknowledgment rings, and the torn-tail / acknowledged-damage / corruption /
//! salvage decisions.
//!
//! Only the last segment may be unsealed. Sealed segments are opened by their footers alone
//! (their records are checked on every read); the active segment is scanned record by
//! record and its rings give the durable watermark. Damage past the watermark is a torn
//! tail: it is cut off and reported. Records missing at or below it are acknowledged
//! entries damaged (`layout::judge`): refused in strict mode; in refetch mode copied to
//! `<dir>/salvage/<time>/`, cut and recorded as owed; in salvage mode moved aside and
//! recorded as an accepted loss. Any other damage fails open with the file, the byte offset
//! and the reason — or, in salvage mode, the valid prefix is kept and everything after it
//! is moved into `<dir>/salvage/<time>/`, never deleted.
//!
//! Phases, in order: `list_and_clean` → `load_or_create_meta` → `remove_purged_leftovers`
//! → `open_segments` (footers; the last segment scanned, its rings read) → `settle_damage`
//! (judge, then cut / refuse / salvage, with the metadata written before anything is cut)
//! → `bounds` → `open_active` (the watermark written anew to both rings, synced).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use memmap2::Mmap;

use super::layout::{self, TailFacts, Verdict};
use super::ring::{self, Rings, Slot, RING_BYTES};
use super::segment::{
    self, Damage, Scan, SealedSegment, FRONT_RING_AT, SEGMENT_HEADER_BYTES, SEGMENT_VERSION,
    SEGMENT_VERSION_V1,
};
use super::writer::back_ring_at;
use super::{Active, ActiveRings, Inner, Queue, State};
use crate::error::{Error, Result};
use crate::fsutil::{self, DirLock};
use crate::meta::{Loss, MetaFile, Owed};
use crate::options::{Options, RecoveryMode, RECORD_BYTES_LIMIT};

/// What open found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files the log holds after open.
    pub segments: usize,
    /// A partially written tail that open cut off.
    pub torn_tail: Option<TornTail>,
    /// Salvage mode's cut, when it made one.
    pub salvaged: Option<Salvaged>,
    /// Leftover files removed: temporary files and segments wholly covered by the purge point.
    pub removed: Vec<PathBuf>,
    /// Bytes open read record by record: the unsealed segment a crash left, and every
    /// sealed segment with `verify_on_open`. Zero after a clean close.
    pub scanned_bytes: u64,
    /// The last segment's durable watermark as its rings gave it (an unsealed version-2
    /// segment only).
    pub watermark: Option<Watermark>,
    /// Acknowledged entries this open cut (refetch: owed; salvage: an accepted loss).
    pub acknowledged_cut: Option<AcknowledgedCut>,
}

/// How far the active segment was durable, from its acknowledgment rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// One past the last record made durable.
    pub acked_next: u64,
    /// Term of record `acked_next - 1`.
    pub term: u64,
    /// Byte offset just past it in the segment.
    pub end: u64,
    /// The slot's sequence number.
    pub seq: u64,
}

/// Acknowledged entries damaged that a refetch or salvage open cut.
#[derive(Debug, Clone)]
pub struct AcknowledgedCut {
    pub file: PathBuf,
    pub offset: u64,
    pub first: u64,
    pub last: u64,
    pub term: u64,
    pub reason: String,
    /// Owed to the cluster (refetch) rather than accepted as lost (salvage).
    pub owed: bool,
    /// Where the cut bytes were copied.
    pub moved_to: PathBuf,
}

/// A torn tail cut off by open.
#[derive(Debug, Clone)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the first incomplete record began; the file now ends there.
    pub offset: u64,
    /// Non-zero bytes dropped.
    pub bytes: u64,
    pub reason: String,
}

/// What salvage mode dropped: everything from `offset` in `file` on.
#[derive(Debug, Clone)]
pub struct Salvaged {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Where the dropped bytes and files were moved.
    pub moved_to: PathBuf,
    /// Whole segment files moved aside.
    pub moved_files: Vec<PathBuf>,
    /// Bytes cut from `file` (copied into `moved_to` first).
    pub bytes: u64,
}

/// One segment as open found it.
enum Found {
    Sealed(SealedSegment),
    Active {
        scan: Scan,
        tail: Tail,
    },
    /// Damaged at `offset` (or, for the last segment, ending short of its watermark);
    /// `scan` holds its valid prefix.
    Damaged {
        scan: Scan,
        offset: u64,
        reason: String,
        torn: bool,
        /// The rings of an unsealed version-2 segment (or of one whose header is damaged,
        /// read where version 2 keeps them).
        tail: Option<Tail>,
    },
}

/// An unsealed segment ready to become the active one: its first index, path, scan, and
/// what its layout and rings said.
type Unsealed = (u64, PathBuf, Scan, Option<Tail>);

/// What a segment's layout and rings said.
#[derive(Debug, Clone, Copy)]
struct Tail {
    version: u16,
    /// Its header could be read.
    header_ok: bool,
    /// Its rings speak for its records (an unsealed version-2 segment, or one whose header
    /// is damaged but whose rings are readable). A sealed segment's front ring holds only
    /// what it was while active: read for its sequence numbers, never judged by.
    judged_by_rings: bool,
    rings: Rings,
    /// Where its records' area ends: the back ring, or the end of the file.
    region_end: u64,
}

impl Tail {
    fn watermark(&self) -> Option<Watermark> {
        self.rings.current.map(|s| Watermark {
            acked_next: s.acked_next,
            term: s.acked_term,
            end: s.acked_end,
            seq: s.seq,
        })
    }
}

/// Opens the log in `dir`, in the order the module comment gives: each step below is a
/// function of its own.
pub(crate) fn open(dir: &Path, options: Options) -> Result<Inner> {
    options.validate()?;
    fsutil::create_dir_all(dir)?;
    let lock = DirLock::acquire(dir)?;
    let log_dir = dir.join(layout::LOG_DIR);
    fsutil::create_dir_all(&log_dir)?;
    let meta_path = dir.join(layout::META_FILE);
    let mut report = RecoveryReport::default();

    let mut segs = list_and_clean(&log_dir, &meta_path, &mut report)?;
    let mut meta = load_or_create_meta(&meta_path, segs.len())?;
    remove_purged_leftovers(&mut segs, meta.purged_through, &mut report)?;
    let Opened {
        sealed,
        mut active,
        damaged,
    } = open_segments(&segs, meta.log_id, &options, &mut report)?;
    if let Some((k, found)) = damaged {
        let place = Place {
            dir,
            meta_path: &meta_path,
            segs: &segs,
            k,
        };
        if let Some(a) = settle_damage(place, found, options.recovery_mode, &mut meta, &mut report)?
        {
            active = Some(a);
        }
        fsutil::sync_dir(&log_dir)?;
    }
    let Bounds {
        sealed,
        active,
        first_index,
        next_index,
        last_term,
        fresh,
    } = bounds(
        sealed,
        active,
        meta.purged_through,
        &segs,
        &log_dir,
        &mut report,
    )?;
    let active = match active {
        Some((first, path, scan, tail)) => Some(open_active(
            first,
            path,
            scan,
            tail,
            Identity {
                log_id: meta.log_id,
                prev_term: last_term,
            },
            &options,
        )?),
        None => None,
    };
    report.segments = sealed.len() + active.is_some() as usize;
    let empty = first_index == next_index;
    Ok(Inner {
        dir: dir.to_path_buf(),
        log_dir,
        meta_path,
        log_id: meta.log_id,
        state: RwLock::new(State {
            sealed,
            active,
            first_index,
            next_index,
            last_term: if empty { None } else { last_term },
        }),
        queue: Mutex::new(Queue {
            requests: Vec::new(),
            bytes: 0,
            next: (!fresh).then_some(next_index),
            closing: false,
            gathering_for: 0,
        }),
        work: Condvar::new(),
        space: Condvar::new(),
        failed: OnceLock::new(),
        meta: Mutex::new(meta),
        durable_next: AtomicU64::new(next_index),
        counters: Default::default(),
        report,
        options,
        _lock: lock,
    })
}

/// The segment files, after removing the leftovers of interrupted writes (a temporary
/// metadata file, `*.tmp` in the log directory).
fn list_and_clean(
    log_dir: &Path,
    meta_path: &Path,
    report: &mut RecoveryReport,
) -> Result<Vec<(u64, PathBuf)>> {
    for meta_tmp in [
        fsutil::tmp_path(meta_path),
        fsutil::tmp_path(&crate::meta::mirror_path(meta_path)),
    ] {
        if meta_tmp.exists() {
            fsutil::remove_file(&meta_tmp)?;
            report.removed.push(meta_tmp);
        }
    }
    let listing = layout::list(log_dir)?;
    for path in listing.temporary {
        fsutil::remove_file(&path)?;
        report.removed.push(path);
    }
    for path in &listing.unknown {
        tracing::warn!(file = %path.display(), "ignoring unknown file in log directory");
    }
    Ok(listing.segments)
}

/// The metadata, written fresh for a new log; missing beside segments is corruption. A
/// damaged or stale copy outvoted by its twin is healed (both rewritten) here.
fn load_or_create_meta(meta_path: &Path, segments: usize) -> Result<MetaFile> {
    let survey = MetaFile::survey(meta_path)?;
    // A version-1 directory has no mirror yet; its first write adds it.
    let copy_missing = !meta_path.exists() || !crate::meta::mirror_path(meta_path).exists();
    match survey.current {
        Some(mut m) => {
            if !survey.problems.is_empty() || (copy_missing && m.seq > 0) {
                for p in &survey.problems {
                    tracing::warn!(problem = %p, "metadata copy outvoted by its twin; rewriting both");
                }
                m.store(meta_path)?;
            }
            Ok(m)
        }
        None if !survey.problems.is_empty() => {
            Err(survey.problems.into_iter().next().expect("not empty"))
        }
        None if segments == 0 => {
            let mut m = MetaFile {
                log_id: rand::random(),
                ..MetaFile::default()
            };
            m.store(meta_path)?;
            Ok(m)
        }
        None => Err(Error::corruption(
            meta_path,
            0,
            layout::missing_meta(segments),
        )),
    }
}

/// Removes the leftovers of an interrupted purge: segments whose successor starts within
/// the purge point.
fn remove_purged_leftovers(
    segs: &mut Vec<(u64, PathBuf)>,
    purged_through: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<()> {
    if let Some(p) = purged_through {
        while segs.len() >= 2 && segs[1].0 <= p.saturating_add(1) {
            let (_, path) = segs.remove(0);
            fsutil::remove_file(&path)?;
            report.removed.push(path);
        }
    }
    Ok(())
}

/// The segments as found, up to the first damaged one.
struct Opened {
    sealed: Vec<SealedSegment>,
    active: Option<Unsealed>,
    /// The damaged segment's position in the listing, and what was found.
    damaged: Option<(usize, Found)>,
}

/// Opens the segments in order: sealed ones by their footers, the last unsealed one by a
/// scan; stops at the first damage or gap.
fn open_segments(
    segs: &[(u64, PathBuf)],
    log_id: u64,
    options: &Options,
    report: &mut RecoveryReport,
) -> Result<Opened> {
    // Disk is checked against the format's bound, not the (changeable) option for input.
    prefetch(segs);
    let max = RECORD_BYTES_LIMIT;
    let mut opened = Opened {
        sealed: Vec::new(),
        active: None,
        damaged: None,
    };
    for (k, (first, path)) in segs.iter().enumerate() {
        let is_last = k + 1 == segs.len();
        let expected = opened.sealed.last().map(|s| s.last_index() + 1);
        if let Some(e) = expected.filter(|e| e != first) {
            opened.damaged = Some((
                k,
                damage_without_prefix(0, layout::discontinuity(*first, e), None),
            ));
            break;
        }
        let found = {
            // Only a scan needs the previous segment's last term; sealed segments skip it.
            let prev_term = || last_term_of(opened.sealed.last());
            open_segment(
                path,
                *first,
                log_id,
                max,
                &prev_term,
                is_last,
                options.verify_on_open,
                report,
            )?
        };
        match found {
            Found::Sealed(s) => opened.sealed.push(s),
            Found::Active { scan, tail } => {
                opened.active = Some((*first, path.clone(), scan, Some(tail)))
            }
            d @ Found::Damaged { .. } => {
                opened.damaged = Some((k, d));
                break;
            }
        }
    }
    Ok(opened)
}

/// Where the damaged segment is: the data directory, the metadata, the segment listing
/// and the damaged segment's position in it.
#[derive(Clone, Copy)]
struct Place<'a> {
    dir: &'a Path,
    meta_path: &'a Path,
    segs: &'a [(u64, PathBuf)],
    k: usize,
}

/// Decides what the damage found in segment `k` is (`layout::judge`) and acts as the mode
/// says. A torn tail is cut. Acknowledged entries damaged are refused (strict), or copied
/// aside, recorded as owed (refetch) or as an accepted loss (salvage) — in the metadata,
/// durably, before anything is cut — and cut. Other damage is refused, or in salvage mode
/// the valid prefix is kept. Returns the cut segment when it keeps valid records: it
/// becomes the active one.
///
/// Long on purpose: the verdict and the three modes form one table, and every arm shares
/// the same cut, report and ordering of durable steps.
fn settle_damage(
    place: Place<'_>,
    found: Found,
    mode: RecoveryMode,
    meta: &mut MetaFile,
    report: &mut RecoveryReport,
) -> Result<Option<Unsealed>> {
    let Found::Damaged {
        scan,
        offset,
        reason,
        torn,
        tail,
    } = found
    else {
        unreachable!("only damage is settled");
    };
    let Place { segs, k, .. } = place;
    let (first, path) = segs[k].clone();
    let is_last = k + 1 == segs.len();
    let valid_next = first + scan.offsets.len() as u64;
    let judged = tail.filter(|t| t.judged_by_rings);
    let verdict = layout::judge(TailFacts {
        last_segment: is_last,
        header_ok: tail.is_some_and(|t| t.header_ok),
        has_rings: judged.is_some(),
        watermark: judged.and_then(|t| t.rings.current.map(|s| (s.acked_next, s.acked_term))),
        valid_next,
        torn,
    });
    report.watermark = judged.and_then(|t| t.watermark());
    // Bytes past the valid records, for what is cut or moved (a refusal reads none).
    let tail_bytes = || -> Result<u64> {
        let region_end = tail.map(|t| t.region_end);
        Ok(nonzero_extent(&path, region_end)?.saturating_sub(scan.end))
    };
    match (&verdict, mode) {
        (Verdict::Torn, RecoveryMode::Strict | RecoveryMode::Refetch) => {
            let bytes = tail_bytes()?;
            tracing::warn!(file = %path.display(), offset, bytes, %reason, "cutting torn tail");
            report.torn_tail = Some(TornTail {
                file: path.clone(),
                offset: scan.end,
                bytes,
                reason,
            });
        }
        (Verdict::Acknowledged { first, last, term }, RecoveryMode::Strict) => {
            return Err(Error::AcknowledgedDamaged {
                file: path,
                offset,
                first: *first,
                last: *last,
                term: *term,
                reason,
            })
        }
        (Verdict::Corruption(why), RecoveryMode::Strict | RecoveryMode::Refetch) => {
            let reason = if judged.is_some() && is_last {
                format!("{reason} ({why})")
            } else {
                reason
            };
            return Err(Error::corruption(&path, offset, reason));
        }
        (Verdict::Acknowledged { first, last, term }, RecoveryMode::Refetch) => {
            let s = salvage(place, &scan, tail_bytes()?, offset, reason.clone())?;
            let owed = Owed {
                index: *last,
                term: *term,
            };
            meta.owed = Some(
                meta.owed
                    .map_or(owed, |o| if o.index >= owed.index { o } else { owed }),
            );
            meta.store(place.meta_path)?;
            tracing::warn!(file = %path.display(), offset, first, last, moved_to = %s.moved_to.display(), %reason,
                "acknowledged entries damaged: cut, and owed until fetched again from the cluster");
            report.acknowledged_cut = Some(AcknowledgedCut {
                file: path.clone(),
                offset,
                first: *first,
                last: *last,
                term: *term,
                reason,
                owed: true,
                moved_to: s.moved_to,
            });
        }
        (_, RecoveryMode::Salvage) => {
            let s = salvage(place, &scan, tail_bytes()?, offset, reason.clone())?;
            // What this cut loses of what had been acknowledged: for acknowledged damage,
            // its range; for corruption, everything from the first record dropped through
            // the last one known to have existed.
            let lost = match &verdict {
                Verdict::Acknowledged { first, last, term } => Some((*first, *last, *term)),
                Verdict::Torn => None,
                Verdict::Corruption(_) => {
                    let known = known_last(segs, k, tail);
                    known
                        .filter(|l| *l >= valid_next)
                        .map(|l| (valid_next, l, 0))
                }
            };
            if let Some((first, last, term)) = lost {
                meta.record_loss(Loss {
                    first,
                    last,
                    at_ms: now_ms(),
                });
                meta.store(place.meta_path)?;
                tracing::warn!(first, last, "acknowledged entries accepted as lost");
                report.acknowledged_cut = Some(AcknowledgedCut {
                    file: path.clone(),
                    offset,
                    first,
                    last,
                    term,
                    reason: reason.clone(),
                    owed: false,
                    moved_to: s.moved_to.clone(),
                });
            }
            report.salvaged = Some(s);
        }
    }
    if scan.end == 0 {
        return Ok(None);
    }
    // Cut the file after its last good record; it becomes the active segment.
    let f = open_rw(&path)?;
    fsutil::set_len(&f, scan.end, &path)?;
    f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
    Ok(Some((first, path, scan, tail)))
}

/// The highest index known to have been written from segment `k` on: the last segment's
/// watermark, and one before the first index of every later segment file (a segment is
/// created only after the one before it is sealed, durable).
fn known_last(segs: &[(u64, PathBuf)], k: usize, tail: Option<Tail>) -> Option<u64> {
    let by_names = segs[k + 1..].last().map(|(f, _)| f.saturating_sub(1));
    let by_rings = tail
        .and_then(|t| t.rings.current)
        .and_then(|s| s.acked_next.checked_sub(1));
    by_names.max(by_rings)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Salvage's move: the bytes after the valid prefix of segment `k` (copied and synced
/// first) and every later segment go to `<dir>/salvage/<time>/`.
fn salvage(
    place: Place<'_>,
    scan: &Scan,
    tail: u64,
    offset: u64,
    reason: String,
) -> Result<Salvaged> {
    let Place { dir, segs, k, .. } = place;
    let (first, path) = &segs[k];
    let moved_to = dir.join("salvage").join(format!("{}", now_ms()));
    fsutil::create_dir_all(&moved_to)?;
    if tail > 0 && scan.end > 0 {
        let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let end = (scan.end + tail) as usize;
        let name = format!("{}.from-{}", segment::file_name(*first), scan.end);
        // The copy is synced before the segment is cut: the bytes are never only in the
        // page cache when the original goes.
        let copy = moved_to.join(name);
        fs::write(&copy, &data[scan.end as usize..end])
            .and_then(|()| File::open(&copy)?.sync_all())
            .map_err(|e| Error::io("write", &copy, e))?;
    }
    let mut moved_files = Vec::new();
    let whole_from = if scan.end == 0 { k } else { k + 1 };
    for (_, p) in &segs[whole_from..] {
        let to = moved_to.join(p.file_name().unwrap());
        fsutil::rename(p, &to)?;
        moved_files.push(to);
    }
    fsutil::sync_dir(&moved_to)?;
    fsutil::sync_dir(moved_to.parent().unwrap_or(dir))?;
    fsutil::sync_dir(dir)?;
    tracing::warn!(file = %path.display(), offset, %reason, moved_to = %moved_to.display(), "salvaged log");
    Ok(Salvaged {
        file: path.clone(),
        offset,
        reason,
        moved_to,
        moved_files,
        bytes: tail,
    })
}

/// The log's index range and last term as the segments and the purge point give them.
struct Bounds {
    sealed: Vec<SealedSegment>,
    active: Option<Unsealed>,
    first_index: u64,
    next_index: u64,
    last_term: Option<u64>,
    /// No segment and no purge point: nothing was ever appended.
    fresh: bool,
}

/// Reconciles the segments with the purge point: a log that starts after it is missing
/// records (corruption); segments it wholly covers are the rest of an interrupted
/// purge-all and are removed.
fn bounds(
    mut sealed: Vec<SealedSegment>,
    mut active: Option<Unsealed>,
    purged_through: Option<u64>,
    segs: &[(u64, PathBuf)],
    log_dir: &Path,
    report: &mut RecoveryReport,
) -> Result<Bounds> {
    let mut last_term = match &active {
        Some((_, _, scan, _)) if scan.last_term.is_some() => scan.last_term,
        _ => last_term_of(sealed.last())?,
    };
    let seg_first = sealed
        .first()
        .map(|s| s.first_index)
        .or(active.as_ref().map(|a| a.0));
    let next_index = match &active {
        Some((first, _, scan, _)) => first + scan.offsets.len() as u64,
        None => sealed.last().map_or(0, |s| s.last_index() + 1),
    };
    let purged_next = purged_through.map(|p| p + 1);
    let (first_index, next_index) = match (seg_first, purged_next) {
        (None, p) => {
            let n = p.unwrap_or(0);
            (n, n)
        }
        (Some(f), None) => (f, next_index),
        (Some(f), Some(p)) if f > p => {
            return Err(Error::corruption(
                &segs[0].1,
                0,
                format!(
                    "log starts at index {f} but the purge point keeps everything from {p}: \
                     records {p}..{f} are missing"
                ),
            ))
        }
        (Some(_), Some(p)) if p >= next_index => {
            // Everything left is covered by the purge point (an interrupted purge-all).
            for s in sealed.drain(..) {
                fsutil::remove_file(&s.path)?;
                report.removed.push(s.path.clone());
            }
            if let Some((_, path, _, _)) = active.take() {
                fsutil::remove_file(&path)?;
                report.removed.push(path);
            }
            fsutil::sync_dir(log_dir)?;
            last_term = None;
            (p, p)
        }
        (Some(f), Some(p)) => (f.max(p), next_index),
    };
    Ok(Bounds {
        sealed,
        active,
        first_index,
        next_index,
        last_term,
        fresh: seg_first.is_none() && purged_next.is_none(),
    })
}

/// This log's id and the term of the record before the active segment's first.
struct Identity {
    log_id: u64,
    prev_term: Option<u64>,
}

/// The active segment, ready for appends: at its full length, synced — what a killed
/// process left in the page cache becomes durable now — and, for a version-2 segment,
/// with the watermark of everything it holds (durable now) written to both rings.
fn open_active(
    first: u64,
    path: PathBuf,
    scan: Scan,
    tail: Option<Tail>,
    id: Identity,
    options: &Options,
) -> Result<Active> {
    let file = open_rw(&path)?;
    let version = tail.map_or(SEGMENT_VERSION, |t| t.version);
    let data_start = segment::data_start(version);
    let end = scan.end.max(data_start);
    let next = first + scan.offsets.len() as u64;
    let rings = if version == SEGMENT_VERSION_V1 {
        if options.preallocate && file_len(&file, &path)? < options.segment_bytes_max {
            fsutil::preallocate(&file, options.segment_bytes_max, &path)?;
        }
        None
    } else {
        let found = tail.map(|t| t.rings).unwrap_or_default();
        let back_at = found.back_at.unwrap_or_else(|| {
            back_ring_at(data_start, options.segment_bytes_max, end - data_start)
        });
        // The back ring is the file's last RING_BYTES: the length is exactly that.
        let len = back_at + RING_BYTES;
        if file_len(&file, &path)? != len {
            fsutil::set_len(&file, len, &path)?;
        }
        if options.preallocate {
            fsutil::preallocate(&file, len, &path)?;
        }
        let slot = Slot {
            seq: found.current.map_or(0, |s| s.seq) + 1,
            log_id: id.log_id,
            first_index: first,
            acked_next: next,
            acked_end: end,
            acked_term: scan.last_term.or(id.prev_term).unwrap_or(0),
        };
        ring::write(&file, FRONT_RING_AT, &slot, &path)?;
        ring::write(&file, back_at, &slot, &path)?;
        Some(ActiveRings {
            back_at,
            last: slot,
        })
    };
    fsutil::sync_data(&file, &path)?;
    Ok(Active {
        path,
        file: Arc::new(file),
        first_index: first,
        offsets: scan.offsets,
        end,
        data_start,
        rings,
    })
}

/// Opens one segment: a sealed one by its footer; an unsealed one by a scan of its
/// records and a read of its rings. The last segment's records ending short of its
/// watermark is reported as damage, for `settle_damage` to judge.
#[allow(clippy::too_many_arguments)]
fn open_segment(
    path: &Path,
    first: u64,
    log_id: u64,
    record_bytes_limit: u64,
    prev_term: &dyn Fn() -> Result<Option<u64>>,
    is_last: bool,
    verify: bool,
    report: &mut RecoveryReport,
) -> Result<Found> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file_len(&file, path)?;
    if len < SEGMENT_HEADER_BYTES {
        return Ok(damage_without_prefix(
            0,
            format!("file is {len} bytes, shorter than a segment header"),
            None,
        ));
    }
    // SAFETY: nothing writes segment files while the directory lock is held by this open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
    let version = match segment::check_header(&map, path, log_id, first) {
        Ok(v) => v,
        Err(Error::Corruption { offset, reason, .. }) => {
            // The last segment's rings sit where version 2 keeps them; they may still say
            // what was acknowledged in it.
            let tail = is_last.then(|| rings_only(&map, log_id, first));
            return Ok(damage_without_prefix(offset, reason, tail));
        }
        Err(other) => return Err(other),
    };
    let data_start = segment::data_start(version);
    if segment::looks_sealed(&map) {
        drop(map);
        let opened = SealedSegment::open(path, log_id, first).and_then(|s| {
            if verify {
                report.scanned_bytes += file_len(&file, path)?;
                for index in s.first_index..=s.last_index() {
                    s.record(index)?;
                }
            }
            Ok(s)
        });
        return match opened {
            Ok(s) => Ok(Found::Sealed(s)),
            Err(Error::Corruption { offset, reason, .. }) => {
                let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
                let scan = segment::scan(
                    &map,
                    data_start,
                    first,
                    record_bytes_limit,
                    prev_term()?,
                    false,
                );
                let rings = if version == SEGMENT_VERSION_V1 {
                    Rings::default()
                } else {
                    ring::read(&map, FRONT_RING_AT, log_id, first)
                };
                Ok(Found::Damaged {
                    scan,
                    offset,
                    reason,
                    torn: false,
                    tail: Some(Tail {
                        version,
                        header_ok: true,
                        judged_by_rings: false,
                        rings,
                        region_end: len,
                    }),
                })
            }
            Err(e) => Err(e),
        };
    }
    let rings = if version == SEGMENT_VERSION_V1 {
        Rings::default()
    } else {
        ring::read(&map, FRONT_RING_AT, log_id, first)
    };
    let region_end = rings.back_at.unwrap_or(len);
    let tail = Tail {
        version,
        header_ok: true,
        judged_by_rings: version != SEGMENT_VERSION_V1,
        rings,
        region_end,
    };
    let scan = segment::scan(
        &map[..region_end as usize],
        data_start,
        first,
        record_bytes_limit,
        prev_term()?,
        version == SEGMENT_VERSION_V1,
    );
    report.scanned_bytes += map.len() as u64;
    Ok(match scan.damage.clone() {
        Some(Damage {
            offset,
            reason,
            torn,
        }) => Found::Damaged {
            scan,
            offset,
            reason,
            torn,
            tail: Some(tail),
        },
        None if !is_last => {
            let offset = scan.end;
            Found::Damaged {
                scan,
                offset,
                reason: "segment has no footer but later segments exist".into(),
                torn: false,
                tail: Some(tail),
            }
        }
        None => match layout::watermark_problem(&scan, &map, first, tail.rings.current) {
            Some((offset, reason)) => Found::Damaged {
                scan,
                offset,
                reason,
                torn: true,
                tail: Some(tail),
            },
            None if rings.current.is_none() && version != SEGMENT_VERSION_V1 => Found::Damaged {
                offset: FRONT_RING_AT,
                reason: "no valid slot in either acknowledgment ring".into(),
                scan,
                torn: true,
                tail: Some(tail),
            },
            None => Found::Active { scan, tail },
        },
    })
}

/// The rings of a segment whose header is unreadable, read where version 2 keeps them.
fn rings_only(map: &[u8], log_id: u64, first: u64) -> Tail {
    let rings = ring::read(map, FRONT_RING_AT, log_id, first);
    Tail {
        version: SEGMENT_VERSION,
        header_ok: false,
        judged_by_rings: rings.current.is_some(),
        region_end: rings.back_at.unwrap_or(map.len() as u64),
        rings,
    }
}

/// Term of the last record of `seg`, if any (reads and verifies that one record).
fn last_term_of(seg: Option<&SealedSegment>) -> Result<Option<u64>> {
    seg.map(|s| s.record(s.last_index()).map(|(h, _)| h.term))
        .transpose()
}

/// Asks the kernel for every segment's header and footer at once, so that validating them
/// one after the other does not wait on one small read at a time. Advisory: errors are
/// ignored here and met again, with their paths, when the files are opened for real.
fn prefetch(segs: &[(u64, PathBuf)]) {
    // Footers of up to this size arrive in the first pass (16K records of 4 KiB fill one).
    const TAIL_GUESS_BYTES: u64 = 256 << 10;
    let mut files = Vec::with_capacity(segs.len());
    for (_, path) in segs {
        if let Ok(f) = File::open(path) {
            let len = f.metadata().map_or(0, |m| m.len());
            fsutil::will_need(&f, 0, SEGMENT_HEADER_BYTES);
            let from = len.saturating_sub(TAIL_GUESS_BYTES);
            fsutil::will_need(&f, from, len - from);
            files.push((f, len));
        }
    }
    // Footers larger than the guess: their true start is in the (now cached) trailer.
    for (f, len) in &files {
        if let Some(start) = segment::footer_start(f, *len) {
            if *len - start > TAIL_GUESS_BYTES {
                fsutil::will_need(f, start, *len - start);
            }
        }
    }
}

fn damage_without_prefix(offset: u64, reason: String, tail: Option<Tail>) -> Found {
    Found::Damaged {
        scan: Scan {
            offsets: Vec::new(),
            last_term: None,
            end: 0,
            damage: None,
        },
        offset,
        reason,
        torn: false,
        tail,
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len())
}

/// Offset just past the last non-zero byte of the file, or of its first `region_end`
/// bytes (the records' area, before a back ring).
fn nonzero_extent(path: &Path, region_end: Option<u64>) -> Result<u64> {
    let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let end = region_end.map_or(data.len(), |e| (e as usize).min(data.len()));
    Ok(data[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1))
}
