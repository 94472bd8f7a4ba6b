//! Raft from openraft 0.9 on Cathedral's storage: the type configuration, the log store
//! ([`LogStore`], over the storage crate's log) and the state machine ([`StateMachine`],
//! over [`ClusterState`](crate::ClusterState), snapshots in the storage crate's store).

// openraft's traits fix the error type (`StorageError`, over 200 bytes); helpers return it
// as they are.
#![allow(clippy::result_large_err)]

mod event_feed;
mod log_store;
mod runtime;
mod settings;
mod state_machine;

pub use event_feed::{
    Compacted, EventFeed, JobWatch, Kinds, Only, Position, EVENTS_RETAINED, EVENTS_RETAINED_BYTES,
};
pub use log_store::{
    check_vote, decode_entry, encode_entry, membership_on_disk, owed_log_id, CommittedHandle,
    LogStore, ENTRY_FRAMING_BYTES_MAX, ENTRY_VERSION,
};
pub use runtime::Runtime;
pub use settings::RaftSettings;
pub use state_machine::{
    read_snapshot, Applied, AppliedHandle, RaftSnapshotMeta, SnapshotBuilder, StateMachine,
};

use crate::command::Command;
use crate::state::Response;

openraft::declare_raft_types!(
    /// Cathedral's Raft types: log entries carry a [`Command`]; applying one yields a
    /// [`Response`]; snapshots travel as the bytes of a snapshot file.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = Runtime,
);
