//! Segment files: the header every segment starts with, the footer a sealed segment ends
//! with, sealed segments read through a memory map, and the scan that recovers the records
//! of an unsealed (active) segment.
//!
//! ```text
//!  active:  [header 64][record][record]...[record][zeros (preallocated) ...]
//!  sealed:  [header 64][record][record]...[record][offset u32 × count][trailer 32]
//! ```
//!
//! Format: FORMAT.md § "Segment file".

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::record::{self, Header, RECORD_HEADER_BYTES};
use crate::error::{Error, Result};

pub(crate) const SEGMENT_HEADER_BYTES: u64 = 64;
pub(crate) const SEGMENT_VERSION: u16 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"CATHSEG\0";
const FOOTER_TRAILER_BYTES: u64 = 32;
const FOOTER_MAGIC: &[u8; 8] = b"CATHFTR\0";
const SEGMENT_SUFFIX: &str = ".seg";

/// File name of the segment whose first record has `first_index`.
pub(crate) fn file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// The first index encoded in a segment's file name, if `name` is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// Format: FORMAT.md § "Segment header".
pub(crate) fn encode_header(log_id: u64, first_index: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h[24..32].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32fast::hash(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header: magic, checksum, version, and identity (this log, this index).
pub(crate) fn check_header(bytes: &[u8], path: &Path, log_id: u64, first_index: u64) -> Result<()> {
    let bad = |offset: u64, reason: String| Error::corruption(path, offset, reason);
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(bad(
            0,
            format!(
                "file is {} bytes, shorter than a segment header",
                bytes.len()
            ),
        ));
    }
    let h = &bytes[..SEGMENT_HEADER_BYTES as usize];
    if &h[0..8] != SEGMENT_MAGIC {
        return Err(bad(0, "bad magic: not a Cathedral log segment".into()));
    }
    let crc = u32::from_le_bytes(h[60..64].try_into().unwrap());
    if crc32fast::hash(&h[..60]) != crc {
        return Err(bad(60, "segment header checksum mismatch".into()));
    }
    let version = u16::from_le_bytes(h[8..10].try_into().unwrap());
    if version != SEGMENT_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        });
    }
    let their_log = u64::from_le_bytes(h[16..24].try_into().unwrap());
    if their_log != log_id {
        return Err(bad(
            16,
            format!("segment belongs to log {their_log:016x}, this log is {log_id:016x}"),
        ));
    }
    let their_first = u64::from_le_bytes(h[24..32].try_into().unwrap());
    if their_first != first_index {
        return Err(bad(
            24,
            format!("header says first index {their_first}, file name says {first_index}"),
        ));
    }
    Ok(())
}

/// The footer that seals a segment: the offset of every record, then the trailer.
// Format: FORMAT.md § "Segment footer".
pub(crate) fn encode_footer(first_index: u64, offsets: &[u32], data_end: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(offsets.len() * 4 + FOOTER_TRAILER_BYTES as usize);
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(&first_index.to_le_bytes());
    out.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data_end as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(FOOTER_MAGIC);
    out
}

/// Whether the file's last bytes are a footer trailer's magic (a sealed segment).
pub(crate) fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.len() as u64 >= SEGMENT_HEADER_BYTES + FOOTER_TRAILER_BYTES
        && &bytes[bytes.len() - 8..] == FOOTER_MAGIC
}

