//! The segmented log: records `(index, term, payload)` with contiguous indexes.
//!
//! ```text
//!  appender threads                      writer thread (one)                 readers
//!  ────────────────                      ───────────────────                 ───────
//!  encode + compress + payload CRC       take every queued request           RwLock<State>
//!  lock queue: check index, stamp,  ──▶  one pwrite per segment touched  ──▶ sealed: mmap
//!  push request, wake writer             publish offsets (write lock)        active: pread
//!                                        one fdatasync if any asks for it
//!                                        the watermark into log/acked
//!                                        complete every callback
//! ```
//!
//! Truncate and purge travel through the same queue, so they are ordered with appends.
//! The writer is the only thread that changes files; readers only see published records.
//! The acknowledgment file (`acked.rs`) records how far the active segment is durable, so
//! that recovery never cuts an acknowledged record as a torn write; a thread of its own
//! syncs it.

mod acked;
mod inspect;
pub(crate) mod layout;
mod record;
mod recovery;
mod segment;
mod writer;

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fsutil::DirLock;
use crate::meta::{Loss, MetaFile, Metadata, Owed};
use crate::options::{Durability, Options, RECORD_BYTES_LIMIT};
pub use acked::{ACKED_FILE, ACKED_SYNC_MS};
pub use inspect::{inspect, inspect_with_progress, InspectReport, SegmentReport, Visit};
use record::{Compression, Header};
pub use recovery::{AcknowledgedCut, RecoveryReport, Salvaged, TornTail, Watermark};
use segment::SealedSegment;
use writer::{Done, Request};

/// One record to append.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub index: u64,
    pub term: u64,
    pub payload: &'a [u8],
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// A durable, segmented, checksummed log in a directory. See the crate docs for the layout.
///
/// All methods take `&self`; share a `Log` between threads with an `Arc`. Dropping it closes
/// it (flushing and syncing what was appended).
pub struct Log {
    inner: Arc<Inner>,
    writer: Option<JoinHandle<()>>,
    /// Syncs the acknowledgment file while slots are written.
    acked_syncer: Option<JoinHandle<()>>,
    /// The writer, run on the callers' threads (`Options::inline_writer`); `None` when it
    /// has a thread of its own.
    inline: Option<std::sync::Mutex<Option<writer::Writer>>>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    log_dir: PathBuf,
    meta_path: PathBuf,
    options: Options,
    log_id: u64,
    state: RwLock<State>,
    queue: Mutex<Queue>,
    /// Signalled when a request is queued or the log closes (the writer waits on it).
    work: Condvar,
    /// Signalled when the writer empties the queue (blocked appenders wait on it).
    space: Condvar,
    failed: OnceLock<Arc<Error>>,
    meta: Mutex<MetaFile>,
    /// One past the last index known durable (0 when nothing is).
    durable_next: AtomicU64,
    counters: Counters,
    report: RecoveryReport,
    /// The acknowledgment file: the active segment's durable watermark.
    acked: acked::AckedFile,
    /// The sequence the writer's next slot takes.
    acked_next_seq: u64,
    _lock: DirLock,
}

/// Counts of the writer's work since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records appended.
    pub records: u64,
    /// Bytes written to segments (records, headers and footers).
    pub bytes: u64,
    /// `pwrite` calls.
    pub writes: u64,
    /// `fdatasync` calls on segments.
    pub syncs: u64,
    /// Time spent in those calls, in nanoseconds.
    pub sync_nanos: u64,
    /// Group-commit rounds (each takes every request queued at that moment).
    pub rounds: u64,
    /// Purges (compactions) done.
    pub purges: u64,
    /// Segment files now: the sealed ones and the active one.
    pub segments: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    rounds: AtomicU64,
    pub(crate) purges: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(self).fetch_add(n, Ordering::Relaxed);
    }
}

