//! The crate's one error vocabulary: what its calls return, what one node tells another
//! (the type is serde: a forwarded write's answer and a peer call's failure carry it
//! whole), and, once, at the edge, which gRPC code a client sees.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Result of the crate's fallible calls.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// What failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ServerError {
    /// Input past a bound or otherwise malformed; names the field.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} {id} not found")]
    NotFound { what: Cow<'static, str>, id: u64 },
    /// The node asked is not the leader (any more); nothing was proposed, so the caller
    /// may go to `leader` (when known) at once.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// No leader, the leader cannot be reached, or a write's outcome is unknown; the
    /// caller may retry (a write under the same request id is applied at most once).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A flag, configuration file or environment variable is wrong.
    #[error("configuration: {0}")]
    Config(String),
    #[error("{op} {}: {reason}", path.display())]
    Io {
        op: Cow<'static, str>,
        path: PathBuf,
        reason: String,
    },
    /// The data directory cannot be served as it is (damage the node cannot work around).
    #[error("data directory {}: {reason}", dir.display())]
    DataDir { dir: PathBuf, reason: String },
    #[error("storage: {0}")]
    Storage(String),
    /// Raft stopped or failed on this node.
    #[error("raft: {0}")]
    Raft(String),
    /// A watcher asked for events this node no longer holds (or never derived: the
    /// entries before its snapshot).
    #[error("events from index {requested} are not held here; the earliest held is index {earliest_index} seq {earliest_seq}")]
    Compacted {
        requested: u64,
        earliest_index: u64,
        earliest_seq: u32,
    },
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

    pub fn not_found(what: &'static str, id: u64) -> ServerError {
        ServerError::NotFound {
            what: Cow::Borrowed(what),
            id,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> ServerError {
        ServerError::Io {
            op: Cow::Borrowed(op),
            path: path.into(),
            reason: source.to_string(),
        }
    }

    /// The status a peer answers with: the error itself travels in the details, so the
    /// calling node gets it back whole ([`ServerError::from_peer`]), not as text to parse.
    pub fn to_peer_status(&self) -> tonic::Status {
        let plain = tonic::Status::from(self.clone());
        tonic::Status::with_details(
            plain.code(),
            plain.message().to_string(),
            postcard::to_stdvec(self).expect("errors encode").into(),
        )
    }

    /// The error a peer answered with: the one it sent in the details, or, from a peer
    /// that sent none (the call never reached its service), the status as `Unavailable`.
    pub fn from_peer(status: &tonic::Status, whom: &str) -> ServerError {
        postcard::from_bytes(status.details())
            .unwrap_or_else(|_| ServerError::Unavailable(format!("{whom}: {}", status.message())))
    }

    /// A Raft write's failure as the write path answers it — the one mapping, for the
    /// batcher's entries, a write outside it and a membership change: not the leader
    /// (nothing was proposed; the leader it names may be asked), or the outcome unknown.
    pub fn from_raft_write(
        e: openraft::error::RaftError<
            u64,
            openraft::error::ClientWriteError<u64, openraft::BasicNode>,
        >,
    ) -> ServerError {
        use openraft::error::{ClientWriteError, RaftError};
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServerError::NotLeader {
                leader: f.leader_id,
            },
            e => ServerError::Unavailable(e.to_string()),
        }
    }

    /// A write not committed within `timeout` (a leader cut off from its quorum keeps
    /// waiting for a commit that does not come): its outcome is unknown.
    pub fn not_committed(timeout: std::time::Duration) -> ServerError {
        ServerError::Unavailable(format!(
            "not committed within {} ms; a majority of voters may be down (the write may still be applied once they return)",
            timeout.as_millis()
        ))
    }
}

impl From<cathedral_storage::Error> for ServerError {
    fn from(e: cathedral_storage::Error) -> Self {
        ServerError::Storage(e.to_string())
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

impl ServerError {
    /// The gRPC code this error is answered with (the REST API maps it to HTTP).
    pub fn code(&self) -> tonic::Code {
        match self {
            // A namespace's quota (`cathedral_consensus::namespace`): the request was
            // well formed, the namespace has no room for it now.
            ServerError::Invalid { field, .. } if field.starts_with("quota.") => {
                tonic::Code::ResourceExhausted
            }
            ServerError::Invalid { .. } => tonic::Code::InvalidArgument,
            ServerError::NotFound { .. } => tonic::Code::NotFound,
            ServerError::NotLeader { .. } | ServerError::Unavailable(_) => tonic::Code::Unavailable,
            ServerError::Compacted { .. } => tonic::Code::OutOfRange,
            _ => tonic::Code::Internal,
        }
    }
}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_crosses_to_another_node_whole() {
        for e in [
            ServerError::invalid("tag", "tag key \"\" must be 1..=64 bytes"),
            ServerError::not_found("node", 7),
            ServerError::NotLeader { leader: Some(2) },
            ServerError::Unavailable("leader 1 was replaced".into()),
            ServerError::io(
                "read",
                "/x",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ),
        ] {
            let status = e.to_peer_status();
            assert_eq!(status.code(), tonic::Status::from(e.clone()).code());
            assert_eq!(ServerError::from_peer(&status, "node 3"), e);
        }
    }

    #[test]
    fn a_status_without_an_error_is_unavailable() {
        let s = tonic::Status::unavailable("connection refused");
        assert_eq!(
            ServerError::from_peer(&s, "node 3 at 127.0.0.1:1"),
            ServerError::Unavailable("node 3 at 127.0.0.1:1: connection refused".into())
        );
    }

    #[test]
    fn codes_at_the_edge() {
        use tonic::Code;
        for (e, code) in [
            (ServerError::invalid("f", "r"), Code::InvalidArgument),
            (ServerError::not_found("job", 1), Code::NotFound),
            (ServerError::NotLeader { leader: None }, Code::Unavailable),
            (ServerError::Unavailable("x".into()), Code::Unavailable),
            (ServerError::Raft("x".into()), Code::Internal),
        ] {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }
}
