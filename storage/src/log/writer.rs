//! The writer thread: group commit, segment rotation, truncate and purge.
//!
//! One round takes every queued request, writes all appended bytes with one `pwrite` per
//! segment touched, publishes them to readers, issues one `fdatasync` if any request in the
//! round asked for durability, writes the new durable watermark into an acknowledgment
//! ring (`ring.rs`; page cache only — the next round's fdatasync, or an idle sync, makes
//! it durable), and then completes the callbacks. While a round syncs, new requests queue
//! up and form the next round, so concurrent appenders share syncs.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use fail::fail_point;

use super::record;
use super::ring::{self, Slot, RING_BYTES};
use super::segment::{self, SealedSegment, FRONT_RING_AT, SEGMENT_VERSION, SEGMENT_VERSION_V1};
use super::{Active, ActiveRings, Encoded, Inner};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::options::Durability;

/// Completion callback of a queued request; called exactly once.
pub(crate) type Done = Box<dyn FnOnce(Result<()>) + Send>;

pub(crate) enum Request {
    Append {
        first: u64,
        batch: Encoded,
        durability: Durability,
        done: Done,
    },
    Sync {
        done: Done,
    },
    Truncate {
        from: u64,
        done: Done,
    },
    Purge {
        upto: u64,
        purged_id: Option<Vec<u8>>,
        done: Done,
    },
}

impl Request {
    fn done(self) -> Done {
        match self {
            Request::Append { done, .. }
            | Request::Sync { done }
            | Request::Truncate { done, .. }
            | Request::Purge { done, .. } => done,
        }
    }
}

/// Name of the spare segment file prepared ahead of need.
const SPARE_NAME: &str = "prealloc.tmp";

/// While a segment's records end within this many bytes of its front ring, each slot goes
/// to the back ring as well: a damaged range shorter than this at the end of the records
/// cannot reach both rings (FORMAT.md § "Acknowledgment rings", fault model).
pub(crate) const BOTH_RINGS_BYTES: u64 = 1 << 20;

/// An idle writer whose last acknowledgment slot is only in the page cache syncs it after
/// this long: the watermark survives a process crash at once, a power loss within this.
pub(crate) const RING_IDLE_SYNC_MS: u64 = 200;

/// Where the back ring of a version-2 segment starts whose records begin at `data_start`:
/// after room for `segment_bytes_max` bytes of records, or for a first record larger than
/// that (it gets the segment to itself), page-aligned.
pub(crate) fn back_ring_at(
    data_start: u64,
    segment_bytes_max: u64,
    first_record_bytes: u64,
) -> u64 {
    data_start
        + segment_bytes_max
            .max(first_record_bytes)
            .next_multiple_of(4096)
}

pub(crate) struct Writer {
    inner: Arc<Inner>,
    /// The active segment's file and path, when there is one.
    file: Option<(Arc<File>, PathBuf)>,
    /// Write position in the active segment; pending bytes go at `end`, and after them
    /// the next record at `end + pending_bytes`.
    end: u64,
    /// Bytes written since the last fdatasync of the active segment.
    unsynced: bool,
    /// Offset of the first record in the active segment.
    data_start: u64,
    /// The active segment's acknowledgment rings and the newest slot written to them;
    /// `None` without an active segment or for a version-1 one (which has no rings).
    rings: Option<ActiveRings>,
    /// A slot was written since the last fdatasync.
    ring_unsynced: bool,
    /// Encoded batches of the current round. Records are written from where the appenders
    /// encoded them (one `pwritev`), never copied into a round buffer.
    held: Vec<Vec<u8>>,
    /// Bytes not yet written, in file order: `(batch in held, start, end)`.
    pieces: Vec<(usize, usize, usize)>,
    pending_bytes: u64,
    /// What publishing the pending records needs.
    pending_offsets: Vec<u32>,
    pending_next: u64,
    pending_last_term: u64,
    /// Callbacks to complete after the next write (buffered) or sync (durable).
    after_write: Vec<Done>,
    after_sync: Vec<Done>,
    /// Background preparation of the next segment's file.
    spare: Option<JoinHandle<Result<File>>>,
    /// Durable requests (appends and syncs) the previous round carried.
    last_round_durable: usize,
    /// Bytes of the active segment below this offset were dropped from the page cache.
    dropped_until: u64,
}

