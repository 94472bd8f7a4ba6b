//! The metadata file beside the log: the caller's vote, committed and purged ids (opaque
//! bytes) and the engine's own facts — identity, purge point, the acknowledged entries
//! this node owes its cluster, and the losses an operator accepted — replaced atomically
//! as one file, written twice.
//!
//! Two copies, `meta` and `meta.mirror`, each replaced atomically and each carrying a
//! sequence number one higher than the last: a vote is returned only after both are
//! durable. A damaged copy, or one rolled back to an older version, is outvoted by the
//! other (the higher valid sequence wins); with both damaged, open refuses. So a single
//! damaged or stale copy can neither make a node forget a vote nor vote twice in a term.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;

/// Largest value of one metadata field.
pub const META_FIELD_BYTES_MAX: usize = 64 * 1024;
/// Most accepted losses the metadata keeps (the newest; older ones stay in the server's
/// logs of the day and in `salvage/`).
pub const LOSSES_MAX: usize = 32;
const MAGIC: &[u8; 8] = b"CATHMETA";
/// The version this build writes; version 1 (no sequence, owed range or losses) is read.
const VERSION: u16 = 2;
const VERSION_V1: u16 = 1;
const ABSENT: u32 = u32::MAX;
/// Bit of the flags (bytes 10..12, version 2): the log keeps an acknowledgment file.
const FLAG_ACKED_IN_USE: u16 = 1;
/// The second copy's name beside `meta`.
pub(crate) const MIRROR_SUFFIX: &str = ".mirror";

/// The caller's metadata. The engine stores the bytes and never interprets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The last vote cast (Raft: term and candidate).
    pub vote: Option<Vec<u8>>,
    /// The last committed log id known to this node.
    pub committed: Option<Vec<u8>>,
    /// The last purged log id, written together with the purge point by
    /// [`Log::purge`](crate::Log::purge).
    pub purged: Option<Vec<u8>>,
}

/// Acknowledged entries this log lost to damage and must fetch again from its cluster:
/// everything through `(term, index)` had been acknowledged as durable. Recorded by a
/// [`RecoveryMode::Refetch`](crate::RecoveryMode::Refetch) open that cut them; cleared
/// once the log holds `index` durably again (or a purge covers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    pub index: u64,
    pub term: u64,
}

/// Acknowledged entries an operator accepted as lost (`repair --accept-loss`, salvage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// First and last index lost (inclusive).
    pub first: u64,
    pub last: u64,
    /// When the loss was accepted, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The metadata of the log in `dir` (the directory holding `meta`), read without the lock
/// and without touching the segments; `None` when there is no metadata file.
pub fn read_metadata(dir: &Path) -> Result<Option<Metadata>> {
    Ok(MetaFile::load(&dir.join(crate::log::layout::META_FILE))?.map(|m| m.user))
}

/// The purge point of the log in `dir`: every index up to and including it was compacted
/// away (`None`: nothing purged, or no metadata file). Read-only, without the lock.
pub fn read_purge_point(dir: &Path) -> Result<Option<u64>> {
    Ok(MetaFile::load(&dir.join(crate::log::layout::META_FILE))?.and_then(|m| m.purged_through))
}

/// Everything the metadata file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MetaFile {
    /// Random identity of this log, repeated in every segment header.
    pub log_id: u64,
    /// Every index up to and including this one is purged.
    pub purged_through: Option<u64>,
    /// One more with every replacement; the higher of the two copies is current.
    pub seq: u64,
    /// The log keeps an acknowledgment file (`log/acked`): from then on, its absence is
    /// damage, not a directory from before it.
    pub acked_in_use: bool,
    pub owed: Option<Owed>,
    /// Newest last, at most `LOSSES_MAX`.
    pub losses: Vec<Loss>,
    pub user: Metadata,
}

/// What reading both copies found.
#[derive(Debug, Default)]
pub(crate) struct MetaSurvey {
    /// The current metadata: the valid copy with the higher sequence.
    pub current: Option<MetaFile>,
    /// Copies that are damaged, or older than the current one (rolled back or not yet
    /// rewritten): reported, and healed by the next write.
    pub problems: Vec<Error>,
}

/// The mirror copy's path for the metadata file at `path`.
pub(crate) fn mirror_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(MIRROR_SUFFIX);
    path.with_file_name(name)
}

