//! The record codec: pure functions from `(index, term, payload)` to bytes and back.
//!
//! Format: FORMAT.md § "Record". Encoding runs on the appender's thread (compression and
//! checksum happen in parallel across appenders), so the bytes are position independent.

use std::cell::RefCell;

/// Bytes of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 24;
/// Bit of `len_flags` that marks a zstd-compressed payload.
const FLAG_ZSTD: u32 = 1 << 31;
/// Mask of `len_flags` holding the stored payload length.
const LEN_MASK: u32 = !FLAG_ZSTD;

/// A decoded record header. Its checksum is not yet verified against the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub crc: u32,
    pub stored_len: u32,
    pub compressed: bool,
    pub index: u64,
    pub term: u64,
}

impl Header {
    /// Bytes the whole record takes on disk.
    pub fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.stored_len as u64
    }
}

/// Settings for compressing payloads at encode time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compression {
    pub threshold_bytes: u64,
    pub level: i32,
}

thread_local! {
    // One zstd context per appender thread: creating a context per record costs more than
    // compressing a few KiB.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

thread_local! {
    // One zstd decompression context per reading thread, for the same reason: a new one
    // per record (what `zstd::bulk::decompress` makes) was a visible share of the server's
    // CPU, as apply reads every committed entry back.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `stored` decompressed into exactly `raw` bytes, with this thread's context.
fn decompress(stored: &[u8], raw: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut().expect("made above").decompress(stored, raw)
    })
}

/// Bytes compressed first, as a probe, before a large payload is compressed whole.
const PROBE_BYTES: usize = 4096;

/// Compresses `payload` when that pays. A payload larger than twice the probe is first
/// probed: when its first `PROBE_BYTES` shrink by less than 1/8, the payload is taken as
/// incompressible (already compressed, encrypted, random) and stored as it is, so such
/// payloads cost one small compression instead of a full one.
fn compress_if_smaller(payload: &[u8], level: i32) -> Option<Vec<u8>> {
    if payload.len() > 2 * PROBE_BYTES {
        let probe = compress(&payload[..PROBE_BYTES], level)?;
        if probe.len() > PROBE_BYTES - PROBE_BYTES / 8 {
            return None;
        }
    }
    compress(payload, level).filter(|z| z.len() < payload.len())
}

fn compress(payload: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(payload).ok()
    })
}

/// Appends the record to `out` with its index and checksum left zero; [`stamp`] fills them
/// in once the index is known. Returns the CRC of the stored payload, for `stamp`.
///
/// The expensive work — compression and the payload checksum — happens here, on the
/// appender's thread; `stamp` runs under the queue lock and costs a 20-byte checksum.
// Format: FORMAT.md § "Record".
pub(crate) fn encode_unstamped(
    out: &mut Vec<u8>,
    term: u64,
    payload: &[u8],
    compression: Option<Compression>,
) -> u32 {
    debug_assert!(payload.len() as u64 <= LEN_MASK as u64);
    let compressed = match compression {
        Some(c) if payload.len() as u64 >= c.threshold_bytes => {
            compress_if_smaller(payload, c.level)
        }
        _ => None,
    };
    let (stored, flag) = match &compressed {
        Some(z) => (z.as_slice(), FLAG_ZSTD),
        None => (payload, 0),
    };
    out.reserve(RECORD_HEADER_BYTES + stored.len());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(stored.len() as u32 | flag).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(stored);
    crc32fast::hash(stored)
}