/// Drop-behind works in steps of at least this many bytes (one fadvise call per step).
const DROP_STEP_BYTES: u64 = 1 << 20;

impl Writer {
    pub fn new(inner: Arc<Inner>) -> Writer {
        let st = inner.state.read().unwrap();
        let file = st.active.as_ref().map(|a| (a.file.clone(), a.path.clone()));
        let end = st.active.as_ref().map_or(0, |a| a.end);
        let data_start = st.active.as_ref().map_or(0, |a| a.data_start);
        let rings = st.active.as_ref().and_then(|a| a.rings);
        let legacy = st.active.as_ref().is_some_and(|a| a.rings.is_none());
        let pending_next = st.next_index;
        drop(st);
        let mut w = Writer {
            inner,
            file,
            end,
            unsynced: false,
            data_start,
            rings,
            ring_unsynced: false,
            held: Vec::new(),
            pieces: Vec::new(),
            pending_bytes: 0,
            pending_offsets: Vec::new(),
            pending_next,
            pending_last_term: 0,
            after_write: Vec::new(),
            after_sync: Vec::new(),
            spare: None,
            last_round_durable: 0,
            dropped_until: data_start,
        };
        if legacy {
            // A version-1 active segment (written by an earlier release) has no rings:
            // seal it now, so that every record appended from here on is in a segment
            // whose acknowledged watermark recovery can read.
            if let Err(e) = w.retire_legacy_active() {
                w.inner.fail(e);
            }
        }
        w.prepare_spare();
        w
    }

    /// Seals a version-1 active segment that holds records; removes one that holds none.
    fn retire_legacy_active(&mut self) -> Result<()> {
        if self.end > self.data_start {
            return self.seal();
        }
        let mut st = self.inner.state.write().unwrap();
        if let Some(a) = st.active.take() {
            self.file = None;
            drop(a.file);
            fsutil::remove_file(&a.path)?;
            fsutil::sync_dir(&self.inner.log_dir)?;
        }
        Ok(())
    }

    pub fn run(mut self) {
        loop {
            let round = {
                let mut q = self.inner.queue.lock().unwrap();
                while q.requests.is_empty() && !q.closing {
                    if !self.ring_unsynced {
                        q = self.inner.work.wait(q).unwrap();
                        continue;
                    }
                    let idle = std::time::Duration::from_millis(RING_IDLE_SYNC_MS);
                    let (guard, waited) = self.inner.work.wait_timeout(q, idle).unwrap();
                    q = guard;
                    if waited.timed_out() && q.requests.is_empty() && !q.closing {
                        drop(q);
                        if let Err(e) = self.sync_file() {
                            self.inner.fail(e);
                        }
                        q = self.inner.queue.lock().unwrap();
                    }
                }
                if q.requests.is_empty() {
                    break;
                }
                q = self.gather(q);
                q.bytes = 0;
                std::mem::take(&mut q.requests)
            };
            self.inner.space.notify_all();
            self.inner.counters.add(|c| &c.rounds, 1);
            self.round(round);
        }
        // Closing: seal the active segment (which also makes buffered appends durable), so
        // that the next open reads footers only and scans nothing.
        if self.inner.failed.get().is_none() && self.file.is_some() && self.end > self.data_start {
            if let Err(e) = self.seal() {
                self.inner.fail(e);
            }
        }
        if let Some(h) = self.spare.take() {
            let _ = h.join();
        }
    }