/// What readers see. Changed only by the writer thread (and open).
pub(crate) struct State {
    sealed: Vec<SealedSegment>,
    active: Option<Active>,
    /// First readable index; equals `next_index` when the log is empty.
    first_index: u64,
    /// One past the last published record.
    next_index: u64,
    /// Term of the record at `next_index - 1`, when the log is not empty.
    last_term: Option<u64>,
}

/// The unsealed segment appends go to.
pub(crate) struct Active {
    path: PathBuf,
    file: Arc<File>,
    first_index: u64,
    /// Start offset of each published record.
    offsets: Vec<u32>,
    /// Offset just past the last published record.
    end: u64,
    /// The newest slot about this segment in the acknowledgment file, as open wrote it
    /// (the writer owns the watermark from then on).
    acked: Option<acked::Slot>,
}

struct Queue {
    requests: Vec<Request>,
    bytes: u64,
    /// Index the next append must start at; `None` for a new log, which takes any.
    next: Option<u64>,
    closing: bool,
    /// While the writer gathers a round it waits for this many requests; until then a push
    /// does not wake it (each wake is a context switch the appenders pay for).
    gathering_for: usize,
}

impl Queue {
    /// Whether a push that made the queue `len` long must wake the writer.
    fn must_wake_writer(&self) -> bool {
        self.gathering_for == 0 || self.requests.len() >= self.gathering_for
    }
}

