//! openraft's own storage conformance suite, run against Cathedral's log store and state
//! machine on real files in a temporary directory.

use std::sync::Arc;

use cathedral_consensus::raft::{LogStore, StateMachine, TypeConfig};
use cathedral_storage::{Log, Options, SnapshotOptions, SnapshotStore};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new().expect("temporary directory");
        let log = Log::open(dir.path().join("raft"), Options::default()).expect("open log");
        let snapshots =
            SnapshotStore::open(dir.path().join("snapshots"), SnapshotOptions::default())
                .expect("open snapshots");
        Ok((
            dir,
            LogStore::new(Arc::new(log))?,
            StateMachine::open(snapshots)?,
        ))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft's storage suite failed: {e}");
    }
}
