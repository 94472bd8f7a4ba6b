//! How the leader's loop decides ([`LeaderSettings`]) and the defaults of its flags: what
//! the configuration resolves into, apart from the loop itself (so reading settings
//! needs nothing of the node).

use crate::scheduler::Placement;

/// Default log entries between state-hash checkpoints.
pub const CHECKPOINT_INTERVAL_DEFAULT: u64 = 10_000;
/// Default delay between gossip declaring a node failed and the leader committing it.
pub const FAILURE_GRACE_MS_DEFAULT: u64 = 1_000;
/// Default time a registered node may go unseen by gossip (after this node began to lead)
/// before it is declared failed.
pub const NODE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default of `--job-retention`: a week.
pub const JOB_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// How the leader's loop decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSettings {
    /// A registered node gossip has not seen alive this long after this node began to
    /// lead is declared failed.
    pub node_timeout_ms: u64,
    /// Delay between gossip declaring a node failed and the leader proposing it.
    pub failure_grace_ms: u64,
    /// Log entries between checkpoints; 0 disables them.
    pub checkpoint_interval: u64,
    pub placement: Placement,
    /// Seed of the random placement.
    pub placement_seed: u64,
    /// The lost-retry budget the leader writes into the rules (see `Rules`).
    pub lost_retries: u32,
    /// How long a finished job stays before the leader collects it; 0: never.
    pub job_retention_ms: u64,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        LeaderSettings {
            node_timeout_ms: NODE_TIMEOUT_MS_DEFAULT,
            failure_grace_ms: FAILURE_GRACE_MS_DEFAULT,
            checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            placement: Placement::LeastLoaded,
            placement_seed: 0,
            lost_retries: cathedral_consensus::LOST_RETRIES_DEFAULT,
            job_retention_ms: JOB_RETENTION_MS_DEFAULT,
        }
    }
}