/// Records encoded on the appender's thread, waiting for their indexes.
pub(crate) struct Encoded {
    bytes: Vec<u8>,
    /// End offset of each record within `bytes`.
    ends: Vec<u32>,
    payload_crcs: Vec<u32>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it as `options.recovery_mode` says.
    /// Takes the directory's lock; a second opener gets [`Error::Locked`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        let inline = options.inline_writer;
        let inner = Arc::new(recovery::open(dir.as_ref(), options)?);
        if inline {
            let writer = writer::Writer::new(inner.clone());
            return Ok(Log {
                inner,
                writer: None,
                acked_syncer: None,
                inline: Some(std::sync::Mutex::new(Some(writer))),
            });
        }
        let syncer_inner = inner.clone();
        let acked_syncer = std::thread::Builder::new()
            .name("cathedral-log-acked".into())
            .spawn(move || {
                if let Err(e) = syncer_inner.acked.sync_loop() {
                    syncer_inner.fail(e);
                }
            })
            .map_err(|e| Error::io("spawn acknowledgment sync thread for", dir.as_ref(), e))?;
        let writer_inner = inner.clone();
        let writer = std::thread::Builder::new()
            .name("cathedral-log-writer".into())
            .spawn(move || writer::Writer::new(writer_inner).run());
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                inner.acked.stop();
                let _ = acked_syncer.join();
                return Err(Error::io("spawn writer thread for", dir.as_ref(), e));
            }
        };
        Ok(Log {
            inner,
            writer: Some(writer),
            acked_syncer: Some(acked_syncer),
            inline: None,
        })
    }

    /// Appends `entries` (contiguous indexes, the first one the log's next index) and returns
    /// once they are acknowledged as `durability` asks.
    pub fn append(&self, entries: &[Entry<'_>], durability: Durability) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_with(entries, durability, move |r| {
            let _ = tx.send(r);
        })?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Queues `entries` and returns at once. `done` is called exactly once, from the writer
    /// thread, when the entries are acknowledged as `durability` asks or failed — unless this
    /// call returns an error, in which case nothing was queued and `done` is never called.
    /// Entries acknowledged are readable (`read`, `get`) by the time `done` is called; before
    /// that, queued entries are not served.
    pub fn append_with(
        &self,
        entries: &[Entry<'_>],
        durability: Durability,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        let Some(first) = entries.first() else {
            done(Ok(()));
            return Ok(());
        };
        for (k, e) in entries.iter().enumerate() {
            if e.index != first.index + k as u64 {
                return Err(Error::NonContiguous {
                    expected: first.index + k as u64,
                    got: e.index,
                });
            }
        }
        let encoded = self.encode(entries.iter().map(|e| (e.term, e.payload)))?;
        self.inner
            .enqueue_append(Some(first.index), encoded, durability, Box::new(done))?;
        self.drive();
        Ok(())
    }

    /// Appends `payloads` at the log's next indexes, all with `term`, and returns their
    /// indexes once acknowledged. For many independent appenders sharing one log.
    pub fn append_next(
        &self,
        term: u64,
        payloads: &[&[u8]],
        durability: Durability,
    ) -> Result<Range<u64>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let encoded = self.encode(payloads.iter().map(|p| (term, *p)))?;
        let first = self.inner.enqueue_append(
            None,
            encoded,
            durability,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        self.drive();
        rx.recv().unwrap_or(Err(Error::Closed))?;
        Ok(first..first + payloads.len() as u64)
    }

    fn encode<'a>(&self, items: impl ExactSizeIterator<Item = (u64, &'a [u8])>) -> Result<Encoded> {
        let o = &self.inner.options;
        if items.len() as u64 > o.batch_records_max {
            return Err(Error::limit(
                "batch_records_max",
                items.len() as u64,
                o.batch_records_max,
            ));
        }
        let compression = o.compress_threshold_bytes.map(|t| Compression {
            threshold_bytes: t,
            level: o.compression_level,
        });
        let mut enc = Encoded {
            bytes: Vec::new(),
            ends: Vec::with_capacity(items.len()),
            payload_crcs: Vec::with_capacity(items.len()),
        };
        let mut total = 0u64;
        let mut prev_term = 0;
        for (term, payload) in items {
            let len = payload.len() as u64;
            if len > o.record_bytes_max {
                return Err(Error::limit("record_bytes_max", len, o.record_bytes_max));
            }
            total += len;
            if total > o.batch_bytes_max {
                return Err(Error::limit("batch_bytes_max", total, o.batch_bytes_max));
            }
            if term < prev_term {
                return Err(Error::InvalidArgument(format!(
                    "terms must not decrease within a batch: {term} after {prev_term}"
                )));
            }
            prev_term = term;
            let crc = record::encode_unstamped(&mut enc.bytes, term, payload, compression);
            enc.ends.push(enc.bytes.len() as u32);
            enc.payload_crcs.push(crc);
        }
        Ok(enc)
    }

    /// Removes every record at `from` and after (Raft conflict resolution). Durable when it
    /// returns. `from` past the last index is a no-op; below the first index an error.
    pub fn truncate(&self, from: u64) -> Result<()> {
        self.call(|done| Request::Truncate { from, done })
    }

    /// Drops every record up to and including `upto` (compaction), storing `purged_id` as the
    /// metadata's purged id in the same atomic write. Whole segments are deleted; records of a
    /// partly covered segment stay on disk but are no longer readable. Durable when it returns.
    pub fn purge(&self, upto: u64, purged_id: Option<Vec<u8>>) -> Result<()> {
        self.call(|done| Request::Purge {
            upto,
            purged_id,
            done,
        })
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        self.call(|done| Request::Sync { done })
    }

    fn call(&self, make: impl FnOnce(Done) -> Request) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner.enqueue(make(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        self.drive();
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Inline mode: writes what was just queued, on this thread (see
    /// `Options::inline_writer`); the acknowledgment file is synced after each round.
    fn drive(&self) {
        let Some(inline) = &self.inline else {
            return;
        };
        let mut w = inline.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = w.as_mut() {
            w.drive();
            if let Err(e) = self.inner.acked.sync_if_dirty() {
                self.inner.fail(e);
            }
        }
    }

    /// The record at `index`; `None` past the end, [`Error::Purged`] before the start.
    pub fn get(&self, index: u64) -> Result<Option<Record>> {
        let st = self.inner.read_state()?;
        if !st.holds(index)? {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(1);
        self.inner.read_into(&st, index..index + 1, &mut out)?;
        Ok(out.pop())
    }

    /// Records in `range`, cut at the end of the log. [`Error::Purged`] when the range starts
    /// before the first index.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let st = self.inner.read_state()?;
        let end = range.end.min(st.next_index);
        if range.start >= end {
            return Ok(Vec::new());
        }
        if range.start < st.first_index {
            return Err(Error::Purged {
                index: range.start,
                first_index: st.first_index,
            });
        }
        let mut out = Vec::with_capacity((end - range.start).min(65_536) as usize);
        self.inner.read_into(&st, range.start..end, &mut out)?;
        Ok(out)
    }

    /// Term of the record at `index`, reading only its header.
    pub fn term(&self, index: u64) -> Result<Option<u64>> {
        let st = self.inner.read_state()?;
        if !st.holds(index)? {
            return Ok(None);
        }
        if index + 1 == st.next_index {
            return Ok(st.last_term);
        }
        Ok(Some(self.inner.header_at(&st, index)?.term))
    }

    /// First readable index, or `None` when the log holds no record.
    pub fn first_index(&self) -> Option<u64> {
        let st = self.inner.state.read().unwrap();
        (st.first_index < st.next_index).then_some(st.first_index)
    }

    /// The purge point: every index up to and including it was compacted away (`None`:
    /// nothing purged yet).
    pub fn purged_through(&self) -> Option<u64> {
        self.inner.meta.lock().unwrap().purged_through
    }

    /// Last appended (written, maybe not yet durable) index, or `None` when empty.
    pub fn last_index(&self) -> Option<u64> {
        let st = self.inner.state.read().unwrap();
        (st.first_index < st.next_index).then(|| st.next_index - 1)
    }

    /// `(index, term)` of the last appended record, or `None` when empty.
    pub fn last_entry(&self) -> Option<(u64, u64)> {
        let st = self.inner.state.read().unwrap();
        if st.first_index < st.next_index {
            st.last_term.map(|t| (st.next_index - 1, t))
        } else {
            None
        }
    }

    /// Last index known to be durable, or `None`.
    pub fn durable_index(&self) -> Option<u64> {
        self.inner
            .durable_next
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// The caller's metadata as last stored.
    pub fn metadata(&self) -> Metadata {
        self.inner.meta.lock().unwrap().user.clone()
    }

    /// Stores `vote`; durable (atomically replaced) when it returns.
    pub fn save_vote(&self, vote: Vec<u8>) -> Result<()> {
        self.inner.update_meta(|m| m.user.vote = Some(vote))
    }

    /// Stores `committed`; durable (atomically replaced) when it returns.
    pub fn save_committed(&self, committed: Vec<u8>) -> Result<()> {
        self.inner
            .update_meta(|m| m.user.committed = Some(committed))
    }

    /// Acknowledged entries this log lost to damage and has not held again since
    /// ([`RecoveryMode::Refetch`](crate::RecoveryMode::Refetch)): through `(term, index)`.
    /// While it is `Some`, a Raft member must not vote for a candidate whose log ends
    /// before it, nor campaign. Cleared once the log holds `index` durably (or a purge
    /// covers it).
    pub fn owed(&self) -> Option<Owed> {
        self.inner.meta.lock().unwrap().owed
    }

    /// Losses of acknowledged entries an operator accepted (salvage, `repair
    /// --accept-loss`), oldest first.
    pub fn losses(&self) -> Vec<Loss> {
        self.inner.meta.lock().unwrap().losses.clone()
    }

    /// Counts of the writer's work since open.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_nanos: c.sync_nanos.load(Ordering::Relaxed),
            rounds: c.rounds.load(Ordering::Relaxed),
            purges: c.purges.load(Ordering::Relaxed),
            segments: {
                let st = self.inner.state.read().unwrap();
                st.sealed.len() as u64 + u64::from(st.active.is_some())
            },
        }
    }

    /// What open found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The fatal error the log stopped on, if it did: every later call fails with it
    /// (fail-stop). A failure the background threads met (a sync of the acknowledgment
    /// file) shows here before any caller hears of it.
    pub fn failure(&self) -> Option<Arc<Error>> {
        self.inner.failed.get().cloned()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes and syncs what was appended, stops the writer and releases the lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(inline) = &self.inline {
            let taken = inline.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = taken {
                self.inner.queue.lock().unwrap().closing = true;
                w.close();
                let _ = self.inner.acked.sync_if_dirty();
            }
            return match self.inner.failed.get() {
                Some(cause) => Err(Error::Stopped {
                    cause: cause.clone(),
                }),
                None => Ok(()),
            };
        }
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        self.inner.queue.lock().unwrap().closing = true;
        self.inner.work.notify_all();
        let _ = handle.join();
        self.inner.acked.stop();
        if let Some(h) = self.acked_syncer.take() {
            let _ = h.join();
        }
        match self.inner.failed.get() {
            Some(cause) => Err(Error::Stopped {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Inline (a simulation's), a log dropped without `close` is abandoned as a killed
        // process leaves it: what was written stays, nothing is sealed or synced.
        if let Some(inline) = &self.inline {
            inline.lock().unwrap_or_else(|e| e.into_inner()).take();
            return;
        }
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .finish()
    }
}

impl Inner {
    fn check_failed(&self) -> Result<()> {
        match self.failed.get() {
            Some(cause) => Err(Error::Stopped {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a fatal error (the first one wins) and returns the error callers get.
    pub(crate) fn fail(&self, e: Error) -> Error {
        let cause = self.failed.get_or_init(|| {
            tracing::error!(error = %e, dir = %self.dir.display(), "log failed stop");
            Arc::new(e)
        });
        Error::Stopped {
            cause: cause.clone(),
        }
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.check_failed()?;
        Ok(self.state.read().unwrap())
    }

    /// Queues an append, assigning indexes when `first` is `None`. Returns the first index.
    fn enqueue_append(
        &self,
        first: Option<u64>,
        mut enc: Encoded,
        durability: Durability,
        done: Done,
    ) -> Result<u64> {
        let mut q = self.lock_queue_with_space(enc.bytes.len() as u64)?;
        let first = match (first, q.next) {
            (Some(f), Some(n)) if f != n => {
                return Err(Error::NonContiguous {
                    expected: n,
                    got: f,
                })
            }
            (Some(f), _) => f,
            (None, Some(n)) => n,
            (None, None) => 1,
        };
        let mut start = 0usize;
        for (k, (&end, &crc)) in enc.ends.iter().zip(&enc.payload_crcs).enumerate() {
            record::stamp(&mut enc.bytes[start..end as usize], first + k as u64, crc);
            start = end as usize;
        }
        q.next = Some(first + enc.ends.len() as u64);
        q.bytes += enc.bytes.len() as u64;
        q.requests.push(Request::Append {
            first,
            batch: enc,
            durability,
            done,
        });
        let wake = q.must_wake_writer();
        drop(q);
        if wake {
            self.work.notify_one();
        }
        Ok(first)
    }

    fn enqueue(&self, req: Request) -> Result<()> {
        let mut q = self.lock_queue_with_space(0)?;
        match &req {
            Request::Truncate { from, .. } => {
                let first = self.state.read().unwrap().first_index;
                if *from < first {
                    return Err(Error::Purged {
                        index: *from,
                        first_index: first,
                    });
                }
                if let Some(n) = q.next {
                    q.next = Some(n.min(*from));
                }
            }
            Request::Purge { upto, .. } => {
                let after = upto.saturating_add(1);
                q.next = Some(q.next.map_or(after, |n| n.max(after)));
            }
            Request::Append { .. } | Request::Sync { .. } => {}
        }
        q.requests.push(req);
        drop(q);
        self.work.notify_one();
        Ok(())
    }

    /// Locks the queue once it has room for `bytes` more (a request larger than the whole
    /// bound is let in alone, so it cannot wait forever).
    fn lock_queue_with_space(&self, bytes: u64) -> Result<std::sync::MutexGuard<'_, Queue>> {
        let mut q = self.queue.lock().unwrap();
        loop {
            self.check_failed()?;
            if q.closing {
                return Err(Error::Closed);
            }
            if q.bytes == 0 || q.bytes + bytes <= self.options.queue_bytes_max {
                return Ok(q);
            }
            q = self.space.wait(q).unwrap();
        }
    }

    pub(crate) fn update_meta(&self, change: impl FnOnce(&mut MetaFile)) -> Result<()> {
        self.check_failed()?;
        let mut m = self.meta.lock().unwrap();
        let mut next = m.clone();
        change(&mut next);
        match next.store(&self.meta_path) {
            Ok(()) => {
                *m = next;
                Ok(())
            }
            Err(e @ Error::LimitExceeded { .. }) => Err(e),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Appends the records of `range` (inside the log) to `out`.
    fn read_into(&self, st: &State, range: Range<u64>, out: &mut Vec<Record>) -> Result<()> {
        let max = RECORD_BYTES_LIMIT;
        let mut i = range.start;
        while i < range.end {
            match st.segment_of(i) {
                Seg::Sealed(s) => {
                    let stop = range.end.min(s.last_index() + 1);
                    for index in i..stop {
                        let (h, stored) = s.record(index)?;
                        out.push(to_record(&h, stored, &s.path, max)?);
                    }
                    i = stop;
                }
                Seg::Active(a) => {
                    let k0 = (i - a.first_index) as usize;
                    let k1 = (range.end - a.first_index) as usize;
                    let start = a.offsets[k0] as u64;
                    let end = a.offsets.get(k1).map_or(a.end, |&o| o as u64);
                    let mut buf = vec![0u8; (end - start) as usize];
                    a.file
                        .read_exact_at(&mut buf, start)
                        .map_err(|e| Error::io("read", &a.path, e))?;
                    for k in k0..k1 {
                        let lo = (a.offsets[k] as u64 - start) as usize;
                        let hi = a.offsets.get(k + 1).map_or(a.end, |&o| o as u64) - start;
                        let index = a.first_index + k as u64;
                        let (h, stored) = segment::verify_record(
                            &buf[lo..hi as usize],
                            &a.path,
                            start + lo as u64,
                            index,
                        )?;
                        out.push(to_record(&h, stored, &a.path, max)?);
                    }
                    i = range.end;
                }
            }
        }
        Ok(())
    }

    /// Header of the record at `index` (inside the log).
    fn header_at(&self, st: &State, index: u64) -> Result<Header> {
        match st.segment_of(index) {
            Seg::Sealed(s) => Ok(s.record(index)?.0),
            Seg::Active(_) => {
                let mut out = Vec::with_capacity(1);
                self.read_into(st, index..index + 1, &mut out)?;
                let r = &out[0];
                Ok(Header {
                    crc: 0,
                    stored_len: 0,
                    compressed: false,
                    index: r.index,
                    term: r.term,
                })
            }
        }
    }
}

fn to_record(h: &Header, stored: &[u8], path: &Path, record_bytes_limit: u64) -> Result<Record> {
    let payload = record::payload(h, stored, record_bytes_limit)
        .map_err(|reason| Error::corruption(path, 0, reason))?;
    Ok(Record {
        index: h.index,
        term: h.term,
        payload,
    })
}

enum Seg<'a> {
    Sealed(&'a SealedSegment),
    Active(&'a Active),
}

impl State {
    /// Whether `index` is in the log: `false` past its end, [`Error::Purged`] before its start.
    fn holds(&self, index: u64) -> Result<bool> {
        if index >= self.next_index {
            return Ok(false);
        }
        if index < self.first_index {
            return Err(Error::Purged {
                index,
                first_index: self.first_index,
            });
        }
        Ok(true)
    }

    /// The segment holding `index`, which the caller checked lies inside the log.
    fn segment_of(&self, index: u64) -> Seg<'_> {
        if let Some(a) = &self.active {
            if index >= a.first_index {
                return Seg::Active(a);
            }
        }
        let k = self.sealed.partition_point(|s| s.first_index <= index);
        assert!(k > 0, "index {index} below every segment");
        Seg::Sealed(&self.sealed[k - 1])
    }
}
