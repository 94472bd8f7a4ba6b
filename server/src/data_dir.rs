//! The node's data directory: the one place that knows every path in it.
//!
//! ```text
//! DIR/
//!   LOCK, *.seg, ...   the log (storage: FORMAT.md); its lock keeps a second server out
//!   snapshots/         state snapshots (storage)
//!   node.toml          the node id and cluster id (identity.rs)
//!   tags.toml          run-time tag changes (tags.rs)
//!   gossip-peers       gossip addresses of the peers last seen alive, seeds at the next start
//!   outputs/           attempts' output files (executor)
//!   work/              attempts' work directories (executor)
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Result, ServerError};

/// The node identity file.
pub const IDENTITY_FILE: &str = "node.toml";
/// The run-time tag overlay file.
pub const TAGS_FILE: &str = "tags.toml";
/// The known gossip peers file, one address per line.
pub const KNOWN_PEERS_FILE: &str = "gossip-peers";

/// An existing data directory, by its absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates `path` when missing and resolves it to an absolute path (sandboxes bind
    /// paths under it).
    pub fn create(path: &Path) -> Result<DataDir> {
        std::fs::create_dir_all(path).map_err(|e| ServerError::io("create", path, e))?;
        let root = std::fs::canonicalize(path).map_err(|e| ServerError::io("resolve", path, e))?;
        Ok(DataDir { root })
    }

    /// The directory itself: the log and its lock live at the top.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn identity_file(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    pub fn tags_file(&self) -> PathBuf {
        self.root.join(TAGS_FILE)
    }

    pub fn known_peers_file(&self) -> PathBuf {
        self.root.join(KNOWN_PEERS_FILE)
    }

    pub fn snapshots(&self) -> PathBuf {
        cathedral_storage::snapshots_dir(&self.root)
    }

    pub fn outputs(&self) -> PathBuf {
        self.root.join(cathedral_executor::OUTPUTS_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_absolute_root() {
        let tmp = tempfile::tempdir().unwrap();
        let rel = tmp.path().join("a/../b");
        let d = DataDir::create(&rel).unwrap();
        assert!(d.root().is_absolute() && d.root().is_dir());
        assert_eq!(
            d.root(),
            std::fs::canonicalize(tmp.path().join("b")).unwrap()
        );
        for p in [
            d.identity_file(),
            d.tags_file(),
            d.known_peers_file(),
            d.snapshots(),
            d.outputs(),
        ] {
            assert_eq!(p.parent(), Some(d.root()), "{}", p.display());
        }
    }
}
