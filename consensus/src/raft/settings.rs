//! Raft timing and compaction settings: the original specification's compaction defaults,
//! and timing defaults chosen for failover time (see `ELECTION_TIMEOUT_MIN_MS_DEFAULT`).

use std::sync::Arc;

use cathedral_storage::CompactionPolicy;
use openraft::{Config, SnapshotPolicy};

/// Everything openraft needs to know, in Cathedral's terms. Every field can be overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_append: u64,
    /// Snapshot every `snapshot_threshold` applied entries; keep at most
    /// `log_compaction_threshold` entries covered by the latest snapshot in the log.
    pub compaction: CompactionPolicy,
}

/// The timing defaults. openraft 0.9 lets a follower that last heard its leader start an
/// election only after a leader lease (the maximum election timeout) plus a random election
/// timeout, checked on ticks of 1.5 heartbeats: with 100–150 ms and a 30 ms heartbeat a
/// follower campaigns 250–300 ms (+ up to 45 ms) after the last heartbeat — a failover of
/// about a third of a second (BENCHMARKS.md) — while a leader must miss 8 or more
/// heartbeats in a row to be replaced. (The original 150–300 ms gave 450–600 ms.)
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 100;
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 150;
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 30;

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            max_entries_per_append: 300,
            compaction: CompactionPolicy::default(),
        }
    }
}

impl RaftSettings {
    /// The validated openraft configuration. openraft enforces the compaction threshold by
    /// purging, after each snapshot, every covered entry but the newest
    /// `log_compaction_threshold`.
    pub fn openraft_config(&self, cluster_name: &str) -> Result<Arc<Config>, String> {
        let config = Config {
            cluster_name: cluster_name.to_string(),
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            heartbeat_interval: self.heartbeat_interval_ms,
            max_payload_entries: self.max_entries_per_append,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.compaction.snapshot_threshold),
            max_in_snapshot_log_to_keep: self.compaction.log_compaction_threshold,
            ..Config::default()
        };
        Ok(Arc::new(config.validate().map_err(|e| e.to_string())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specification_and_validate() {
        let s = RaftSettings::default();
        let c = s.openraft_config("test").unwrap();
        assert_eq!(
            (
                c.election_timeout_min,
                c.election_timeout_max,
                c.heartbeat_interval
            ),
            (100, 150, 30)
        );
        assert_eq!(c.max_payload_entries, 300);
        assert_eq!(c.snapshot_policy, SnapshotPolicy::LogsSinceLast(10_000));
        assert_eq!(c.max_in_snapshot_log_to_keep, 50_000);
        let bad = RaftSettings {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 150,
            ..s
        };
        assert!(bad.openraft_config("test").is_err());
    }
}
