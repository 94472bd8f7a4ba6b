//! The acknowledgment rings of an active segment: where the engine records, durably and
//! away from the records themselves, how far the segment's records were made durable —
//! the watermark that lets recovery tell a torn write (never acknowledged: cut it) from
//! damage to acknowledged records (never cut silently).
//!
//! ```text
//!  v2 active segment
//!  [header page 4096][front ring 4096][records ...][zeros][back ring 4096]
//!                     └ 64 slots ┘                         └ 64 slots ┘
//! ```
//!
//! After each fdatasync of the segment, and before any append it covers is acknowledged,
//! the writer writes one 64-byte slot — (sequence, acknowledged next index, its byte end,
//! the last acknowledged term) — into the front ring, and, while the records end within
//! `BOTH_RINGS_BYTES` of it, into the back ring as well. The slot goes to the page cache
//! only; the next round's fdatasync (or an idle sync) makes it durable, so the watermark
//! costs one small `pwrite` per round and no fdatasync of its own. Recovery takes the
//! valid slot with the highest sequence from both rings.
//!
//! Fault model (FORMAT.md § "Acknowledgment rings" says it in full): a process crash
//! (SIGKILL) keeps every slot written; a file cut short keeps the front ring; a damaged
//! range at the end of the records shorter than `BOTH_RINGS_BYTES` cannot reach a ring
//! holding the newest slot; a torn slot write leaves the older slots of other sectors
//! readable (slots of consecutive sequences sit in different 512-byte sectors).
//!
//! Format: FORMAT.md § "Acknowledgment rings".

use std::path::Path;

use crate::error::Result;
use crate::fsutil;

/// Bytes of one ring.
pub(crate) const RING_BYTES: u64 = 4096;
/// Bytes of one slot.
const SLOT_BYTES: usize = 64;
/// Slots in one ring.
const SLOTS: u64 = RING_BYTES / SLOT_BYTES as u64;
/// Slots per 512-byte sector.
const SLOTS_PER_SECTOR: u64 = 512 / SLOT_BYTES as u64;
const SLOT_MAGIC: &[u8; 8] = b"CATHACK\0";

/// One slot: the segment's durable watermark as of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Orders the slots of one segment; the highest valid one is current.
    pub seq: u64,
    pub log_id: u64,
    /// First index of the segment the slot belongs to.
    pub first_index: u64,
    /// One past the last record made durable (`first_index` when none is).
    pub acked_next: u64,
    /// Byte offset just past that record (the segment's data start when none is).
    pub acked_end: u64,
    /// Term of the record at `acked_next - 1`; when the segment holds none, the term of
    /// the record before the segment (0 when there is none).
    pub acked_term: u64,
}

impl Slot {
    // Format: FORMAT.md § "Acknowledgment rings".
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

    /// The slot in `b` when it is intact and names this log and segment.
    fn decode(b: &[u8], log_id: u64, first_index: u64) -> Option<Slot> {
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
        (slot.log_id == log_id && slot.first_index == first_index && slot.acked_next >= first_index)
            .then_some(slot)
    }
}

/// Byte offset, within its ring, of the slot with sequence `seq`: consecutive sequences go
/// to different sectors, so a torn sector write spares the slot written just before.
pub(crate) fn slot_offset(seq: u64) -> u64 {
    let k = seq % SLOTS;
    (k % (RING_BYTES / 512)) * 512 + (k / (RING_BYTES / 512)) % SLOTS_PER_SECTOR * SLOT_BYTES as u64
}

/// What the rings of one segment hold.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rings {
    /// The valid slot with the highest sequence, from either ring.
    pub current: Option<Slot>,
    /// Where the back ring starts, when the file's last `RING_BYTES` hold a valid slot.
    pub back_at: Option<u64>,
}

