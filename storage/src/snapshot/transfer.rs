//! Chunked snapshot transfer: a sender cuts a snapshot file into chunks, each with its offset
//! and CRC-32; a receiver takes them in order into a temporary file and installs the
//! snapshot only after checking the whole file's checksum and version.
//!
//! ```text
//!  ChunkSender ── Chunk{offset, total_bytes, data, crc} ──▶ ChunkReceiver ──▶ SnapshotStore
//!        ▲                                                      │
//!        └──────────── resume from receiver.next_offset() ◀─────┘
//! ```
//!
//! A rejected chunk (duplicate, out of order, oversized, corrupt) leaves the receiver at its
//! last good offset, so the sender can resume from there. A receiver dropped or aborted
//! before it installs removes its temporary file; nothing is ever installed on error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::store::{SnapshotInfo, SnapshotStore};
use crate::error::{Error, Result};

/// Default size of a chunk.
pub const CHUNK_BYTES_DEFAULT: u64 = 1 << 20;

/// One piece of a snapshot file in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of `data` in the snapshot file.
    pub offset: u64,
    /// Size of the whole snapshot file.
    pub total_bytes: u64,
    pub data: Vec<u8>,
    /// CRC-32 of `data`.
    pub crc: u32,
}

impl Chunk {
    pub fn new(offset: u64, total_bytes: u64, data: Vec<u8>) -> Chunk {
        let crc = crc32fast::hash(&data);
        Chunk {
            offset,
            total_bytes,
            data,
            crc,
        }
    }
}

/// Cuts a snapshot file into chunks.
pub struct ChunkSender {
    file: File,
    path: PathBuf,
    total: u64,
    chunk_bytes: u64,
    offset: u64,
}

impl ChunkSender {
    /// Opens the snapshot at `path`, to be sent in chunks of `chunk_bytes`.
    pub fn open(path: &Path, chunk_bytes: u64) -> Result<ChunkSender> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        ChunkSender::from_file(file, path, chunk_bytes)
    }

    /// Sends a snapshot file that is already open (Raft hands snapshots over as open
    /// files); `path` names it in errors.
    pub fn from_file(file: File, path: &Path, chunk_bytes: u64) -> Result<ChunkSender> {
        if chunk_bytes == 0 {
            return Err(Error::InvalidArgument(
                "chunk_bytes must be positive".into(),
            ));
        }
        let total = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(ChunkSender {
            file,
            path: path.to_path_buf(),
            total,
            chunk_bytes,
            offset: 0,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Continues from `offset` (what the receiver reports as its next offset).
    pub fn resume_at(&mut self, offset: u64) -> Result<()> {
        if offset > self.total {
            return Err(Error::InvalidArgument(format!(
                "resume offset {offset} is past the snapshot's {} bytes",
                self.total
            )));
        }
        self.offset = offset;
        Ok(())
    }

    /// The next chunk, or `None` once the whole file was sent.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.offset >= self.total {
            return Ok(None);
        }
        let n = (self.total - self.offset).min(self.chunk_bytes) as usize;
        let mut data = vec![0u8; n];
        self.file
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(|e| Error::io("read", &self.path, e))?;
        let chunk = Chunk::new(self.offset, self.total, data);
        self.offset += n as u64;
        Ok(Some(chunk))
    }
}

/// Bounds a receiver enforces.
#[derive(Debug, Clone)]
pub struct ReceiverLimits {
    /// Largest chunk accepted.
    pub chunk_bytes_max: u64,
    /// Largest snapshot file accepted.
    pub snapshot_bytes_max: u64,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            chunk_bytes_max: 16 << 20,
            snapshot_bytes_max: 64 << 30,
        }
    }
}

/// Where a receiver stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Send the chunk at this offset next.
    NeedMore { next_offset: u64 },
    /// Every byte is here; call [`ChunkReceiver::finish`].
    Complete,
}

/// Takes chunks in order into a temporary file inside the store's directory, or into a
/// file the caller created ([`ChunkReceiver::into_file`]).
pub struct ChunkReceiver {
    /// Where [`finish`](Self::finish) installs; `None` for a receiver into a given file.
    store: Option<SnapshotStore>,
    tmp: PathBuf,
    file: Option<File>,
    limits: ReceiverLimits,
    next_offset: u64,
    total: Option<u64>,
}

