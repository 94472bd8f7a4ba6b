//! The metadata file beside the log: the caller's vote, committed and purged ids (opaque
//! bytes) and the engine's own identity and purge point, replaced atomically as one file.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// Largest value of one metadata field.
pub const META_FIELD_BYTES_MAX: usize = 64 * 1024;
const MAGIC: &[u8; 8] = b"CATHMETA";
const VERSION: u16 = 1;
const ABSENT: u32 = u32::MAX;

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

/// Everything the metadata file holds.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaFile {
    /// Random identity of this log, repeated in every segment header.
    pub log_id: u64,
    /// Every index up to and including this one is purged.
    pub purged_through: Option<u64>,
    pub user: Metadata,
}

impl MetaFile {
    // Format: FORMAT.md § "Metadata file".
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.log_id.to_le_bytes());
        let purged = self.purged_through.map_or(0, |p| p + 1);
        out.extend_from_slice(&purged.to_le_bytes());
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
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let log_id = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let purged = u64::from_le_bytes(bytes[20..28].try_into().unwrap());
        let mut pos = 28;
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
        Ok(MetaFile {
            log_id,
            purged_through: purged.checked_sub(1),
            user: Metadata {
                vote,
                committed,
                purged: purged_id,
            },
        })
    }

    pub fn load(path: &Path) -> Result<Option<MetaFile>> {
        match std::fs::read(path) {
            Ok(bytes) => MetaFile::decode(&bytes, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Durable once this returns: temporary file, fsync, rename, directory fsync.
    pub fn store(&self, path: &Path) -> Result<()> {
        fsutil::replace_atomically(path, &self.encode()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetaFile {
        MetaFile {
            log_id: 0xDEAD_BEEF,
            purged_through: Some(41),
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
        let m = sample();
        m.store(&path).unwrap();
        assert_eq!(MetaFile::load(&path).unwrap(), Some(m));
        let never = MetaFile {
            purged_through: None,
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
