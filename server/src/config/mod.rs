//! The server's settings: one field list ([`Args`]) read twice — by clap from flags and
//! `CATHEDRAL_*` environment variables, by serde from the `--config` TOML file — and
//! layered by clap itself (`update_from_arg_matches`): a flag wins over its environment
//! variable, which wins over the file, which wins over the default. Every default is a
//! named constant, here or next to the loop it sets (`RaftSettings`, `GossipSettings`,
//! `LeaderSettings`, `OutputSettings`); [`Config`] holds the resolved values, one
//! sub-settings value per loop. A test checks that every `[default: …]` the help prints is
//! the default the code uses.
//!
//! Adding a server flag: a field in [`Args`] (doc comment, `#[arg]`, the default in the
//! text), its named default, a line in [`Config::resolve`] (and a check in
//! [`Config::check`] if it has a bound), then the README's flag table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cathedral_consensus::raft::RaftSettings;
use cathedral_consensus::Role;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Deserializer};

use crate::error::{Result, ServerError};
use crate::gossip::GossipSettings;
use crate::leader::settings::LeaderSettings;
use crate::output::settings::OutputSettings;
use crate::scheduler::Placement;

/// Most voters a cluster may ask for.
pub const VOTERS_MAX: u32 = 7;
/// Most attempts one node runs at once.
pub const SLOTS_MAX: u32 = 4096;
/// Bounds of `--gossip-interval-ms`.
pub const GOSSIP_INTERVAL_MS_MIN: u64 = 10;
pub const GOSSIP_INTERVAL_MS_MAX: u64 = 60_000;
/// Most `--worker-threads`.
pub const WORKER_THREADS_MAX: u32 = 256;
/// Least `--node-timeout-ms`.
pub const NODE_TIMEOUT_MS_MIN: u64 = 1_000;

pub const DATA_DIR_DEFAULT: &str = "./cathedral-data";
pub const BIND_DEFAULT: &str = "127.0.0.1:50051";
pub const HTTP_DEFAULT: &str = "127.0.0.1:8081";
pub const ROLE_DEFAULT: Role = Role::Standalone;
pub const VOTERS_DEFAULT: u32 = 3;
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest write timeout: a node resends a write under its own request id only within it,
/// and the replicated state keeps a node's ids for `REQUEST_KEPT_MIN_MS` (a minute) — half
/// of it, so a resend meets its first answer even across clocks a little apart.
pub const WRITE_TIMEOUT_MS_MAX: u64 = cathedral_consensus::requests::REQUEST_KEPT_MIN_MS / 2;
/// Metrics are counted and served unless turned off.
pub const METRICS_DEFAULT: bool = true;