/// Whether the file ends with a footer trailer that is intact but for its magic: a sealed
/// segment whose magic was damaged, not a crash's leftovers (a crash never writes a
/// trailer whose checksum matches the offsets before it).
pub(crate) fn footer_with_damaged_magic(bytes: &[u8]) -> bool {
    let len = bytes.len() as u64;
    if len < SEGMENT_HEADER_BYTES + FOOTER_TRAILER_BYTES || looks_sealed(bytes) {
        return false;
    }
    let t = (len - FOOTER_TRAILER_BYTES) as usize;
    let trailer = &bytes[t..];
    let count = u64::from_le_bytes(trailer[8..16].try_into().unwrap());
    let data_end = u32::from_le_bytes(trailer[16..20].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(trailer[20..24].try_into().unwrap());
    count > 0
        && data_end >= SEGMENT_HEADER_BYTES
        && count.checked_mul(4).and_then(|o| o.checked_add(data_end)) == Some(t as u64)
        && crc32fast::hash(&bytes[data_end as usize..t + 20]) == crc
}

/// Where the footer of a sealed segment of `len` bytes starts, read from its trailer;
/// `None` when the file does not end with a trailer (not sealed, or damaged).
pub(crate) fn footer_start(file: &File, len: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    if len < SEGMENT_HEADER_BYTES + FOOTER_TRAILER_BYTES {
        return None;
    }
    let mut t = [0u8; FOOTER_TRAILER_BYTES as usize];
    file.read_exact_at(&mut t, len - FOOTER_TRAILER_BYTES)
        .ok()?;
    if &t[24..32] != FOOTER_MAGIC {
        return None;
    }
    let data_end = u32::from_le_bytes(t[16..20].try_into().unwrap()) as u64;
    (data_end < len).then_some(data_end)
}

/// An immutable, sealed segment, read through a memory map.
///
/// Invariant kept by [`Log`](crate::Log): the map is only touched while the log's state lock
/// is held, and the file is only shortened (unsealed by a truncate) under the write lock
/// after this value is dropped, so a read never faults on a shrunk file.
pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub first_index: u64,
    pub count: u64,
    map: Mmap,
    offsets_at: usize,
    data_end: u64,
}

impl SealedSegment {
    /// Maps `path` and checks its header and footer (not every record: reads check those).
    pub fn open(path: &Path, log_id: u64, first_index: u64) -> Result<SealedSegment> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: sealed segments are never written again; see the type's invariant for the
        // one case where a sealed file is shortened.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
        Self::from_map(map, path, log_id, first_index)
    }

    fn from_map(map: Mmap, path: &Path, log_id: u64, first_index: u64) -> Result<SealedSegment> {
        check_header(&map, path, log_id, first_index)?;
        let len = map.len() as u64;
        let bad = |offset: u64, reason: String| Error::corruption(path, offset, reason);
        if !looks_sealed(&map) {
            return Err(bad(
                len.saturating_sub(8),
                "no footer: segment is not sealed".into(),
            ));
        }
        let t = (len - FOOTER_TRAILER_BYTES) as usize;
        let trailer = &map[t..];
        let their_first = u64::from_le_bytes(trailer[0..8].try_into().unwrap());
        let count = u64::from_le_bytes(trailer[8..16].try_into().unwrap());
        let data_end = u32::from_le_bytes(trailer[16..20].try_into().unwrap()) as u64;
        let crc = u32::from_le_bytes(trailer[20..24].try_into().unwrap());
        let offsets_len = count.checked_mul(4);
        if offsets_len.and_then(|o| o.checked_add(data_end)) != Some(t as u64) {
            return Err(bad(
                t as u64 + 8,
                format!("footer of {count} records ending at {data_end} does not fit the file"),
            ));
        }
        if crc32fast::hash(&map[data_end as usize..t + 20]) != crc {
            return Err(bad(t as u64 + 20, "footer checksum mismatch".into()));
        }
        if their_first != first_index {
            return Err(bad(
                t as u64,
                format!("footer says first index {their_first}, file name says {first_index}"),
            ));
        }
        if count == 0 {
            return Err(bad(t as u64 + 8, "sealed segment with no records".into()));
        }
        let seg = SealedSegment {
            path: path.to_path_buf(),
            first_index,
            count,
            offsets_at: data_end as usize,
            data_end,
            map,
        };
        // Offsets must ascend inside the record area, so reads never leave the map.
        let mut prev = SEGMENT_HEADER_BYTES - 1;
        for i in 0..count {
            let o = seg.offset_of(i) as u64;
            if o <= prev || o + RECORD_HEADER_BYTES as u64 > data_end {
                return Err(bad(
                    data_end + 4 * i,
                    format!("footer offset {o} of record {i} is out of order or out of range"),
                ));
            }
            prev = o;
        }
        Ok(seg)
    }

    pub fn last_index(&self) -> u64 {
        self.first_index + self.count - 1
    }

    /// Start offset of the `i`-th record of the segment.
    pub fn offset_of(&self, i: u64) -> u32 {
        let at = self.offsets_at + 4 * i as usize;
        u32::from_le_bytes(self.map[at..at + 4].try_into().unwrap())
    }

    /// The verified record at `index` (which the caller checked is in this segment).
    pub fn record(&self, index: u64) -> Result<(Header, &[u8])> {
        let i = index - self.first_index;
        let start = self.offset_of(i) as u64;
        let end = if i + 1 < self.count {
            self.offset_of(i + 1) as u64
        } else {
            self.data_end
        };
        let bytes = &self.map[start as usize..end as usize];
        verify_record(bytes, &self.path, start, index)
    }
}

