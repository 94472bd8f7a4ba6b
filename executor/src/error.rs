//! The crate's errors.

use std::path::PathBuf;

pub type Result<T, E = ExecError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command")]
    EmptyCommand,
    #[error("sandbox {0} is not available on this host")]
    Unavailable(&'static str),
    #[error("container engine: {0}")]
    Engine(String),
    #[error(
        "image {0} is not on this node's container engine, and the job does not ask to pull it"
    )]
    ImageMissing(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

impl ExecError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> ExecError {
        ExecError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
