//! What the write path carries, below every part of it: a [`Proposal`] (what only the
//! leader performs), its [`Outcome`], the size bounds of an entry and a write, and the
//! proposer's clock. The node, the batcher and the forwarder all use these; none of them
//! is needed to name them.

use cathedral_consensus::{Command, Response};
use serde::{Deserialize, Serialize};

use crate::error::ServerError;

/// Largest log entry record a write makes: the bytes the log stores (version, log id and
/// the encoded command or batch).
pub const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Largest encoded write (its command, with its request id): what `ENTRY_BYTES_MAX` leaves
/// after an entry's framing, so that every entry the write goes into stays within it.
pub const WRITE_BYTES_MAX: usize =
    ENTRY_BYTES_MAX - cathedral_consensus::raft::ENTRY_FRAMING_BYTES_MAX;

/// A write or membership change that only the leader performs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    Write(Command),
    RemoveNode(u64),
}

impl Proposal {
    /// What it takes in an entry (a membership change: a fixed allowance).
    pub fn encoded_len(&self) -> usize {
        match self {
            Proposal::Write(cmd) => cmd.encoded_len(),
            Proposal::RemoveNode(_) => 16,
        }
    }
}

/// The leader's answer to a [`Proposal`], on this node or forwarded from another (the
/// same value crosses the wire): the index the write was committed and applied at with
/// the state's response, or the error — `NotLeader` when nothing was proposed,
/// `Unavailable` when the outcome is unknown.
pub type Outcome = Result<(u64, Response), ServerError>;

/// The proposer's clock: milliseconds since the Unix epoch (what commands carry as
/// `at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
