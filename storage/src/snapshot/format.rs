//! The snapshot file: header, caller metadata, a zstd stream, trailer.
//!
//! ```text
//! [header 48][metadata meta_len][zstd frame(s) stored_len][trailer 32]
//! ```
//!
//! Format: FORMAT.md § "Snapshot file". The whole-file CRC-32 sits in the trailer, so a
//! writer computes it while streaming and never seeks back.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

pub(crate) const HEADER_BYTES: u64 = 48;
pub(crate) const TRAILER_BYTES: u64 = 32;
pub(crate) const VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"CATHSNAP";
const TRAILER_MAGIC: &[u8; 8] = b"CATHSEND";
const COMPRESSION_ZSTD: u8 = 1;
const FLAG_HAS_LAST: u8 = 1;

/// Largest caller metadata (membership and the like) a snapshot carries.
pub const SNAPSHOT_META_BYTES_MAX: u64 = 1 << 20;

/// What a snapshot says about itself, besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// `(index, term)` of the last log entry the snapshot includes; `None` for a snapshot of
    /// the initial state.
    pub last: Option<(u64, u64)>,
    /// Opaque caller metadata stored with the snapshot (Raft: the membership config).
    pub data: Vec<u8>,
    /// Creation time, milliseconds since the Unix epoch, as the caller stated it.
    pub created_ms: u64,
}

// Format: FORMAT.md § "Snapshot file" (header).
pub(crate) fn encode_header(meta: &SnapshotMeta) -> Result<Vec<u8>> {
    if meta.data.len() as u64 > SNAPSHOT_META_BYTES_MAX {
        return Err(Error::limit(
            "SNAPSHOT_META_BYTES_MAX",
            meta.data.len() as u64,
            SNAPSHOT_META_BYTES_MAX,
        ));
    }
    let (index, term) = meta.last.unwrap_or((0, 0));
    let mut h = Vec::with_capacity(HEADER_BYTES as usize + meta.data.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.push(COMPRESSION_ZSTD);
    h.push(if meta.last.is_some() {
        FLAG_HAS_LAST
    } else {
        0
    });
    h.extend_from_slice(&(meta.data.len() as u32).to_le_bytes());
    h.extend_from_slice(&index.to_le_bytes());
    h.extend_from_slice(&term.to_le_bytes());
    h.extend_from_slice(&meta.created_ms.to_le_bytes());
    h.extend_from_slice(&[0u8; 8]); // reserved
    debug_assert_eq!(h.len() as u64, HEADER_BYTES);
    h.extend_from_slice(&meta.data);
    Ok(h)
}

// Format: FORMAT.md § "Snapshot file" (trailer). `crc` covers every byte before it.
pub(crate) fn encode_trailer_fields(body_len: u64, stored_len: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0..8].copy_from_slice(&body_len.to_le_bytes());
    t[8..16].copy_from_slice(&stored_len.to_le_bytes());
    t
}

pub(crate) fn encode_trailer_end(crc: u32) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0..4].copy_from_slice(&crc.to_le_bytes());
    t[8..16].copy_from_slice(TRAILER_MAGIC);
    t
}

/// A snapshot file's self-description, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub meta: SnapshotMeta,
    /// Offset of the zstd stream.
    pub body_at: u64,
    pub stored_len: u64,
    pub body_len: u64,
    pub crc: u32,
}

/// Reads the header, metadata and trailer of the snapshot in `file` (of `len` bytes) and
/// checks their structure. The whole-file checksum is checked by [`verify`].
pub(crate) fn parse(file: &mut File, len: u64, path: &Path) -> Result<Parsed> {
    let bad = |offset: u64, reason: String| Error::corruption(path, offset, reason);
    let io = |e: io::Error| Error::io("read", path, e);
    if len < HEADER_BYTES + TRAILER_BYTES {
        return Err(bad(0, format!("{len} bytes is too short for a snapshot")));
    }
    let mut h = [0u8; HEADER_BYTES as usize];
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_exact(&mut h).map_err(io)?;
    if &h[0..8] != MAGIC {
        return Err(bad(0, "bad magic: not a Cathedral snapshot".into()));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    if h[10] != COMPRESSION_ZSTD {
        return Err(bad(10, format!("unknown compression {}", h[10])));
    }
    let meta_len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as u64;
    if meta_len > SNAPSHOT_META_BYTES_MAX || HEADER_BYTES + meta_len + TRAILER_BYTES > len {
        return Err(bad(12, format!("metadata length {meta_len} does not fit")));
    }
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    let last = (h[11] & FLAG_HAS_LAST != 0).then(|| (u64_at(16), u64_at(24)));
    let created_ms = u64_at(32);
    let mut data = vec![0u8; meta_len as usize];
    file.read_exact(&mut data).map_err(io)?;
    let mut t = [0u8; TRAILER_BYTES as usize];
    file.seek(SeekFrom::Start(len - TRAILER_BYTES))
        .map_err(io)?;
    file.read_exact(&mut t).map_err(io)?;
    if &t[24..32] != TRAILER_MAGIC {
        return Err(bad(
            len - 8,
            "no trailer: the snapshot is incomplete (a write was cut short?)".into(),
        ));
    }
    if t[20..24] != [0u8; 4] {
        return Err(bad(
            len - TRAILER_BYTES + 20,
            "reserved trailer bytes are not zero".into(),
        ));
    }
    let body_len = u64::from_le_bytes(t[0..8].try_into().unwrap());
    let stored_len = u64::from_le_bytes(t[8..16].try_into().unwrap());
    let crc = u32::from_le_bytes(t[16..20].try_into().unwrap());
    let body_at = HEADER_BYTES + meta_len;
    if body_at + stored_len + TRAILER_BYTES != len {
        return Err(bad(
            len - TRAILER_BYTES + 8,
            format!(
                "trailer says {stored_len} stored bytes; the file holds {}",
                len - body_at - TRAILER_BYTES
            ),
        ));
    }
    Ok(Parsed {
        meta: SnapshotMeta {
            last,
            data,
            created_ms,
        },
        body_at,
        stored_len,
        body_len,
        crc,
    })
}

/// Parses the snapshot at `path` and checks the CRC-32 over the whole file.
pub(crate) fn verify(path: &Path) -> Result<Parsed> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let parsed = parse(&mut file, len, path)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("read", path, e))?;
    let covered = len - TRAILER_BYTES + 16;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = covered;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n])
            .map_err(|e| Error::io("read", path, e))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    if hasher.finalize() != parsed.crc {
        return Err(Error::corruption(
            path,
            len - TRAILER_BYTES + 16,
            "snapshot checksum mismatch: the file is damaged",
        ));
    }
    Ok(parsed)
}

/// A `Write` adapter that checksums and counts what passes through it.
pub(crate) struct Checksummed<W> {
    pub inner: W,
    pub hasher: crc32fast::Hasher,
    pub written: u64,
}

impl<W: io::Write> io::Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