/// Decodes and verifies one record occupying exactly `bytes`, expected to hold `index`.
pub(crate) fn verify_record<'a>(
    bytes: &'a [u8],
    path: &Path,
    offset: u64,
    index: u64,
) -> Result<(Header, &'a [u8])> {
    let bad = |reason: String| Error::corruption(path, offset, reason);
    let header = bytes
        .get(..RECORD_HEADER_BYTES)
        .and_then(|h| record::decode_header(h.try_into().unwrap()))
        .ok_or_else(|| bad("missing record header".into()))?;
    if header.record_bytes() != bytes.len() as u64 {
        return Err(bad(format!(
            "record length {} does not match its slot of {} bytes",
            header.record_bytes(),
            bytes.len()
        )));
    }
    if !record::checksum_ok(&header, bytes) {
        return Err(bad("record checksum mismatch".into()));
    }
    if header.index != index {
        return Err(bad(format!(
            "record holds index {}, expected {index}",
            header.index
        )));
    }
    Ok((header, &bytes[RECORD_HEADER_BYTES..]))
}

/// What a scan of an unsealed segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Start offset of every good record, in order.
    pub offsets: Vec<u32>,
    /// Term of the last good record.
    pub last_term: Option<u64>,
    /// Byte offset just past the last good record.
    pub end: u64,
    /// The first bad spot after the good records, if any.
    pub damage: Option<Damage>,
}

/// Damage found by a scan.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    pub offset: u64,
    pub reason: String,
    /// No valid record follows the damage: it is a torn (partially written) tail rather
    /// than corruption in the middle of the log.
    pub torn: bool,
}

/// Reads every record of an unsealed segment whose bytes (header included) are `data`,
/// stopping at the end of written data (zeros or end of file) or at the first bad record.
/// `prev_term` is the term of the record before this segment, if any. With `tell_torn`,
/// damage is searched past for a later valid record (the torn-tail rule of a log without
/// an acknowledged watermark; costly over a large segment); without, every damage is
/// reported torn and the caller judges it by the watermark.
pub(crate) fn scan(
    data: &[u8],
    first_index: u64,
    record_bytes_limit: u64,
    prev_term: Option<u64>,
    tell_torn: bool,
) -> Scan {
    let len = data.len() as u64;
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut expected = first_index;
    let mut offsets = Vec::new();
    let mut last_term = prev_term;
    let damage = loop {
        if pos == len {
            break None;
        }
        let problem = match next_record(data, pos, expected, record_bytes_limit, last_term) {
            Ok(Some(h)) => {
                offsets.push(pos as u32);
                pos += h.record_bytes();
                expected += 1;
                last_term = Some(h.term);
                continue;
            }
            Ok(None) if first_nonzero(&data[pos as usize..]).is_none() => break None,
            Ok(None) => "zero bytes followed by data where a record header should be".to_string(),
            Err(reason) => reason,
        };
        let torn =
            !tell_torn || later_valid_record(data, pos + 1, expected, record_bytes_limit).is_none();
        break Some(Damage {
            offset: pos,
            reason: problem,
            torn,
        });
    };
    Scan {
        offsets,
        last_term: if expected > first_index {
            last_term
        } else {
            None
        },
        end: pos,
        damage,
    }
}