impl MetaFile {
    // Format: FORMAT.md § "Metadata file".
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(u16::from(self.acked_in_use) * FLAG_ACKED_IN_USE).to_le_bytes());
        out.extend_from_slice(&self.log_id.to_le_bytes());
        let purged = self.purged_through.map_or(0, |p| p + 1);
        out.extend_from_slice(&purged.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        let (owed_next, owed_term) = self.owed.map_or((0, 0), |o| (o.index + 1, o.term));
        out.extend_from_slice(&owed_next.to_le_bytes());
        out.extend_from_slice(&owed_term.to_le_bytes());
        if self.losses.len() > LOSSES_MAX {
            return Err(Error::limit(
                "LOSSES_MAX",
                self.losses.len() as u64,
                LOSSES_MAX as u64,
            ));
        }
        out.extend_from_slice(&(self.losses.len() as u16).to_le_bytes());
        for l in &self.losses {
            out.extend_from_slice(&l.first.to_le_bytes());
            out.extend_from_slice(&l.last.to_le_bytes());
            out.extend_from_slice(&l.at_ms.to_le_bytes());
        }
        for (name, field) in [
            ("vote", &self.user.vote),
            ("committed", &self.user.committed),
            ("purged", &self.user.purged),
        ] {
            match field {
                None => out.extend_from_slice(&ABSENT.to_le_bytes()),
                Some(bytes) => {
                    if bytes.len() > META_FIELD_BYTES_MAX {
                        return Err(Error::limit(
                            match name {
                                "vote" => "META_FIELD_BYTES_MAX (vote)",
                                "committed" => "META_FIELD_BYTES_MAX (committed)",
                                _ => "META_FIELD_BYTES_MAX (purged)",
                            },
                            bytes.len() as u64,
                            META_FIELD_BYTES_MAX as u64,
                        ));
                    }
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes either version. Long on purpose: one field after the other, as FORMAT.md
    /// lists them, each with its bound.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<MetaFile> {
        let bad = |offset: usize, reason: &str| Error::corruption(path, offset as u64, reason);
        if bytes.len() < 8 + 2 + 2 + 8 + 8 + 3 * 4 + 4 {
            return Err(bad(0, "metadata file is shorter than its fixed fields"));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad(0, "bad magic: not a Cathedral metadata file"));
        }
        let body = &bytes[..bytes.len() - 4];
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        if crc32fast::hash(body) != crc {
            return Err(bad(bytes.len() - 4, "metadata checksum mismatch"));
        }
        let version = u16::from_le_bytes(bytes[8..10].try_into().unwrap());
        if version != VERSION && version != VERSION_V1 {
            return Err(Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let u64_at = |pos: usize| -> Result<u64> {
            body.get(pos..pos + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                .ok_or_else(|| bad(pos, "metadata runs past its end"))
        };
        let log_id = u64_at(12)?;
        let purged = u64_at(20)?;
        let mut pos = 28;
        let mut meta = MetaFile {
            log_id,
            purged_through: purged.checked_sub(1),
            ..MetaFile::default()
        };
        if version == VERSION {
            let flags = u16::from_le_bytes(bytes[10..12].try_into().unwrap());
            if flags & !FLAG_ACKED_IN_USE != 0 {
                return Err(bad(10, "unknown metadata flags"));
            }
            meta.acked_in_use = flags & FLAG_ACKED_IN_USE != 0;
            meta.seq = u64_at(28)?;
            let owed_next = u64_at(36)?;
            let owed_term = u64_at(44)?;
            meta.owed = owed_next.checked_sub(1).map(|index| Owed {
                index,
                term: owed_term,
            });
            let n = body
                .get(52..54)
                .map(|b| u16::from_le_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| bad(52, "metadata runs past its end"))?;
            if n > LOSSES_MAX {
                return Err(bad(52, "more losses than LOSSES_MAX"));
            }
            pos = 54;
            for _ in 0..n {
                meta.losses.push(Loss {
                    first: u64_at(pos)?,
                    last: u64_at(pos + 8)?,
                    at_ms: u64_at(pos + 16)?,
                });
                pos += 24;
            }
        }
        let mut fields: [Option<Vec<u8>>; 3] = Default::default();
        for field in &mut fields {
            let len_bytes = body
                .get(pos..pos + 4)
                .ok_or_else(|| bad(pos, "metadata field length runs past the end"))?;
            let len = u32::from_le_bytes(len_bytes.try_into().unwrap());
            pos += 4;
            if len != ABSENT {
                let len = len as usize;
                if len > META_FIELD_BYTES_MAX {
                    return Err(bad(
                        pos - 4,
                        "metadata field longer than META_FIELD_BYTES_MAX",
                    ));
                }
                let value = body
                    .get(pos..pos + len)
                    .ok_or_else(|| bad(pos, "metadata field runs past the end"))?;
                *field = Some(value.to_vec());
                pos += len;
            }
        }
        if pos != body.len() {
            return Err(bad(pos, "trailing bytes after the metadata fields"));
        }
        let [vote, committed, purged_id] = fields;
        meta.user = Metadata {
            vote,
            committed,
            purged: purged_id,
        };
        Ok(meta)
    }

    /// One copy: `None` when the file does not exist.
    fn load_one(path: &Path) -> Result<Option<MetaFile>> {
        match std::fs::read(path) {
            Ok(bytes) => MetaFile::decode(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Reads both copies of the metadata at `path` (`meta` and `meta.mirror`): the valid one
    /// with the higher sequence is current; the other, when damaged or older, is a problem.
    /// I/O errors other than a missing file are returned.
    pub fn survey(path: &Path) -> Result<MetaSurvey> {
        let mirror = mirror_path(path);
        let mut out = MetaSurvey::default();
        let mut copies = Vec::new();
        for p in [path, mirror.as_path()] {
            match MetaFile::load_one(p) {
                Ok(Some(m)) => copies.push((p.to_path_buf(), m)),
                Ok(None) => {}
                Err(e @ (Error::Corruption { .. } | Error::UnsupportedVersion { .. })) => {
                    out.problems.push(e)
                }
                Err(e) => return Err(e),
            }
        }
        copies.sort_by_key(|(_, m)| std::cmp::Reverse(m.seq));
        let mut copies = copies.into_iter();
        if let Some((current_path, current)) = copies.next() {
            for (p, older) in copies {
                // `meta` is replaced before `meta.mirror`: a mirror one write behind is a
                // write that stopped between the two, not damage.
                let interrupted = current_path == path && older.seq + 1 == current.seq;
                if older != current && !interrupted {
                    out.problems.push(Error::corruption(
                        p,
                        28,
                        format!(
                            "metadata copy at sequence {} is older than its twin at {} (rolled back, or a write that stopped between the two copies)",
                            older.seq, current.seq
                        ),
                    ));
                }
            }
            out.current = Some(current);
        }
        Ok(out)
    }

    /// The current metadata at `path` (see [`MetaFile::survey`]): a damaged or stale copy
    /// is outvoted by its twin, with a warning; `None` when neither exists; an error when
    /// no copy is valid.
    pub fn load(path: &Path) -> Result<Option<MetaFile>> {
        let survey = MetaFile::survey(path)?;
        match survey.current {
            Some(m) => {
                for p in &survey.problems {
                    tracing::warn!(problem = %p, "metadata copy outvoted by its twin; the next write heals it");
                }
                Ok(Some(m))
            }
            None => match survey.problems.into_iter().next() {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// Durable once this returns: the sequence goes up by one and both copies are replaced
    /// atomically (temporary file, fsync, rename, directory fsync), `meta` first.
    pub fn store(&mut self, path: &Path) -> Result<()> {
        self.seq += 1;
        let bytes = self.encode()?;
        fsutil::replace_atomically(path, &bytes)?;
        fsutil::replace_atomically(&mirror_path(path), &bytes)
    }

    /// Records an accepted loss (an identical one is not repeated; the oldest go past
    /// `LOSSES_MAX`).
    pub fn record_loss(&mut self, loss: Loss) {
        if self
            .losses
            .iter()
            .any(|l| (l.first, l.last) == (loss.first, loss.last))
        {
            return;
        }
        self.losses.push(loss);
        let over = self.losses.len().saturating_sub(LOSSES_MAX);
        self.losses.drain(..over);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetaFile {
        MetaFile {
            log_id: 0xDEAD_BEEF,
            purged_through: Some(41),
            seq: 7,
            acked_in_use: true,
            owed: Some(Owed {
                index: 310,
                term: 4,
            }),
            losses: vec![Loss {
                first: 239,
                last: 250,
                at_ms: 1_700_000_000_000,
            }],
            user: Metadata {
                vote: Some(b"term 3 voted 2".to_vec()),
                committed: None,
                purged: Some(Vec::new()),
            },
        }
    }

    #[test]
    fn roundtrip_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert_eq!(MetaFile::load(&path).unwrap(), None);
        let mut m = sample();
        m.store(&path).unwrap();
        assert_eq!(m.seq, 8, "each store is one more");
        assert_eq!(MetaFile::load(&path).unwrap(), Some(m.clone()));
        assert_eq!(MetaFile::load_one(&mirror_path(&path)).unwrap(), Some(m));
        let never = MetaFile {
            purged_through: None,
            owed: None,
            losses: Vec::new(),
            ..sample()
        };
        assert_eq!(
            MetaFile::decode(&never.encode().unwrap(), &path).unwrap(),
            never
        );
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                MetaFile::decode(&bad, Path::new("meta")).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn oversized_field_names_the_bound() {
        let mut m = sample();
        m.user.vote = Some(vec![0; META_FIELD_BYTES_MAX + 1]);
        let err = m.encode().unwrap_err();
        assert!(err.to_string().contains("META_FIELD_BYTES_MAX"), "{err}");
    }
}

#[cfg(test)]
mod copies {
    use super::*;

    fn stored(dir: &Path, vote: &[u8]) -> (PathBuf, MetaFile) {
        let path = dir.join("meta");
        let mut m = MetaFile {
            log_id: 9,
            ..MetaFile::default()
        };
        m.user.vote = Some(vote.to_vec());
        m.store(&path).unwrap();
        (path, m)
    }

    #[test]
    fn a_damaged_copy_is_outvoted_by_its_twin_and_both_damaged_refuse() {
        for victim in ["meta", "meta.mirror"] {
            let dir = tempfile::tempdir().unwrap();
            let (path, m) = stored(dir.path(), b"term 5 for node 2");
            let v = dir.path().join(victim);
            let mut bytes = std::fs::read(&v).unwrap();
            bytes[30] ^= 0x10;
            std::fs::write(&v, &bytes).unwrap();
            let survey = MetaFile::survey(&path).unwrap();
            assert_eq!(survey.current, Some(m.clone()), "{victim}");
            assert_eq!(survey.problems.len(), 1, "{victim}");
            // The next write heals it.
            let mut again = m.clone();
            again.store(&path).unwrap();
            assert!(MetaFile::survey(&path).unwrap().problems.is_empty());
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = stored(dir.path(), b"v");
        for name in ["meta", "meta.mirror"] {
            let p = dir.path().join(name);
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[20] ^= 1;
            std::fs::write(&p, bytes).unwrap();
        }
        assert!(matches!(
            MetaFile::load(&path),
            Err(Error::Corruption { .. })
        ));
    }

    #[test]
    fn a_rolled_back_copy_never_wins_over_a_newer_vote() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut m) = stored(dir.path(), b"term 3");
        let old_primary = std::fs::read(&path).unwrap();
        m.user.vote = Some(b"term 4".to_vec());
        m.store(&path).unwrap();
        m.user.vote = Some(b"term 5".to_vec());
        m.store(&path).unwrap();
        // `meta` rolled back two writes: the mirror's newer vote wins, and it is reported.
        std::fs::write(&path, &old_primary).unwrap();
        let survey = MetaFile::survey(&path).unwrap();
        assert_eq!(survey.current.unwrap().user.vote.unwrap(), b"term 5");
        assert_eq!(survey.problems.len(), 1);
        // A write that stopped between the copies (mirror one behind) is not a problem.
        let dir2 = tempfile::tempdir().unwrap();
        let (path, mut m) = stored(dir2.path(), b"a");
        let mirror_before = std::fs::read(mirror_path(&path)).unwrap();
        m.user.vote = Some(b"b".to_vec());
        m.store(&path).unwrap();
        std::fs::write(mirror_path(&path), mirror_before).unwrap();
        let survey = MetaFile::survey(&path).unwrap();
        assert_eq!(survey.current.unwrap().user.vote.unwrap(), b"b");
        assert!(survey.problems.is_empty(), "{:?}", survey.problems);
    }

    #[test]
    fn version_1_files_still_load() {
        // A version-1 file as the previous release wrote it: no sequence, owed or losses.
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&0u16.to_le_bytes());
        v1.extend_from_slice(&0xABCDu64.to_le_bytes());
        v1.extend_from_slice(&42u64.to_le_bytes());
        v1.extend_from_slice(&3u32.to_le_bytes());
        v1.extend_from_slice(b"vot");
        v1.extend_from_slice(&ABSENT.to_le_bytes());
        v1.extend_from_slice(&ABSENT.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let m = MetaFile::decode(&v1, Path::new("meta")).unwrap();
        assert_eq!((m.log_id, m.purged_through, m.seq), (0xABCD, Some(41), 0));
        assert_eq!(m.user.vote.as_deref(), Some(&b"vot"[..]));
        assert!(m.owed.is_none() && m.losses.is_empty());
    }

    #[test]
    fn losses_are_bounded_and_not_repeated() {
        let mut m = MetaFile::default();
        for k in 0..(LOSSES_MAX as u64 + 5) {
            let loss = Loss {
                first: k * 10,
                last: k * 10 + 3,
                at_ms: k,
            };
            m.record_loss(loss);
            m.record_loss(loss);
        }
        assert_eq!(m.losses.len(), LOSSES_MAX);
        assert_eq!(m.losses.last().unwrap().first, (LOSSES_MAX as u64 + 4) * 10);
        assert!(m.encode().is_ok());
    }
}
