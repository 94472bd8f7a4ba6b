//! The server's configuration: flags, a TOML file (`--config`) and `CATHEDRAL_*`
//! environment variables. A flag wins over its environment variable, which wins over the
//! file, which wins over the default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cathedral_consensus::raft::RaftSettings;
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::error::{Result, ServerError};
use crate::gossip::GossipSettings;

/// Most voters a cluster may ask for.
pub const VOTERS_MAX: u32 = 7;
/// Most attempts one node runs at once.
pub const SLOTS_MAX: u32 = 4096;
/// Default log entries between state-hash checkpoints.
pub const CHECKPOINT_INTERVAL_DEFAULT: u64 = 10_000;
/// Default delay between gossip declaring a node failed and the leader committing it.
pub const FAILURE_GRACE_MS_DEFAULT: u64 = 1_000;
/// Bounds of `--gossip-interval-ms`.
pub const GOSSIP_INTERVAL_MS_MIN: u64 = 10;
pub const GOSSIP_INTERVAL_MS_MAX: u64 = 60_000;

/// What this node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A one-voter cluster of its own, initialised on first start.
    Standalone,
    /// A Raft voter (or a learner waiting for promotion).
    Coordinator,
    /// A Raft learner that runs jobs; never promoted.
    Worker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "standalone" => Some(Role::Standalone),
            "coordinator" => Some(Role::Coordinator),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// `cathedral-server` flags. Every one can also be set in the `--config` file (same name,
