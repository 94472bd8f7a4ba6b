//! The snapshot store: a directory of snapshot files, written through a streaming writer and
//! installed atomically (temporary file, fsync, rename, directory fsync).
//!
//! A crash at any moment leaves the previous snapshots intact: a snapshot is visible only
//! once renamed to its final `*.snap` name, after its bytes are synced; temporaries end in
//! `.tmp`, are never listed, and are removed when the store is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format::{self, Checksummed, Parsed, SnapshotMeta};
use super::survey::{survey, SnapshotSurvey, SUPERSEDED_SUFFIX};
use crate::error::{Error, Result};
use crate::fsutil;

/// Options of a [`SnapshotStore`].
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Snapshots kept; older ones are deleted after a new one is installed.
    pub keep: usize,
    /// zstd level of snapshot bodies.
    pub compression_level: i32,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            keep: 2,
            compression_level: 1,
        }
    }
}

/// One installed snapshot, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Bytes of the body before compression.
    pub body_bytes: u64,
}

impl SnapshotInfo {
    fn from_parsed(path: PathBuf, parsed: Parsed, file_bytes: u64) -> SnapshotInfo {
        SnapshotInfo {
            path,
            meta: parsed.meta,
            file_bytes,
            body_bytes: parsed.body_len,
        }
    }

    /// Order of recency: last log id, then creation time.
    pub(crate) fn key(&self) -> (bool, u64, u64, u64) {
        let (i, t) = self.meta.last.unwrap_or((0, 0));
        (self.meta.last.is_some(), i, t, self.meta.created_ms)
    }

    /// `index:term` of the last included entry, for messages.
    pub fn describe(&self) -> String {
        match self.meta.last {
            Some((i, t)) => format!("{i}:{t} ({})", self.path.display()),
            None => format!("the initial state ({})", self.path.display()),
        }
    }
}

/// A directory of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    options: SnapshotOptions,
    /// Shared by every clone of the store.
    written: std::sync::Arc<Written>,
}

/// Snapshots this process wrote into a store, and their bytes (files as stored).
#[derive(Debug, Default)]
struct Written {
    files: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

/// Counts of a store's work since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots written through [`SnapshotStore::writer`] and installed.
    pub writes: u64,
    /// Their files' bytes.
    pub written_bytes: u64,
}

pub(crate) const SUFFIX: &str = ".snap";