    /// Adaptive group commit: waits (at most `group_commit_wait_us`) until the queue holds
    /// as many requests as the previous round's durable ones. Closed-loop appenders that
    /// the previous round just completed need a moment to queue again; starting the next
    /// fdatasync without them would leave them waiting a whole extra round.
    fn gather<'a>(
        &self,
        mut q: std::sync::MutexGuard<'a, super::Queue>,
    ) -> std::sync::MutexGuard<'a, super::Queue> {
        let wait = self.inner.options.group_commit_wait_us;
        let want = self.last_round_durable;
        if wait == 0 || want <= 1 || q.requests.len() >= want {
            return q;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_micros(wait);
        q.gathering_for = want;
        while q.requests.len() < want && !q.closing {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            q = self.inner.work.wait_timeout(q, deadline - now).unwrap().0;
        }
        q.gathering_for = 0;
        q
    }

    fn round(&mut self, requests: Vec<Request>) {
        self.last_round_durable = requests
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Request::Sync { .. }
                        | Request::Append {
                            durability: Durability::Durable,
                            ..
                        }
                )
            })
            .count();
        let mut requests = requests.into_iter();
        while let Some(req) = requests.next() {
            if self.inner.failed.get().is_some() {
                let err = self.inner.fail(Error::Closed);
                req.done()(Err(err.clone()));
                for r in requests.by_ref() {
                    r.done()(Err(err.clone()));
                }
                return;
            }
            if let Err(e) = self.handle(req) {
                let err = self.inner.fail(e);
                self.fail_pending(&err);
                for r in requests.by_ref() {
                    r.done()(Err(err.clone()));
                }
                return;
            }
        }
        if let Err(e) = self.finish_round() {
            let err = self.inner.fail(e);
            self.fail_pending(&err);
        }
    }

    fn fail_pending(&mut self, err: &Error) {
        for d in self.after_write.drain(..).chain(self.after_sync.drain(..)) {
            d(Err(err.clone()));
        }
    }

    /// Handles one request. An error returned here is fatal for the log; the request's
    /// callback is always completed or queued for completion, never dropped.
    fn handle(&mut self, req: Request) -> Result<()> {
        match req {
            Request::Append {
                first,
                batch,
                durability,
                done,
            } => {
                let written = self.append(first, batch);
                match durability {
                    Durability::Durable => self.after_sync.push(done),
                    Durability::Buffered => self.after_write.push(done),
                }
                written?;
            }
            Request::Sync { done } => self.after_sync.push(done),
            Request::Truncate { from, done } => {
                match self.finish_round().and_then(|()| self.truncate(from)) {
                    Ok(refused_or_ok) => done(refused_or_ok),
                    Err(e) => return Err(self.complete_with_failure(e, done)),
                }
            }
            Request::Purge {
                upto,
                purged_id,
                done,
            } => match self
                .finish_round()
                .and_then(|()| self.purge(upto, purged_id))
            {
                Ok(()) => {
                    self.inner.counters.add(|c| &c.purges, 1);
                    done(Ok(()))
                }
                Err(e) => return Err(self.complete_with_failure(e, done)),
            },
        }
        Ok(())
    }

    /// Fails the log with `e`, completes `done` with the resulting error, returns `e`.
    fn complete_with_failure(&self, e: Error, done: Done) -> Error {
        done(Err(self.inner.fail(e.clone())));
        e
    }

    fn append(&mut self, first: u64, batch: Encoded) -> Result<()> {
        let seg_max = self.inner.options.segment_bytes_max;
        let held = self.held.len();
        self.held.push(batch.bytes);
        let mut start = 0usize;
        for (k, &end) in batch.ends.iter().enumerate() {
            let end = end as usize;
            let len = (end - start) as u64;
            let index = first + k as u64;
            let pos = self.end + self.pending_bytes;
            let has_records = pos > self.data_start;
            // A version-2 segment's records end where its back ring begins.
            let capacity_end = self.rings.map_or(seg_max, |r| r.back_at);
            if self.file.is_none() {
                self.start_segment(index, len)?;
            } else if has_records && pos + len > capacity_end {
                self.write_pending()?;
                self.seal()?;
                self.start_segment(index, len)?;
            }
            self.pending_offsets
                .push((self.end + self.pending_bytes) as u32);
            match self.pieces.last_mut() {
                Some((h, _, e)) if *h == held && *e == start => *e = end,
                _ => self.pieces.push((held, start, end)),
            }
            self.pending_bytes += len;
            // Per record, not per batch: a rotation mid-batch publishes what is pending.
            self.pending_next = index + 1;
            self.pending_last_term = record::term_of(&self.held[held][start..end]);
            start = end;
        }
        Ok(())
    }

    /// Writes pending bytes and completes the round's callbacks: buffered ones after the
    /// write, durable ones after one fdatasync.
    fn finish_round(&mut self) -> Result<()> {
        self.write_pending()?;
        self.held.clear();
        for d in self.after_write.drain(..) {
            d(Ok(()));
        }
        if !self.after_sync.is_empty() {
            self.sync()?;
            for d in self.after_sync.drain(..) {
                d(Ok(()));
            }
        }
        Ok(())
    }

    /// Writes the pending records to the active segment (one `pwritev`) and publishes
    /// them to readers.
    fn write_pending(&mut self) -> Result<()> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        let (file, path) = self.file.as_ref().expect("pending bytes without a segment");
        let slices: Vec<&[u8]> = self
            .pieces
            .iter()
            .map(|&(h, s, e)| &self.held[h][s..e])
            .collect();
        fsutil::write_all_vectored_at(file, &slices, self.end, path)?;
        let c = &self.inner.counters;
        c.add(|c| &c.writes, 1);
        c.add(|c| &c.bytes, self.pending_bytes);
        c.add(|c| &c.records, self.pending_offsets.len() as u64);
        self.unsynced = true;
        self.end += self.pending_bytes;
        self.pending_bytes = 0;
        self.pieces.clear();
        let mut st = self.inner.state.write().unwrap();
        let a = st.active.as_mut().expect("active segment");
        a.offsets.append(&mut self.pending_offsets);
        a.end = self.end;
        st.next_index = self.pending_next;
        st.last_term = Some(self.pending_last_term);
        Ok(())
    }

    /// Makes everything written durable, then records the new watermark in a ring (before
    /// the caller completes any callback it covers).
    fn sync(&mut self) -> Result<()> {
        self.sync_file()?;
        let (next, last_term) = {
            let st = self.inner.state.read().unwrap();
            (st.next_index, st.last_term)
        };
        self.inner.durable_next.store(next, Ordering::Release);
        self.advance_watermark(next, last_term)?;
        self.settle_owed(next)
    }

    /// One fdatasync of the active segment, when anything (records or a slot) is unsynced.
    fn sync_file(&mut self) -> Result<()> {
        if !(self.unsynced || self.ring_unsynced) {
            return Ok(());
        }
        let Some((file, path)) = self.file.as_ref() else {
            self.ring_unsynced = false;
            return Ok(());
        };
        let started = std::time::Instant::now();
        fsutil::sync_data(file, path)?;
        let took = started.elapsed();
        self.inner.counters.add(|c| &c.syncs, 1);
        self.inner
            .counters
            .add(|c| &c.sync_nanos, took.as_nanos() as u64);
        if let Some(observe) = &self.inner.options.on_sync {
            (observe.0)(took);
        }
        self.unsynced = false;
        self.ring_unsynced = false;
        self.drop_behind(self.end);
        Ok(())
    }

    /// Writes a slot saying the active segment is durable through `next - 1` (ending at
    /// `self.end`), when that moved: into the front ring always (a file cut short keeps
    /// it), and into the back ring too while the records end within `BOTH_RINGS_BYTES` of
    /// the front one (damage at the end of the records could reach it). One or two
    /// `pwrite`s into the page cache; the next fdatasync makes them durable.
    fn advance_watermark(&mut self, next: u64, last_term: Option<u64>) -> Result<()> {
        let (Some(r), Some((file, path))) = (self.rings.as_mut(), self.file.as_ref()) else {
            return Ok(());
        };
        if r.last.acked_next == next && r.last.acked_end == self.end {
            return Ok(());
        }
        let slot = Slot {
            seq: r.last.seq + 1,
            acked_next: next,
            acked_end: self.end,
            acked_term: last_term.unwrap_or(r.last.acked_term),
            ..r.last
        };
        ring::write(file, FRONT_RING_AT, &slot, path)?;
        if self.end - self.data_start < BOTH_RINGS_BYTES {
            ring::write(file, r.back_at, &slot, path)?;
        }
        r.last = slot;
        self.ring_unsynced = true;
        Ok(())
    }

    /// Clears the owed range once the log holds its last entry durably again.
    fn settle_owed(&mut self, durable_next: u64) -> Result<()> {
        let owed = self.inner.meta.lock().unwrap().owed;
        if owed.is_some_and(|o| durable_next > o.index) {
            self.inner.update_meta(|m| m.owed = None)?;
            tracing::info!(
                through = owed.map_or(0, |o| o.index),
                "the acknowledged entries this log had lost are held again"
            );
        }
        Ok(())
    }

    /// Drops synced bytes more than `cache_behind_bytes` behind `synced_end` from the page
    /// cache, in steps of `DROP_STEP_BYTES`.
    fn drop_behind(&mut self, synced_end: u64) {
        let (Some(window), Some((file, _))) = (self.inner.options.cache_behind_bytes, &self.file)
        else {
            return;
        };
        let upto = synced_end.saturating_sub(window) & !4095;
        if upto >= self.dropped_until + DROP_STEP_BYTES {
            fsutil::drop_cache(file, self.dropped_until, upto - self.dropped_until);
            self.dropped_until = upto;
        }
    }

    /// Writes the footer, cuts the preallocated tail, syncs, and hands the segment to
    /// readers as a memory-mapped sealed segment.
    fn seal(&mut self) -> Result<()> {
        let (file, path) = self.file.clone().expect("seal without a segment");
        let (first, offsets) = {
            let st = self.inner.state.read().unwrap();
            let a = st.active.as_ref().expect("active segment");
            (a.first_index, a.offsets.clone())
        };
        let footer = segment::encode_footer(first, &offsets, self.end);
        fsutil::write_all_at(&file, &footer, self.end, &path)?;
        fsutil::set_len(&file, self.end + footer.len() as u64, &path)?;
        fail_point!("log::seal::before_sync", |_| Err(Error::io(
            "fdatasync",
            &path,
            std::io::Error::from_raw_os_error(libc::EIO)
        )));
        fsutil::sync_data(&file, &path)?;
        self.unsynced = false;
        self.ring_unsynced = false;
        self.rings = None;
        self.drop_behind(self.end);
        let sealed = SealedSegment::open(&path, self.inner.log_id, first)?;
        let mut st = self.inner.state.write().unwrap();
        st.active = None;
        st.sealed.push(sealed);
        drop(st);
        self.file = None;
        self.end = 0;
        Ok(())
    }

    /// Makes the spare file the segment starting at `first_index`, whose first record takes
    /// `first_record_bytes`: header, the first slot in both rings, sync, rename, directory
    /// sync. Then starts preparing the next spare.
    fn start_segment(&mut self, first_index: u64, first_record_bytes: u64) -> Result<()> {
        let log_dir = self.inner.log_dir.clone();
        let spare_path = log_dir.join(SPARE_NAME);
        let file = self.take_spare(&spare_path)?;
        let data_start = segment::data_start(SEGMENT_VERSION);
        let back_at = back_ring_at(
            data_start,
            self.inner.options.segment_bytes_max,
            first_record_bytes,
        );
        ensure_len(
            &file,
            back_at + RING_BYTES,
            self.inner.options.preallocate,
            &spare_path,
        )?;
        let header = segment::encode_header(self.inner.log_id, first_index);
        fsutil::write_all_at(&file, &header, 0, &spare_path)?;
        let prev_term = self.inner.state.read().unwrap().last_term.unwrap_or(0);
        let slot = Slot {
            seq: 1,
            log_id: self.inner.log_id,
            first_index,
            acked_next: first_index,
            acked_end: data_start,
            acked_term: prev_term,
        };
        ring::write(&file, FRONT_RING_AT, &slot, &spare_path)?;
        ring::write(&file, back_at, &slot, &spare_path)?;
        fsutil::sync_data(&file, &spare_path)?;
        let path = log_dir.join(segment::file_name(first_index));
        fsutil::rename(&spare_path, &path)?;
        fsutil::sync_dir(&log_dir)?;
        let file = Arc::new(file);
        let rings = ActiveRings {
            back_at,
            last: slot,
        };
        {
            let mut st = self.inner.state.write().unwrap();
            if st.first_index == st.next_index {
                st.first_index = first_index;
                st.next_index = first_index;
            }
            st.active = Some(Active {
                path: path.clone(),
                file: file.clone(),
                first_index,
                offsets: Vec::new(),
                end: data_start,
                data_start,
                rings: Some(rings),
            });
        }
        self.file = Some((file, path));
        self.end = data_start;
        self.data_start = data_start;
        self.rings = Some(rings);
        self.unsynced = false;
        self.ring_unsynced = false;
        self.dropped_until = data_start;
        self.prepare_spare();
        Ok(())
    }

    fn take_spare(&mut self, spare_path: &std::path::Path) -> Result<File> {
        if let Some(handle) = self.spare.take() {
            match handle.join() {
                Ok(Ok(file)) => return Ok(file),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "background segment preallocation failed; retrying inline")
                }
                Err(_) => {
                    tracing::warn!("background segment preallocation panicked; retrying inline")
                }
            }
        }
        create_spare(
            spare_path,
            spare_bytes(self.inner.options.segment_bytes_max),
            self.inner.options.preallocate,
        )
    }

    fn prepare_spare(&mut self) {
        if self.spare.is_some() || self.inner.failed.get().is_some() {
            return;
        }
        let path = self.inner.log_dir.join(SPARE_NAME);
        let len = spare_bytes(self.inner.options.segment_bytes_max);
        let preallocate = self.inner.options.preallocate;
        self.spare = std::thread::Builder::new()
            .name("cathedral-log-prealloc".into())
            .spawn(move || create_spare(&path, len, preallocate))
            .ok();
    }

    /// Removes records from `from` on. `Ok(Err(_))` is a refusal for the caller that leaves
    /// the log healthy; `Err(_)` is fatal.
    fn truncate(&mut self, from: u64) -> Result<Result<()>> {
        let mut st = self.inner.state.write().unwrap();
        if from >= st.next_index {
            return Ok(Ok(()));
        }
        if from < st.first_index {
            return Ok(Err(Error::Purged {
                index: from,
                first_index: st.first_index,
            }));
        }
        let prev_term = if st.first_index < from {
            Some(self.inner.header_at(&st, from - 1)?.term)
        } else {
            None
        };
        // Whole segments at or after `from` go, newest first, so a crash leaves a prefix.
        if st.active.as_ref().is_some_and(|a| a.first_index >= from) {
            let a = st.active.take().unwrap();
            self.file = None;
            self.rings = None;
            self.ring_unsynced = false;
            drop(a.file);
            fsutil::remove_file(&a.path)?;
        }
        while st.sealed.last().is_some_and(|s| s.first_index >= from) {
            let s = st.sealed.pop().unwrap();
            let path = s.path.clone();
            drop(s);
            fsutil::remove_file(&path)?;
        }
        fsutil::sync_dir(&self.inner.log_dir)?;
        let tail = Tail {
            from,
            prev_term: prev_term.unwrap_or(0),
        };
        if let Some(a) = st.active.as_mut() {
            let keep = (from - a.first_index) as usize;
            let cut = a.offsets[keep] as u64;
            let rings = self.rings.map(|r| (r.back_at, r.last));
            self.rings = cut_tail(
                &self.inner,
                &a.file,
                &a.path,
                a.first_index,
                cut,
                tail,
                rings,
            )?;
            a.offsets.truncate(keep);
            a.end = cut;
            self.end = cut;
            self.dropped_until = self.dropped_until.min(cut);
        } else if st.sealed.last().is_some_and(|s| s.last_index() >= from) {
            // Unseal: the segment holding `from` becomes the active one again. Its map is
            // dropped (under the write lock) before the file is shortened.
            let s = st.sealed.pop().unwrap();
            let keep = from - s.first_index;
            let offsets: Vec<u32> = (0..keep).map(|i| s.offset_of(i)).collect();
            let cut = s.offset_of(keep) as u64;
            let (path, first, version) = (s.path.clone(), s.first_index, s.version);
            let data_start = segment::data_start(version);
            // A sealed version-2 segment keeps its front ring (the back one went with the
            // seal): its newest slot is what a crash during this unseal would find.
            let rings = (version != SEGMENT_VERSION_V1).then(|| {
                let found = ring::read(s.bytes(), FRONT_RING_AT, self.inner.log_id, first);
                let back_at = back_ring_at(
                    data_start,
                    self.inner.options.segment_bytes_max,
                    cut - data_start,
                );
                (
                    back_at,
                    found.current.unwrap_or(Slot {
                        seq: 0,
                        log_id: self.inner.log_id,
                        first_index: first,
                        acked_next: s.last_index() + 1,
                        acked_end: s.data_end(),
                        acked_term: 0,
                    }),
                )
            });
            drop(s);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            self.rings = cut_tail(&self.inner, &file, &path, first, cut, tail, rings)?;
            let file = Arc::new(file);
            self.file = Some((file.clone(), path.clone()));
            self.end = cut;
            self.data_start = data_start;
            self.dropped_until = data_start;
            st.active = Some(Active {
                path,
                file,
                first_index: first,
                offsets,
                end: cut,
                data_start,
                rings: self.rings,
            });
        }
        self.ring_unsynced = false;
        st.next_index = from;
        self.pending_next = from;
        st.last_term = prev_term;
        if st.first_index >= from {
            st.first_index = from;
        }
        self.unsynced = false;
        self.inner.durable_next.fetch_min(from, Ordering::AcqRel);
        Ok(Ok(()))
    }

    /// Records the purge point durably, then deletes whole segments it covers.
    fn purge(&mut self, upto: u64, purged_id: Option<Vec<u8>>) -> Result<()> {
        {
            let mut m = self.inner.meta.lock().unwrap();
            if m.purged_through.is_some_and(|p| p >= upto) && purged_id.is_none() {
                return Ok(());
            }
            let mut next = m.clone();
            next.purged_through = Some(next.purged_through.map_or(upto, |p| p.max(upto)));
            if purged_id.is_some() {
                next.user.purged = purged_id;
            }
            // A snapshot covering what the log owed settles it (the state holds it).
            if next.owed.is_some_and(|o| o.index <= upto) {
                next.owed = None;
            }
            next.store(&self.inner.meta_path)?;
            *m = next;
        }
        fail_point!("log::purge::after_meta", |_| Err(Error::io(
            "remove",
            &self.inner.log_dir,
            std::io::Error::from_raw_os_error(libc::EIO)
        )));
        let mut st = self.inner.state.write().unwrap();
        let mut doomed = Vec::new();
        if upto.saturating_add(1) >= st.next_index {
            // Everything is purged: the next append starts a fresh segment at upto + 1.
            if let Some(a) = st.active.take() {
                doomed.push(a.path);
            }
            doomed.extend(st.sealed.drain(..).map(|s| s.path.clone()));
            self.file = None;
            self.end = 0;
            self.unsynced = false;
            self.rings = None;
            self.ring_unsynced = false;
            st.first_index = upto + 1;
            st.next_index = upto + 1;
            st.last_term = None;
            self.pending_next = upto + 1;
        } else {
            while st.sealed.first().is_some_and(|s| s.last_index() <= upto) {
                doomed.push(st.sealed.remove(0).path.clone());
            }
            st.first_index = st.first_index.max(upto + 1);
        }
        drop(st);
        // Oldest first: a crash leaves a suffix, and open deletes what the purge point covers.
        doomed.sort();
        for path in &doomed {
            fsutil::remove_file(path)?;
        }
        if !doomed.is_empty() {
            fsutil::sync_dir(&self.inner.log_dir)?;
        }
        Ok(())
    }
}

