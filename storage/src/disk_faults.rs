//! A disk that fails and forgets, for whole-cluster simulation (feature `disk-faults`).
//!
//! ClusterSim runs the real engine on real files. A [`Disk`] attached to a directory sees
//! every write, length change, removal, rename and sync the engine makes to its log under
//! it (segments, the spare segment, the acknowledgment file and the metadata — vote,
//! commit, state of truncations — that is replaced whole, all through `fsutil`) and can:
//!
//! - fail the next write or sync with an errno. The engine must then stop (fail-stop):
//!   after a failed fsync the kernel may have dropped the dirty pages, so no retry can know
//!   what is on disk;
//! - forget what was written since each file's last sync, as a machine that lost power
//!   would ([`Disk::lose_unsynced`]): the bytes a suffix of those writes replaced are put
//!   back, the first of them torn at a sector boundary.
//!
//! What it does not see: snapshots (their store writes them itself) and files the server
//! writes itself. Files replaced whole (`replace_atomically`: the engine's metadata, and
//! the server's identity, tags and known peers when the disk is attached to the whole data
//! directory) are synced before their rename, so a crash loses none of them; a fault can
//! fail their write or sync — ClusterSim aims its faults at the engine's files by name.
//!
//! Not turmoil's simulated file system (`unstable-fs`): it stands in for `std::fs` calls,
//! and the engine writes with `pwritev`, preallocates with `fallocate` and reads through
//! `mmap`, none of which it models. This hook sees the engine's own calls, so the engine
//! under simulation is the engine in production.
//!
//! Without the feature none of this is compiled. With it and no disk attached, each call
//! costs one relaxed atomic load.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Torn writes keep whole sectors of the new bytes.
pub const SECTOR_BYTES: usize = 512;

/// Whether any disk is attached (the fast path of every call).
static ARMED: AtomicBool = AtomicBool::new(false);
static DISKS: RwLock<Vec<Arc<Disk>>> = RwLock::new(Vec::new());

/// The faults of the files under one directory.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    fail_write: Option<Fault>,
    fail_sync: Option<Fault>,
    /// Per file, the writes since its last sync, oldest first, with what they replaced.
    unsynced: BTreeMap<PathBuf, Vec<Undo>>,
    /// Faults that fired.
    fired: u64,
    /// The id of the next write recorded.
    next_write: u64,
}

/// A fault asked for: the errno, and the end of the names of the files it may hit (any
/// file when `None`).
#[derive(Debug, Clone)]
struct Fault {
    errno: i32,
    suffix: Option<String>,
}

impl Fault {
    /// Whether the fault hits `path`.
    fn hits(&self, path: &Path) -> bool {
        self.suffix.as_deref().is_none_or(|e| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(e))
        })
    }
}

/// One write not yet synced: where, how long, the bytes it replaced and the file's length
/// before it.
#[derive(Debug)]
struct Undo {
    id: u64,
    pos: u64,
    len: u64,
    old: Vec<u8>,
    file_len: u64,
    /// The write returned: a sync from then on covers it. One still in flight when a
    /// sync starts is not covered by it.
    done: bool,
}

/// What [`Disk::lose_unsynced`] undid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Files that lost at least one write.
    pub files: usize,
    /// Writes undone (a torn one counts).
    pub writes: usize,
    /// Writes kept in part.
    pub torn: usize,
}

/// Attaches a fault-free disk to `dir` (replacing one attached before): from now on the
/// engine's calls on files under `dir` go through it.
pub fn attach(dir: &Path) -> Arc<Disk> {
    let disk = Arc::new(Disk {
        dir: dir.to_path_buf(),
        state: Mutex::new(State::default()),
    });
    let mut disks = DISKS.write().unwrap_or_else(|e| e.into_inner());
    disks.retain(|d| d.dir != dir);
    disks.push(disk.clone());
    ARMED.store(true, Ordering::Release);
    disk
}

/// Detaches the disk of `dir`, if any.
pub fn detach(dir: &Path) {
    let mut disks = DISKS.write().unwrap_or_else(|e| e.into_inner());
    disks.retain(|d| d.dir != dir);
    ARMED.store(!disks.is_empty(), Ordering::Release);
}

fn find(path: &Path) -> Option<Arc<Disk>> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    DISKS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|d| under(path, &d.dir))
        .cloned()
}

