//! The acknowledgment file, `log/acked`: how far the active segment's records were made
//! durable — the watermark that lets recovery tell a write a crash tore (never
//! acknowledged: cut it) from damage to records that were acknowledged (never cut
//! silently).
//!
//! ```text
//!  log/acked   [ring A: 64 slots × 64 B][ring B: 64 slots × 64 B]     8192 bytes
//! ```
//!
//! After each fdatasync of the active segment that made more records durable, and before
//! any append it covers is acknowledged, the writer writes one 64-byte slot — sequence,
//! the segment's first index, acknowledged next index, its byte end, its term — into both
//! rings: two `pwrite`s into the page cache. The file is its own, so a segment's
//! fdatasync never waits for it: a thread of the log syncs it every `ACKED_SYNC_MS`
//! while it is dirty. Creating a segment, a truncate that removes records the watermark
//! covers, and open sync it at once (those must not be lost). Recovery takes the valid slot
//! with the highest sequence that names the last segment.
//!
//! Fault model (FORMAT.md § "Acknowledgment file" says it in full): a process crash keeps
//! every slot written; damage to the segment — zeroed, garbled, cut short — never reaches
//! the file; one damaged sector of the file leaves the slot's twin in the other ring; a
//! power loss keeps the slots synced, at most `ACKED_SYNC_MS` older than the last.
//!
//! Format: FORMAT.md § "Acknowledgment file".

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::fsutil;

/// The file's name in the log directory.
pub const ACKED_FILE: &str = "acked";
/// Bytes of one ring.
const RING_BYTES: u64 = 4096;
/// Bytes of the file: two rings.
pub(crate) const ACKED_FILE_BYTES: u64 = 2 * RING_BYTES;
/// Bytes of one slot.
const SLOT_BYTES: usize = 64;
/// Slots in one ring.
const SLOTS: u64 = RING_BYTES / SLOT_BYTES as u64;
/// Sectors in one ring.
const SECTORS: u64 = RING_BYTES / 512;
const SLOT_MAGIC: &[u8; 8] = b"CATHACK\0";
/// While slots are written, the file is synced this often (by the log's own thread): a
/// power loss keeps the watermark of at most this long ago.
pub const ACKED_SYNC_MS: u64 = 100;

/// One slot: a segment's durable watermark as of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Orders the slots of the file; the highest valid one naming a segment is current.
    pub seq: u64,
    pub log_id: u64,
    /// First index of the segment the slot is about.
    pub first_index: u64,
    /// One past the last record made durable (`first_index` when none is).
    pub acked_next: u64,
    /// Byte offset just past that record in the segment (its data start when none is).
    pub acked_end: u64,
    /// Term of the record at `acked_next - 1`; when the segment holds none, the term of
    /// the record before it (0 when there is none).
    pub acked_term: u64,
}

