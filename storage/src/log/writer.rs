//! The writer thread: group commit, segment rotation, truncate and purge. (With
//! `Options::inline_writer` the same rounds run on the callers' threads: `Writer::drive`.)
//!
//! One round takes every queued request, writes all appended bytes with one `pwrite` per
//! segment touched, publishes them to readers, issues one `fdatasync` if any request in the
//! round asked for durability, writes the new durable watermark into the acknowledgment
//! file (`acked.rs`: page cache only; its own thread syncs it), and then completes the
//! callbacks. While a round syncs, new requests queue up and form the next round, so
//! concurrent appenders share syncs.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use fail::fail_point;

use super::acked::Slot;
use super::record;
use super::segment::{self, SealedSegment, SEGMENT_HEADER_BYTES};
use super::{Active, Encoded, Inner};
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

pub(crate) struct Writer {
    inner: Arc<Inner>,
    /// The active segment's file and path, when there is one.
    file: Option<(Arc<File>, PathBuf)>,
    /// Write position in the active segment; pending bytes go at `end`, and after them
    /// the next record at `end + pending_bytes`.
    end: u64,
    /// Bytes written since the last fdatasync of the active segment.
    unsynced: bool,
    /// The newest slot written about the active segment (its durable watermark); `None`
    /// without an active segment.
    acked: Option<Slot>,
    /// The sequence of the next slot.
    next_seq: u64,
    /// What the log owes its cluster (a copy of the metadata's: after open only this
    /// thread changes it), so that the hot path checks it without the metadata's lock.
    owed: Option<crate::meta::Owed>,
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
        let acked = st.active.as_ref().and_then(|a| a.acked);
        let pending_next = st.next_index;
        drop(st);
        let next_seq = inner.acked_next_seq;
        let owed = inner.meta.lock().unwrap().owed;
        Writer {
            inner,
            file,
            end,
            unsynced: false,
            acked,
            next_seq,
            owed,
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
            dropped_until: 0,
        }
    }

    pub fn run(mut self) {
        self.prepare_spare();
        loop {
            let round = {
                let mut q = self.inner.queue.lock().unwrap();
                while q.requests.is_empty() && !q.closing {
                    q = self.inner.work.wait(q).unwrap();
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
        self.close();
    }

    /// Inline mode (`Options::inline_writer`): writes every queued request now, on the
    /// caller's thread, one round.
    pub fn drive(&mut self) {
        let round = {
            let mut q = self.inner.queue.lock().unwrap();
            q.bytes = 0;
            std::mem::take(&mut q.requests)
        };
        self.inner.space.notify_all();
        if round.is_empty() {
            return;
        }
        self.inner.counters.add(|c| &c.rounds, 1);
        self.round(round);
    }

    /// Closing: seals the active segment (which also makes buffered appends durable), so
    /// that the next open reads footers only and scans nothing.
    pub fn close(mut self) {
        if self.inner.failed.get().is_none()
            && self.file.is_some()
            && self.end > SEGMENT_HEADER_BYTES
        {
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
            let has_records = pos > SEGMENT_HEADER_BYTES;
            if self.file.is_none() {
                self.start_segment(index)?;
            } else if has_records && pos + len > seg_max {
                self.write_pending()?;
                self.seal()?;
                self.start_segment(index)?;
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

    /// Makes everything written durable, then records the new watermark (before the
    /// caller completes any callback it covers).
    fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            let (file, path) = self
                .file
                .as_ref()
                .expect("unsynced bytes without a segment");
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
            self.drop_behind(self.end);
        }
        let (next, last_term) = {
            let st = self.inner.state.read().unwrap();
            (st.next_index, st.last_term)
        };
        self.inner.durable_next.store(next, Ordering::Release);
        self.advance_watermark(next, last_term)?;
        self.settle_owed(next)
    }

    /// Writes a slot saying the active segment is durable through `next - 1` (ending at
    /// `self.end`), when that moved: two `pwrite`s into the page cache of the
    /// acknowledgment file, which its own thread syncs.
    fn advance_watermark(&mut self, next: u64, last_term: Option<u64>) -> Result<()> {
        let Some(last) = self.acked else {
            return Ok(());
        };
        if last.acked_next == next && last.acked_end == self.end {
            return Ok(());
        }
        let slot = Slot {
            seq: self.take_seq(),
            acked_next: next,
            acked_end: self.end,
            acked_term: last_term.unwrap_or(last.acked_term),
            ..last
        };
        self.inner.acked.write(&slot)?;
        self.acked = Some(slot);
        Ok(())
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// Writes `slot` as the active segment's watermark and syncs it: for the moments it
    /// must be durable before the next step (a new segment, a lowered watermark).
    fn set_watermark_durably(&mut self, slot: Slot) -> Result<()> {
        self.inner.acked.write(&slot)?;
        self.inner.acked.sync()?;
        self.acked = Some(slot);
        Ok(())
    }

    /// Clears the owed range once the log holds its last entry durably again.
    fn settle_owed(&mut self, durable_next: u64) -> Result<()> {
        if let Some(o) = self.owed.filter(|o| durable_next > o.index) {
            self.inner.update_meta(|m| m.owed = None)?;
            self.owed = None;
            tracing::info!(
                through = o.index,
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
        self.acked = None;
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

    /// Makes the spare file the segment starting at `first_index`: header, sync, its first
    /// watermark (nothing acknowledged) durable, rename, directory sync. Then starts
    /// preparing the next spare.
    fn start_segment(&mut self, first_index: u64) -> Result<()> {
        let log_dir = self.inner.log_dir.clone();
        let spare_path = log_dir.join(SPARE_NAME);
        let file = self.take_spare(&spare_path)?;
        let header = segment::encode_header(self.inner.log_id, first_index);
        fsutil::write_all_at(&file, &header, 0, &spare_path)?;
        fsutil::sync_data(&file, &spare_path)?;
        // Durable before the segment exists under its name: a last segment without a slot
        // in the acknowledgment file is damage to that file.
        let prev_term = self.inner.state.read().unwrap().last_term.unwrap_or(0);
        let slot = Slot {
            seq: self.take_seq(),
            log_id: self.inner.log_id,
            first_index,
            acked_next: first_index,
            acked_end: SEGMENT_HEADER_BYTES,
            acked_term: prev_term,
        };
        self.set_watermark_durably(slot)?;
        let path = log_dir.join(segment::file_name(first_index));
        fsutil::rename(&spare_path, &path)?;
        fsutil::sync_dir(&log_dir)?;
        let file = Arc::new(file);
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
                end: SEGMENT_HEADER_BYTES,
                acked: Some(slot),
            });
        }
        self.file = Some((file, path));
        self.end = SEGMENT_HEADER_BYTES;
        self.unsynced = false;
        self.dropped_until = 0;
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
            self.inner.options.segment_bytes_max,
            self.inner.options.preallocate,
        )
    }

    fn prepare_spare(&mut self) {
        // Inline, the next segment is created when it is needed (`take_spare`): no thread.
        if self.spare.is_some()
            || self.inner.failed.get().is_some()
            || self.inner.options.inline_writer
        {
            return;
        }
        let path = self.inner.log_dir.join(SPARE_NAME);
        let len = self.inner.options.segment_bytes_max;
        let preallocate = self.inner.options.preallocate;
        self.spare = std::thread::Builder::new()
            .name("cathedral-log-prealloc".into())
            .spawn(move || create_spare(&path, len, preallocate))
            .ok();
    }

    /// Removes records from `from` on. `Ok(Err(_))` is a refusal for the caller that leaves
    /// the log healthy; `Err(_)` is fatal.
    ///
    /// The watermark goes down with the records, durably, before any is cut: no crash
    /// leaves it above records a truncate removed (recovery would take them for damage).
    /// Long on purpose: the order of its durable steps is the contract (see above);
    /// kept in one place so it cannot be reordered by a caller.
    fn truncate(&mut self, from: u64) -> Result<Result<()>> {
        let seg_max = self.inner.options.segment_bytes_max;
        let preallocate = self.inner.options.preallocate;
        // The state is locked through a clone of the handle: the watermark's helpers take
        // the writer mutably meanwhile.
        let inner = self.inner.clone();
        let mut st = inner.state.write().unwrap();
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
            Some(inner.header_at(&st, from - 1)?.term)
        } else {
            None
        };
        // Whole segments at or after `from` go, newest first, so a crash leaves a prefix.
        if st.active.as_ref().is_some_and(|a| a.first_index >= from) {
            let a = st.active.take().unwrap();
            self.file = None;
            self.acked = None;
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
        if let Some(a) = st.active.as_mut() {
            let keep = (from - a.first_index) as usize;
            let cut = a.offsets[keep] as u64;
            if let Some(last) = self.acked.filter(|w| w.acked_next > from) {
                let lowered = Slot {
                    seq: self.take_seq(),
                    acked_next: from,
                    acked_end: cut,
                    acked_term: prev_term.unwrap_or(0),
                    ..last
                };
                self.set_watermark_durably(lowered)?;
            }
            cut_file(&a.file, cut, seg_max, preallocate, &a.path)?;
            a.offsets.truncate(keep);
            a.end = cut;
            a.acked = self.acked;
            self.end = cut;
            self.dropped_until = self.dropped_until.min(cut);
        } else if st.sealed.last().is_some_and(|s| s.last_index() >= from) {
            // Unseal: the segment holding `from` becomes the active one again. Its map is
            // dropped (under the write lock) before the file is shortened. Its slot comes
            // first: the file may hold old ones naming it from when it was active, with a
            // watermark past `from`.
            let s = st.sealed.pop().unwrap();
            let keep = from - s.first_index;
            let offsets: Vec<u32> = (0..keep).map(|i| s.offset_of(i)).collect();
            let cut = s.offset_of(keep) as u64;
            let (path, first) = (s.path.clone(), s.first_index);
            drop(s);
            let slot = Slot {
                seq: self.take_seq(),
                log_id: self.inner.log_id,
                first_index: first,
                acked_next: from,
                acked_end: cut,
                acked_term: prev_term.unwrap_or(0),
            };
            self.set_watermark_durably(slot)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            cut_file(&file, cut, seg_max, preallocate, &path)?;
            let file = Arc::new(file);
            self.file = Some((file.clone(), path.clone()));
            self.end = cut;
            self.dropped_until = self.dropped_until.min(cut);
            st.active = Some(Active {
                path,
                file,
                first_index: first,
                offsets,
                end: cut,
                acked: Some(slot),
            });
        }
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
            self.owed = next.owed;
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
            self.acked = None;
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

/// Shortens `file` to `cut` and restores its preallocated length with zeros past it.
fn cut_file(
    file: &File,
    cut: u64,
    seg_max: u64,
    preallocate: bool,
    path: &std::path::Path,
) -> Result<()> {
    fsutil::set_len(file, cut, path)?;
    if preallocate && cut < seg_max {
        fsutil::preallocate(file, seg_max, path)?;
    }
    fsutil::sync_all(file, path)
}

fn create_spare(path: &std::path::Path, len: u64, preallocate: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::forget(path);
    if preallocate {
        fsutil::preallocate(&file, len, path)?;
    }
    Ok(file)
}
