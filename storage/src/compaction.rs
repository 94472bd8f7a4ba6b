//! When to take a snapshot and how far to purge the log: a pure function of three indexes.
//!
//! Semantics, with the original specification's defaults:
//!
//! - **Take a snapshot** when at least `snapshot_threshold` (10,000) entries were applied
//!   since the last snapshot: `last_applied - last_snapshot >= snapshot_threshold`. With no
//!   snapshot yet, the entries applied are those from the first log index through
//!   `last_applied`.
//! - **Purge** when more than `log_compaction_threshold` (50,000) log entries lie at or
//!   behind the latest snapshot: `last_snapshot - first_log_index + 1 > threshold`. The
//!   purge goes up to and including the snapshot's index; the log deletes only segments
//!   wholly covered by it, so some covered entries may stay on disk until their segment is.
//!
//! Both can be due at once. Nothing is ever purged past the latest snapshot, and nothing is
//! purged without one.

/// The thresholds. `Default` gives the original specification's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Entries applied since the last snapshot that trigger a new one.
    pub snapshot_threshold: u64,
    /// Entries at or behind the latest snapshot that trigger a purge.
    pub log_compaction_threshold: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            snapshot_threshold: 10_000,
            log_compaction_threshold: 50_000,
        }
    }
}

/// What the policy says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionDecision {
    pub take_snapshot: bool,
    /// Purge the log up to and including this index.
    pub purge_upto: Option<u64>,
}

impl CompactionPolicy {
    /// Decides from the last applied index, the latest snapshot's last index and the log's
    /// first index (each `None` when there is none).
    pub fn decide(
        &self,
        last_applied: Option<u64>,
        last_snapshot: Option<u64>,
        first_log_index: Option<u64>,
    ) -> CompactionDecision {
        let applied_since = match (last_applied, last_snapshot, first_log_index) {
            (None, _, _) => 0,
            (Some(a), Some(s), _) => a.saturating_sub(s),
            (Some(a), None, Some(f)) => (a + 1).saturating_sub(f),
            (Some(a), None, None) => a + 1,
        };
        let purge_upto = match (last_snapshot, first_log_index) {
            (Some(s), Some(f)) if s >= f && s - f + 1 > self.log_compaction_threshold => Some(s),
            _ => None,
        };
        CompactionDecision {
            take_snapshot: last_applied.is_some() && applied_since >= self.snapshot_threshold,
            purge_upto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: CompactionPolicy = CompactionPolicy {
        snapshot_threshold: 10_000,
        log_compaction_threshold: 50_000,
    };

    #[test]
    fn defaults_are_the_specification() {
        assert_eq!(CompactionPolicy::default(), P);
    }

    #[test]
    fn snapshot_threshold_boundaries() {
        // Since the last snapshot: 9,999 applied → nothing; 10,000 → snapshot.
        assert!(!P.decide(Some(19_999), Some(10_000), Some(1)).take_snapshot);
        assert!(P.decide(Some(20_000), Some(10_000), Some(1)).take_snapshot);
        // No snapshot yet: entries first..=applied count.
        assert!(!P.decide(Some(9_999), None, Some(1)).take_snapshot);
        assert!(P.decide(Some(10_000), None, Some(1)).take_snapshot);
        assert!(P.decide(Some(9_999), None, Some(0)).take_snapshot);
        // Nothing applied, or applied behind the snapshot (just installed one).
        assert!(!P.decide(None, None, None).take_snapshot);
        assert!(!P.decide(Some(5), Some(50), Some(51)).take_snapshot);
    }

    #[test]
    fn purge_threshold_boundaries() {
        // 50,000 entries at or behind the snapshot: not more than the threshold.
        let d = P.decide(Some(50_000), Some(50_000), Some(1));
        assert_eq!(d.purge_upto, None);
        // 50,001: purge up to the snapshot index.
        let d = P.decide(Some(50_001), Some(50_001), Some(1));
        assert_eq!(d.purge_upto, Some(50_001));
        // After that purge the log starts past the snapshot: nothing more to purge.
        assert_eq!(
            P.decide(Some(60_000), Some(50_001), Some(50_002))
                .purge_upto,
            None
        );
        // No snapshot, or no log: never purge.
        assert_eq!(P.decide(Some(1_000_000), None, Some(1)).purge_upto, None);
        assert_eq!(
            P.decide(Some(1_000_000), Some(900_000), None).purge_upto,
            None
        );
    }

    #[test]
    fn both_at_once_and_never_past_the_snapshot() {
        let d = P.decide(Some(120_000), Some(100_000), Some(1));
        assert!(d.take_snapshot);
        assert_eq!(d.purge_upto, Some(100_000));
        for applied in [100_000u64, 150_000, 10_000_000] {
            if let Some(upto) = P.decide(Some(applied), Some(100_000), Some(1)).purge_upto {
                assert!(upto <= 100_000);
            }
        }
    }
}
