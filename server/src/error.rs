//! The crate's errors, and how each reaches a gRPC client.

use std::path::PathBuf;

/// Result of the crate's fallible calls.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Input past a bound or otherwise malformed; names the field.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: u64 },
    /// No leader, or the leader cannot be reached; the caller may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A flag, configuration file or environment variable is wrong.
    #[error("configuration: {0}")]
    Config(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The data directory cannot be served as it is (damage the node cannot work around).
    #[error("data directory {}: {reason}", dir.display())]
    DataDir { dir: PathBuf, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] cathedral_storage::Error),
    /// Raft stopped or failed on this node.
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    Internal(String),
}

impl ServerError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> ServerError {
        ServerError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> ServerError {
        ServerError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<cathedral_consensus::Invalid> for ServerError {
    fn from(e: cathedral_consensus::Invalid) -> Self {
        ServerError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        let msg = e.to_string();
        match e {
            ServerError::Invalid { .. } => tonic::Status::invalid_argument(msg),
            ServerError::NotFound { .. } => tonic::Status::not_found(msg),
            ServerError::Unavailable(_) => tonic::Status::unavailable(msg),
            _ => tonic::Status::internal(msg),
        }
    }
}