/// `path` is `dir` or under it. Compares bytes (the paths the engine builds under a
/// directory start with its bytes): `Path::starts_with` parses both into components, and
/// this runs at every write and sync of a simulated cluster.
fn under(path: &Path, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (p, d) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    let d = d.strip_suffix(b"/").unwrap_or(d);
    p.starts_with(d) && matches!(p.get(d.len()), None | Some(b'/'))
}

/// Before `len` bytes are written at `pos` of `path`: fails if asked to, else remembers
/// what the write replaces; returns the write's id for [`after_write`].
pub(crate) fn before_write(path: &Path, pos: u64, len: usize) -> io::Result<Option<u64>> {
    let Some(disk) = find(path) else {
        return Ok(None);
    };
    let mut s = disk.lock();
    if s.fail_write.as_ref().is_some_and(|f| f.hits(path)) {
        let f = s.fail_write.take().expect("a fault");
        s.fired += 1;
        return Err(io::Error::from_raw_os_error(f.errno));
    }
    let file_len = std::fs::metadata(path).map_or(0, |m| m.len());
    let end = (pos + len as u64).min(file_len);
    let mut old = vec![0; end.saturating_sub(pos) as usize];
    if !old.is_empty() {
        File::open(path)?.read_exact_at(&mut old, pos)?;
    }
    let id = s.next_write;
    s.next_write += 1;
    s.unsynced
        .entry(path.to_path_buf())
        .or_default()
        .push(Undo {
            id,
            pos,
            len: len as u64,
            old,
            file_len,
            done: false,
        });
    Ok(Some(id))
}

/// After write `id` to `path` returned (whether or not it wrote everything).
pub(crate) fn after_write(path: &Path, id: Option<u64>) {
    let (Some(id), Some(disk)) = (id, find(path)) else {
        return;
    };
    let mut s = disk.lock();
    if let Some(u) = s
        .unsynced
        .get_mut(path)
        .and_then(|undos| undos.iter_mut().find(|u| u.id == id))
    {
        u.done = true;
    }
}

/// Before `path` is synced: fails if asked to, else what was written to it (the writes
/// that returned) is durable.
pub(crate) fn before_sync(path: &Path) -> io::Result<()> {
    let Some(disk) = find(path) else {
        return Ok(());
    };
    let mut s = disk.lock();
    if s.fail_sync.as_ref().is_some_and(|f| f.hits(path)) {
        let f = s.fail_sync.take().expect("a fault");
        s.fired += 1;
        return Err(io::Error::from_raw_os_error(f.errno));
    }
    if let Some(undos) = s.unsynced.get_mut(path) {
        undos.retain(|u| !u.done);
        if undos.is_empty() {
            s.unsynced.remove(path);
        }
    }
    Ok(())
}

/// After `path` was cut or grown to `len`: writes wholly past the new end are gone.
pub(crate) fn after_set_len(path: &Path, len: u64) {
    let Some(disk) = find(path) else {
        return;
    };
    let mut s = disk.lock();
    if let Some(undos) = s.unsynced.get_mut(path) {
        undos.retain(|u| u.pos < len);
    }
}

/// After `path` was removed, or created anew over an old file: what was written to the
/// old file concerns nobody.
pub(crate) fn forget(path: &Path) {
    if let Some(disk) = find(path) {
        disk.lock().unsynced.remove(path);
    }
}

/// After `from` was renamed to `to`: its unsynced writes go with it.
pub(crate) fn after_rename(from: &Path, to: &Path) {
    let Some(disk) = find(from) else {
        return;
    };
    let mut s = disk.lock();
    s.unsynced.remove(to);
    if let Some(undos) = s.unsynced.remove(from) {
        s.unsynced.insert(to.to_path_buf(), undos);
    }
}

impl Disk {
    /// The directory this disk holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next write under this directory fails with `errno` (and writes nothing).
    pub fn fail_next_write(&self, errno: i32) {
        self.lock().fail_write = Some(Fault {
            errno,
            suffix: None,
        });
    }

    /// The next write of a file whose name ends with `suffix` under this directory
    /// (`meta.tmp`: the metadata being replaced) fails with `errno`.
    pub fn fail_next_write_of(&self, suffix: &str, errno: i32) {
        self.lock().fail_write = Some(Fault {
            errno,
            suffix: Some(suffix.to_string()),
        });
    }