/// `cathedral-server`'s settings. Every one is a flag, an environment variable and a key
/// of the `--config` file (the flag's name with `_` for `-`; tags as a `[tags]` table).
#[derive(Debug, Default, Parser, Deserialize)]
#[serde(deny_unknown_fields)]
#[command(
    name = "cathedral-server",
    version,
    about = "A Cathedral node: runs jobs and workflows, keeps the replicated log."
)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "CATHEDRAL_CONFIG", value_name = "FILE")]
    #[serde(skip)]
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
    /// HTTP listen address: /healthz, /readyz, /metrics and the REST API (/v1)
    /// [default: 127.0.0.1:8081].
    #[arg(long, env = "CATHEDRAL_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// standalone, coordinator or worker [default: standalone].
    #[arg(long, env = "CATHEDRAL_ROLE")]
    pub role: Option<RoleName>,
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
    /// Count and serve Prometheus metrics at /metrics; false counts nothing and /metrics
    /// answers 404 [default: true].
    #[arg(long, env = "CATHEDRAL_METRICS", value_name = "BOOL")]
    pub metrics: Option<bool>,
    /// Attempts this node runs at once; 0 runs none [default: the number of CPUs].
    #[arg(long, env = "CATHEDRAL_SLOTS")]
    pub slots: Option<u32>,
    /// Threads running the node's tasks (API, Raft, apply, the jobs' bookkeeping); the
    /// log's writer and blocking work have threads of their own. Fewer cost less CPU per
    /// write where the node shares its CPUs (with its jobs, or other nodes) [default: the
    /// number of CPUs].
    #[arg(long, env = "CATHEDRAL_WORKER_THREADS")]
    pub worker_threads: Option<u32>,
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
    /// Bytes the archive of collected jobs (DATA_DIR/archive) may take; its oldest day
    /// goes first [default: 1073741824].
    #[arg(long, env = "CATHEDRAL_ARCHIVE_BYTES_MAX")]
    pub archive_bytes_max: Option<u64>,
    /// Bytes a log segment holds before the next one starts; each is preallocated to
    /// this size [default: 67108864].
    #[arg(long, env = "CATHEDRAL_LOG_SEGMENT_BYTES", value_name = "BYTES")]
    pub log_segment_bytes: Option<u64>,
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
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Shared secret that authenticates every gossip datagram and every call between
    /// nodes; every node of a cluster needs it. `NEW,OLD,...` signs with the first and
    /// accepts any (key rotation) [default: none, with a warning].
    #[arg(
        long,
        env = "CATHEDRAL_CLUSTER_KEY",
        value_name = "SECRET[,OLD...]",
        hide_env_values = true
    )]
    pub cluster_key: Option<String>,
    /// PEM certificate (chain) of this node: serves the API, Raft and peer calls and the
    /// HTTP port over TLS, and is its client certificate towards peers [default: none,
    /// plaintext].
    #[arg(long, env = "CATHEDRAL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CATHEDRAL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate: peers' certificates are checked against it, and calls between
    /// nodes must present a client certificate it signed (mutual TLS); clients may
    /// present one [default: none].
    #[arg(long, env = "CATHEDRAL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
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
    /// Times a job is queued again after its node was lost while the job ran, apart from
    /// the job's own retries; an attempt lost before it started is always queued again
    /// and counts against nothing. Written to the log by the leader, so every node
    /// applies the same rule [default: 3, at most 100].
    #[arg(long, env = "CATHEDRAL_LOST_RETRIES")]
    pub lost_retries: Option<u32>,
    /// How long a finished job (succeeded, failed, cancelled, timed out) stays in the
    /// cluster's state before the leader collects it, as `30s`, `12h`, `7d`; `0` keeps
    /// every job. A workflow goes as a unit once all its jobs are past it
    /// [default: 7d].
    #[arg(long, env = "CATHEDRAL_JOB_RETENTION", value_name = "DURATION")]
    pub job_retention: Option<String>,
    /// A tag this node advertises (zone=eu-1, gpu=a100); repeatable. `available=false`
    /// keeps work off it. Changed at run time with `cathedral node tag set`.
    #[arg(
        long = "tag",
        env = "CATHEDRAL_TAGS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "tag_table")]
    pub tags: Vec<String>,
    /// How the leader picks among the nodes that fit a job: least-loaded, round-robin or
    /// random [default: least-loaded].
    #[arg(long, env = "CATHEDRAL_PLACEMENT", value_enum)]
    pub placement: Option<Placement>,
    /// Seed of the random placement [default: 0].
    #[arg(long, env = "CATHEDRAL_PLACEMENT_SEED")]
    pub placement_seed: Option<u64>,
    /// The container engine of the docker sandbox (Docker Engine API): unix:///PATH or
    /// tcp://HOST:PORT; `none` turns the sandbox off. The node advertises the tag
    /// driver.docker=true while the engine answers [default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock].
    #[arg(long, env = "CATHEDRAL_DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
    /// RLIMIT_NPROC of containers, for engines whose own default their host refuses
    /// (rootful Podman without CAP_SYS_RESOURCE: "error setting rlimit type 6")
    /// [default: a local engine's own hard limit, read through its unix socket; else the
    /// engine's default].
    #[arg(long, env = "CATHEDRAL_DOCKER_NPROC_LIMIT", value_name = "N")]
    pub docker_nproc_limit: Option<u64>,
    /// DNS server (IP:PORT) that resolves `dns:NAME:PORT` seeds [default: the system's
    /// resolver settings, /etc/resolv.conf].
    #[arg(long, env = "CATHEDRAL_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<SocketAddr>,
}

/// A [`Role`] as a flag or file value, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleName(pub Role);

