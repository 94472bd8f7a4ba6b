//! The crate's errors.

use serde::{Deserialize, Serialize};

/// Result of the crate's fallible calls.
pub type Result<T, E = ConsensusError> = std::result::Result<T, E>;

/// What failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// Bytes that are not a command or a state of this format.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// Bytes written by a newer or unknown version.
    #[error("encoding version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
}

/// Why a command was rejected: the field and the reason (with the bound's name, when a
/// bound was passed). The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &str, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The same problem, located inside a list (`jobs[3].command`).
    pub fn at(self, prefix: &str) -> Invalid {
        Invalid {
            field: format!("{prefix}.{}", self.field),
            reason: self.reason,
        }
    }
}
