//! Opening a log: lock, metadata, leftovers, segment footers, a scan of the active segment
//! against its watermark in the acknowledgment file, and the torn-tail /
//! acknowledged-damage / corruption / salvage decisions.
//!
//! Only the last segment may be unsealed. Sealed segments are opened by their footers alone
//! (their records are checked on every read); the active segment is scanned record by
//! record and the acknowledgment file (`log/acked`) gives its durable watermark. Damage past the watermark is a torn
//! tail: it is cut off and reported. Records missing at or below it are acknowledged
//! entries damaged (`layout::judge`): refused in strict mode; in refetch mode copied to
//! `<dir>/salvage/<time>/`, cut and recorded as owed; in salvage mode moved aside and
//! recorded as an accepted loss. Any other damage fails open with the file, the byte offset
//! and the reason — or, in salvage mode, the valid prefix is kept and everything after it
//! is moved into `<dir>/salvage/<time>/`, never deleted.
//!
//! Phases, in order: `list_and_clean` → `load_or_create_meta` → `remove_purged_leftovers`
//! → the acknowledgment file read → `open_segments` (footers; the last segment scanned
//! against its watermark) → `settle_damage`
//! (judge, then cut / refuse / salvage, with the metadata written before anything is cut)
//! → `bounds` → `open_active` (the watermark of everything held written anew, synced).
//! `damage` holds the settling of damage (judge, then each mode's steps).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use memmap2::Mmap;

use super::acked::{self, AckedFile, Slot, Slots};
use super::layout::{self, TailFacts, Verdict};
use super::segment::{self, Damage, Scan, SealedSegment, SEGMENT_HEADER_BYTES};
use super::{Active, Inner, Queue, State};
use crate::error::{Error, Result};
use crate::fsutil::{self, DirLock};
use crate::meta::{Loss, MetaFile, Owed};
use crate::options::{Options, RecoveryMode, RECORD_BYTES_LIMIT};

mod damage;

use damage::{settle_damage, Place};

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
    /// The last segment's durable watermark as the acknowledgment file gave it (an unsealed
    /// last segment only).
    pub watermark: Option<Watermark>,
    /// Acknowledged entries this open cut (refetch: owed; salvage: an accepted loss).
    pub acknowledged_cut: Option<AcknowledgedCut>,
}

/// How far the active segment was durable, from the acknowledgment file.
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
        /// What the acknowledgment file said about the segment.
        tail: Option<Tail>,
    },
}

/// An unsealed segment ready to become the active one: its first index, path, scan, and
/// what the acknowledgment file said about it.
type Unsealed = (u64, PathBuf, Scan, Option<Tail>);

/// What is known of a segment beside its records.
#[derive(Debug, Clone, Copy)]
struct Tail {
    /// Its header could be read.
    header_ok: bool,
    /// The acknowledgment file speaks for its records: it is the last segment, unsealed,
    /// and the log keeps the file (a directory from before the file has none: the old
    /// torn-tail rule applies to it once).
    judged_by_watermark: bool,
    /// Its newest slot in the acknowledgment file.
    watermark: Option<Slot>,
    /// The last index a damaged sealed segment's footer names (what salvage loses).
    footer_last: Option<u64>,
}

impl Tail {
    fn watermark(&self) -> Option<Watermark> {
        self.watermark.map(|s| Watermark {
            acked_next: s.acked_next,
            term: s.acked_term,
            end: s.acked_end,
            seq: s.seq,
        })
    }
}

/// Opens the log in `dir`, in the order the module comment gives: each step below is a
/// function of its own.
/// Long on purpose: the sequence of steps itself, with what each hands the next.
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
    let slots = read_acked(&log_dir, &meta, options.recovery_mode)?;
    let Opened {
        sealed,
        mut active,
        damaged,
    } = open_segments(&segs, meta.log_id, slots.as_ref(), &options, &mut report)?;
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
    // The acknowledgment file exists from here on (created for a directory from before
    // it), and the metadata says so: from now on a missing file is damage.
    let acked = AckedFile::open_or_create(&log_dir, !meta.acked_in_use)?;
    let mut next_seq = slots.as_ref().map_or(0, Slots::max_seq) + 1;
    let active = match active {
        Some((first, path, scan, _)) => Some(open_active(
            first,
            path,
            scan,
            Identity {
                log_id: meta.log_id,
                prev_term: last_term,
            },
            &acked,
            &mut next_seq,
            &options,
        )?),
        None => None,
    };
    if !meta.acked_in_use {
        meta.acked_in_use = true;
        meta.store(&meta_path)?;
    }
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
        acked,
        acked_next_seq: next_seq,
        _lock: lock,
    })
}