impl SnapshotStore {
    /// Opens (creating) the store in `dir`, removing temporaries a crash left behind.
    pub fn open(dir: impl AsRef<Path>, options: SnapshotOptions) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        if options.keep == 0 {
            return Err(Error::InvalidArgument(
                "snapshot option keep must be at least 1".into(),
            ));
        }
        fsutil::create_dir_all(&dir)?;
        let mut removed = false;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                fsutil::remove_file(&entry.path())?;
                removed = true;
            }
        }
        if removed {
            fsutil::sync_dir(&dir)?;
        }
        Ok(SnapshotStore {
            dir,
            options,
            written: Default::default(),
        })
    }

    /// What this store wrote since it was opened.
    pub fn stats(&self) -> SnapshotStats {
        use std::sync::atomic::Ordering::Relaxed;
        SnapshotStats {
            writes: self.written.files.load(Relaxed),
            written_bytes: self.written.bytes.load(Relaxed),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a snapshot. Write the body into the returned writer, then `finish` it.
    pub fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        SnapshotWriter::create(self.clone(), meta)
    }

    /// Every snapshot whose header and trailer are valid, oldest first (checksums are
    /// checked by readers). Damaged files are not in it: [`survey`](Self::survey) lists
    /// them, and a server sets them aside at start (or refuses to start when it needs them).
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(survey(&self.dir, false)?.snapshots)
    }

    /// Every file of the store, each a valid snapshot or a finding; `checksums` verifies
    /// every valid-looking snapshot's whole-file checksum too.
    pub fn survey(&self, checksums: bool) -> Result<SnapshotSurvey> {
        survey(&self.dir, checksums)
    }

    /// Renames the damaged snapshot `path` of this store to `*.snap.damaged`: kept for the
    /// operator, never listed or read again, still reported by the offline tools.
    pub fn set_aside(&self, path: &Path) -> Result<PathBuf> {
        let mut to = path.as_os_str().to_owned();
        to.push(".damaged");
        let to = PathBuf::from(to);
        fsutil::rename(path, &to)?;
        fsutil::sync_dir(&self.dir)?;
        Ok(to)
    }

    /// The newest snapshot, if any.
    pub fn latest(&self) -> Result<Option<SnapshotInfo>> {
        Ok(self.list()?.pop())
    }

    /// Opens `info` for reading after checking its whole-file checksum.
    pub fn read(&self, info: &SnapshotInfo) -> Result<SnapshotReader> {
        SnapshotReader::open(&info.path)
    }

    /// Places the snapshot file at `path` into the store: checks its checksum and version,
    /// refuses one older than the newest held unless `force`, copies it in atomically and
    /// applies retention. With `force`, newer snapshots are renamed to `*.superseded` (kept,
    /// never listed) so the imported one becomes the latest.
    pub fn import(&self, path: &Path, force: bool) -> Result<SnapshotInfo> {
        let parsed = format::verify(path)?;
        let given = SnapshotInfo::from_parsed(path.to_path_buf(), parsed, 0);
        let newer: Vec<SnapshotInfo> = self
            .list()?
            .into_iter()
            .filter(|held| held.key() > given.key())
            .collect();
        if let Some(held) = newer.last() {
            if !force {
                return Err(Error::SnapshotOlder {
                    given: given.describe(),
                    held: held.describe(),
                });
            }
        }
        let tmp = self.tmp_path();
        if let Err(e) = copy_verified(path, &tmp) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Newer snapshots step aside first, so retention cannot drop the imported one.
        let mut aside = Vec::new();
        for held in &newer {
            let mut to = held.path.clone().into_os_string();
            to.push(&SUPERSEDED_SUFFIX[SUFFIX.len()..]);
            let to = PathBuf::from(to);
            fsutil::rename(&held.path, &to)?;
            aside.push((held.path.clone(), to));
        }
        match self.install(&tmp) {
            Ok(info) => Ok(info),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                for (from, to) in aside {
                    let _ = fs::rename(&to, &from);
                }
                let _ = fsutil::sync_dir(&self.dir);
                Err(e)
            }
        }
    }

    /// Installs a complete snapshot file received at an [`incoming_path`](Self::incoming_path):
    /// verifies it, renames it to its final name (no copy), syncs the directory and applies
    /// retention. On error the file is removed and nothing is installed.
    pub fn install_incoming(&self, path: &Path) -> Result<SnapshotInfo> {
        let installed = self.install(path);
        if installed.is_err() {
            let _ = fs::remove_file(path);
        }
        installed
    }

    /// Verifies the complete snapshot file `tmp` (inside this store's directory), renames
    /// it to its final name, syncs the directory and applies retention.
    pub(crate) fn install(&self, tmp: &Path) -> Result<SnapshotInfo> {
        let parsed = format::verify(tmp)?;
        File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("fsync", tmp, e))?;
        let (i, t) = parsed.meta.last.unwrap_or((0, 0));
        let name = format!(
            "{i:020}-{t:020}-{:013}-{:08x}{SUFFIX}",
            parsed.meta.created_ms, parsed.crc
        );
        let path = self.dir.join(name);
        fsutil::rename(tmp, &path)?;
        fsutil::sync_dir(&self.dir)?;
        let bytes = fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        let info = SnapshotInfo::from_parsed(path, parsed, bytes);
        self.retain()?;
        Ok(info)
    }

    /// Deletes all but the newest `keep` snapshots. Returns what it deleted.
    pub fn retain(&self) -> Result<Vec<PathBuf>> {
        let list = self.list()?;
        let doomed: Vec<PathBuf> = list
            .iter()
            .take(list.len().saturating_sub(self.options.keep))
            .map(|i| i.path.clone())
            .collect();
        for p in &doomed {
            fsutil::remove_file(p)?;
        }
        if !doomed.is_empty() {
            fsutil::sync_dir(&self.dir)?;
        }
        Ok(doomed)
    }

    /// A fresh path for a file being received; it ends in `.tmp`, so it is never listed and
    /// a restart removes it. Hand it to [`import`](Self::import) once complete.
    pub fn incoming_path(&self) -> PathBuf {
        self.tmp_path()
    }

    pub(crate) fn tmp_path(&self) -> PathBuf {
        self.dir
            .join(format!("incoming-{:016x}.snap.tmp", rand::random::<u64>()))
    }
}