/// with `_` for `-`) or by its environment variable.
#[derive(Debug, Default, Parser)]
#[command(
    name = "cathedral-server",
    version,
    about = "A Cathedral node: runs jobs and workflows, keeps the replicated log."
)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "CATHEDRAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the log, snapshots and node identity live [default: ./cathedral-data].
    #[arg(long, env = "CATHEDRAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "CATHEDRAL_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Address other nodes and clients use to reach this one [default: the bind address].
    #[arg(long, env = "CATHEDRAL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// HTTP listen address for /healthz and /readyz [default: 127.0.0.1:8081].
    #[arg(long, env = "CATHEDRAL_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// standalone, coordinator or worker [default: standalone].
    #[arg(long, env = "CATHEDRAL_ROLE", value_enum)]
    pub role: Option<Role>,
    /// Any member's address, to join its cluster (coordinator, worker).
    #[arg(long, env = "CATHEDRAL_JOIN", value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// Desired number of voters; coordinators are promoted until it is reached [default: 3].
    #[arg(long, env = "CATHEDRAL_VOTERS")]
    pub voters: Option<u32>,
    /// Snapshot every this many applied entries [default: 10000].
    #[arg(long, env = "CATHEDRAL_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// Entries kept in the log behind the latest snapshot [default: 50000].
    #[arg(long, env = "CATHEDRAL_LOG_COMPACTION_THRESHOLD")]
    pub log_compaction_threshold: Option<u64>,
    /// Lower bound of the randomised election timeout [default: 100].
    #[arg(long, env = "CATHEDRAL_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Upper bound of the randomised election timeout; also the leader lease a follower
    /// waits out before it campaigns [default: 150].
    #[arg(long, env = "CATHEDRAL_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Leader heartbeat period [default: 30].
    #[arg(long, env = "CATHEDRAL_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// How long a write waits for a leader before failing with Unavailable [default: 10000].
    #[arg(long, env = "CATHEDRAL_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// Attempts this node runs at once; 0 runs none [default: the number of CPUs].
    #[arg(long, env = "CATHEDRAL_SLOTS")]
    pub slots: Option<u32>,
    /// A registered node that gossip has not seen alive for this long after this node
    /// became leader is declared failed [default: 5000].
    #[arg(long, env = "CATHEDRAL_NODE_TIMEOUT_MS")]
    pub node_timeout_ms: Option<u64>,
    /// Output kept per attempt, in bytes [default: 67108864].
    #[arg(long, env = "CATHEDRAL_OUTPUT_BYTES_MAX")]
    pub output_bytes_max: Option<u64>,
    /// Output kept on this node in all, in bytes; the oldest goes first [default: 1073741824].
    #[arg(long, env = "CATHEDRAL_OUTPUT_BYTES_TOTAL_MAX")]
    pub output_bytes_total_max: Option<u64>,
    /// Output older than this is deleted [default: 168].
    #[arg(long, env = "CATHEDRAL_OUTPUT_RETENTION_HOURS")]
    pub output_retention_hours: Option<u64>,
    /// The leader records a state-hash checkpoint every this many log entries; 0 never
    /// [default: 10000].
    #[arg(long, env = "CATHEDRAL_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Option<u64>,
    /// Gossip (UDP) listen address [default: the --bind address, over UDP].
    #[arg(long, env = "CATHEDRAL_GOSSIP_BIND", value_name = "ADDR")]
    pub gossip_bind: Option<SocketAddr>,
    /// Gossip address others use to reach this node [default: --gossip-bind, or the
    /// --advertise host with the gossip port when binding to all interfaces].
    #[arg(long, env = "CATHEDRAL_GOSSIP_ADVERTISE", value_name = "ADDR")]
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses (HOST:PORT) of other nodes, comma-separated; with --join, the
    /// member named there also tells its own.
    #[arg(
        long,
        env = "CATHEDRAL_SEEDS",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    pub seeds: Vec<String>,
    /// Shared secret that authenticates every gossip datagram; every node of a cluster
    /// needs the same one [default: none, with a warning].
    #[arg(
        long,
        env = "CATHEDRAL_CLUSTER_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub cluster_key: Option<String>,
    /// Period of a gossip round [default: 500].
    #[arg(long, env = "CATHEDRAL_GOSSIP_INTERVAL_MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Phi above which the failure detector declares a node failed [default: 8].
    #[arg(long, env = "CATHEDRAL_PHI_THRESHOLD")]
    pub phi_threshold: Option<f64>,
    /// A node seeing fewer than this fraction of known nodes alive is on the minority side
    /// of a partition [default: 0.5].
    #[arg(long, env = "CATHEDRAL_PARTITION_QUORUM")]
    pub partition_quorum: Option<f64>,
    /// How long below the quorum fraction before a node reports itself partitioned and
    /// stops taking work [default: 30000].
    #[arg(long, env = "CATHEDRAL_PARTITION_GRACE_MS")]
    pub partition_grace_ms: Option<u64>,
    /// How long after gossip declares a node failed the leader commits node-failed
    /// [default: 1000].
    #[arg(long, env = "CATHEDRAL_FAILURE_GRACE_MS")]
    pub failure_grace_ms: Option<u64>,
    /// A tag this node advertises (zone=eu-1, gpu=a100); repeatable. `available=false`
    /// keeps work off it. Changed at run time with `cathedral node tag set`.
    #[arg(
        long = "tag",
        env = "CATHEDRAL_TAGS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,
    /// How the leader picks among the nodes that fit a job: least-loaded, round-robin or
    /// random [default: least-loaded].
    #[arg(long, env = "CATHEDRAL_PLACEMENT", value_enum)]
    pub placement: Option<Placement>,
    /// Seed of the random placement [default: 0].
    #[arg(long, env = "CATHEDRAL_PLACEMENT_SEED")]
    pub placement_seed: Option<u64>,
}

/// How the leader chooses among the nodes that fit a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// The node with the smallest share of its slots in use (ties to the lower id).
    LeastLoaded,
    /// The next fitting node after the one chosen last.
    RoundRobin,
    /// A fitting node drawn from a generator seeded by --placement-seed.
    Random,
}

/// The same settings in a TOML file; unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    bind: Option<SocketAddr>,
    advertise: Option<String>,
    http: Option<SocketAddr>,
    role: Option<Role>,
    join: Option<String>,
    voters: Option<u32>,
    snapshot_threshold: Option<u64>,
    log_compaction_threshold: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    slots: Option<u32>,
    node_timeout_ms: Option<u64>,
    output_bytes_max: Option<u64>,
    output_bytes_total_max: Option<u64>,
    output_retention_hours: Option<u64>,
    checkpoint_interval: Option<u64>,
    gossip_bind: Option<SocketAddr>,
    gossip_advertise: Option<SocketAddr>,
    seeds: Option<Vec<String>>,
    cluster_key: Option<String>,
    gossip_interval_ms: Option<u64>,
    phi_threshold: Option<f64>,
    partition_quorum: Option<f64>,
    partition_grace_ms: Option<u64>,
    failure_grace_ms: Option<u64>,
    tags: Option<BTreeMap<String, String>>,
    placement: Option<Placement>,
    placement_seed: Option<u64>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub advertise: String,
    pub http: SocketAddr,
    pub role: Role,
    pub join: Option<String>,
    pub voters: u32,
    pub raft: RaftSettings,
    pub write_timeout_ms: u64,
    pub slots: u32,
    pub node_timeout_ms: u64,
    pub output_bytes_max: u64,
    pub output_bytes_total_max: u64,
    pub output_retention_hours: u64,
    /// Log entries between the leader's checkpoints; 0 disables them.
    pub checkpoint_interval: u64,
    pub gossip: GossipSettings,
    /// Delay between gossip declaring a node failed and the leader proposing it.
    pub failure_grace_ms: u64,
    /// The operator's tags from flags and file (run-time changes are kept in the data
    /// directory and applied over these).
    pub tags: BTreeMap<String, String>,
    pub placement: Placement,
    pub placement_seed: u64,
}

