//! The node's identity, `<data-dir>/node.toml` ([`DataDir::identity_file`](crate::data_dir::DataDir)): the node id, generated on first start, and
//! the cluster id, set once when the node initialises a cluster or joins one. Replaced
//! atomically (temporary file, fsync, rename, directory fsync); never rewritten with
//! different values.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub node_id: u64,
    /// Absent until the node initialised or joined a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

impl Identity {
    /// Reads the identity in `path`, or creates one with a fresh random node id.
    pub fn load_or_create(path: &Path) -> Result<Identity> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let id: Identity = toml::from_str(&text)
                    .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
                if id.node_id == 0 {
                    return Err(ServerError::Config(format!(
                        "{}: node_id 0 is reserved",
                        path.display()
                    )));
                }
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Random ids never need coordination; 0 means "none" in the API.
                let id = Identity {
                    node_id: cathedral_consensus::rng::random::<u64>() >> 1 | 1,
                    cluster_id: None,
                };
                id.save(path)?;
                Ok(id)
            }
            Err(e) => Err(ServerError::io("read", path, e)),
        }
    }

    /// Records the cluster this node belongs to. Refuses to change an existing one.
    pub fn set_cluster(&mut self, path: &Path, cluster_id: &str) -> Result<()> {
        match &self.cluster_id {
            Some(c) if c == cluster_id => Ok(()),
            Some(c) => Err(ServerError::Config(format!(
                "this data directory belongs to cluster {c}, not {cluster_id}"
            ))),
            None => {
                self.cluster_id = Some(cluster_id.to_string());
                self.save(path)
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# Written by cathedral-server; identifies this node. Do not edit.\n{}",
            toml::to_string(self).map_err(|e| ServerError::Internal(e.to_string()))?
        );
        Ok(cathedral_storage::replace_atomically(
            path,
            text.as_bytes(),
        )?)
    }
}

/// A new cluster id: 16 random bytes in hex.
pub fn new_cluster_id() -> String {
    format!("{:032x}", cathedral_consensus::rng::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Identity::load_or_create(&dir.path().join("node.toml")).unwrap();
        assert_ne!(a.node_id, 0);
        assert_eq!(a.cluster_id, None);
        a.set_cluster(&dir.path().join("node.toml"), "c1").unwrap();
        let b = Identity::load_or_create(&dir.path().join("node.toml")).unwrap();
        assert_eq!(a, b);
        let mut b = b;
        assert!(b.set_cluster(&dir.path().join("node.toml"), "c2").is_err());
        assert_eq!(
            Identity::load_or_create(&dir.path().join("node.toml")).unwrap(),
            a
        );
    }
}
