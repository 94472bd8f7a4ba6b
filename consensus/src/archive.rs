//! The archive of collected jobs: what retention removes from the replicated state is
//! kept on every node, in its data directory, as append-only files of zstd-compressed
//! JSON lines, one file per UTC day of collection (`archive/YYYY-MM-DD.jsonl.zst`).
//!
//! ```text
//!  Collect entry applied ──▶ the jobs it removed ──▶ one zstd frame: a JSON line per job
//!                                                     {"index", "collected_at_ms", "job", …}
//! ```
//!
//! Each append is one whole zstd frame (frames concatenate into one valid stream), so a
//! crash can only leave a torn last frame: open cuts it. A log entry is archived once:
//! replaying entries after a restart (those past the snapshot) skips the indexes the
//! newest file already holds. The files are bounded by `bytes_max`: the oldest day goes
//! first. Reading an id scans the files newest first (a collected job is looked up rarely;
//! an index is future work).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::command::JobId;
use crate::state::Collected;

/// The directory in a data directory.
pub const ARCHIVE_DIR: &str = "archive";
/// Default bound of the archive's files together.
pub const ARCHIVE_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// zstd level of the frames.
const LEVEL: i32 = 3;

/// One archived job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The log index of the `Collect` entry that removed it.
    pub index: u64,
    pub collected_at_ms: u64,
    #[serde(flatten)]
    pub collected: Collected,
}

/// The archive of one data directory.
pub struct Archive {
    dir: PathBuf,
    bytes_max: u64,
    /// The highest entry index archived (entries at or below it are not written again).
    last_index: Mutex<u64>,
}

fn io(op: &str, path: &Path, e: std::io::Error) -> String {
    format!("{op} {}: {e}", path.display())
}

/// The day file for a time: `YYYY-MM-DD.jsonl.zst` (UTC).
pub fn day_file(at_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    let day = &humantime::format_rfc3339_seconds(t).to_string()[..10];
    format!("{day}.jsonl.zst")
}

/// The archive's files, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The whole frames of `bytes`: (their end, the records they hold); a torn or damaged
/// tail ends the reading (its offset is the end returned).
pub fn frames(bytes: &[u8]) -> (usize, Vec<Record>, Option<String>) {
    let mut at = 0;
    let mut records = Vec::new();
    while at < bytes.len() {
        let size = match zstd::zstd_safe::find_frame_compressed_size(&bytes[at..]) {
            Ok(n) if n > 0 && at + n <= bytes.len() => n,
            _ => {
                return (
                    at,
                    records,
                    Some(format!("torn or damaged frame at byte {at}")),
                )
            }
        };
        let text = match zstd::stream::decode_all(&bytes[at..at + size]) {
            Ok(t) => t,
            Err(e) => return (at, records, Some(format!("frame at byte {at}: {e}"))),
        };
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => records.push(r),
                Err(e) => {
                    return (
                        at,
                        records,
                        Some(format!("record in frame at byte {at}: {e}")),
                    )
                }
            }
        }
        at += size;
    }
    (at, records, None)
}

