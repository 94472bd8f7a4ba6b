//! Thin wrappers over the file-system calls the engine makes, each mapping errors to
//! [`Error::Io`] with the path, and carrying the named failpoints of the write path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use fail::fail_point;

use crate::error::{Error, Result};

/// The error a failpoint injects in place of the real call.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Writes all of `buf` at `pos`. Failpoints: `log::write::err` (EIO before writing),
/// `log::write::short` (half the bytes land, then EIO), `log::write::enospc`.
pub(crate) fn write_all_at(file: &File, buf: &[u8], pos: u64, path: &Path) -> Result<()> {
    write_all_vectored_at(file, &[buf], pos, path)
}

/// Writes all of `slices`, back to back, at `pos` with `pwritev` (in groups of at most
/// `IOV_MAX` slices, continuing after short writes). Same failpoints as [`write_all_at`].
// std's vectored positional write (`write_vectored_at`) is unstable; libc's pwritev is the
// direct call.
pub(crate) fn write_all_vectored_at(
    file: &File,
    slices: &[&[u8]],
    pos: u64,
    path: &Path,
) -> Result<()> {
    fail_point!("log::write::err", |_| Err(Error::io(
        "write",
        path,
        injected(libc::EIO)
    )));
    fail_point!("log::write::enospc", |_| Err(Error::io(
        "write",
        path,
        injected(libc::ENOSPC)
    )));
    fail_point!("log::write::short", |_| {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let mut left = total / 2;
        let mut at = pos;
        for s in slices {
            let n = left.min(s.len());
            std::os::unix::fs::FileExt::write_all_at(file, &s[..n], at)
                .map_err(|e| Error::io("write", path, e))?;
            at += n as u64;
            left -= n;
        }
        Err(Error::io("write", path, injected(libc::EIO)))
    });
    #[cfg(feature = "disk-faults")]
    let id = crate::disk_faults::before_write(path, pos, slices.iter().map(|s| s.len()).sum())
        .map_err(|e| Error::io("write", path, e))?;
    let written = pwritev_all(file, slices, pos, path);
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::after_write(path, id);
    written
}

/// `pwritev` until all of `slices` is written.
fn pwritev_all(file: &File, slices: &[&[u8]], pos: u64, path: &Path) -> Result<()> {
    const IOV_MAX: usize = 1024;
    let mut at = pos;
    for group in slices.chunks(IOV_MAX) {
        let mut iov: Vec<libc::iovec> = group
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        let mut first = 0;
        while first < iov.len() {
            // SAFETY: every iovec points into a live slice of `group` for this call.
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov[first..].as_ptr(),
                    (iov.len() - first) as libc::c_int,
                    at as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("write", path, e));
            }
            if n == 0 {
                return Err(Error::io(
                    "write",
                    path,
                    io::Error::from(io::ErrorKind::WriteZero),
                ));
            }
            at += n as u64;
            // Skip what was written: whole slices, then part of the next one.
            let mut n = n as usize;
            while n > 0 {
                let v = &mut iov[first];
                if n >= v.iov_len {
                    n -= v.iov_len;
                    first += 1;
                } else {
                    v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                    v.iov_len -= n;
                    n = 0;
                }
            }
            while first < iov.len() && iov[first].iov_len == 0 {
                first += 1;
            }
        }
    }
    Ok(())
}

/// `fdatasync`. Failpoint: `log::fsync::err` (EIO without syncing).
pub(crate) fn sync_data(file: &File, path: &Path) -> Result<()> {
    fail_point!("log::fsync::err", |_| Err(Error::io(
        "fdatasync",
        path,
        injected(libc::EIO)
    )));
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::before_sync(path).map_err(|e| Error::io("fdatasync", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// `fsync` (data and metadata: after a length change).
pub(crate) fn sync_all(file: &File, path: &Path) -> Result<()> {
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::before_sync(path).map_err(|e| Error::io("fsync", path, e))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Makes creations, renames and deletions inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fail_point!("log::dirsync::err", |_| Err(Error::io(
        "fsync directory",
        dir,
        injected(libc::EIO)
    )));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

pub(crate) fn remove_file(path: &Path) -> Result<()> {
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::forget(path);
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", from, e))?;
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::after_rename(from, to);
    Ok(())
}

pub(crate) fn set_len(file: &File, len: u64, path: &Path) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io("set length of", path, e))?;
    #[cfg(feature = "disk-faults")]
    crate::disk_faults::after_set_len(path, len);
    Ok(())
}

/// Drops `len` bytes at `offset` of `file` from the page cache (posix_fadvise DONTNEED).
/// Advisory: the data is on disk already, so a failure only costs memory and is ignored.
pub(crate) fn drop_cache(file: &File, offset: u64, len: u64) {
    // std has no fadvise; libc's is the direct call.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Asks the kernel to read `len` bytes at `offset` into the page cache now (posix_fadvise
/// WILLNEED), without waiting. Advisory; failures are ignored.
pub(crate) fn will_need(file: &File, offset: u64, len: u64) {
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// Reserves `len` bytes of disk for `file` so later appends neither allocate blocks nor
/// grow the file. Falls back to a sparse `set_len` where the file system has no fallocate.
pub(crate) fn preallocate(file: &File, len: u64, path: &Path) -> Result<()> {
    // std has no fallocate; libc's is the direct call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => set_len(file, len, path),
        _ => Err(Error::io("fallocate", path, err)),
    }
}

/// Writes `bytes` to `path` atomically: temporary file (`PATH.tmp`), fsync, rename,
/// directory fsync. Readers — and a restart after a crash at any point — see either the
/// old contents or the new, never a mix or nothing. The workspace's one helper for small
/// files replaced whole (metadata here; identity, tags and known peers in the server).
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        #[cfg(feature = "disk-faults")]
        crate::disk_faults::forget(&tmp);
        #[cfg(feature = "disk-faults")]
        let id = crate::disk_faults::before_write(&tmp, 0, bytes.len())
            .map_err(|e| Error::io("write", &tmp, e))?;
        let written = f.write_all(bytes);
        #[cfg(feature = "disk-faults")]
        crate::disk_faults::after_write(&tmp, id);
        written.map_err(|e| Error::io("write", &tmp, e))?;
        fail_point!("meta::before_sync", |_| Err(Error::io(
            "fsync",
            &tmp,
            injected(libc::EIO)
        )));
        sync_all(&f, &tmp)?;
    }
    rename(&tmp, path)?;
    sync_dir(dir)
}

/// The temporary name used while replacing `path`; open removes leftovers.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// An exclusive advisory lock on `<dir>/LOCK`, held for the life of the value. A second
/// holder — another process, or another handle in this one — is refused.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock or fails with [`Error::Locked`] at once (it never waits).
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    lock: path,
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        // The pid is for people reading the file; the lock itself is the flock.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("locked"), "{err}");
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn vectored_write_writes_every_slice_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        // More slices than one pwritev takes, of varied sizes, some empty.
        let owned: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize])
            .collect();
        let slices: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        write_all_vectored_at(&file, &slices, 10, &path).unwrap();
        let data = fs::read(&path).unwrap();
        let want: Vec<u8> = owned.concat();
        assert_eq!(&data[10..], &want[..]);
        assert!(data[..10].iter().all(|&b| b == 0));
    }

    #[test]
    fn replace_atomically_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta");
        replace_atomically(&p, b"one").unwrap();
        replace_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
    }
}