/// The record at `pos` if it is valid and holds `expected`; `Ok(None)` on a zero header.
fn next_record(
    data: &[u8],
    pos: u64,
    expected: u64,
    record_bytes_limit: u64,
    prev_term: Option<u64>,
) -> std::result::Result<Option<Header>, String> {
    let len = data.len() as u64;
    if pos + RECORD_HEADER_BYTES as u64 > len {
        if first_nonzero(&data[pos as usize..]).is_none() {
            return Ok(None);
        }
        return Err(format!(
            "partial record header: {} bytes before the end of the file",
            len - pos
        ));
    }
    let p = pos as usize;
    let Some(h) = record::decode_header(data[p..p + RECORD_HEADER_BYTES].try_into().unwrap())
    else {
        return Ok(None);
    };
    if h.stored_len as u64 > record_bytes_limit {
        return Err(format!(
            "record length {} exceeds the record limit {record_bytes_limit}",
            h.stored_len
        ));
    }
    if pos + h.record_bytes() > len {
        return Err(format!(
            "record of {} bytes runs past the end of the file ({} bytes left)",
            h.record_bytes(),
            len - pos
        ));
    }
    if !record::checksum_ok(&h, &data[p..(pos + h.record_bytes()) as usize]) {
        return Err("record checksum mismatch".into());
    }
    if h.index != expected {
        return Err(format!(
            "record holds index {}, expected {expected}",
            h.index
        ));
    }
    if let Some(t) = prev_term {
        if h.term < t {
            return Err(format!(
                "record term {} is below the previous term {t}",
                h.term
            ));
        }
    }
    Ok(Some(h))
}