impl ChunkReceiver {
    pub fn new(store: &SnapshotStore, limits: ReceiverLimits) -> Result<ChunkReceiver> {
        let tmp = store.tmp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        Ok(ChunkReceiver {
            store: Some(store.clone()),
            tmp,
            file: Some(file),
            limits,
            next_offset: 0,
            total: None,
        })
    }

    /// Takes chunks into `file`, created empty at `path` by the caller (Raft's state machine
    /// hands out the file a snapshot is received into); end with
    /// [`finish_in_place`](Self::finish_in_place).
    pub fn into_file(file: File, path: PathBuf, limits: ReceiverLimits) -> ChunkReceiver {
        ChunkReceiver {
            store: None,
            tmp: path,
            file: Some(file),
            limits,
            next_offset: 0,
            total: None,
        }
    }

    /// The offset the next chunk must start at (where a sender resumes).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Takes one chunk. A rejection ([`Error::ChunkRejected`]) names which check failed and
    /// leaves the receiver where it was; an I/O error is final.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<Progress> {
        let reject = |reason: String| Error::ChunkRejected {
            offset: chunk.offset,
            reason,
        };
        let len = chunk.data.len() as u64;
        if len > self.limits.chunk_bytes_max {
            return Err(reject(format!(
                "oversized: {len} bytes, chunk_bytes_max is {}",
                self.limits.chunk_bytes_max
            )));
        }
        if chunk.total_bytes > self.limits.snapshot_bytes_max {
            return Err(reject(format!(
                "snapshot of {} bytes exceeds snapshot_bytes_max {}",
                chunk.total_bytes, self.limits.snapshot_bytes_max
            )));
        }
        if let Some(total) = self.total.filter(|&t| t != chunk.total_bytes) {
            return Err(reject(format!(
                "chunk says the snapshot has {} bytes; earlier chunks said {total}",
                chunk.total_bytes
            )));
        }
        if chunk.offset < self.next_offset {
            return Err(reject(format!(
                "duplicate: bytes up to {} are already here",
                self.next_offset
            )));
        }
        if chunk.offset > self.next_offset {
            return Err(reject(format!(
                "out of order: expected offset {}",
                self.next_offset
            )));
        }
        if chunk.offset + len > chunk.total_bytes {
            return Err(reject(format!(
                "runs past the end of the {}-byte snapshot",
                chunk.total_bytes
            )));
        }
        if len == 0 && chunk.offset < chunk.total_bytes {
            return Err(reject("empty chunk before the end".into()));
        }
        if crc32fast::hash(&chunk.data) != chunk.crc {
            return Err(reject("corrupt: chunk checksum mismatch".into()));
        }
        let file = self.file.as_mut().ok_or(Error::Closed)?;
        file.write_all(&chunk.data)
            .map_err(|e| Error::io("write", &self.tmp, e))?;
        self.total = Some(chunk.total_bytes);
        self.next_offset += len;
        Ok(if self.next_offset == chunk.total_bytes {
            Progress::Complete
        } else {
            Progress::NeedMore {
                next_offset: self.next_offset,
            }
        })
    }

    /// Checks the complete file's checksum and version and installs it into the store.
    /// On any error the temporary file is removed and nothing is installed.
    pub fn finish(self) -> Result<SnapshotInfo> {
        let Some(store) = self.store.clone() else {
            return Err(Error::InvalidArgument(
                "a receiver into a given file finishes in place".into(),
            ));
        };
        self.complete(|tmp| store.install(tmp))
    }

    /// Checks the complete file's checksum and version, syncs it and leaves it at its path
    /// for the caller to install. On any error the file is removed.
    pub fn finish_in_place(self) -> Result<SnapshotInfo> {
        self.complete(super::store::verify_file)
    }

    fn complete(
        mut self,
        then: impl FnOnce(&Path) -> Result<SnapshotInfo>,
    ) -> Result<SnapshotInfo> {
        let complete = self.total == Some(self.next_offset);
        let file = self.file.take().ok_or(Error::Closed)?;
        let result = if !complete {
            Err(Error::InvalidArgument(format!(
                "snapshot transfer incomplete: {} of {} bytes received",
                self.next_offset,
                self.total
                    .map_or("an unknown number of".to_string(), |t| t.to_string())
            )))
        } else {
            file.sync_all()
                .map_err(|e| Error::io("fsync", &self.tmp, e))
                .and_then(|()| then(&self.tmp))
        };
        drop(file);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    /// Gives up: removes the temporary file.
    pub fn abort(mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Drop for ChunkReceiver {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