impl Archive {
    /// Opens (creating) the archive in `dir`, cutting a torn last frame of its newest file.
    pub fn open(dir: &Path, bytes_max: u64) -> Result<Archive, String> {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let mut last_index = 0;
        let all = files(dir);
        // An entry may land in the file of a day before the newest one's (proposers'
        // clocks differ around midnight): the highest index is read from the two newest.
        for older in all.iter().rev().skip(1).take(1) {
            let bytes = std::fs::read(older).map_err(|e| io("read", older, e))?;
            let (_, records, _) = frames(&bytes);
            last_index = records.iter().map(|r| r.index).max().unwrap_or(0);
        }
        if let Some(newest) = all.last() {
            let bytes = std::fs::read(newest).map_err(|e| io("read", newest, e))?;
            let (end, records, problem) = frames(&bytes);
            if let Some(p) = problem {
                tracing::warn!(file = %newest.display(), "archive: {p}; cutting it there");
                let f = OpenOptions::new()
                    .write(true)
                    .open(newest)
                    .map_err(|e| io("open", newest, e))?;
                f.set_len(end as u64).map_err(|e| io("cut", newest, e))?;
                f.sync_data().map_err(|e| io("sync", newest, e))?;
            }
            last_index = last_index.max(records.iter().map(|r| r.index).max().unwrap_or(0));
        }
        Ok(Archive {
            dir: dir.to_path_buf(),
            bytes_max,
            last_index: Mutex::new(last_index),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Archives the jobs entry `index` (applied at `at_ms`) collected, unless that entry was
    /// archived already (a replay after a restart).
    pub fn append(&self, index: u64, at_ms: u64, jobs: Vec<Collected>) -> Result<(), String> {
        let mut last = self.last_index.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_empty() || index <= *last {
            return Ok(());
        }
        let mut text = Vec::new();
        for collected in jobs {
            let r = Record {
                index,
                collected_at_ms: at_ms,
                collected,
            };
            serde_json::to_writer(&mut text, &r).map_err(|e| e.to_string())?;
            text.push(b'\n');
        }
        let frame = zstd::bulk::compress(&text, LEVEL).map_err(|e| e.to_string())?;
        let path = self.dir.join(day_file(at_ms));
        let new = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        let before = f.metadata().map_err(|e| io("stat", &path, e))?.len();
        // Durable before the state moves past it: a snapshot taken after this entry no
        // longer holds these jobs, so the archive must. A failed write is taken back
        // whole, so frames appended later stay readable.
        let written = f.write_all(&frame).and_then(|()| f.sync_data());
        if let Err(e) = written {
            let _ = f.set_len(before);
            return Err(io("append to", &path, e));
        }
        if new {
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        *last = index;
        drop(last);
        self.bound();
        Ok(())
    }

    /// Drops the oldest files while the archive is over its bound (never the newest).
    fn bound(&self) {
        let all = files(&self.dir);
        let sizes: Vec<u64> = all
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let mut total: u64 = sizes.iter().sum();
        for (p, size) in all.iter().zip(&sizes).take(all.len().saturating_sub(1)) {
            if total <= self.bytes_max {
                break;
            }
            tracing::info!(file = %p.display(), "archive over --archive-bytes-max: dropping its oldest day");
            if std::fs::remove_file(p).is_ok() {
                total -= size;
            }
        }
    }

    /// The archived record of job `id`, if the archive still holds it.
    pub fn find(&self, id: JobId) -> Option<Record> {
        find(&self.dir, id)
    }
}

/// A page of the archive, most recently collected first: up to `limit` records from the
/// position `from` (`None`: the start), and the position after them (`None`: the end). A
/// position is `DAY.N`: the day file's date and how many of its records (newest first)
/// come before it.
pub fn page(
    dir: &Path,
    from: Option<&str>,
    limit: usize,
) -> Result<(Vec<Record>, Option<String>), String> {
    let (start_day, mut skip) = match from {
        None => (None, 0),
        Some(p) => {
            let (day, n) = p
                .rsplit_once('.')
                .filter(|(d, _)| d.len() == 10)
                .ok_or_else(|| format!("{p:?} is not an archive position"))?;
            let n: usize = n
                .parse()
                .map_err(|_| format!("{p:?} is not an archive position"))?;
            (Some(day.to_string()), n)
        }
    };
    let mut out = Vec::new();
    for path in files(dir).into_iter().rev() {
        let name = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let day = name.get(..10).unwrap_or("").to_string();
        if start_day
            .as_ref()
            .is_some_and(|d| day.as_str() > d.as_str())
        {
            continue;
        }
        if start_day
            .as_ref()
            .is_some_and(|d| day.as_str() < d.as_str())
        {
            skip = 0;
        }
        let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
        let (_, records, _) = frames(&bytes);
        for (k, r) in records.into_iter().rev().enumerate().skip(skip) {
            if out.len() == limit {
                return Ok((out, Some(format!("{day}.{k}"))));
            }
            out.push(r);
        }
        skip = 0;
    }
    Ok((out, None))
}

/// The archived record of job `id` in the archive at `dir`, newest file first.
pub fn find(dir: &Path, id: JobId) -> Option<Record> {
    for path in files(dir).into_iter().rev() {
        let mut bytes = Vec::new();
        if File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .is_err()
        {
            continue;
        }
        let (_, records, _) = frames(&bytes);
        if let Some(r) = records.into_iter().rev().find(|r| r.collected.job.id == id) {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::JobSpec;
    use crate::state::{Job, JobState};

    fn collected(id: JobId) -> Collected {
        Collected {
            job: Job {
                id,
                spec: JobSpec::new("j", &["true"]),
                state: JobState::Succeeded,
                reason: None,
                submitted_at_ms: 1,
                not_before_ms: 1,
                attempts: Vec::new(),
                workflow: None,
                dependents: Vec::new(),
            },
            outputs: Default::default(),
            submitted_by: None,
            ended_at_ms: Some(2),
            retain_ms: None,
            namespace: None,
        }
    }

    #[test]
    fn appends_once_per_entry_survive_a_torn_frame_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), 1 << 20).unwrap();
        let day = 86_400_000;
        a.append(5, day, vec![collected(1), collected(2)]).unwrap();
        a.append(5, day, vec![collected(1)]).unwrap(); // the same entry again: skipped
        a.append(9, day, vec![collected(3)]).unwrap();
        assert_eq!(a.find(2).unwrap().index, 5);
        assert_eq!(a.find(3).unwrap().collected.job.id, 3);
        assert!(a.find(4).is_none());
        let file = dir.path().join(day_file(day));
        assert_eq!(file.file_name().unwrap(), "1970-01-02.jsonl.zst");
        let (_, records, problem) = frames(&std::fs::read(&file).unwrap());
        assert_eq!((records.len(), problem), (3, None));
        // A torn last frame: cut at open; what was whole stays, and a replay of entry 5
        // (at or below what the file holds) writes nothing.
        let whole = std::fs::metadata(&file).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2]).unwrap();
        drop(f);
        let a = Archive::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), whole);
        a.append(5, day, vec![collected(7)]).unwrap();
        assert!(a.find(7).is_none(), "entry 5 was archived already");
        // Pages, most recently collected first, resumed from a position.
        let (p1, next) = page(dir.path(), None, 2).unwrap();
        assert_eq!(
            p1.iter().map(|r| r.collected.job.id).collect::<Vec<_>>(),
            [3, 2]
        );
        let (p2, end) = page(dir.path(), next.as_deref(), 2).unwrap();
        assert_eq!(
            p2.iter().map(|r| r.collected.job.id).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(end, None);
        assert!(page(dir.path(), Some("nonsense"), 2).is_err());
        // Over the bound, the oldest day goes (never the newest).
        let small = Archive::open(dir.path(), 1).unwrap();
        small.append(10, 3 * day, vec![collected(8)]).unwrap();
        assert_eq!(files(dir.path()).len(), 1);
        assert!(small.find(8).is_some() && small.find(1).is_none());
    }
}