impl Config {
    /// Resolves flags (and their environment variables) over the file over the defaults,
    /// and checks the result.
    ///
    /// Long because it holds one layered line per setting; one settings type with serde and
    /// clap layered (issue 18) is to replace it.
    pub fn resolve(args: Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = RaftSettings::default();
        let bind = args
            .bind
            .or(file.bind)
            .unwrap_or_else(|| "127.0.0.1:50051".parse().expect("valid"));
        let advertise = args
            .advertise
            .or(file.advertise)
            .unwrap_or_else(|| bind.to_string());
        let mut raft = defaults.clone();
        raft.compaction.snapshot_threshold = args
            .snapshot_threshold
            .or(file.snapshot_threshold)
            .unwrap_or(defaults.compaction.snapshot_threshold);
        raft.compaction.log_compaction_threshold = args
            .log_compaction_threshold
            .or(file.log_compaction_threshold)
            .unwrap_or(defaults.compaction.log_compaction_threshold);
        raft.election_timeout_min_ms = args
            .election_timeout_min_ms
            .or(file.election_timeout_min_ms)
            .unwrap_or(defaults.election_timeout_min_ms);
        raft.election_timeout_max_ms = args
            .election_timeout_max_ms
            .or(file.election_timeout_max_ms)
            .unwrap_or(defaults.election_timeout_max_ms);
        raft.heartbeat_interval_ms = args
            .heartbeat_interval_ms
            .or(file.heartbeat_interval_ms)
            .unwrap_or(defaults.heartbeat_interval_ms);
        let gossip_bind = args
            .gossip_bind
            .or(file.gossip_bind)
            // UDP on the gRPC (TCP) port: every node on a host already has a port of its
            // own, so the default never collides with another node's.
            .unwrap_or(bind);
        let gossip_advertise = match args.gossip_advertise.or(file.gossip_advertise) {
            Some(a) => a,
            None if gossip_bind.ip().is_unspecified() => {
                let host = advertise.rsplit_once(':').map_or("", |(h, _)| h);
                let ip = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| {
                        ServerError::Config(format!(
                            "--gossip-bind {gossip_bind} listens on all interfaces and the --advertise host {host:?} is not an IP address; set --gossip-advertise"
                        ))
                    })?;
                SocketAddr::new(ip, gossip_bind.port())
            }
            None => gossip_bind,
        };
        let mut tags = file.tags.unwrap_or_default();
        for t in &args.tags {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| ServerError::Config(format!("--tag {t:?}: expected KEY=VALUE")))?;
            tags.insert(k.to_string(), v.to_string());
        }
        let mut gossip = GossipSettings::new(gossip_bind);
        gossip.advertise = gossip_advertise;
        gossip.seeds = if args.seeds.is_empty() {
            file.seeds.unwrap_or_default()
        } else {
            args.seeds
        };
        gossip.cluster_key = args.cluster_key.or(file.cluster_key);
        if let Some(ms) = args.gossip_interval_ms.or(file.gossip_interval_ms) {
            gossip.interval = Duration::from_millis(ms);
        }
        if let Some(phi) = args.phi_threshold.or(file.phi_threshold) {
            gossip.phi_threshold = phi;
        }
        if let Some(q) = args.partition_quorum.or(file.partition_quorum) {
            gossip.quorum_fraction = q;
        }
        if let Some(ms) = args.partition_grace_ms.or(file.partition_grace_ms) {
            gossip.partition_grace = Duration::from_millis(ms);
        }
        let config = Config {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./cathedral-data")),
            bind,
            advertise,
            http: args
                .http
                .or(file.http)
                .unwrap_or_else(|| "127.0.0.1:8081".parse().expect("valid")),
            role: args.role.or(file.role).unwrap_or(Role::Standalone),
            join: args.join.or(file.join),
            voters: args.voters.or(file.voters).unwrap_or(3),
            raft,
            write_timeout_ms: args
                .write_timeout_ms
                .or(file.write_timeout_ms)
                .unwrap_or(10_000),
            slots: args.slots.or(file.slots).unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
            }),
            node_timeout_ms: args
                .node_timeout_ms
                .or(file.node_timeout_ms)
                .unwrap_or(5_000),
            output_bytes_max: args
                .output_bytes_max
                .or(file.output_bytes_max)
                .unwrap_or(64 << 20),
            output_bytes_total_max: args
                .output_bytes_total_max
                .or(file.output_bytes_total_max)
                .unwrap_or(1 << 30),
            output_retention_hours: args
                .output_retention_hours
                .or(file.output_retention_hours)
                .unwrap_or(168),
            checkpoint_interval: args
                .checkpoint_interval
                .or(file.checkpoint_interval)
                .unwrap_or(CHECKPOINT_INTERVAL_DEFAULT),
            gossip,
            failure_grace_ms: args
                .failure_grace_ms
                .or(file.failure_grace_ms)
                .unwrap_or(FAILURE_GRACE_MS_DEFAULT),
            tags,
            placement: args
                .placement
                .or(file.placement)
                .unwrap_or(Placement::LeastLoaded),
            placement_seed: args.placement_seed.or(file.placement_seed).unwrap_or(0),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ServerError::Config(m));
        if self.voters == 0 || self.voters > VOTERS_MAX {
            return bad(format!(
                "--voters must be 1..={VOTERS_MAX} (VOTERS_MAX), got {}",
                self.voters
            ));
        }
        match (self.role, &self.join) {
            (Role::Standalone, Some(_)) => {
                return bad(
                    "a standalone node does not join; use --role coordinator or worker with --join"
                        .into(),
                )
            }
            (Role::Worker, None) => {
                return bad("a worker needs --join ADDR (any member of the cluster)".into())
            }
            _ => {}
        }
        if self
            .advertise
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified())
        {
            return bad(format!(
                "--advertise {} is not an address others can reach; set it when binding to all interfaces",
                self.advertise
            ));
        }
        if !self.advertise.contains(':') {
            return bad(format!(
                "--advertise {} needs a port (HOST:PORT)",
                self.advertise
            ));
        }
        if self.slots > SLOTS_MAX {
            return bad(format!(
                "--slots must be at most {SLOTS_MAX} (SLOTS_MAX), got {}",
                self.slots
            ));
        }
        if self.node_timeout_ms < 1000 {
            return bad("--node-timeout-ms must be at least 1000".into());
        }
        let g = &self.gossip;
        if g.interval < Duration::from_millis(GOSSIP_INTERVAL_MS_MIN)
            || g.interval > Duration::from_millis(GOSSIP_INTERVAL_MS_MAX)
        {
            return bad(format!(
                "--gossip-interval-ms must be {GOSSIP_INTERVAL_MS_MIN}..={GOSSIP_INTERVAL_MS_MAX}, got {}",
                g.interval.as_millis()
            ));
        }
        if !(g.phi_threshold.is_finite() && g.phi_threshold >= 1.0) {
            return bad(format!(
                "--phi-threshold must be at least 1, got {}",
                g.phi_threshold
            ));
        }
        if !(g.quorum_fraction > 0.0 && g.quorum_fraction <= 1.0) {
            return bad(format!(
                "--partition-quorum must be in (0, 1], got {}",
                g.quorum_fraction
            ));
        }
        if g.bind.port() == 0 {
            return bad("--gossip-bind needs a fixed port: others gossip with it".into());
        }
        if g.advertise.ip().is_unspecified() || g.advertise.port() == 0 {
            return bad(format!(
                "--gossip-advertise {} is not an address others can reach",
                g.advertise
            ));
        }
        if g.cluster_key.as_deref() == Some("") {
            return bad("--cluster-key is empty".into());
        }
        if let Err(e) = crate::gossip::check_tags(&self.tags) {
            return bad(format!("--tag: {e}"));
        }
        if self.raft.compaction.snapshot_threshold == 0 {
            return bad("--snapshot-threshold must be positive".into());
        }
        self.raft
            .openraft_config("check")
            .map_err(|e| ServerError::Config(format!("raft timing: {e}")))?;
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| ServerError::io("read", path, e))?;
    toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("cathedral-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(Args::default()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./cathedral-data"));
        assert_eq!(c.bind.to_string(), "127.0.0.1:50051");
        assert_eq!(c.advertise, "127.0.0.1:50051");
        assert_eq!(c.http.to_string(), "127.0.0.1:8081");
        assert_eq!(c.role, Role::Standalone);
        assert_eq!(c.voters, 3);
        assert_eq!(c.raft, RaftSettings::default());
        // Gossip takes the gRPC port over UDP: nodes sharing a host never collide.
        assert_eq!(c.gossip.bind.to_string(), "127.0.0.1:50051");
        assert_eq!(c.gossip.advertise.to_string(), "127.0.0.1:50051");
        assert_eq!(c.gossip.phi_threshold, 8.0);
        assert_eq!(c.gossip.quorum_fraction, 0.5);
        assert_eq!(c.gossip.partition_grace.as_millis(), 30_000);
        assert_eq!(c.placement, Placement::LeastLoaded);
        assert!(c.tags.is_empty());
    }

    #[test]
    fn gossip_settings_and_tags_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "seeds = [\"10.0.0.1:7946\"]\nplacement = \"round-robin\"\n[tags]\nzone = \"a\"\nrack = \"1\"\n",
        )
        .unwrap();
        let c = Config::resolve(parse(&[
            "--config",
            file.to_str().unwrap(),
            "--bind",
            "0.0.0.0:7000",
            "--advertise",
            "10.1.2.3:7000",
            "--gossip-bind",
            "0.0.0.0:8000",
            "--tag",
            "zone=b",
            "--cluster-key",
            "k",
        ]))
        .unwrap();
        assert_eq!(c.gossip.advertise.to_string(), "10.1.2.3:8000");
        assert_eq!(c.gossip.seeds, vec!["10.0.0.1:7946".to_string()]);
        assert_eq!(c.gossip.cluster_key.as_deref(), Some("k"));
        assert_eq!(c.placement, Placement::RoundRobin);
        assert_eq!(c.tags["zone"], "b", "a flag wins over the file");
        assert_eq!(c.tags["rack"], "1");
        for (args, why) in [
            (vec!["--tag", "zone"], "KEY=VALUE"),
            (vec!["--tag", "role=x"], "--role"),
            (vec!["--phi-threshold", "0"], "--phi-threshold"),
            (vec!["--partition-quorum", "1.5"], "--partition-quorum"),
            (vec!["--gossip-interval-ms", "1"], "--gossip-interval-ms"),
            (vec!["--gossip-bind", "127.0.0.1:0"], "fixed port"),
            (vec!["--cluster-key", ""], "empty"),
        ] {
            let e = Config::resolve(parse(&args)).unwrap_err().to_string();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:7000\"\nvoters = 5\nrole = \"coordinator\"\nsnapshot_threshold = 50\n",
        )
        .unwrap();
        let c = Config::resolve(parse(&[
            "--config",
            file.to_str().unwrap(),
            "--voters",
            "1",
        ]))
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:7000");
        assert_eq!(c.advertise, "127.0.0.1:7000");
        assert_eq!(c.voters, 1);
        assert_eq!(c.role, Role::Coordinator);
        assert_eq!(c.raft.compaction.snapshot_threshold, 50);
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "bnid = \"x\"\n").unwrap();
        let e = Config::resolve(parse(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("unknown field `bnid`"), "{e}");
        let e = Config::resolve(parse(&["--voters", "9"])).unwrap_err();
        assert!(e.to_string().contains("VOTERS_MAX"), "{e}");
        let e = Config::resolve(parse(&["--role", "worker"])).unwrap_err();
        assert!(e.to_string().contains("needs --join"), "{e}");
        let e = Config::resolve(parse(&["--bind", "0.0.0.0:1"])).unwrap_err();
        assert!(e.to_string().contains("--advertise"), "{e}");
        let e = Config::resolve(parse(&[
            "--election-timeout-min-ms",
            "500",
            "--election-timeout-max-ms",
            "100",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("raft timing"), "{e}");
    }
}