/// Shortens the active segment's file to `cut` (its records end there now) and restores
/// its full length with zeros past it, durably. For a version-2 segment (`rings`: the
/// back ring's place and the newest slot), a ring that claims records past `cut` is
/// first lowered durably — so no crash leaves a watermark above records that a
/// truncate removed — and after the cut both rings get the lowered watermark.
#[allow(clippy::too_many_arguments)]
fn cut_tail(
    inner: &Inner,
    file: &File,
    path: &std::path::Path,
    first_index: u64,
    cut: u64,
    tail: Tail,
    rings: Option<(u64, Slot)>,
) -> Result<Option<ActiveRings>> {
    let preallocate = inner.options.preallocate;
    let Some((back_at, newest)) = rings else {
        fsutil::set_len(file, cut, path)?;
        let seg_max = inner.options.segment_bytes_max;
        if preallocate && cut < seg_max {
            fsutil::preallocate(file, seg_max, path)?;
        }
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        return Ok(None);
    };
    let lowered = Slot {
        seq: newest.seq + 1,
        log_id: inner.log_id,
        first_index,
        acked_next: tail.from,
        acked_end: cut,
        acked_term: tail.prev_term,
    };
    if newest.acked_next > tail.from {
        ring::write(file, FRONT_RING_AT, &lowered, path)?;
        fsutil::sync_data(file, path)?;
    }
    fsutil::set_len(file, cut, path)?;
    ensure_len(file, back_at + RING_BYTES, preallocate, path)?;
    let last = Slot {
        seq: lowered.seq + 1,
        ..lowered
    };
    ring::write(file, FRONT_RING_AT, &last, path)?;
    ring::write(file, back_at, &last, path)?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    Ok(Some(ActiveRings { back_at, last }))
}

/// What a truncate keeps: records before `from`, the last of them of term `prev_term`
/// (0 when none is kept).
#[derive(Debug, Clone, Copy)]
struct Tail {
    from: u64,
    prev_term: u64,
}

/// Bytes of a prepared spare segment: the header page, the front ring, room for
/// `segment_bytes_max` of records, the back ring.
fn spare_bytes(segment_bytes_max: u64) -> u64 {
    back_ring_at(segment::data_start(SEGMENT_VERSION), segment_bytes_max, 0) + RING_BYTES
}

/// Makes `file` at least `len` bytes long: allocated (fallocate) with `preallocate`,
/// sparse otherwise.
fn ensure_len(file: &File, len: u64, preallocate: bool, path: &std::path::Path) -> Result<()> {
    let now = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if now >= len {
        return Ok(());
    }
    if preallocate {
        fsutil::preallocate(file, len, path)
    } else {
        fsutil::set_len(file, len, path)
    }
}

fn create_spare(path: &std::path::Path, len: u64, preallocate: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    if preallocate {
        fsutil::preallocate(&file, len, path)?;
    }
    Ok(file)
}
