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

pub(crate) fn open(dir: &Path, options: Options) -> Result<Inner> {
    options.validate()?;
    fsutil::create_dir_all(dir)?;
    let lock = DirLock::acquire(dir)?;
    let log_dir = dir.join("log");
    fsutil::create_dir_all(&log_dir)?;
    let meta_path = dir.join("meta");
    let mut report = RecoveryReport::default();

    let meta_tmp = fsutil::tmp_path(&meta_path);
    if meta_tmp.exists() {
        fsutil::remove_file(&meta_tmp)?;
        report.removed.push(meta_tmp);
    }
    let mut segs = Vec::new();
    let entries = fs::read_dir(&log_dir).map_err(|e| Error::io("list", &log_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &log_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first) = segment::parse_file_name(&name) {
            segs.push((first, entry.path()));
        } else if name.ends_with(".tmp") {
            fsutil::remove_file(&entry.path())?;
            report.removed.push(entry.path());
        } else {
            tracing::warn!(file = %entry.path().display(), "ignoring unknown file in log directory");
        }
    }
    segs.sort();

    let meta = match MetaFile::load(&meta_path)? {
        Some(m) => m,
        None if segs.is_empty() => {
            let m = MetaFile {
                log_id: rand::random(),
                purged_through: None,
                user: Default::default(),
            };
            m.store(&meta_path)?;
            m
        }
        None => {
            return Err(Error::corruption(
                &meta_path,
                0,
                format!(
                    "metadata file is missing but {} segment files exist",
                    segs.len()
                ),
            ))
        }
    };

    // Leftovers of an interrupted purge: segments whose successor starts within the purge.
    if let Some(p) = meta.purged_through {
        while segs.len() >= 2 && segs[1].0 <= p.saturating_add(1) {
            let (_, path) = segs.remove(0);
            fsutil::remove_file(&path)?;
            report.removed.push(path);
        }
    }

    // Disk is checked against the format's bound, not the (changeable) option for input.
    prefetch(&segs);
    let max = RECORD_BYTES_LIMIT;
    let mut sealed: Vec<SealedSegment> = Vec::new();
    let mut active: Option<(u64, PathBuf, Scan)> = None;
    let mut damaged: Option<(usize, Found)> = None;
    for (k, (first, path)) in segs.iter().enumerate() {
        let is_last = k + 1 == segs.len();
        let expected = sealed.last().map(|s| s.last_index() + 1);
        if let Some(e) = expected.filter(|e| e != first) {
            let reason = format!("segment starts at index {first}, expected {e}");
            damaged = Some((k, damage_without_prefix(0, reason)));
            break;
        }
        let verify = options.verify_on_open;
        let found = {
            // Only a scan needs the previous segment's last term; sealed segments skip it.
            let prev_term = || last_term_of(sealed.last());
            open_segment(
                path,
                *first,
                meta.log_id,
                max,
                &prev_term,
                is_last,
                verify,
                &mut report,
            )?
        };
        match found {
            Found::Sealed(s) => sealed.push(s),
            Found::Active(scan) => active = Some((*first, path.clone(), scan)),
            d @ Found::Damaged { .. } => {
                damaged = Some((k, d));
                break;
            }
        }
    }

    if let Some((
        k,
        Found::Damaged {
            scan,
            offset,
            reason,
            torn,
        },
    )) = damaged
    {
        let (first, path) = segs[k].clone();
        let is_last = k + 1 == segs.len();
        let tail = nonzero_extent(&path)?.saturating_sub(scan.end);
        match options.recovery_mode {
            RecoveryMode::Strict if !(is_last && torn) => {
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
                let moved_to = dir.join("salvage").join(format!(
                    "{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ));
                fsutil::create_dir_all(&moved_to)?;
                if tail > 0 && scan.end > 0 {
                    let data = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
                    let end = (scan.end + tail) as usize;
                    let name = format!("{}.from-{}", segment::file_name(first), scan.end);
                    // The copy is synced before the segment is cut: the bytes are never only
                    // in the page cache when the original goes.
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
                report.salvaged = Some(Salvaged {
                    file: path.clone(),
                    offset,
                    reason,
                    moved_to,
                    moved_files,
                    bytes: tail,
                });
            }
        }
        if scan.end > 0 {
            // Cut the file after its last good record; it becomes the active segment.
            let f = open_rw(&path)?;
            fsutil::set_len(&f, scan.end, &path)?;
            f.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
            active = Some((first, path, scan));
        }
        fsutil::sync_dir(&log_dir)?;
    }

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
    let purged_next = meta.purged_through.map(|p| p + 1);
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
            fsutil::sync_dir(&log_dir)?;
            last_term = None;
            (p, p)
        }
        (Some(f), Some(p)) => (f.max(p), next_index),
    };

    let active = match active {
        Some((first, path, scan)) => {
            let file = open_rw(&path)?;
            if options.preallocate && file_len(&file, &path)? < options.segment_bytes_max {
                fsutil::preallocate(&file, options.segment_bytes_max, &path)?;
            }
            // What a killed process left in the page cache becomes durable now.
            fsutil::sync_data(&file, &path)?;
            Some(Active {
                path,
                file: Arc::new(file),
                first_index: first,
                offsets: scan.offsets,
                end: scan.end.max(SEGMENT_HEADER_BYTES),
            })
        }
        None => None,
    };
    report.segments = sealed.len() + active.is_some() as usize;
    let fresh = seg_first.is_none() && purged_next.is_none();
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