/// Header, metadata and sizes of the snapshot at `path` (structure checked, not the CRC).
pub fn describe(path: &Path) -> Result<SnapshotInfo> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let parsed = format::parse(&mut f, len, path)?;
    Ok(SnapshotInfo::from_parsed(path.to_path_buf(), parsed, len))
}

/// Checks the whole-file checksum and version of the snapshot at `path`.
pub fn verify_file(path: &Path) -> Result<SnapshotInfo> {
    let parsed = format::verify(path)?;
    let len = fs::metadata(path)
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    Ok(SnapshotInfo::from_parsed(path.to_path_buf(), parsed, len))
}

/// Copies the snapshot at `from` to `to` as one portable file, checking the copied bytes'
/// checksum on the way; `to` appears complete and synced, or not at all.
pub fn export(from: &Path, to: &Path) -> Result<SnapshotInfo> {
    let tmp = fsutil::tmp_path(to);
    let done = copy_verified(from, &tmp).and_then(|()| {
        fsutil::rename(&tmp, to)?;
        fsutil::sync_dir(
            to.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    });
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    verify_file(to)
}

/// Copies `from` to `to` (synced), checking the CRC-32 of what was read against the trailer.
fn copy_verified(from: &Path, to: &Path) -> Result<()> {
    let parsed = format::verify(from)?;
    let mut src = File::open(from).map_err(|e| Error::io("open", from, e))?;
    let len = src
        .metadata()
        .map_err(|e| Error::io("stat", from, e))?
        .len();
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)
        .map_err(|e| Error::io("create", to, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let covered = len - format::TRAILER_BYTES + 16;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(|e| Error::io("read", from, e))?;
        if n == 0 {
            break;
        }
        let hashed = (covered.saturating_sub(at)).min(n as u64) as usize;
        hasher.update(&buf[..hashed]);
        dst.write_all(&buf[..n])
            .map_err(|e| Error::io("write", to, e))?;
        at += n as u64;
    }
    if at != len || hasher.finalize() != parsed.crc {
        return Err(Error::corruption(
            from,
            0,
            "snapshot changed or was damaged while it was copied",
        ));
    }
    dst.sync_all().map_err(|e| Error::io("fsync", to, e))
}

/// Streams a snapshot body into a temporary file; [`finish`](SnapshotWriter::finish)
/// installs it. Dropped unfinished, it removes its temporary file.
pub struct SnapshotWriter {
    target: Target,
    tmp: PathBuf,
    encoder: Option<zstd::stream::Encoder<'static, Checksummed<BufWriter<Paced>>>>,
    header_bytes: u64,
    body_bytes: u64,
}

/// Where a finished snapshot goes.
enum Target {
    /// Installed into a store (retention applied).
    Store(SnapshotStore),
    /// A standalone file (an export), placed atomically.
    File(PathBuf),
}

impl SnapshotWriter {
    fn create(store: SnapshotStore, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let tmp = store.tmp_path();
        let level = store.options.compression_level;
        Self::start(Target::Store(store), tmp, meta, level)
    }

    /// A writer of a standalone snapshot file at `path` (for export): the file appears
    /// complete and synced when [`finish`](Self::finish) returns, or not at all.
    pub fn to_file(
        path: &Path,
        meta: SnapshotMeta,
        compression_level: i32,
    ) -> Result<SnapshotWriter> {
        let tmp = fsutil::tmp_path(path);
        Self::start(
            Target::File(path.to_path_buf()),
            tmp,
            meta,
            compression_level,
        )
    }

    fn start(
        target: Target,
        tmp: PathBuf,
        meta: SnapshotMeta,
        level: i32,
    ) -> Result<SnapshotWriter> {
        let header = format::encode_header(&meta)?;
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut out = Checksummed {
            inner: BufWriter::with_capacity(1 << 20, Paced::new(file)),
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let io = |e: io::Error| Error::io("write", &tmp, e);
        out.write_all(&header).map_err(io)?;
        let mut encoder = zstd::stream::Encoder::new(out, level).map_err(io)?;
        // zstd's own frame checksum (XXH64 of the body) also catches a bad decompression.
        encoder.include_checksum(true).map_err(io)?;
        // Compression in a worker thread of zstd's, beside the caller encoding the state:
        // the two overlap instead of adding up (SNAPSHOT_COMPRESSION_WORKERS).
        encoder
            .multithread(SNAPSHOT_COMPRESSION_WORKERS)
            .map_err(io)?;
        Ok(SnapshotWriter {
            target,
            tmp: tmp.clone(),
            encoder: Some(encoder),
            header_bytes: header.len() as u64,
            body_bytes: 0,
        })
    }

    /// Completes the file (trailer, fsync), installs it atomically and applies retention (or,
    /// made by [`to_file`](Self::to_file), renames it into place and checks it).
    /// The file being written (renamed into place by [`finish`](Self::finish)).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn finish(mut self) -> Result<SnapshotInfo> {
        let encoder = self.encoder.take().expect("finish called once");
        let io = |e: io::Error| Error::io("write", &self.tmp, e);
        let mut out = encoder.finish().map_err(io)?;
        let stored = out.written - self.header_bytes;
        out.write_all(&format::encode_trailer_fields(self.body_bytes, stored))
            .map_err(io)?;
        let crc = out.hasher.clone().finalize();
        let mut file = out.inner.into_inner().map_err(|e| io(e.into_error()))?.file;
        file.write_all(&format::encode_trailer_end(crc))
            .map_err(io)?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))?;
        drop(file);
        let info = match &self.target {
            Target::Store(store) => store.install(&self.tmp).inspect(|i| {
                use std::sync::atomic::Ordering::Relaxed;
                store.written.files.fetch_add(1, Relaxed);
                store.written.bytes.fetch_add(i.file_bytes, Relaxed);
            }),
            Target::File(to) => fsutil::rename(&self.tmp, to)
                .and_then(|()| {
                    fsutil::sync_dir(
                        to.parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new(".")),
                    )
                })
                .and_then(|()| verify_file(to)),
        };
        if info.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        info
    }
}

