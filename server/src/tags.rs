//! Run-time tag changes (`cathedral node tag set/unset`), kept in `DIR/tags.toml` ([`DataDir::tags_file`](crate::data_dir::DataDir)) so they
//! survive a restart. They are an overlay on the tags of the flags and configuration file:
//! at start the flags' tags, minus `unset`, plus `set`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ServerError};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagOverlay {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: BTreeSet<String>,
}

impl TagOverlay {
    /// The overlay in `path`, empty when there is none.
    pub fn load(path: &Path) -> Result<TagOverlay> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ServerError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TagOverlay::default()),
            Err(e) => Err(ServerError::io("read", path, e)),
        }
    }

    /// `base` with the overlay applied.
    pub fn apply(&self, base: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = base.clone();
        tags.retain(|k, _| !self.unset.contains(k));
        tags.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        tags
    }

    /// Records a change.
    pub fn change(&mut self, set: &BTreeMap<String, String>, unset: &[String]) {
        for k in unset {
            self.set.remove(k);
            self.unset.insert(k.clone());
        }
        for (k, v) in set {
            self.unset.remove(k);
            self.set.insert(k.clone(), v.clone());
        }
    }

    /// Writes the overlay durably.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| ServerError::Internal(e.to_string()))?;
        Ok(cathedral_storage::replace_atomically(
            path,
            text.as_bytes(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_reload_and_apply_over_the_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("tags.toml");
        assert_eq!(TagOverlay::load(&file).unwrap(), TagOverlay::default());
        let mut o = TagOverlay::default();
        o.change(
            &BTreeMap::from([("gpu".into(), "a100".into())]),
            &["zone".into()],
        );
        o.change(&BTreeMap::from([("zone".into(), "b".into())]), &[]);
        o.change(&BTreeMap::new(), &["rack".into()]);
        o.save(&file).unwrap();
        let back = TagOverlay::load(&file).unwrap();
        assert_eq!(back, o);
        let flags = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("rack".to_string(), "7".to_string()),
            ("os".to_string(), "linux".to_string()),
        ]);
        let tags = back.apply(&flags);
        assert_eq!(
            tags,
            BTreeMap::from([
                ("gpu".to_string(), "a100".to_string()),
                ("os".to_string(), "linux".to_string()),
                ("zone".to_string(), "b".to_string()),
            ])
        );
        std::fs::write(&file, "set = 3\n").unwrap();
        assert!(TagOverlay::load(&file).is_err());
    }
}