impl Slot {
    // Format: FORMAT.md § "Acknowledgment file".
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(SLOT_MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.log_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        b[32..40].copy_from_slice(&self.acked_next.to_le_bytes());
        b[40..48].copy_from_slice(&self.acked_end.to_le_bytes());
        b[48..56].copy_from_slice(&self.acked_term.to_le_bytes());
        let crc = crc32fast::hash(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The slot in `b` when it is intact and of this log.
    fn decode(b: &[u8], log_id: u64) -> Option<Slot> {
        if b.len() != SLOT_BYTES || &b[0..8] != SLOT_MAGIC || b[60..64] != [0; 4] {
            return None;
        }
        let crc = u32::from_le_bytes(b[56..60].try_into().unwrap());
        if crc32fast::hash(&b[..56]) != crc {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let slot = Slot {
            seq: u64_at(8),
            log_id: u64_at(16),
            first_index: u64_at(24),
            acked_next: u64_at(32),
            acked_end: u64_at(40),
            acked_term: u64_at(48),
        };
        (slot.log_id == log_id && slot.acked_next >= slot.first_index).then_some(slot)
    }
}

/// Byte offset, within its ring, of the slot with sequence `seq`: consecutive sequences go
/// to different 512-byte sectors, so a torn sector write spares the slot written before.
pub(crate) fn slot_offset(seq: u64) -> u64 {
    let k = seq % SLOTS;
    (k % SECTORS) * 512 + (k / SECTORS) * SLOT_BYTES as u64
}

/// What the file holds, read.
#[derive(Debug, Default, Clone)]
pub(crate) struct Slots {
    /// Every valid slot, in either ring.
    pub valid: Vec<Slot>,
    /// Offsets in the file of slots that are neither unwritten (all zero) nor valid.
    pub damaged: Vec<u64>,
    /// The file is shorter or longer than `ACKED_FILE_BYTES`.
    pub wrong_length: Option<u64>,
}

impl Slots {
    /// Parses the file's bytes.
    pub fn parse(bytes: &[u8], log_id: u64) -> Slots {
        let mut out = Slots::default();
        if bytes.len() as u64 != ACKED_FILE_BYTES {
            out.wrong_length = Some(bytes.len() as u64);
        }
        for (k, c) in bytes.chunks_exact(SLOT_BYTES).enumerate() {
            match Slot::decode(c, log_id) {
                Some(s) => out.valid.push(s),
                None if c.iter().all(|&b| b == 0) => {}
                None => out.damaged.push((k * SLOT_BYTES) as u64),
            }
        }
        out
    }

    /// The current slot about the segment starting at `first_index`.
    pub fn current(&self, first_index: u64) -> Option<Slot> {
        self.valid
            .iter()
            .filter(|s| s.first_index == first_index)
            .max_by_key(|s| s.seq)
            .copied()
    }

    /// The highest sequence in the file (0 when none).
    pub fn max_seq(&self) -> u64 {
        self.valid.iter().map(|s| s.seq).max().unwrap_or(0)
    }
}

/// The open acknowledgment file of a log.
pub(crate) struct AckedFile {
    pub path: PathBuf,
    file: File,
    /// A slot was written since the file was last synced.
    dirty: AtomicBool,
    /// Wakes the syncing thread early (close).
    stop: Mutex<bool>,
    wake: Condvar,
}

impl AckedFile {
    /// Opens the file in `log_dir`, creating it (zeroed, synced, the directory synced) when
    /// it does not exist — or when `fresh`: the log does not keep the file yet (its
    /// metadata does not say so), and whatever is there is left by a first open that did
    /// not finish (possibly short: a crash between its creation and its sizing).
    pub fn open_or_create(log_dir: &Path, fresh: bool) -> Result<AckedFile> {
        let path = log_dir.join(ACKED_FILE);
        let create = fresh || !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(create)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        if create {
            fsutil::set_len(&file, ACKED_FILE_BYTES, &path)?;
            fsutil::sync_data(&file, &path)?;
            fsutil::sync_dir(log_dir)?;
        }
        Ok(AckedFile {
            path,
            file,
            dirty: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// Writes `slot` into both rings (two `pwrite`s, not synced: see [`sync`](Self::sync)
    /// and the syncing thread).
    pub fn write(&self, slot: &Slot) -> Result<()> {
        let bytes = slot.encode();
        let at = slot_offset(slot.seq);
        fsutil::write_all_at(&self.file, &bytes, at, &self.path)?;
        fsutil::write_all_at(&self.file, &bytes, RING_BYTES + at, &self.path)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes every slot written durable now.
    pub fn sync(&self) -> Result<()> {
        self.dirty.store(false, Ordering::Release);
        fsutil::sync_data(&self.file, &self.path)
    }

    /// The syncing thread's loop: every `ACKED_SYNC_MS`, syncs the file if a slot was
    /// written since; returns (after a last sync) once [`stop`](Self::stop) is called, or
    /// with the error of a failed sync.
    pub fn sync_loop(&self) -> Result<()> {
        let period = std::time::Duration::from_millis(ACKED_SYNC_MS);
        let mut stop = self.stop.lock().unwrap();
        loop {
            if *stop {
                drop(stop);
                return self.sync_if_dirty();
            }
            stop = self.wake.wait_timeout(stop, period).unwrap().0;
            if !*stop {
                self.sync_if_dirty()?;
            }
        }
    }

    pub(crate) fn sync_if_dirty(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            fsutil::sync_data(&self.file, &self.path)?;
        }
        Ok(())
    }

    /// Ends [`sync_loop`](Self::sync_loop).
    pub fn stop(&self) {
        *self.stop.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

/// Reads the acknowledgment file in `log_dir`, without the lock: `None` when it does not
/// exist.
pub(crate) fn read(log_dir: &Path, log_id: u64) -> Result<Option<Slots>> {
    let path = log_dir.join(ACKED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Slots::parse(&bytes, log_id))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64, first_index: u64) -> Slot {
        Slot {
            seq,
            log_id: 7,
            first_index,
            acked_next: first_index + seq,
            acked_end: 64 + seq * 40,
            acked_term: 3,
        }
    }

    #[test]
    fn slots_round_trip_and_refuse_damage_or_strangers() {
        let s = slot(5, 100);
        let b = s.encode();
        assert_eq!(Slot::decode(&b, 7), Some(s));
        assert_eq!(Slot::decode(&b, 8), None, "another log");
        for i in 0..SLOT_BYTES {
            let mut bad = b;
            bad[i] ^= 0x04;
            assert_eq!(Slot::decode(&bad, 7), None, "byte {i}");
        }
        assert_eq!(Slot::decode(&[0; SLOT_BYTES], 7), None);
    }

    #[test]
    fn every_sequence_has_its_own_slot_and_neighbours_differ_in_sector() {
        let offsets: std::collections::BTreeSet<u64> = (0..SLOTS).map(slot_offset).collect();
        assert_eq!(offsets.len() as u64, SLOTS);
        assert!(offsets
            .iter()
            .all(|o| o % SLOT_BYTES as u64 == 0 && *o < RING_BYTES));
        for seq in 0..3 * SLOTS {
            assert_ne!(
                slot_offset(seq) / 512,
                slot_offset(seq + 1) / 512,
                "seq {seq}"
            );
        }
    }

    #[test]
    fn the_newest_slot_of_a_segment_wins_and_a_damaged_ring_has_a_twin() {
        let dir = tempfile::tempdir().unwrap();
        let f = AckedFile::open_or_create(dir.path(), true).unwrap();
        for (seq, first) in [(1, 1), (2, 1), (3, 50), (4, 1), (5, 50)] {
            f.write(&slot(seq, first)).unwrap();
        }
        f.sync().unwrap();
        let mut bytes = std::fs::read(&f.path).unwrap();
        let s = Slots::parse(&bytes, 7);
        assert!(s.damaged.is_empty() && s.wrong_length.is_none());
        assert_eq!(s.current(1).map(|s| s.seq), Some(4));
        assert_eq!(s.current(50).map(|s| s.seq), Some(5));
        assert_eq!(s.current(9), None);
        assert_eq!(s.max_seq(), 5);
        // Ring A's copy of slot 5 damaged: its twin in ring B answers; the damage is named.
        bytes[slot_offset(5) as usize + 9] ^= 1;
        let s = Slots::parse(&bytes, 7);
        assert_eq!(s.current(50).map(|s| s.seq), Some(5));
        assert_eq!(s.damaged, vec![slot_offset(5)]);
        // Both copies gone: the previous slot of that segment is current.
        bytes[(RING_BYTES + slot_offset(5)) as usize + 20] ^= 1;
        assert_eq!(Slots::parse(&bytes, 7).current(50).map(|s| s.seq), Some(3));
    }

    #[test]
    fn the_sync_loop_syncs_what_was_written_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(AckedFile::open_or_create(dir.path(), true).unwrap());
        let g = f.clone();
        let t = std::thread::spawn(move || g.sync_loop());
        f.write(&slot(1, 1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3 * ACKED_SYNC_MS));
        assert!(!f.dirty.load(Ordering::Acquire), "synced within the period");
        f.write(&slot(2, 1)).unwrap();
        f.stop();
        t.join().unwrap().unwrap();
        assert!(
            !f.dirty.load(Ordering::Acquire),
            "the last write synced at stop"
        );
    }
}