/// The acknowledgment file's slots; `None` for a directory written before the file
/// existed. A file the metadata says the log keeps, missing, is damage (salvage goes on
/// without it).
fn read_acked(log_dir: &Path, meta: &MetaFile, mode: RecoveryMode) -> Result<Option<Slots>> {
    // A file the metadata does not name yet was left by a first open that did not finish
    // (a directory from before the file, upgraded): nothing was acknowledged through it.
    if !meta.acked_in_use {
        return Ok(None);
    }
    let slots = acked::read(log_dir, meta.log_id)?;
    if slots.is_none() && meta.acked_in_use && mode != RecoveryMode::Salvage {
        return Err(Error::corruption(
            log_dir.join(acked::ACKED_FILE),
            0,
            "the acknowledgment file is missing: what this log acknowledged cannot be told",
        ));
    }
    if let Some(s) = &slots {
        for at in &s.damaged {
            tracing::warn!(file = %log_dir.join(acked::ACKED_FILE).display(), offset = at, "damaged slot in the acknowledgment file (its twin in the other ring, or an older slot, is used)");
        }
    }
    Ok(slots)
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
/// Long on purpose: sealed and unsealed segments and every stop condition share the
/// loop's state (the expected next index, the damage found).
fn open_segments(
    segs: &[(u64, PathBuf)],
    log_id: u64,
    slots: Option<&Slots>,
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
                is_last.then_some(slots),
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

/// The active segment, ready for appends: preallocated and synced — what a killed process
/// left in the page cache becomes durable now — and its watermark, everything it holds
/// (durable now), written to the acknowledgment file and synced.
#[allow(clippy::too_many_arguments)]
fn open_active(
    first: u64,
    path: PathBuf,
    scan: Scan,
    id: Identity,
    acked: &AckedFile,
    next_seq: &mut u64,
    options: &Options,
) -> Result<Active> {
    let file = open_rw(&path)?;
    if options.preallocate && file_len(&file, &path)? < options.segment_bytes_max {
        fsutil::preallocate(&file, options.segment_bytes_max, &path)?;
    }
    fsutil::sync_data(&file, &path)?;
    let end = scan.end.max(SEGMENT_HEADER_BYTES);
    let slot = Slot {
        seq: *next_seq,
        log_id: id.log_id,
        first_index: first,
        acked_next: first + scan.offsets.len() as u64,
        acked_end: end,
        acked_term: scan.last_term.or(id.prev_term).unwrap_or(0),
    };
    *next_seq += 1;
    acked.write(&slot)?;
    acked.sync()?;
    Ok(Active {
        path,
        file: Arc::new(file),
        first_index: first,
        offsets: scan.offsets,
        end,
        acked: Some(slot),
    })
}

/// Opens one segment: a sealed one by its footer; an unsealed one by a scan of its
/// records. `last`: this is the log's last segment, with the acknowledgment file's slots
/// (`None` inside: a directory from before the file). The last segment's records ending
/// short of its watermark, or disagreeing with it, is reported as damage, for
/// `settle_damage` to judge.
///
/// Long on purpose: the footer path and the scan path end in the same checks (the
/// records against the watermark and the previous segment's term); split, each half
/// would take every one of the arguments and return half a verdict.
#[allow(clippy::too_many_arguments)]
fn open_segment(
    path: &Path,
    first: u64,
    log_id: u64,
    record_bytes_limit: u64,
    prev_term: &dyn Fn() -> Result<Option<u64>>,
    last: Option<Option<&Slots>>,
    verify: bool,
    report: &mut RecoveryReport,
) -> Result<Found> {
    let is_last = last.is_some();
    // What the acknowledgment file says about this segment, when it is the last one.
    let tail = |header_ok: bool| {
        last.map(|slots| Tail {
            header_ok,
            judged_by_watermark: slots.is_some(),
            watermark: slots.and_then(|s| s.current(first)),
            footer_last: None,
        })
    };
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file_len(&file, path)?;
    if len < SEGMENT_HEADER_BYTES {
        return Ok(damage_without_prefix(
            0,
            format!("file is {len} bytes, shorter than a segment header"),
            tail(false),
        ));
    }
    // SAFETY: nothing writes segment files while the directory lock is held by this open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
    if let Err(e) = segment::check_header(&map, path, log_id, first) {
        return match e {
            Error::Corruption { offset, reason, .. } => {
                Ok(damage_without_prefix(offset, reason, tail(false)))
            }
            other => Err(other),
        };
    }
    if segment::looks_sealed(&map) {
        drop(map);
        let sealed = SealedSegment::open(path, log_id, first);
        let footer_last = sealed.as_ref().ok().map(SealedSegment::last_index);
        let opened = sealed.and_then(|s| {
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
                let scan = segment::scan(&map, first, record_bytes_limit, prev_term()?, false);
                // A sealed segment's records were all durable before its footer was
                // written: its damage is never judged by a watermark.
                Ok(Found::Damaged {
                    scan,
                    offset,
                    reason,
                    torn: false,
                    tail: Some(Tail {
                        header_ok: true,
                        judged_by_watermark: false,
                        watermark: None,
                        footer_last,
                    }),
                })
            }
            Err(e) => Err(e),
        };
    }
    let tail = tail(true).unwrap_or(Tail {
        header_ok: true,
        judged_by_watermark: false,
        watermark: None,
        footer_last: None,
    });
    let scan = segment::scan(
        &map,
        first,
        record_bytes_limit,
        prev_term()?,
        !tail.judged_by_watermark,
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
        None if !tail.judged_by_watermark => Found::Active { scan, tail },
        None => match layout::watermark_problem(&scan, &map, first, tail.watermark) {
            // Ending short of the watermark is judged by it; disagreeing with it about a
            // record it names is not torn (`torn: false`): corruption.
            Some((offset, reason)) => Found::Damaged {
                torn: tail
                    .watermark
                    .is_some_and(|w| w.acked_next > first + scan.offsets.len() as u64),
                scan,
                offset,
                reason,
                tail: Some(tail),
            },
            None if tail.watermark.is_none() => Found::Damaged {
                offset: 0,
                reason: format!(
                    "no valid slot in the acknowledgment file names this segment (first index {first})"
                ),
                scan,
                torn: true,
                tail: Some(tail),
            },
            None => Found::Active { scan, tail },
        },
    })
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

/// Offset just past the last non-zero byte of the file.
fn nonzero_extent(path: &Path) -> Result<u64> {
    let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Ok(data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1))
}