/// Reads both rings of a version-2 segment whose whole file is `bytes`: the front ring at
/// `front_at`, the back ring in the file's last `RING_BYTES`.
pub(crate) fn read(bytes: &[u8], front_at: u64, log_id: u64, first_index: u64) -> Rings {
    let mut rings = Rings::default();
    let mut take = |ring: &[u8]| {
        let mut found = false;
        for chunk in ring.chunks_exact(SLOT_BYTES) {
            if let Some(s) = Slot::decode(chunk, log_id, first_index) {
                found = true;
                if rings.current.is_none_or(|c| s.seq > c.seq) {
                    rings.current = Some(s);
                }
            }
        }
        found
    };
    let len = bytes.len() as u64;
    if len >= front_at + RING_BYTES {
        take(&bytes[front_at as usize..(front_at + RING_BYTES) as usize]);
    }
    if len >= front_at + 2 * RING_BYTES {
        let back = len - RING_BYTES;
        if take(&bytes[back as usize..]) {
            rings.back_at = Some(back);
        }
    }
    rings
}

/// Offsets, within `ring` (one ring's bytes), of the slots that are neither unwritten (all
/// zero) nor a valid slot of this log and segment: damage, for the read-only checks.
pub(crate) fn damaged_slots(ring: &[u8], log_id: u64, first_index: u64) -> Vec<u64> {
    ring.chunks_exact(SLOT_BYTES)
        .enumerate()
        .filter(|(_, c)| {
            c.iter().any(|&b| b != 0) && Slot::decode(c, log_id, first_index).is_none()
        })
        .map(|(k, _)| (k * SLOT_BYTES) as u64)
        .collect()
}

/// Writes `slot` into the ring starting at `ring_at` (one `pwrite`, not synced).
pub(crate) fn write(file: &std::fs::File, ring_at: u64, slot: &Slot, path: &Path) -> Result<()> {
    fsutil::write_all_at(file, &slot.encode(), ring_at + slot_offset(slot.seq), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> Slot {
        Slot {
            seq,
            log_id: 7,
            first_index: 100,
            acked_next: 100 + seq,
            acked_end: 8192 + seq * 40,
            acked_term: 3,
        }
    }

    #[test]
    fn slots_round_trip_and_refuse_damage_or_strangers() {
        let s = slot(5);
        let b = s.encode();
        assert_eq!(Slot::decode(&b, 7, 100), Some(s));
        assert_eq!(Slot::decode(&b, 8, 100), None, "another log");
        assert_eq!(Slot::decode(&b, 7, 101), None, "another segment");
        for i in 0..SLOT_BYTES {
            let mut bad = b;
            bad[i] ^= 0x04;
            assert_eq!(Slot::decode(&bad, 7, 100), None, "byte {i}");
        }
        assert_eq!(Slot::decode(&[0; SLOT_BYTES], 7, 100), None);
        // An active file ends with the back ring: it must never look like a footer trailer.
        assert_ne!(&b[56..64], b"CATHFTR\0");
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
    fn the_highest_valid_sequence_wins_across_both_rings() {
        let front_at = 4096u64;
        let len = 3 * RING_BYTES as usize + 1000;
        let mut bytes = vec![0u8; len];
        let back_at = (len as u64 - RING_BYTES) as usize;
        for (seq, at) in [
            (1, front_at as usize),
            (2, back_at),
            (3, back_at),
            (4, front_at as usize),
        ] {
            let o = at + slot_offset(seq) as usize;
            bytes[o..o + SLOT_BYTES].copy_from_slice(&slot(seq).encode());
        }
        let r = read(&bytes, front_at, 7, 100);
        assert_eq!(r.current.map(|s| s.seq), Some(4));
        assert_eq!(r.back_at, Some(back_at as u64));
        // The front ring zeroed: the back ring's newest slot is current.
        bytes[front_at as usize..(front_at + RING_BYTES) as usize].fill(0);
        assert_eq!(
            read(&bytes, front_at, 7, 100).current.map(|s| s.seq),
            Some(3)
        );
        // Slot 3's sector torn: slot 2 is still there.
        let o = back_at + slot_offset(3) as usize;
        bytes[o + 10] ^= 1;
        assert_eq!(
            read(&bytes, front_at, 7, 100).current.map(|s| s.seq),
            Some(2)
        );
    }
}