/// Bytes of a snapshot file written between two starts of their writeback.
pub const SNAPSHOT_BYTES_PER_SYNC: u64 = 1 << 20;

/// A snapshot file that starts the writeback of each [`SNAPSHOT_BYTES_PER_SYNC`] written
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), as RocksDB's
/// `bytes_per_sync` does: the page cache never holds the whole file dirty, so the closing
/// fsync has little left to do and the disk is not flooded at once — a burst that made
/// the log's own fdatasyncs, on the same disk, wait behind it. Durability is unchanged:
/// the file is still fsynced before it is installed.
struct Paced {
    file: File,
    written: u64,
    started: u64,
}

impl Paced {
    fn new(file: File) -> Paced {
        Paced {
            file,
            written: 0,
            started: 0,
        }
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= SNAPSHOT_BYTES_PER_SYNC {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a range of our own open file; no memory is passed. A failure
                // only means the writeback starts later (at the fsync, which reports).
                unsafe {
                    libc::sync_file_range(
                        self.file.as_raw_fd(),
                        self.started as libc::off64_t,
                        (self.written - self.started) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// zstd worker threads compressing a snapshot body while it is written (the encoding
/// of the state runs in the caller's thread; one worker overlaps the two).
pub const SNAPSHOT_COMPRESSION_WORKERS: u32 = 1;

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .encoder
            .as_mut()
            .expect("write after finish")
            .write(buf)?;
        self.body_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.as_mut().expect("flush after finish").flush()
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.encoder.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams a verified snapshot's body. Reading past the end checks the body's length.
pub struct SnapshotReader {
    pub info: SnapshotInfo,
    decoder: zstd::stream::Decoder<'static, BufReader<io::Take<File>>>,
    read: u64,
}

impl SnapshotReader {
    /// Checks the whole-file checksum, then opens the body for streaming.
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        let info = verify_file(path)?;
        let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let parsed = format::parse(&mut f, info.file_bytes, path)?;
        f.seek(SeekFrom::Start(parsed.body_at))
            .map_err(|e| Error::io("read", path, e))?;
        let body = BufReader::with_capacity(1 << 20, f.take(parsed.stored_len));
        let decoder =
            zstd::stream::Decoder::with_buffer(body).map_err(|e| Error::io("read", path, e))?;
        Ok(SnapshotReader {
            info,
            decoder,
            read: 0,
        })
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && self.read != self.info.body_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot body ended after {} bytes; the trailer says {}",
                    self.read, self.info.body_bytes
                ),
            ));
        }
        Ok(n)
    }
}