impl std::str::FromStr for RoleName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<RoleName, String> {
        s.parse().map(RoleName)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<RoleName, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The file's `[tags]` table as the flags' `KEY=VALUE` list.
fn tag_table<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    Ok(table.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The resolved settings, one sub-settings value per loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub advertise: String,
    pub http: SocketAddr,
    pub role: Role,
    pub join: Option<String>,
    pub voters: u32,
    /// How long a write waits for a leader and its commit.
    pub write_timeout_ms: u64,
    /// Whether this node counts and serves metrics.
    pub metrics: bool,
    pub slots: u32,
    /// Threads of the node's async runtime.
    pub worker_threads: u32,
    /// The operator's tags from flags and file (run-time changes are kept in the data
    /// directory and applied over these).
    pub tags: BTreeMap<String, String>,
    pub raft: RaftSettings,
    pub gossip: GossipSettings,
    pub leader: LeaderSettings,
    pub output: OutputSettings,
    /// Bound of the archive of collected jobs.
    pub archive_bytes_max: u64,
    /// Size of a log segment (`cathedral_storage::Options::segment_bytes_max`).
    pub log_segment_bytes: u64,
    pub tls: Option<TlsFiles>,
    /// The docker sandbox's engine; `None`: no docker sandbox (`--docker-host none`).
    pub docker_host: Option<String>,
    /// RLIMIT_NPROC of containers; `None`: the engine's default.
    pub docker_nproc_limit: Option<u64>,
}

/// The TLS files `--tls-cert`, `--tls-key` and `--tls-ca` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a CA, calls between nodes need a client certificate it signed.
    pub ca: Option<PathBuf>,
}

impl Config {
    /// The settings of this process: flags and environment (exiting with clap's message
    /// on a malformed flag) over the `--config` file over the defaults.
    pub fn from_process() -> Result<Config> {
        Config::load(&Args::command().get_matches())
    }

