//! Gossip membership: which nodes exist, which are alive, what each offers.
//!
//! Built on chitchat (scuttlebutt gossip with a phi-accrual failure detector and per-node
//! key-values) over [`transport::AuthenticatedUdp`]. Each node publishes a small state:
//!
//! ```text
//!   id, grpc, role, version, capacity ("slots/cpu_millis/memory_bytes"), load (attempts
//!   running), cluster (the Raft cluster id once known), leaving, and tag:<key> for every tag:
//!   role=…, available=true|false, and the operator's own (zone=…, --tag k=v, `node tag set`)
//! ```
//!
//! A monitor turns chitchat's state into a [`View`] every tick (one per node id, the newest
//! generation of it), emits [`Event`]s on a bounded broadcast channel, and decides this
//! node's [`Health`]: fewer than `quorum_fraction` of the known nodes alive for longer than
//! the grace period means this node is on the minority side of a partition; it then
//! publishes `available=false` and stops taking work until the partition heals.
//!
//! The leader reads the view (level-triggered, so nothing depends on not missing an event)
//! to propose node-failed and node-recovered and to place work; see `leader.rs`.

//!
//! # Layout
//!
//! - `view`: what gossip tells the node (members, liveness, health, the view, events).
//! - `rules`: its decisions as pure functions (tag rules, view diff, health, significance).
//! - `membership`: the running membership (chitchat, publishing, join, leave, the monitor).
//! - `transport`: chitchat's transport over UDP with the cluster key's MAC.
//! - `seeds`: `HOST:PORT` and `dns:NAME:PORT` seeds.
//! - `faults` (tests only): loss and partitions injected on the sending side.

#[cfg(test)]
pub(crate) mod faults;
mod membership;
mod rules;
pub mod seeds;
pub mod transport;
mod view;

pub use membership::{GossipEdges, Membership};
pub use rules::{check_tag, check_tags};
pub use seeds::Seed;
pub use view::{Event, Events, Health, Liveness, Member, Received, View};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Default period of a gossip round.
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default phi above which a node is considered failed.
pub const PHI_THRESHOLD_DEFAULT: f64 = 8.0;
/// Default fraction of known nodes that must be alive for this node to consider itself on
/// the majority side.
pub const QUORUM_FRACTION_DEFAULT: f64 = 0.5;
/// Default time below the quorum fraction before this node reports itself partitioned.
pub const PARTITION_GRACE_MS_DEFAULT: u64 = 30_000;
/// Capacity of the event channel (tokio keeps the next power of two, 1,024); a subscriber
/// further behind misses events and is told how many.
pub const EVENT_CHANNEL_CAPACITY: usize = 1_000;
/// Seeds are tried at most this many times when joining.
pub const JOIN_ATTEMPTS_MAX: u32 = 10;
/// First delay between join attempts; doubles up to [`JOIN_BACKOFF_MAX`].
pub const JOIN_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Each join delay is varied by up to this fraction either way.
pub const JOIN_JITTER: f64 = 0.25;
/// Longest a leaving node waits for its `leaving` mark to spread.
pub const LEAVE_WAIT_MAX: Duration = Duration::from_secs(5);
/// Most operator tags on one node (the tag rule is `cathedral_consensus::tags`).
pub use cathedral_consensus::tags::TAGS_MAX;
/// How long chitchat keeps the state of a dead node before forgetting it.
pub const DEAD_NODE_FORGET_AFTER: Duration = Duration::from_secs(3600);

const TAG_PREFIX: &str = "tag:";
/// chitchat's cluster name; clusters are told apart by the `cluster` key and the MAC key.
const CHITCHAT_CLUSTER: &str = "cathedral";

/// How this node gossips.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipSettings {
    pub bind: SocketAddr,
    /// The address others gossip with (the bind address unless that is unspecified).
    pub advertise: SocketAddr,
    /// Seeds: HOST:PORT (chitchat keeps contacting them until they answer) or
    /// dns:NAME:PORT (resolved at every join attempt; see `seeds`).
    pub seeds: Vec<String>,
    /// The DNS server of `dns:` seeds; `None`: the system's resolver settings.
    pub dns_server: Option<SocketAddr>,
    pub interval: Duration,
    pub phi_threshold: f64,
    pub quorum_fraction: f64,
    pub partition_grace: Duration,
    /// The secrets datagrams' MACs are keyed with: the first signs, any verifies (key
    /// rotation). Empty: the empty key (a warning is logged: anyone can then gossip into
    /// the cluster).
    pub cluster_keys: Vec<String>,
    /// Seed of the injected faults' drop decisions (tests).
    #[cfg(test)]
    pub fault_seed: u64,
}

impl GossipSettings {
    /// Settings for `bind` with the defaults (tests and benchmarks).
    pub fn new(bind: SocketAddr) -> GossipSettings {
        GossipSettings {
            bind,
            advertise: bind,
            seeds: Vec::new(),
            dns_server: None,
            interval: Duration::from_millis(GOSSIP_INTERVAL_MS_DEFAULT),
            phi_threshold: PHI_THRESHOLD_DEFAULT,
            quorum_fraction: QUORUM_FRACTION_DEFAULT,
            partition_grace: Duration::from_millis(PARTITION_GRACE_MS_DEFAULT),
            cluster_keys: Vec::new(),
            #[cfg(test)]
            fault_seed: 0,
        }
    }
}

/// What this node publishes about itself.
#[derive(Debug, Clone)]
pub struct Published {
    pub node_id: u64,
    pub grpc: String,
    pub role: String,
    /// The operator's tags (`--tag`, `node tag set`).
    pub tags: BTreeMap<String, String>,
    pub slots: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("gossip: {0}")]
    Start(String),
    #[error(
        "gossip: none of the seeds answered after {attempts} attempts ({}); check the addresses, that UDP reaches them, and that every node has the same --cluster-key",
        seeds.join(", ")
    )]
    NoSeedAnswered { seeds: Vec<String>, attempts: u32 },
    #[error("invalid {field}: {reason}")]
    InvalidTag { field: String, reason: String },
    #[error("gossip has stopped on this node")]
    Stopped,
}

#[cfg(test)]
mod tests;