/// Writes `index` and the record checksum into an encoded record (`record` is exactly one
/// record's bytes).
pub(crate) fn stamp(record: &mut [u8], index: u64, payload_crc: u32) {
    record[8..16].copy_from_slice(&index.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&record[4..RECORD_HEADER_BYTES]);
    let stored_len = (record.len() - RECORD_HEADER_BYTES) as u64;
    h.combine(&crc32fast::Hasher::new_with_initial_len(
        payload_crc,
        stored_len,
    ));
    record[0..4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Appends one complete record to `out`. Returns whether the payload was stored compressed.
#[cfg(test)]
pub(crate) fn encode(
    out: &mut Vec<u8>,
    index: u64,
    term: u64,
    payload: &[u8],
    compression: Option<Compression>,
) -> bool {
    let start = out.len();
    let crc = encode_unstamped(out, term, payload, compression);
    stamp(&mut out[start..], index, crc);
    out[start + 7] & 0x80 != 0
}

/// Term of an encoded record.
pub(crate) fn term_of(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[16..24].try_into().unwrap())
}

/// Decodes a header. `None` when the bytes are all zero: the end of written data in a
/// preallocated segment (a valid header is never all zero, because its checksum is not).
pub(crate) fn decode_header(bytes: &[u8; RECORD_HEADER_BYTES]) -> Option<Header> {
    if bytes.iter().all(|&b| b == 0) {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let len_flags = u32_at(4);
    Some(Header {
        crc: u32_at(0),
        stored_len: len_flags & LEN_MASK,
        compressed: len_flags & FLAG_ZSTD != 0,
        index: u64_at(8),
        term: u64_at(16),
    })
}

/// Whether `record` (header bytes followed by the stored payload) carries a matching checksum.
pub(crate) fn checksum_ok(header: &Header, record: &[u8]) -> bool {
    debug_assert_eq!(record.len() as u64, header.record_bytes());
    crc32fast::hash(&record[4..]) == header.crc
}

/// Turns a verified record's stored payload into the caller's bytes.
pub(crate) fn payload(
    header: &Header,
    stored: &[u8],
    record_bytes_limit: u64,
) -> Result<Vec<u8>, String> {
    if !header.compressed {
        return Ok(stored.to_vec());
    }
    let raw = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) => n,
        Ok(None) => return Err("compressed payload does not state its size".into()),
        Err(_) => return Err("compressed payload is not a zstd frame".into()),
    };
    if raw > record_bytes_limit {
        return Err(format!(
            "compressed payload expands to {raw} bytes, past the record limit {record_bytes_limit}"
        ));
    }
    let out =
        decompress(stored, raw as usize).map_err(|e| format!("zstd decompression failed: {e}"))?;
    if out.len() as u64 != raw {
        return Err(format!(
            "compressed payload expanded to {} bytes, frame says {raw}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(payload: &[u8], compression: Option<Compression>) -> bool {
        let mut buf = vec![0xAA; 3]; // encode appends; earlier bytes must be left alone
        let compressed = encode(&mut buf, 7, 3, payload, compression);
        assert_eq!(&buf[..3], &[0xAA; 3]);
        let rec = &buf[3..];
        let header = decode_header(rec[..RECORD_HEADER_BYTES].try_into().unwrap()).unwrap();
        assert_eq!((header.index, header.term), (7, 3));
        assert_eq!(header.compressed, compressed);
        assert_eq!(header.record_bytes(), rec.len() as u64);
        assert!(checksum_ok(&header, rec));
        let out = payload_of(&header, rec);
        assert_eq!(out, payload);
        compressed
    }

    fn payload_of(header: &Header, rec: &[u8]) -> Vec<u8> {
        payload(header, &rec[RECORD_HEADER_BYTES..], 1 << 20).unwrap()
    }

    #[test]
    fn plain_and_compressed_roundtrip() {
        let c = Some(Compression {
            threshold_bytes: 64,
            level: 1,
        });
        assert!(!roundtrip(b"", c));
        assert!(!roundtrip(b"short", c));
        assert!(
            roundtrip(&[b'x'; 10_000], c),
            "repetitive payload compresses"
        );
        assert!(!roundtrip(&[b'x'; 10_000], None), "compression off");
        // Incompressible bytes are stored plain even above the threshold.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(!roundtrip(&noise, c));
        // Past the probe size: noise is detected by the probe, text still compresses.
        let big_noise: Vec<u8> = noise
            .iter()
            .cycle()
            .take(20_000)
            .enumerate()
            .map(|(i, b)| b ^ (i / 4096) as u8)
            .collect();
        assert!(!roundtrip(&big_noise, c));
        let text: Vec<u8> = b"job 17 finished with exit status 0\n"
            .iter()
            .cycle()
            .take(20_000)
            .copied()
            .collect();
        assert!(roundtrip(&text, c));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, b"hello, log", None);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let ok = decode_header(bad[..RECORD_HEADER_BYTES].try_into().unwrap())
                    .filter(|h| h.record_bytes() == bad.len() as u64)
                    .is_some_and(|h| checksum_ok(&h, &bad));
                assert!(!ok, "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn zero_header_is_end_of_data() {
        assert_eq!(decode_header(&[0; RECORD_HEADER_BYTES]), None);
    }

    #[test]
    fn oversized_compressed_payload_is_refused() {
        let mut buf = Vec::new();
        let c = Some(Compression {
            threshold_bytes: 1,
            level: 1,
        });
        assert!(encode(&mut buf, 1, 1, &[0u8; 100_000], c));
        let header = decode_header(buf[..RECORD_HEADER_BYTES].try_into().unwrap()).unwrap();
        let err = payload(&header, &buf[RECORD_HEADER_BYTES..], 1000).unwrap_err();
        assert!(err.contains("record limit"), "{err}");
    }
}