    /// The next sync under this directory fails with `errno`.
    pub fn fail_next_sync(&self, errno: i32) {
        self.lock().fail_sync = Some(Fault {
            errno,
            suffix: None,
        });
    }

    /// The next sync of a file whose name ends with `suffix` under this directory
    /// (`.seg`: a log segment) fails with `errno`.
    pub fn fail_next_sync_of(&self, suffix: &str, errno: i32) {
        self.lock().fail_sync = Some(Fault {
            errno,
            suffix: Some(suffix.to_string()),
        });
    }

    /// Faults asked for and not yet fired are dropped.
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.fail_write = None;
        s.fail_sync = None;
    }

    /// How many faults fired.
    pub fn fired(&self) -> u64 {
        self.lock().fired
    }

    /// Writes not yet synced, over every file.
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.values().map(Vec::len).sum()
    }

    /// Loses what was written since each file's last sync, as a power loss would. For each
    /// file (in path order), `choose(n)` picks a number below `n`: with `k` unsynced
    /// writes, the first `choose(k + 1)` are kept; of the next, the whole sectors of the
    /// file it wrote up to the `choose(sectors + 1)`-th boundary are kept (a torn write;
    /// sectors are [`SECTOR_BYTES`] from the file's start); the rest are undone, newest
    /// first, and the file cut back to its length before them. Call it when nothing
    /// writes the files (the node crashed).
    pub fn lose_unsynced(&self, mut choose: impl FnMut(u64) -> u64) -> io::Result<Lost> {
        let unsynced = std::mem::take(&mut self.lock().unsynced);
        let mut lost = Lost::default();
        for (path, undos) in unsynced {
            let keep = choose(undos.len() as u64 + 1) as usize;
            if keep >= undos.len() {
                continue;
            }
            let file = match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                // Removed since (a purged segment): nothing to lose.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let first = &undos[keep];
            // The sector boundaries inside the first lost write, by the file's sectors.
            let sector = SECTOR_BYTES as u64;
            let end = first.pos + first.len;
            let first_boundary = first.pos.div_ceil(sector) * sector;
            let boundaries = if first_boundary > end {
                0
            } else {
                (end - first_boundary) / sector + 1
            };
            let torn_bytes = match choose(boundaries + 1) {
                0 => 0,
                b => (first_boundary + (b - 1) * sector).min(end) - first.pos,
            };
            for (i, u) in undos.iter().enumerate().skip(keep).rev() {
                // The torn write keeps its first sectors: only what follows them reverts.
                let from = if i == keep { torn_bytes } else { 0 };
                if (from as usize) < u.old.len() {
                    file.write_all_at(&u.old[from as usize..], u.pos + from)?;
                }
            }
            let cut = first.file_len.max(first.pos + torn_bytes);
            if file.metadata()?.len() > cut {
                file.set_len(cut)?;
            }
            lost.files += 1;
            lost.writes += undos.len() - keep;
            if torn_bytes > 0 && torn_bytes < first.len {
                lost.torn += 1;
            }
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, pos: u64, bytes: &[u8]) {
        let id = before_write(path, pos, bytes.len()).unwrap();
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap();
        f.write_all_at(bytes, pos).unwrap();
        after_write(path, id);
    }

    #[test]
    fn synced_writes_stay_and_unsynced_ones_go_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let disk = attach(dir.path());
        let a = dir.path().join("a");
        write(&a, 0, &[1; 1024]);
        before_sync(&a).unwrap();
        write(&a, 1024, &[2; 1024]);
        write(&a, 512, &[3; 1024]);
        assert_eq!(disk.unsynced_writes(), 2);
        // Keep none of the two; the first lost is not torn.
        let mut picks = [0u64, 0].into_iter();
        let lost = disk.lose_unsynced(|_| picks.next().unwrap()).unwrap();
        assert_eq!(
            lost,
            Lost {
                files: 1,
                writes: 2,
                torn: 0
            }
        );
        assert_eq!(std::fs::read(&a).unwrap(), vec![1; 1024]);
        detach(dir.path());
    }

    #[test]
    fn a_failed_metadata_write_or_sync_stops_the_log_and_the_old_metadata_stays() {
        for sync in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let disk = attach(dir.path());
            let options = crate::Options {
                inline_writer: true,
                ..crate::Options::default()
            };
            let log = crate::Log::open(dir.path(), options.clone()).unwrap();
            log.save_vote(b"first".to_vec()).unwrap();
            if sync {
                disk.fail_next_sync_of("meta.tmp", libc::EIO);
            } else {
                disk.fail_next_write_of("meta.tmp", libc::EIO);
            }
            // A segment's writes are not the metadata's: the fault waits for it.
            let entry = crate::Entry {
                index: 1,
                term: 1,
                payload: b"x",
            };
            log.append(&[entry], crate::Durability::Durable).unwrap();
            assert_eq!(disk.fired(), 0);
            let e = log.save_vote(b"second".to_vec()).unwrap_err();
            assert!(e.to_string().contains("meta.tmp"), "{e}");
            assert_eq!(disk.fired(), 1);
            assert!(log.failure().is_some(), "the log stops (fail-stop)");
            drop(log);
            let log = crate::Log::open(dir.path(), options).unwrap();
            assert_eq!(log.metadata().vote.as_deref(), Some(&b"first"[..]));
            drop(log);
            detach(dir.path());
        }
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors_of_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let disk = attach(dir.path());
        let a = dir.path().join("a");
        std::fs::write(&a, vec![9; 4096]).unwrap();
        write(&a, 0, &[5; 2048]);
        // Unaligned: from byte 2100 to 3124, crossing the boundaries at 2560 and 3072.
        write(&a, 2100, &[6; 1024]);
        // Keep the first write; tear the second at its first boundary (2560).
        let mut picks = [1u64, 1].into_iter();
        let lost = disk.lose_unsynced(|_| picks.next().unwrap()).unwrap();
        assert_eq!(lost.torn, 1);
        let back = std::fs::read(&a).unwrap();
        assert_eq!(back.len(), 4096);
        assert!(back[..2048].iter().all(|b| *b == 5));
        assert!(back[2048..2100].iter().all(|b| *b == 9));
        assert!(back[2100..2560].iter().all(|b| *b == 6));
        assert!(back[2560..].iter().all(|b| *b == 9));
        detach(dir.path());
    }

    #[test]
    fn under_is_the_directory_or_below_it() {
        for (p, d, want) in [
            ("/a/b/c", "/a/b", true),
            ("/a/b", "/a/b", true),
            ("/a/b/c", "/a/b/", true),
            ("/a/bc", "/a/b", false),
            ("/a", "/a/b", false),
            ("/x/b/c", "/a/b", false),
        ] {
            assert_eq!(under(Path::new(p), Path::new(d)), want, "{p} under {d}");
        }
    }

    #[test]
    fn asked_faults_fire_once_and_only_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let disk = attach(dir.path());
        disk.fail_next_sync(libc::EIO);
        assert!(before_sync(&other.path().join("x")).is_ok());
        let e = before_sync(&dir.path().join("x")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(before_sync(&dir.path().join("x")).is_ok());
        disk.fail_next_write(libc::ENOSPC);
        let e = before_write(&dir.path().join("y"), 0, 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(disk.fired(), 2);
        // A file grown by an unsynced write is cut back to its length before it.
        let y = dir.path().join("y");
        write(&y, 0, &[7; 100]);
        let lost = disk.lose_unsynced(|_| 0).unwrap();
        assert_eq!(lost.writes, 1);
        assert_eq!(std::fs::metadata(&y).unwrap().len(), 0);
        // A fault for segments only passes other files by.
        disk.fail_next_sync_of(".seg", libc::EIO);
        assert!(before_sync(&dir.path().join("acked")).is_ok());
        assert!(before_sync(&dir.path().join("1.seg")).is_err());
        detach(dir.path());
    }

    #[test]
    fn a_write_still_in_flight_is_not_covered_by_a_sync_and_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let disk = attach(dir.path());
        let a = dir.path().join("a.tmp");
        write(&a, 0, &[1; 512]);
        // Recorded, not yet returned, when another thread syncs the file.
        let in_flight = before_write(&a, 512, 512).unwrap();
        before_sync(&a).unwrap();
        assert_eq!(disk.unsynced_writes(), 1);
        after_write(&a, in_flight);
        let b = dir.path().join("a.seg");
        after_rename(&a, &b);
        assert_eq!(disk.lock().unsynced.keys().collect::<Vec<_>>(), vec![&b]);
        forget(&b);
        assert_eq!(disk.unsynced_writes(), 0);
        detach(dir.path());
    }
}