/// Searches `data[from..]` for any valid record with an index of at least `min_index`.
///
/// Used to tell a torn tail from mid-log corruption: the group-commit writer issues the next
/// write only after the previous one completed, so a crash can damage only the last write;
/// a valid later record proves the damage is not at the tail. Zero runs (preallocated
/// space) are skipped a word at a time, so a clean open of a mostly empty segment is cheap.
pub(crate) fn later_valid_record(
    data: &[u8],
    from: u64,
    min_index: u64,
    record_bytes_limit: u64,
) -> Option<u64> {
    let hdr = RECORD_HEADER_BYTES;
    let mut p = from as usize;
    while p + hdr <= data.len() {
        // Skip to the first non-zero byte; a header holding it starts at most hdr-1 before.
        let q = p + first_nonzero(&data[p..])?;
        let mut c = q.saturating_sub(hdr - 1).max(p);
        while c <= q && c + hdr <= data.len() {
            if let Some(h) = record::decode_header(data[c..c + hdr].try_into().unwrap()) {
                let end = c as u64 + h.record_bytes();
                if h.index >= min_index
                    && (h.stored_len as u64) <= record_bytes_limit
                    && end <= data.len() as u64
                    && record::checksum_ok(&h, &data[c..end as usize])
                {
                    return Some(c as u64);
                }
            }
            c += 1;
        }
        p = q + 1;
    }
    None
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    // SAFETY: u64 has no invalid bit patterns; align_to only splits the slice.
    let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
    if let Some(i) = head.iter().position(|&b| b != 0) {
        return Some(i);
    }
    if let Some(w) = words.iter().position(|&w| w != 0) {
        let base = head.len() + w * 8;
        let i = bytes[base..base + 8].iter().position(|&b| b != 0).unwrap();
        return Some(base + i);
    }
    tail.iter()
        .position(|&b| b != 0)
        .map(|i| head.len() + words.len() * 8 + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(u64, u64, &[u8])]) -> Vec<u8> {
        let mut data = encode_header(9, records.first().map_or(1, |r| r.0)).to_vec();
        for (i, t, p) in records {
            record::encode(&mut data, *i, *t, p, None);
        }
        data
    }

    #[test]
    fn names_roundtrip() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
    }

    #[test]
    fn header_identity_is_checked() {
        let h = encode_header(7, 100);
        check_header(&h, Path::new("s"), 7, 100).unwrap();
        let e = check_header(&h, Path::new("s"), 8, 100).unwrap_err();
        assert!(e.to_string().contains("belongs to log"), "{e}");
        let e = check_header(&h, Path::new("s"), 7, 101).unwrap_err();
        assert!(e.to_string().contains("file name says 101"), "{e}");
    }

    #[test]
    fn scan_stops_cleanly_at_zeros_and_eof() {
        let mut data = segment(&[(1, 1, b"a"), (2, 1, b"bb"), (3, 2, b"ccc")]);
        let s = scan(&data, 1, 1 << 20, None, true);
        assert_eq!(
            (s.offsets.len(), s.last_term, s.end),
            (3, Some(2), data.len() as u64)
        );
        assert!(s.damage.is_none());
        data.resize(data.len() + 4096, 0);
        let s2 = scan(&data, 1, 1 << 20, None, true);
        assert_eq!(s2.offsets, s.offsets);
        assert!(s2.damage.is_none());
        // Fewer zero bytes left than a header takes is still a clean end.
        data.truncate(s.end as usize + RECORD_HEADER_BYTES - 1);
        assert!(scan(&data, 1, 1 << 20, None, true).damage.is_none());
    }

    #[test]
    fn torn_tail_versus_mid_log_corruption() {
        let data = segment(&[(1, 1, b"first"), (2, 1, b"second"), (3, 1, b"third")]);
        let s = scan(&data, 1, 1 << 20, None, true);
        // Half of the last record written: torn.
        let cut = &data[..(s.offsets[2] as usize + RECORD_HEADER_BYTES + 2)];
        let t = scan(cut, 1, 1 << 20, None, true);
        assert_eq!(t.offsets.len(), 2);
        let d = t.damage.unwrap();
        assert!(d.torn, "{d:?}");
        assert_eq!(d.offset, s.offsets[2] as u64);
        // A flipped byte in the second record, with the third intact: corruption.
        let mut flipped = data.clone();
        flipped[s.offsets[1] as usize + 26] ^= 1;
        let c = scan(&flipped, 1, 1 << 20, None, true);
        let d = c.damage.unwrap();
        assert!(!d.torn, "{d:?}");
        assert_eq!(d.offset, s.offsets[1] as u64);
        assert_eq!(c.offsets.len(), 1);
    }

    #[test]
    fn sealed_segment_reads_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(5));
        let mut data = segment(&[(5, 1, b"x"), (6, 1, b"yy"), (7, 3, b"zzz")]);
        let s = scan(&data, 5, 1 << 20, None, true);
        let end = data.len() as u64;
        data.extend(encode_footer(5, &s.offsets, end));
        std::fs::write(&path, &data).unwrap();
        let seg = SealedSegment::open(&path, 9, 5).unwrap();
        assert_eq!((seg.first_index, seg.last_index()), (5, 7));
        let (h, p) = seg.record(7).unwrap();
        assert_eq!((h.term, p), (3, &b"zzz"[..]));
        // Any flipped footer byte is refused.
        for i in end as usize..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(SealedSegment::open(&path, 9, 5).is_err(), "byte {i}");
        }
    }

    #[test]
    fn first_nonzero_finds_every_position() {
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 200] {
            for at in 0..n {
                let mut v = vec![0u8; n];
                v[at] = 1;
                assert_eq!(first_nonzero(&v), Some(at));
                assert_eq!(first_nonzero(&v[1.min(n)..]), at.checked_sub(1.min(n)));
            }
            assert_eq!(first_nonzero(&vec![0u8; n]), None);
        }
    }
}
