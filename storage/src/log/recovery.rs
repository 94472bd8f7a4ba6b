//! Opening a log: lock, metadata, leftovers, segment footers, a scan of the active segment,
//! and the torn-tail / corruption / salvage decisions.
//!
//! Only the last segment may be unsealed. Sealed segments are opened by their footers alone
//! (their records are checked on every read); the active segment is scanned record by
//! record. Damage found in the last segment with no valid record after it is a torn tail:
//! it is cut off and reported. Any other damage fails open with the file, the byte offset
//! and the reason — or, in salvage mode, the valid prefix is kept and everything after it
//! is moved into `<dir>/salvage/<time>/`, never deleted.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use memmap2::Mmap;

use super::layout;
use super::segment::{self, Damage, Scan, SealedSegment, SEGMENT_HEADER_BYTES};
use super::{Active, Inner, Queue, State};
use crate::error::{Error, Result};
use crate::fsutil::{self, DirLock};
use crate::meta::MetaFile;
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
    Active(Scan),
    /// Damaged at `offset`; `scan` holds its valid prefix.
    Damaged {
        scan: Scan,
        offset: u64,
        reason: String,
        torn: bool,
    },
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
    let meta = load_or_create_meta(&meta_path, segs.len())?;
    remove_purged_leftovers(&mut segs, meta.purged_through, &mut report)?;
    let Opened {
        sealed,
        mut active,
        damaged,
    } = open_segments(&segs, meta.log_id, &options, &mut report)?;
    if let Some((k, found)) = damaged {
        if let Some(a) = settle_damage(dir, &segs, k, found, options.recovery_mode, &mut report)? {
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
        Some((first, path, scan)) => Some(open_active(first, path, scan, &options)?),
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
    let meta_tmp = fsutil::tmp_path(meta_path);
    if meta_tmp.exists() {
        fsutil::remove_file(&meta_tmp)?;
        report.removed.push(meta_tmp);
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

/// The metadata, written fresh for a new log; missing beside segments is corruption.
fn load_or_create_meta(meta_path: &Path, segments: usize) -> Result<MetaFile> {
    match MetaFile::load(meta_path)? {
        Some(m) => Ok(m),
        None if segments == 0 => {
            let m = MetaFile {
                log_id: rand::random(),
                purged_through: None,
                user: Default::default(),
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
    active: Option<(u64, PathBuf, Scan)>,
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
                damage_without_prefix(0, layout::discontinuity(*first, e)),
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
            Found::Active(scan) => opened.active = Some((*first, path.clone(), scan)),
            d @ Found::Damaged { .. } => {
                opened.damaged = Some((k, d));
                break;
            }
        }
    }
    Ok(opened)
}

/// Decides what to do with the damage found in segment `k`: a torn tail is cut; in strict
/// mode anything else fails open; salvage mode moves everything from the damage on aside.
/// Returns the cut segment when it keeps valid records: it becomes the active one.
fn settle_damage(
    dir: &Path,
    segs: &[(u64, PathBuf)],
    k: usize,
    found: Found,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<Option<(u64, PathBuf, Scan)>> {
    let Found::Damaged {
        scan,
        offset,
        reason,
        torn,
    } = found
    else {
        unreachable!("only damage is settled");
    };
    let (first, path) = segs[k].clone();
    let is_last = k + 1 == segs.len();
    let tail = nonzero_extent(&path)?.saturating_sub(scan.end);
    match mode {
        RecoveryMode::Strict if !layout::is_torn_tail(torn, is_last) => {
            return Err(Error::corruption(&path, offset, reason))
        }
        RecoveryMode::Strict => {
            tracing::warn!(file = %path.display(), offset, bytes = tail, %reason, "cutting torn tail");
            report.torn_tail = Some(TornTail {
                file: path.clone(),
                offset: scan.end,
                bytes: tail,
                reason,
            });
        }
        RecoveryMode::Salvage => {
            report.salvaged = Some(salvage(dir, segs, k, &scan, tail, offset, reason)?);
        }
    }
    if scan.end == 0 {
        return Ok(None);
    }
    // Cut the file after its last good record; it becomes the active segment.
    let f = open_rw(&path)?;
    fsutil::set_len(&f, scan.end, &path)?;
    f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
    Ok(Some((first, path, scan)))
}

/// Salvage mode's move: the bytes after the valid prefix of segment `k` (copied and synced
/// first) and every later segment go to `<dir>/salvage/<time>/`.
fn salvage(
    dir: &Path,
    segs: &[(u64, PathBuf)],
    k: usize,
    scan: &Scan,
    tail: u64,
    offset: u64,
    reason: String,
) -> Result<Salvaged> {
    let (first, path) = &segs[k];
    let moved_to = dir.join("salvage").join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
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
    active: Option<(u64, PathBuf, Scan)>,
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
    mut active: Option<(u64, PathBuf, Scan)>,
    purged_through: Option<u64>,
    segs: &[(u64, PathBuf)],
    log_dir: &Path,
    report: &mut RecoveryReport,
) -> Result<Bounds> {
    let mut last_term = match &active {
        Some((_, _, scan)) if scan.last_term.is_some() => scan.last_term,
        _ => last_term_of(sealed.last())?,
    };
    let seg_first = sealed
        .first()
        .map(|s| s.first_index)
        .or(active.as_ref().map(|a| a.0));
    let next_index = match &active {
        Some((first, _, scan)) => first + scan.offsets.len() as u64,
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
            if let Some((_, path, _)) = active.take() {
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

/// The active segment, ready for appends: preallocated, and synced — what a killed
/// process left in the page cache becomes durable now.
fn open_active(first: u64, path: PathBuf, scan: Scan, options: &Options) -> Result<Active> {
    let file = open_rw(&path)?;
    if options.preallocate && file_len(&file, &path)? < options.segment_bytes_max {
        fsutil::preallocate(&file, options.segment_bytes_max, &path)?;
    }
    fsutil::sync_data(&file, &path)?;
    Ok(Active {
        path,
        file: Arc::new(file),
        first_index: first,
        offsets: scan.offsets,
        end: scan.end.max(SEGMENT_HEADER_BYTES),
    })
}

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
        ));
    }
    // SAFETY: nothing writes segment files while the directory lock is held by this open.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
    if let Err(e) = segment::check_header(&map, path, log_id, first) {
        return match e {
            Error::Corruption { offset, reason, .. } => Ok(damage_without_prefix(offset, reason)),
            other => Err(other),
        };
    }
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
                let scan = segment::scan(&map, first, record_bytes_limit, prev_term()?);
                Ok(Found::Damaged {
                    scan,
                    offset,
                    reason,
                    torn: false,
                })
            }
            Err(e) => Err(e),
        };
    }
    let scan = segment::scan(&map, first, record_bytes_limit, prev_term()?);
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
        },
        None if !is_last => {
            let offset = scan.end;
            Found::Damaged {
                scan,
                offset,
                reason: "segment has no footer but later segments exist".into(),
                torn: false,
            }
        }
        None => Found::Active(scan),
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

fn damage_without_prefix(offset: u64, reason: String) -> Found {
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