    /// The settings from an argument list (the program name first); for tests.
    pub fn from_args<I, T>(args: I) -> Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Args::command()
            .try_get_matches_from(args)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Config::load(&matches)
    }

    /// Layers parsed flags and environment over the file they name, then resolves.
    pub fn load(matches: &ArgMatches) -> Result<Config> {
        let flags =
            Args::from_arg_matches(matches).map_err(|e| ServerError::Config(e.to_string()))?;
        let mut args = match &flags.config {
            Some(path) => read_file(path)?,
            None => Args::default(),
        };
        // Tags merge key by key (a flag's value wins); every other setting is replaced
        // whole by the layer above.
        let file_tags = std::mem::take(&mut args.tags);
        args.update_from_arg_matches(matches)
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let flag_tags = std::mem::replace(&mut args.tags, file_tags);
        args.tags.extend(flag_tags);
        Config::resolve(args)
    }

    /// The settings `args` give, each unset one at its default, checked.
    ///
    /// Long on purpose: one line per setting, moving it from the flat flag list into the
    /// sub-settings of the loop it belongs to; split up, a new flag's line is easy to miss.
    pub fn resolve(args: Args) -> Result<Config> {
        let bind = args
            .bind
            .unwrap_or_else(|| BIND_DEFAULT.parse().expect("valid"));
        let advertise = args.advertise.unwrap_or_else(|| bind.to_string());

        let mut raft = RaftSettings::default();
        set(
            &mut raft.compaction.snapshot_threshold,
            args.snapshot_threshold,
        );
        set(
            &mut raft.compaction.log_compaction_threshold,
            args.log_compaction_threshold,
        );
        set(
            &mut raft.election_timeout_min_ms,
            args.election_timeout_min_ms,
        );
        set(
            &mut raft.election_timeout_max_ms,
            args.election_timeout_max_ms,
        );
        set(&mut raft.heartbeat_interval_ms, args.heartbeat_interval_ms);

        // UDP on the gRPC (TCP) port: every node on a host already has a port of its own,
        // so the default never collides with another node's.
        let mut gossip = GossipSettings::new(args.gossip_bind.unwrap_or(bind));
        gossip.advertise = match args.gossip_advertise {
            Some(a) => a,
            None => gossip_advertise(gossip.bind, &advertise)?,
        };
        gossip.seeds = args.seeds;
        gossip.dns_server = args.dns_server;
        gossip.cluster_keys = args
            .cluster_key
            .map(|k| k.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        set(
            &mut gossip.interval,
            args.gossip_interval_ms.map(Duration::from_millis),
        );
        set(&mut gossip.phi_threshold, args.phi_threshold);
        set(&mut gossip.quorum_fraction, args.partition_quorum);
        set(
            &mut gossip.partition_grace,
            args.partition_grace_ms.map(Duration::from_millis),
        );

        let mut leader = LeaderSettings::default();
        set(&mut leader.node_timeout_ms, args.node_timeout_ms);
        set(&mut leader.failure_grace_ms, args.failure_grace_ms);
        set(&mut leader.lost_retries, args.lost_retries);
        if let Some(r) = &args.job_retention {
            leader.job_retention_ms = if r.trim() == "0" {
                0
            } else {
                humantime::parse_duration(r)
                    .map_err(|e| {
                        ServerError::Config(format!(
                            "--job-retention {r:?}: {e} (try 30s, 12h, 7d, or 0 to keep every job)"
                        ))
                    })?
                    .as_millis() as u64
            };
        }
        set(&mut leader.checkpoint_interval, args.checkpoint_interval);
        set(&mut leader.placement, args.placement);
        set(&mut leader.placement_seed, args.placement_seed);

        let mut output = OutputSettings::default();
        set(&mut output.bytes_max, args.output_bytes_max);
        set(&mut output.bytes_total_max, args.output_bytes_total_max);
        set(&mut output.retention_hours, args.output_retention_hours);

        let mut tags = BTreeMap::new();
        for t in &args.tags {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| ServerError::Config(format!("--tag {t:?}: expected KEY=VALUE")))?;
            tags.insert(k.to_string(), v.to_string());
        }
        let config = Config {
            data_dir: args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            bind,
            advertise,
            http: args
                .http
                .unwrap_or_else(|| HTTP_DEFAULT.parse().expect("valid")),
            role: args.role.map_or(ROLE_DEFAULT, |r| r.0),
            join: args.join,
            voters: args.voters.unwrap_or(VOTERS_DEFAULT),
            write_timeout_ms: args.write_timeout_ms.unwrap_or(WRITE_TIMEOUT_MS_DEFAULT),
            metrics: args.metrics.unwrap_or(METRICS_DEFAULT),
            slots: args.slots.unwrap_or_else(slots_default),
            worker_threads: args.worker_threads.unwrap_or_else(worker_threads_default),
            tags,
            raft,
            gossip,
            leader,
            output,
            docker_host: match args.docker_host {
                Some(h) if h == "none" => None,
                Some(h) => Some(h),
                None => Some(cathedral_executor::default_docker_host()),
            },
            docker_nproc_limit: args.docker_nproc_limit,
            archive_bytes_max: args
                .archive_bytes_max
                .unwrap_or(cathedral_consensus::archive::ARCHIVE_BYTES_MAX_DEFAULT),
            log_segment_bytes: args
                .log_segment_bytes
                .unwrap_or(cathedral_storage::Options::default().segment_bytes_max),
            tls: match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert,
                    key,
                    ca: args.tls_ca,
                }),
                (None, None) if args.tls_ca.is_none() => None,
                _ => {
                    return Err(ServerError::Config(
                        "--tls-cert and --tls-key go together (and --tls-ca needs them)".into(),
                    ))
                }
            },
        };
        config.check()?;
        Ok(config)
    }

    // Long on purpose: one check per bounded setting, in the order of the flags, each
    // with its own message; split, the list would be harder to hold against the table.
    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ServerError::Config(m));
        let segment = cathedral_storage::SEGMENT_BYTES_MIN..=cathedral_storage::SEGMENT_BYTES_LIMIT;
        if !segment.contains(&self.log_segment_bytes) {
            return bad(format!(
                "--log-segment-bytes must be {}..={} (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_LIMIT), got {}",
                segment.start(),
                segment.end(),
                self.log_segment_bytes
            ));
        }
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
        if self.write_timeout_ms == 0 || self.write_timeout_ms > WRITE_TIMEOUT_MS_MAX {
            return bad(format!(
                "--write-timeout-ms must be 1..={WRITE_TIMEOUT_MS_MAX} (WRITE_TIMEOUT_MS_MAX), got {}",
                self.write_timeout_ms
            ));
        }
        if self.slots > SLOTS_MAX {
            return bad(format!(
                "--slots must be at most {SLOTS_MAX} (SLOTS_MAX), got {}",
                self.slots
            ));
        }
        if self.worker_threads == 0 || self.worker_threads > WORKER_THREADS_MAX {
            return bad(format!(
                "--worker-threads must be 1..={WORKER_THREADS_MAX} (WORKER_THREADS_MAX), got {}",
                self.worker_threads
            ));
        }
        if self.leader.node_timeout_ms < NODE_TIMEOUT_MS_MIN {
            return bad(format!(
                "--node-timeout-ms must be at least {NODE_TIMEOUT_MS_MIN} (NODE_TIMEOUT_MS_MIN)"
            ));
        }
        if self.leader.lost_retries > cathedral_consensus::limits::LOST_RETRIES_MAX {
            return bad(format!(
                "--lost-retries must be at most {} (LOST_RETRIES_MAX), got {}",
                cathedral_consensus::limits::LOST_RETRIES_MAX,
                self.leader.lost_retries
            ));
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
        for s in &g.seeds {
            crate::gossip::Seed::parse(s)
                .map_err(|e| ServerError::Config(format!("--seeds: {e}")))?;
        }
        if let Some(h) = &self.docker_host {
            if !["unix://", "tcp://", "http://"]
                .iter()
                .any(|p| h.starts_with(p))
            {
                return bad(format!(
                    "--docker-host {h:?}: expected unix:///PATH, tcp://HOST:PORT or none"
                ));
            }
        }
        if g.advertise.ip().is_unspecified() || g.advertise.port() == 0 {
            return bad(format!(
                "--gossip-advertise {} is not an address others can reach",
                g.advertise
            ));
        }
        if g.cluster_keys.iter().any(String::is_empty) {
            return bad("--cluster-key is empty (or holds an empty key between commas)".into());
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

/// `*slot = value` when the setting was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Attempts at once by default: one per CPU.
fn slots_default() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Runtime threads by default: one per CPU (tokio's own default). The write path is a
/// pipeline (one entry in Raft at a time) whose tasks hand each write on, and every extra
/// worker adds wake-ups of threads that find nothing to steal: measured on 2 CPUs, one
/// worker against two (BENCHMARKS.md, issue 35) costs 0.78–0.90× the CPU per write and
/// gives three nodes sharing the CPUs 1.08–1.12× the writes and trivial jobs 1.08–1.15×
/// per second, but one node alone 0.96–0.98× the writes at 16 and 64 clients and a slower
/// 16-client row beside etcd. So the default stays; `--worker-threads` is the operator's.
fn worker_threads_default() -> u32 {
    slots_default().min(WORKER_THREADS_MAX)
}

/// The gossip address others reach `bind` at: `bind` itself, or, when it listens on all
/// interfaces, the `--advertise` host with the gossip port.
fn gossip_advertise(bind: SocketAddr, advertise: &str) -> Result<SocketAddr> {
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    let host = advertise.rsplit_once(':').map_or("", |(h, _)| h);
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            ServerError::Config(format!(
                "--gossip-bind {bind} listens on all interfaces and the --advertise host {host:?} is not an IP address; set --gossip-advertise"
            ))
        })?;
    Ok(SocketAddr::new(ip, bind.port()))
}

fn read_file(path: &Path) -> Result<Args> {
    let text = std::fs::read_to_string(path).map_err(|e| ServerError::io("read", path, e))?;
    toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layering {
    use super::*;

    fn from(args: &[&str]) -> Result<Config> {
        Config::from_args(std::iter::once("cathedral-server").chain(args.iter().copied()))
    }

    /// Every `[default: V]` the help prints for a flag is what the code uses: giving the
    /// flag V changes nothing. (Defaults that are descriptions, such as "the number of
    /// CPUs", are skipped.)
    #[test]
    fn the_help_states_the_defaults_in_use() {
        let defaults = from(&[]).unwrap();
        let mut checked = 0;
        for arg in Args::command().get_arguments() {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
                continue;
            };
            let help = help.to_string();
            let Some(v) = help
                .split("[default: ")
                .nth(1)
                .and_then(|r| r.split(']').next())
            else {
                continue;
            };
            if v.contains(' ') || v == "none" {
                continue; // a description ("the number of CPUs", "none"), not a value
            }
            let flag = format!("--{long}");
            let c = from(&[&flag, v]).unwrap_or_else(|e| panic!("{flag} {v}: {e}"));
            assert_eq!(c, defaults, "{flag}: the help says the default is {v}");
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} defaults checked");
    }

    #[test]
    fn the_file_holds_where_no_flag_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "heartbeat_interval_ms = 40\nelection_timeout_min_ms = 200\nelection_timeout_max_ms = 300\nnode_timeout_ms = 9000\noutput_retention_hours = 1\nrole = \"coordinator\"\njoin = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = from(&[
            "--config",
            file.to_str().unwrap(),
            "--heartbeat-interval-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(c.raft.heartbeat_interval_ms, 50, "the flag wins");
        assert_eq!(c.raft.election_timeout_min_ms, 200);
        assert_eq!(c.leader.node_timeout_ms, 9000);
        assert_eq!(c.output.retention_hours, 1);
        assert_eq!(c.role, Role::Coordinator);
        std::fs::write(&file, "role = \"leader\"\n").unwrap();
        let e = from(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("not a role"), "{e}");
        let e = from(&["--role", "leader"]).unwrap_err();
        assert!(e.to_string().contains("not a role"), "{e}");
    }
}
