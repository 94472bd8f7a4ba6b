//! ClusterSim: whole Cathedral clusters in one process, on simulated time and a simulated
//! network, from one `u64` seed.
//!
//! Each node is the real server — Raft, the batcher, the leader's scheduler, crons, the
//! worker, gossip membership, output copies — started with [`cathedral_server::start_with`]
//! inside a [turmoil] host. What is replaced is only at the node's edges
//! ([`cathedral_server::edges`]):
//!
//! - **network**: gRPC (the public API and the peer calls) over turmoil's TCP, which
//!   delays, loses (by partition), holds and reorders per the run's seed;
//! - **gossip**: over turmoil's UDP ([`udp_gossip`]), so the partitions, one-way losses,
//!   holds and latency that reach gRPC reach it too, and losing [`GOSSIP_LOSS_PERMILLE`]
//!   datagrams in a thousand besides (the datagram carries a ticket to the envelope;
//!   chitchat's codec is exercised on real sockets by the server's tests);
//! - **clock**: turmoil's simulated time from a fixed epoch, skewed per node (and the
//!   wall clock that libraries read themselves, unskewed: [`wallclock`]);
//! - **randomness**: the thread's generator (`cathedral_consensus::rng`) seeded from the
//!   run's seed — openraft's election timeouts, incarnations, ids;
//! - **executor**: [`SimStarter`], attempts that take simulated time and end as their
//!   command says (see [`SimStarter`]); real processes stay in the black-box tests.
//!
//! Disk: the real storage engine on a temporary directory per node (on `/dev/shm` where
//! there is one: a run waits for no real disk), under the engine's own fault hook
//! (`cathedral_storage::disk_faults`, which sees every write and sync the engine makes —
//! not turmoil's simulated file system, which models none of `pwritev`, `fallocate` and
//! `mmap`). A crash drops the host's runtime and the node with it, and the disk loses
//! what was written since each file's last sync (a suffix of those writes, the first torn
//! at a sector). With the inline writer a round's write and its fsync happen in one step,
//! so what a crash finds unsynced is mostly what a failed fsync left behind.
//!
//! Faults, from the seed, one at a time in the first [`FAULTS_UNTIL`] and then healed: a
//! node isolated, one-way loss, a held link, a crash and a restart from its directory, a
//! log write or fsync failing with EIO (the engine stops, the node stops itself —
//! `Running::failed` — and is restarted later as a supervisor would, its disk having
//! lost what was not synced), a minority split from the majority, a member replaced (a
//! new node joins; the client removes an old one through the API and its host stops), and
//! clock skew throughout. The client keeps a cron firing every [`CRON_EVERY_SECS`]
//! seconds, so the log is written throughout the faults.
//!
//! Checks after every run (see [`Report::violations`]): no acknowledged job lost, no
//! submission applied twice, no cron fire launched twice (and the cron fired), no node
//! went on after its disk failed, none succeeded twice, none ran when a dependency did not
//! succeed before it was assigned (by the log indexes in the node's event stream), every
//! node's event stream the same, every node at one applied
//! index with one state hash once the faults healed, checkpoint hashes equal and no
//! divergence counted, every node's log equal up to the lowest applied index, each node's
//! state equal to an offline replay of its own directory, no node in a joint configuration
//! (a membership change left half done). (Terms in which two nodes led
//! are counted, not refused: openraft's leader ids are `(term, node)`, and two candidates
//! of one term may both win, the higher node superseding.)

pub mod entropy;
pub mod lossy;
pub mod udp_gossip;
pub mod wallclock;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use cathedral_executor::{
    Attempt, AttemptResult, AttemptSpec, AttemptStarter, Exit, SandboxChoice,
};
use cathedral_server::api::v1 as pb;
use cathedral_server::api::v1::cluster_service_client::ClusterServiceClient;
use cathedral_server::api::v1::cron_service_client::CronServiceClient;
use cathedral_server::api::v1::job_service_client::JobServiceClient;
use cathedral_server::edges::{Clock, Conn, Edges, Listener, Network};
use cathedral_server::{start_with, Config, Node};
use cathedral_storage::disk_faults::{self, Disk};
use futures_util::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

/// Size of the nodes' log segments (the server's default is 64 MiB).
pub const LOG_SEGMENT_BYTES: u64 = 16 << 10;

/// Where runs keep their data directories when the host has it (tmpfs).
pub const SHM_DIR: &str = "/dev/shm";

/// The default [`Plan::tick`].
pub const TICK_DEFAULT: Duration = Duration::from_millis(1);

/// Entries between the leader's checkpoints in a run.
pub const CHECKPOINT_INTERVAL: u64 = 20;

/// The simulation's epoch: every run's clock starts here (2024-01-01).
pub const EPOCH_SECS: u64 = 1_704_067_200;
/// The gRPC port of every node (each node is its own host).
pub const GRPC_PORT: u16 = 7000;
/// The HTTP port of every node.
pub const HTTP_PORT: u16 = 7080;
/// The gossip port of every node.
pub const GOSSIP_PORT: u16 = 7001;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// Nodes of the cluster (coordinators; the first initialises it).
    pub nodes: usize,
    /// Jobs the client submits.
    pub jobs: usize,
    /// Simulated time the run may take before it fails.
    pub limit: Duration,
    /// Faults from the seed: partitions, crashes and restarts, clock skew, disk faults,
    /// and gossip datagrams lost at [`GOSSIP_LOSS_PERMILLE`].
    pub faults: bool,
    /// How much simulated time each step runs every host for; messages arrive at step
    /// boundaries, so it is also the network's time resolution.
    pub tick: Duration,
    /// The client goes on (the cron firing, the cluster writing) at least this long in
    /// simulated time, however soon its jobs end.
    pub at_least: Duration,
    /// The faults, at their simulated times, instead of the ones the seed draws: a bug's
    /// regression keeps the schedule that found it when the drawing changes.
    pub schedule: Option<Vec<(Duration, Event)>>,
}

impl Plan {
    pub fn new(seed: u64) -> Plan {
        Plan {
            seed,
            nodes: 3,
            jobs: 30,
            limit: Duration::from_secs(240),
            faults: true,
            tick: TICK_DEFAULT,
            at_least: Duration::ZERO,
            schedule: None,
        }
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub seed: u64,
    /// Jobs the client was answered for (acknowledged), by id.
    pub acked: BTreeSet<u64>,
    /// Per node: its applied index and state hash at the end.
    pub states: BTreeMap<String, (u64, [u8; 32])>,
    /// BLAKE3 of the log entries every node holds up to the lowest applied index.
    pub log_hash: Option<[u8; 32]>,
    /// The first node's log up to that index, an entry a line (term, kind, what it decided).
    pub log: Vec<String>,
    /// Faults injected, in order, with the simulated time.
    pub faults: Vec<String>,
    /// What went wrong (empty: the run passed).
    pub violations: Vec<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// Checkpoint indexes whose hashes were compared across the nodes.
    pub checkpoints: usize,
    /// Nodes whose data directory was replayed offline and matched.
    pub replayed: usize,
    /// Nodes whose event streams were compared (those whose feed starts at the log's start).
    pub streams: usize,
    /// Terms in which more than one node led (see the run's end).
    pub shared_terms: usize,
    /// Fires of the run's cron that launched a job (on the node that saw most).
    pub cron_fires: usize,
    /// Disk faults that fired (a write or sync failed), per node.
    pub disk_faults_fired: BTreeMap<usize, u64>,
    /// Nodes that stopped themselves after their disk failed (fail-stop).
    pub fail_stops: usize,
    /// Writes lost at crashes (not synced when the node died), and of them torn.
    pub lost_writes: usize,
    pub torn_writes: usize,
}

/// The simulation's clock for one node: turmoil's time since the fixed epoch, `skew_ms`
/// off.
#[derive(Debug)]
pub struct SimClock {
    pub skew_ms: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let t = turmoil::since_epoch().unwrap_or_default().as_millis() as u64;
        t.saturating_add_signed(self.skew_ms)
    }
}

/// gRPC over turmoil's TCP.
#[derive(Debug)]
pub struct SimNet;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Conn>> {
        Box::pin(async move {
            let (s, remote) = self.0.accept().await?;
            let local = s.local_addr()?;
            Ok(Conn {
                io: Box::new(s),
                local,
                remote,
            })
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for SimNet {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let l = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(l)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Conn>> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            let local = s.local_addr()?;
            let remote = s.peer_addr()?;
            Ok(Conn {
                io: Box::new(s),
                local,
                remote,
            })
        })
    }
}

/// A channel to `host` over the simulated network (for the run's client).
pub fn channel(host: &str) -> Channel {
    let target = format!("{host}:{GRPC_PORT}");
    Endpoint::from_shared(format!("http://{target}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect_with_connector_lazy(tower_service(target))
}

fn tower_service(
    target: String,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<Conn>,
    Error = io::Error,
    Future = BoxFuture<'static, io::Result<hyper_util::rt::TokioIo<Conn>>>,
> + Clone {
    tower::service_fn(move |_: tonic::transport::Uri| {
        let c = SimNet.connect(target.clone());
        Box::pin(async move { c.await.map(hyper_util::rt::TokioIo::new) })
            as BoxFuture<'static, io::Result<hyper_util::rt::TokioIo<Conn>>>
    })
}

/// Attempts that take simulated time and end as their command says: `sleep MS` succeeds
/// after MS milliseconds, `fail MS` exits 1 after MS, `hang` runs until cancelled, anything
/// else succeeds at once. A cancel ends the attempt at once with SIGTERM's signal.
pub struct SimStarter;

impl AttemptStarter for SimStarter {
    fn start_attempt(
        &self,
        spec: AttemptSpec,
        _choice: SandboxChoice,
    ) -> BoxFuture<'static, cathedral_executor::Result<Attempt>> {
        Box::pin(async move {
            let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            let words: Vec<&str> = spec.command.iter().map(String::as_str).collect();
            let (ms, exit) = match words.as_slice() {
                ["sleep", ms] => (ms.parse().unwrap_or(0), Some(Exit::Code(0))),
                ["fail", ms] => (ms.parse().unwrap_or(0), Some(Exit::Code(1))),
                ["hang"] => (0, None),
                _ => (0, Some(Exit::Code(0))),
            };
            let timeout_ms = spec.timeout_ms;
            let task = tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let run = async {
                    match exit {
                        Some(e) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            e
                        }
                        None => std::future::pending().await,
                    }
                };
                let limit = async {
                    if timeout_ms == 0 {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(Duration::from_millis(timeout_ms)).await
                    }
                };
                let exit = tokio::select! {
                    biased;
                    _ = cancelled => Exit::Signal(15),
                    _ = limit => Exit::TimedOut,
                    e = run => e,
                };
                AttemptResult {
                    exit,
                    duration_ms: started.elapsed().as_millis() as u64,
                    output_tail: Vec::new(),
                    output_bytes: 0,
                    output_truncated: false,
                    sandbox: "sim",
                    killed_because: None,
                    limits: "simulated".into(),
                    cpu_ms: None,
                    memory_peak_bytes: None,
                    outputs: BTreeMap::new(),
                    outputs_refused: Vec::new(),
                }
            });
            Ok(Attempt::from_task(task, cancel, PathBuf::new(), "sim"))
        })
    }
}

/// What the harness needs to start a host.
struct Hosts {
    root: PathBuf,
    nodes: Nodes,
    /// Gossip over the simulated network, losing datagrams besides.
    gossip: udp_gossip::UdpGossip,
    /// Each node's disk (its data directory's faults), attached when it is added.
    disks: RefCell<BTreeMap<usize, Arc<Disk>>>,
    /// Nodes that stopped themselves (fail-stop after their disk failed), with the cause,
    /// until they are restarted.
    stopped: Rc<RefCell<BTreeMap<usize, String>>>,
}

impl Hosts {
    /// Registers node `i` (its directory under the run's root), joining through node
    /// `join` unless it is the first.
    fn add(&self, sim: &mut turmoil::Sim<'_>, i: usize, skew_ms: i64, join: Option<usize>) {
        let dir = self.root.join(host_name(i));
        self.disks.borrow_mut().insert(i, disk_faults::attach(&dir));
        let nodes = self.nodes.clone();
        let gossip = self.gossip.clone();
        let stopped = self.stopped.clone();
        sim.host(host_name(i), move || {
            let dir = dir.clone();
            let nodes = nodes.clone();
            let gossip = gossip.clone();
            let stopped = stopped.clone();
            async move {
                let edges = Edges {
                    clock: Arc::new(SimClock { skew_ms }),
                    network: Some(Arc::new(SimNet)),
                    starter: Some(Arc::new(SimStarter)),
                    gossip: Some(Arc::new(gossip)),
                    inline_storage: true,
                };
                let running = start_with(node_config(i, &dir, join), edges)
                    .await
                    .map_err(|e| format!("{}: start: {e}", host_name(i)))?;
                nodes
                    .borrow_mut()
                    .insert(host_name(i), Arc::downgrade(&running.node));
                // As the process does: it runs until the node cannot go on (fail-stop),
                // then exits; the harness restarts it later, as a supervisor would.
                let cause = running.failed().await;
                stopped.borrow_mut().insert(i, cause);
                nodes.borrow_mut().remove(&host_name(i));
                drop(running);
                Ok(())
            }
        });
    }
}

impl Hosts {
    /// Node `n` is restarted as after a crash, its disk having lost what was not synced;
    /// a disk fault asked for and not fired is dropped. A node whose fault fired must have
    /// stopped itself (fail-stop), and only such a node may have.
    fn recover(&self, sim: &mut turmoil::Sim<'_>, n: usize, dice: &mut Dice, report: &mut Report) {
        let disk = self.disks.borrow()[&n].clone();
        let fired = disk.fired() > report.disk_faults_fired.get(&n).copied().unwrap_or(0);
        disk.clear_faults();
        let stopped = self.stopped.borrow_mut().remove(&n);
        // A failure the log's own thread met (the acknowledgment file's sync) stops
        // the log at once and the node within `LOG_FAILURE_CHECK`: a stopped log
        // is a fail-stop on its way.
        let log_stopped = self
            .nodes
            .borrow()
            .get(&host_name(n))
            .and_then(Weak::upgrade)
            .and_then(|node| node.log_failure())
            .is_some();
        match (fired, &stopped) {
            (true, None) if !log_stopped => report.violations.push(format!(
                "{}: its disk failed a write or sync and it went on (no fail-stop)",
                host_name(n)
            )),
            (true, _) => {
                if let Some(cause) = &stopped {
                    report.faults.push(format!(
                        "{:.3}s {} had stopped: {cause}",
                        sim.elapsed().as_secs_f64(),
                        host_name(n)
                    ));
                }
            }
            (false, Some(cause)) => report.violations.push(format!(
                "{} stopped itself though its disk fault never fired: {cause}",
                host_name(n)
            )),
            (false, None) => {}
        }
        if fired {
            report.fail_stops += 1;
        }
        report.disk_faults_fired.insert(n, disk.fired());
        // A host whose node stopped itself has no software running: crash() then
        // does nothing, and its runtime (no longer ticked, holding the stopped
        // log) is dropped by the bounce below — after the disk lost what it lost,
        // which is safe because a stopped log writes nothing more.
        sim.crash(host_name(n).as_str());
        self.nodes.borrow_mut().remove(&host_name(n));
        self.lose_unsynced(n, dice, report);
        sim.bounce(host_name(n).as_str());
    }

    /// Node `n`'s disk loses what was not synced (it just crashed); what it lost goes in
    /// the report.
    fn lose_unsynced(&self, n: usize, dice: &mut Dice, report: &mut Report) {
        let disk = self.disks.borrow()[&n].clone();
        let unsynced = disk.unsynced_writes();
        match disk.lose_unsynced(|k| dice.below(k)) {
            Ok(lost) => {
                if unsynced > 0 {
                    report.faults.push(format!(
                        "{}: {unsynced} writes not synced at its crash; lost {} ({} torn) in {} files",
                        host_name(n),
                        lost.writes,
                        lost.torn,
                        lost.files
                    ));
                }
                report.lost_writes += lost.writes;
                report.torn_writes += lost.torn;
            }
            Err(e) => report
                .violations
                .push(format!("{}: losing unsynced writes: {e}", host_name(n))),
        }
    }
}

/// A member's removal, asked by the harness and carried out by the client.
#[derive(Debug, Default)]
struct Removal {
    /// The node to remove, once the nemesis asks.
    asked: Option<usize>,
    /// Set by the client once the cluster answered the removal.
    done: bool,
    /// Nodes removed (their hosts stopped for good).
    gone: BTreeSet<usize>,
}

/// One fault, or its end.
#[derive(Debug, Clone)]
pub enum Event {
    /// `node` cut off from every other node (both ways), gossip too.
    Isolate(usize),
    /// Messages from `from` to `to` dropped (one way, gossip's too).
    OneWay {
        from: usize,
        to: usize,
    },
    /// Messages between `a` and `b` held back (a frozen link), then released.
    Hold(usize, usize),
    Release(usize, usize),
    /// The node's process dies: its runtime and everything in memory are gone, and its
    /// disk loses what was written but not synced (a suffix of those writes, the first
    /// torn: see `disk_faults`).
    Crash(usize),
    /// It starts again from its directory.
    Restart(usize),
    /// The node's next write (`sync: false`) or sync of one of the engine's files fails
    /// with EIO: the engine must stop, and the node with it.
    DiskFault {
        node: usize,
        sync: bool,
        on: EngineFile,
    },
    /// The node is restarted as after a crash (a node that stopped itself is restarted;
    /// one whose fault did not fire yet is crashed first, the fault dropped).
    Recover(usize),
    /// The nodes in the set cut off from the others (a minority against a majority).
    Split(Vec<usize>),
    /// A new node joins (through a node that stays).
    Join {
        node: usize,
        via: usize,
    },
    /// A member is removed through the API (the client asks; its host then stops).
    Remove(usize),
    /// Every cut link repaired.
    Heal,
}

impl Event {
    /// Carries out the event. Long only by count: one short arm per kind of fault.
    fn apply(
        &self,
        sim: &mut turmoil::Sim<'_>,
        run: &Hosts,
        removal: &RefCell<Removal>,
        registered: &mut usize,
        dice: &mut Dice,
        report: &mut Report,
    ) {
        let gone = removal.borrow().gone.clone();
        // A fault aimed at a removed node is moot (its host is stopped for good).
        let aimed: Vec<usize> = match self {
            Event::Isolate(n)
            | Event::Crash(n)
            | Event::Restart(n)
            | Event::Remove(n)
            | Event::DiskFault { node: n, .. }
            | Event::Recover(n) => vec![*n],
            Event::OneWay { from: a, to: b } | Event::Hold(a, b) | Event::Release(a, b) => {
                vec![*a, *b]
            }
            Event::Split(side) => side.clone(),
            Event::Join { via, .. } => vec![*via],
            Event::Heal => vec![],
        };
        if aimed.iter().any(|n| gone.contains(n)) {
            return;
        }
        let hosts: Vec<String> = (0..*registered)
            .filter(|i| !gone.contains(i))
            .map(host_name)
            .collect();
        match self {
            Event::Isolate(n) => {
                let me = host_name(*n);
                for other in hosts.iter().filter(|h| **h != me) {
                    sim.partition(me.as_str(), other.as_str());
                }
            }
            Event::Split(minority) => {
                let side: BTreeSet<String> = minority.iter().map(|n| host_name(*n)).collect();
                for a in hosts.iter().filter(|h| side.contains(*h)) {
                    for b in hosts.iter().filter(|h| !side.contains(*h)) {
                        sim.partition(a.as_str(), b.as_str());
                    }
                }
            }
            Event::OneWay { from, to } => {
                sim.partition_oneway(host_name(*from).as_str(), host_name(*to).as_str())
            }
            Event::Hold(a, b) => sim.hold(host_name(*a).as_str(), host_name(*b).as_str()),
            Event::Release(a, b) => sim.release(host_name(*a).as_str(), host_name(*b).as_str()),
            Event::Join { node, via } => {
                run.add(sim, *node, 0, Some(*via));
                *registered = (*registered).max(node + 1);
            }
            Event::Remove(n) => removal.borrow_mut().asked = Some(*n),
            Event::Crash(n) => {
                sim.crash(host_name(*n).as_str());
                run.nodes.borrow_mut().remove(&host_name(*n));
                run.lose_unsynced(*n, dice, report);
            }
            Event::Restart(n) => {
                // Only a crashed node is restarted here; one that stopped itself with no
                // disk fault asked for met a failure of its own.
                if let Some(cause) = run.stopped.borrow_mut().remove(n) {
                    report.violations.push(format!(
                        "{} stopped itself with no disk fault: {cause}",
                        host_name(*n)
                    ));
                }
                sim.bounce(host_name(*n).as_str())
            }
            Event::DiskFault { node, sync, on } => {
                let disk = run.disks.borrow()[node].clone();
                if *sync {
                    disk.fail_next_sync_of(on.suffix(), libc::EIO);
                } else {
                    disk.fail_next_write_of(on.suffix(), libc::EIO);
                }
            }
            Event::Recover(n) => run.recover(sim, *n, dice, report),
            Event::Heal => {
                for a in &hosts {
                    for b in &hosts {
                        if a < b {
                            sim.repair(a.as_str(), b.as_str());
                        }
                    }
                }
            }
        }
    }
}

/// The files of the engine a disk fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineFile {
    /// A log segment (not the spare one being prepared, `prealloc.tmp`).
    Segment,
    /// The acknowledgment file (`log/acked`).
    Acked,
    /// The metadata (vote, commit, purges), replaced whole through `meta.tmp`.
    Meta,
    /// The metadata's second copy, replaced after the first through `meta.mirror.tmp`: a
    /// fault here leaves the two copies at different versions.
    MetaMirror,
    /// The spare segment (`prealloc.tmp`) as it becomes the next segment: its header.
    Spare,
}

impl EngineFile {
    /// The end of the file names it stands for.
    fn suffix(self) -> &'static str {
        match self {
            EngineFile::Segment => ".seg",
            EngineFile::Acked => "acked",
            EngineFile::Meta => "meta.tmp",
            EngineFile::MetaMirror => "meta.mirror.tmp",
            EngineFile::Spare => "prealloc.tmp",
        }
    }
}

/// Gossip datagrams lost, in a thousand, in a run with faults (every one of them drawn
/// from the seed): peers' tags and liveness must still converge. (gRPC's loss is TCP's:
/// delay, which the latency range models, or a cut connection, which partitions do.)
pub const GOSSIP_LOSS_PERMILLE: u64 = 20;

/// Most nodes a run may have.
pub const MAX_NODES: usize = 7;

/// The run's faults, decided from its seed before it starts: one at a time, each healed
/// before the next, within the first [`FAULTS_UNTIL`] of simulated time; everything
/// healed after it, so the cluster must then finish every acknowledged job.
struct Nemesis;

/// How long the nodes have, after the client is done and every fault healed, to apply
/// the same entries.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Faults happen before this much simulated time.
pub const FAULTS_UNTIL: Duration = Duration::from_secs(20);

impl Nemesis {
    fn schedule(dice: &mut Dice, nodes: usize) -> Vec<(Duration, Event)> {
        let mut out = Vec::new();
        let mut replaced = false;
        let mut t = Duration::from_millis(1_500 + dice.below(1_000));
        while t < FAULTS_UNTIL {
            let lasts = Duration::from_millis(300 + dice.below(4_000));
            let n = dice.below(nodes as u64) as usize;
            let m = (n + 1 + dice.below(nodes as u64 - 1) as usize) % nodes;
            if !replaced && (3..MAX_NODES).contains(&nodes) && dice.below(3) == 0 {
                // One member replaced: a new node joins, then an old one is removed.
                replaced = true;
                let victim = dice.below(nodes as u64) as usize;
                let via = (victim + 1) % nodes;
                out.push((t, Event::Join { node: nodes, via }));
                out.push((t + lasts, Event::Remove(victim)));
                t += lasts + Duration::from_millis(3_000 + dice.below(2_000));
                continue;
            }
            let (start, end) = match dice.below(7) {
                0 => (Event::Isolate(n), Event::Heal),
                4 if nodes >= 4 => {
                    // A minority (two of five, say) apart from the majority.
                    let size = 1 + dice.below((nodes as u64 - 1) / 2) as usize;
                    let minority = (0..size).map(|k| (n + k) % nodes).collect();
                    (Event::Split(minority), Event::Heal)
                }
                4 => (Event::Isolate(n), Event::Heal),
                1 => (Event::OneWay { from: n, to: m }, Event::Heal),
                2 => (Event::Hold(n, m), Event::Release(n, m)),
                5 => (
                    Event::DiskFault {
                        node: n,
                        sync: dice.below(2) == 0,
                        on: match dice.below(8) {
                            0 => EngineFile::Meta,
                            1 => EngineFile::MetaMirror,
                            2 => EngineFile::Acked,
                            3 => EngineFile::Spare,
                            _ => EngineFile::Segment,
                        },
                    },
                    Event::Recover(n),
                ),
                _ => (Event::Crash(n), Event::Restart(n)),
            };
            out.push((t, start));
            out.push((t + lasts, end));
            t += lasts + Duration::from_millis(200 + dice.below(2_000));
        }
        out.push((t, Event::Heal));
        out
    }
}

/// The nodes a run started, as the harness sees them (weak: a crash must drop the node,
/// its log and the directory's lock).
type Nodes = Rc<RefCell<BTreeMap<String, Weak<Node>>>>;

fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// A small deterministic generator for the run's own choices (faults, targets); the
/// nodes draw from the thread's seeded generator.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        entropy::next(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn node_config(i: usize, dir: &std::path::Path, join: Option<usize>) -> Config {
    let name = host_name(i);
    let ip = turmoil::lookup(name.as_str());
    let mut args = vec![
        "cathedral-server".to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--bind".into(),
        format!("0.0.0.0:{GRPC_PORT}"),
        "--advertise".into(),
        format!("{name}:{GRPC_PORT}"),
        "--http".into(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--gossip-bind".into(),
        format!("{ip}:{GOSSIP_PORT}"),
        "--gossip-advertise".into(),
        format!("{ip}:{GOSSIP_PORT}"),
        "--role".into(),
        "coordinator".into(),
        "--metrics".into(),
        "false".into(),
        "--slots".into(),
        "4".into(),
        "--docker-host".into(),
        "none".into(),
        // Checkpoints often enough that a run holds several: every node's state hash at
        // each is compared, by the nodes themselves and by the checks.
        "--checkpoint-interval".into(),
        CHECKPOINT_INTERVAL.to_string(),
        // Small segments: a run rolls over several times (each roll, and a crash during
        // one, is exercised), and preallocating and scanning them costs little.
        "--log-segment-bytes".into(),
        LOG_SEGMENT_BYTES.to_string(),
    ];
    if let Some(via) = join {
        args.push("--join".into());
        args.push(format!("{}:{GRPC_PORT}", host_name(via)));
        args.push("--seeds".into());
        args.push(format!(
            "{}:{GOSSIP_PORT}",
            turmoil::lookup(host_name(via).as_str())
        ));
    }
    Config::from_args(args).expect("the simulation's settings are valid")
}

/// Runs one plan to its end and checks it, on a thread of its own (whose OS entropy,
/// thread generator and blocking work follow the run: see [`entropy`]).
pub fn run(plan: &Plan) -> Report {
    // One run at a time in a process, each starting from the same place in tokio's task
    // ids (see [`align_task_ids`]): tokio numbers tasks from one process-wide counter,
    // and a runtime's tasks are dropped at a crash in the order of their ids' low bits;
    // two runs at once would number each other's tasks. Runs in parallel are processes
    // (`sim/tests/sim.rs`).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plan = plan.clone();
    std::thread::Builder::new()
        .name(format!("sim-{}", plan.seed))
        .spawn(move || {
            entropy::seed_thread(Some(plan.seed));
            wallclock::set(Some(Duration::from_secs(EPOCH_SECS)));
            let report = run_here(&plan);
            wallclock::set(None);
            report
        })
        .expect("a thread for the run")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The sharded task lists of a tokio runtime: a task lives in list `id % n` (n is 4 for a
/// current-thread runtime, a power of two), and a runtime being dropped — a host's crash —
/// drops its tasks list by list. Each drop closes that task's sockets, and turmoil draws
/// every message's latency from the run's generator in the order the messages are sent,
/// so which task went first changed the rest of the run.
pub const TASK_ID_ALIGN: u64 = 64;

/// Spawns empty tasks until tokio's next task id is a multiple of [`TASK_ID_ALIGN`], so a
/// run's tasks land in the same lists whatever ran in the process before it.
fn align_task_ids() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to align task ids");
    rt.block_on(async {
        loop {
            let task = tokio::spawn(async {});
            let id: u64 = task
                .id()
                .to_string()
                .parse()
                .expect("a task id is a number");
            let _ = task.await;
            if id % TASK_ID_ALIGN == TASK_ID_ALIGN - 1 {
                break;
            }
        }
    });
}

/// [`run`] on this thread.
///
/// Long on purpose: the hosts, the client's script and the checks share the run's
/// handles; split, each part would take them all as arguments.
fn run_here(plan: &Plan) -> Report {
    assert!(
        (1..=MAX_NODES).contains(&plan.nodes),
        "1..={MAX_NODES} nodes"
    );
    cathedral_consensus::rng::seed_thread(Some(plan.seed));
    cathedral_consensus::blocking::run_inline_here(true);
    align_task_ids();
    // Memory-backed where the host has it: the engine's fsyncs then cost nothing, and the
    // simulated cluster does not wait for a real disk (it has no time of its own to lose).
    let shm = std::path::Path::new(SHM_DIR);
    let root = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(plan.limit)
        .tick_duration(plan.tick)
        .tcp_capacity(4096)
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .build();
    let nodes: Nodes = Rc::default();
    let mut dice = Dice(plan.seed ^ 0x5EED);
    let hosts = Hosts {
        root: root.path().to_path_buf(),
        nodes: nodes.clone(),
        gossip: udp_gossip::UdpGossip::new(
            if plan.faults { GOSSIP_LOSS_PERMILLE } else { 0 },
            plan.seed ^ 0x1055,
        ),
        disks: RefCell::default(),
        stopped: Rc::default(),
    };
    for i in 0..plan.nodes {
        let skew_ms = if plan.faults && i > 0 {
            dice.below(2_001) as i64 - 1_000
        } else {
            0
        };
        hosts.add(&mut sim, i, skew_ms, (i > 0).then_some(0));
    }
    // A member removed (by the client, through the API) and its host stopped for good.
    let removal: Rc<RefCell<Removal>> = Rc::default();
    let acked: Rc<RefCell<BTreeSet<u64>>> = Rc::default();
    let jobs = plan.jobs;
    let n = plan.nodes;
    let at_least = plan.at_least;
    {
        let acked = acked.clone();
        let remover = removal.clone();
        let watch = removal.clone();
        let mut dice = Dice(plan.seed ^ 0xC11E);
        sim.client("client", async move {
            let start = tokio::time::Instant::now();
            tokio::task::spawn_local(remove_when_asked(remover, n));
            cron(true, &mut dice, n).await;
            for k in 0..jobs {
                if k % WORKFLOW_EVERY == WORKFLOW_EVERY - 1 {
                    let ids = submit_workflow(k, &mut dice, n).await;
                    acked.borrow_mut().extend(ids);
                    continue;
                }
                let spec = pb::JobSpec {
                    name: format!("job-{k}"),
                    command: vec!["sleep".into(), (dice.below(500) + 1).to_string()],
                    ..Default::default()
                };
                let request_id = format!("sim-{k}");
                // Any node: a follower forwards to the leader. The same request id on every
                // try, so a retry is the same request.
                let id = loop {
                    let host = host_name(dice.below(n as u64) as usize);
                    let mut c = JobServiceClient::new(channel(&host));
                    let r = c
                        .submit_job(pb::SubmitJobRequest {
                            spec: Some(spec.clone()),
                            request_id: request_id.clone(),
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(r) => break r.into_inner().job_id,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                acked.borrow_mut().insert(id);
                tokio::time::sleep(Duration::from_millis(dice.below(800))).await;
            }
            // Wait until every acknowledged job is terminal on some node. A job seen
            // terminal stays so (an applied end is never undone), so each poll asks only
            // about the jobs not yet seen ended, over one connection.
            let mut ended: BTreeSet<u64> = BTreeSet::new();
            'wait: loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut all = true;
                let ids: Vec<u64> = acked
                    .borrow()
                    .iter()
                    .filter(|id| !ended.contains(id))
                    .copied()
                    .collect();
                // A node that is still a member (the first one not removed).
                let ask = (0..n)
                    .find(|i| !watch.borrow().gone.contains(i))
                    .unwrap_or(0);
                let mut c = JobServiceClient::new(channel(&host_name(ask)));
                for id in ids {
                    match c
                        .get_job(pb::GetJobRequest {
                            job_id: id,
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(j) if terminal(j.get_ref().state) => {
                            ended.insert(id);
                        }
                        _ => {
                            all = false;
                            break;
                        }
                    }
                }
                // Done once every fault is healed (the nemesis's last heal comes after
                // FAULTS_UNTIL) and every acknowledged job ended.
                if all && start.elapsed() > (FAULTS_UNTIL + Duration::from_secs(6)).max(at_least) {
                    break 'wait;
                }
            }
            cron(false, &mut dice, n).await;
            Ok(())
        });
    }
    let mut report = Report {
        seed: plan.seed,
        ..Report::default()
    };
    let mut schedule = match &plan.schedule {
        Some(given) => given.clone(),
        None if plan.faults => Nemesis::schedule(&mut Dice(plan.seed ^ 0xFA17), plan.nodes),
        None => Vec::new(),
    };
    schedule.reverse();
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut registered = plan.nodes;
    let mut steps = 0u64;
    let outcome = loop {
        let stepped = sim.step();
        wallclock::set(Some(sim.since_epoch()));
        match stepped {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        steps += 1;
        while schedule.last().is_some_and(|(at, _)| *at <= sim.elapsed()) {
            let (at, event) = schedule.pop().expect("an event");
            report
                .faults
                .push(format!("{:.3}s {event:?}", at.as_secs_f64()));
            event.apply(
                &mut sim,
                &hosts,
                &removal,
                &mut registered,
                &mut dice,
                &mut report,
            );
        }
        // A removal the cluster answered: the removed node's host stops for good.
        let finished = {
            let mut r = removal.borrow_mut();
            match (r.done, r.asked) {
                (true, Some(n)) => {
                    r.asked = None;
                    r.done = false;
                    r.gone.insert(n);
                    Some(n)
                }
                _ => None,
            }
        };
        if let Some(n) = finished {
            report.faults.push(format!(
                "{:.3}s removed {}",
                sim.elapsed().as_secs_f64(),
                host_name(n)
            ));
            sim.crash(host_name(n).as_str());
            nodes.borrow_mut().remove(&host_name(n));
            // Gone for good: a fail-stop it met on its way out needs no restart.
            hosts.stopped.borrow_mut().remove(&n);
        }
        if steps.is_multiple_of(10) {
            for node in nodes.borrow().values().filter_map(Weak::upgrade) {
                // Raft's server metrics: the role and vote alone, not a copy of the whole.
                let m = node.raft.server_metrics();
                let m = m.borrow();
                if m.current_leader == Some(node.id) {
                    leaders
                        .entry(m.vote.leader_id().get_term())
                        .or_default()
                        .insert(node.id);
                }
            }
        }
    };
    // The client is done and every fault healed: the nodes must now agree. Step until
    // every node applied the same index (the followers catch up) and none is in a joint
    // configuration (a promotion's two steps take a few steps of the simulation, and a
    // joint configuration left behind is finished by the leader's next upkeep), for at
    // most SETTLE_MAX.
    if outcome.is_ok() {
        let settle_until = sim.elapsed() + SETTLE_MAX;
        let settled = loop {
            let applied: BTreeSet<u64> = nodes
                .borrow()
                .values()
                .filter_map(Weak::upgrade)
                .map(|n| n.applied_index())
                .collect();
            let expected = registered - removal.borrow().gone.len();
            let joint = nodes.borrow().values().filter_map(Weak::upgrade).any(|n| {
                n.raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_joint_config()
                    .len()
                    > 1
            });
            if applied.len() == 1 && nodes.borrow().len() == expected && !joint {
                break true;
            }
            if sim.elapsed() > settle_until {
                break false;
            }
            let stepped = sim.step();
            wallclock::set(Some(sim.since_epoch()));
            if let Err(e) = stepped {
                report.violations.push(format!("settling: {e}"));
                break true;
            }
        };
        if !settled {
            report.violations.push(format!(
                "the nodes did not settle (one applied index, no joint configuration) within {SETTLE_MAX:?} after the last fault"
            ));
        }
    }
    report.simulated = sim.elapsed();
    if let Err(e) = outcome {
        report
            .violations
            .push(format!("the run did not finish: {e}"));
    }
    // openraft's leader ids are (term, node) and totally ordered: two candidates of one
    // term may both win, the higher node id superseding (its "advanced" mode; one leader
    // per term would be its `single-term-leader` feature, which changes the log ids on
    // disk). So a term with two leaders is recorded, not a violation; what must hold —
    // one committed history — is what the log, state, checkpoint and replay checks check.
    report.shared_terms = leaders.values().filter(|ids| ids.len() > 1).count();
    report.acked = acked.borrow().clone();
    for (n, cause) in hosts.stopped.borrow().iter() {
        report.violations.push(format!(
            "{} stopped itself and was never restarted: {cause}",
            host_name(*n)
        ));
    }
    check(&nodes, &mut report);
    for disk in hosts.disks.borrow().values() {
        disk_faults::detach(disk.dir());
    }
    cathedral_consensus::rng::seed_thread(None);
    cathedral_consensus::blocking::run_inline_here(false);
    report
}

/// The client's side of a member's removal: when the harness asks, find the member's id
/// from a node that stays and remove it through `ClusterService.RemoveNode`, retrying
/// until the cluster answers; then tell the harness.
async fn remove_when_asked(removal: Rc<RefCell<Removal>>, nodes: usize) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = {
            let r = removal.borrow();
            (!r.done).then_some(r.asked).flatten()
        };
        let Some(victim) = asked else { continue };
        let via = host_name((victim + 1) % nodes);
        let mut c = ClusterServiceClient::new(channel(&via));
        let Ok(st) = c.status(pb::StatusRequest {}).await else {
            continue;
        };
        let address = format!("{}:{GRPC_PORT}", host_name(victim));
        let Some(id) = st
            .into_inner()
            .members
            .iter()
            .find(|m| m.address == address)
            .map(|m| m.id)
        else {
            // No longer a member: an earlier call removed it, its answer lost on the way.
            removal.borrow_mut().done = true;
            continue;
        };
        if c.remove_node(pb::RemoveNodeRequest { node_id: id })
            .await
            .is_ok()
        {
            removal.borrow_mut().done = true;
        }
    }
}

/// Every this many submissions, the client submits a workflow instead of a job.
pub const WORKFLOW_EVERY: usize = 5;

/// A workflow `a → b → c` with `a → c` too; `a` fails one time in four (then `b` and `c`
/// are cancelled). Submitted like a job, retried under one request id; returns its jobs.
async fn submit_workflow(k: usize, dice: &mut Dice, n: usize) -> Vec<u64> {
    let a_fails = dice.below(4) == 0;
    let job = |key: &str, command: Vec<String>, after: &[&str]| pb::WorkflowJob {
        key: key.into(),
        spec: Some(pb::JobSpec {
            name: format!("wf-{k}-{key}"),
            command,
            ..Default::default()
        }),
        after: after.iter().map(|a| a.to_string()).collect(),
    };
    let ms = |d: &mut Dice| (d.below(300) + 1).to_string();
    let first = if a_fails { "fail" } else { "sleep" };
    let req = pb::SubmitWorkflowRequest {
        name: format!("wf-{k}"),
        jobs: vec![
            job("a", vec![first.into(), ms(dice)], &[]),
            job("b", vec!["sleep".into(), ms(dice)], &["a"]),
            job("c", vec!["sleep".into(), ms(dice)], &["a", "b"]),
        ],
        request_id: format!("sim-wf-{k}"),
        ..Default::default()
    };
    loop {
        let host = host_name(dice.below(n as u64) as usize);
        let mut c = JobServiceClient::new(channel(&host));
        match c.submit_workflow(req.clone()).await {
            Ok(r) => return r.into_inner().job_ids.into_values().collect(),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The run's cron: a short job every [`CRON_EVERY_SECS`] seconds while the client runs,
/// so that the log is written throughout the faults (a disk fault needs a write to fail)
/// and crons fire across leader changes (each fire must launch at most once).
pub const CRON_NAME: &str = "tick";
pub const CRON_EVERY_SECS: u64 = 2;

/// Asks any node, until one answers, to create ([`true`]) or delete the run's cron (one
/// request id per call: a retry is the same request).
async fn cron(create: bool, dice: &mut Dice, n: usize) {
    let spec = pb::CronSpec {
        name: CRON_NAME.into(),
        schedule: format!("*/{CRON_EVERY_SECS} * * * * *"),
        target: Some(pb::cron_spec::Target::Job(pb::JobSpec {
            name: format!("cron-{CRON_NAME}"),
            command: vec!["sleep".into(), "300".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    loop {
        let host = host_name(dice.below(n as u64) as usize);
        let mut c = CronServiceClient::new(channel(&host));
        let r = if create {
            c.create_cron(pb::CreateCronRequest {
                spec: Some(spec.clone()),
                request_id: "sim-cron-create".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
        } else {
            c.delete_cron(pb::DeleteCronRequest {
                name: CRON_NAME.into(),
                request_id: "sim-cron-delete".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
        };
        match r {
            Ok(()) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Succeeded
            | pb::JobState::Failed
            | pb::JobState::Cancelled
            | pb::JobState::TimedOut)
    )
}

/// The checks at the end of a run (see the module docs).
fn check(nodes: &Nodes, report: &mut Report) {
    let live: Vec<(String, Arc<Node>)> = nodes
        .borrow()
        .iter()
        .filter_map(|(k, w)| Some((k.clone(), w.upgrade()?)))
        .collect();
    check_states(&live, report);
    check_streams(&live, report);
    check_replays(&live, report);
    check_checkpoints(&live, report);
    check_logs(&live, report);
    check_memberships(&live, report);
}

/// Each node's state: every acknowledged job in it, no submission or cron fire applied
/// twice, none succeeded twice, none ran before its dependencies succeeded; records each
/// node's applied index and state hash.
fn check_states(live: &[(String, Arc<Node>)], report: &mut Report) {
    for (name, node) in live {
        let a = node.state().read();
        // Every submission the client made (by its name) is one job: a retry under the
        // same request id that made a second job is a write applied twice.
        // A cron's jobs share its name; each of its fires launches at most once.
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        let mut fires: BTreeMap<String, usize> = BTreeMap::new();
        for j in a.state.jobs() {
            match j
                .spec
                .env
                .get(cathedral_consensus::cron::CRON_ENV_SCHEDULED)
            {
                Some(at) => *fires.entry(at.clone()).or_default() += 1,
                None => *by_name.entry(j.spec.name.clone()).or_default() += 1,
            }
        }
        for (job, count) in by_name.iter().filter(|(_, c)| **c > 1) {
            report.violations.push(format!(
                "{name}: {count} jobs named {job:?} (a write applied twice)"
            ));
        }
        for (at, count) in fires.iter().filter(|(_, c)| **c > 1) {
            report.violations.push(format!(
                "{name}: the cron's fire scheduled at {at} launched {count} times"
            ));
        }
        if fires.is_empty() {
            report
                .violations
                .push(format!("{name}: the cron never fired"));
        }
        report.cron_fires = report.cron_fires.max(fires.len());
        let index = a.last_applied.map_or(0, |l| l.index);
        report.states.insert(name.clone(), (index, a.state.hash()));
        for id in &report.acked {
            match a.state.job(*id) {
                None => report
                    .violations
                    .push(format!("{name}: acknowledged job {id} is not in the state")),
                Some(j) => {
                    let wins = j
                        .attempts
                        .iter()
                        .filter(|t| {
                            t.outcome
                                .as_ref()
                                .is_some_and(|o| o.exit == cathedral_consensus::Exit::Code(0))
                        })
                        .count();
                    if wins > 1 {
                        report
                            .violations
                            .push(format!("{name}: job {id} succeeded {wins} times"));
                    }
                    // A job runs only once everything it depends on succeeded.
                    if !j.attempts.is_empty() {
                        for d in &j.spec.depends_on {
                            let ok = a.state.job(*d).is_some_and(|dj| {
                                dj.state == cathedral_consensus::JobState::Succeeded
                            });
                            if !ok {
                                report.violations.push(format!(
                                    "{name}: job {id} ran although its dependency {d} did not succeed"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The nodes' event streams (see the comment inside).
fn check_streams(live: &[(String, Arc<Node>)], report: &mut Report) {
    // Every node's event stream is the same (each follows from the entries it applied),
    // and in it no job was assigned before each of its dependencies had succeeded.
    let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, node) in live {
        let Ok(events) = node.events.read(node.events.earliest(), usize::MAX) else {
            continue;
        };
        if events.first().is_none_or(|e| e.index > 1) {
            // The feed starts past the log's first entries (a snapshot): not comparable.
            continue;
        }
        let (applied, _) = report.states[name];
        streams.insert(
            name.clone(),
            events
                .iter()
                .filter(|e| e.index <= applied)
                .map(|e| {
                    format!(
                        "{} {} {} {:?} {:?} {}",
                        e.index, e.seq, e.kind, e.job, e.attempt, e.detail
                    )
                })
                .collect(),
        );
        let a = node.state().read();
        let mut assigned: BTreeMap<u64, u64> = BTreeMap::new();
        let mut finished: BTreeMap<(u64, u32), u64> = BTreeMap::new();
        for e in &events {
            match (e.kind, e.job, e.attempt) {
                (cathedral_consensus::events::EventKind::JobAssigned, Some(j), _) => {
                    assigned.entry(j).or_insert(e.index);
                }
                (cathedral_consensus::events::EventKind::JobFinished, Some(j), Some(t)) => {
                    finished.insert((j, t), e.index);
                }
                _ => {}
            }
        }
        for (job, first) in &assigned {
            let Some(j) = a.state.job(*job) else { continue };
            for d in &j.spec.depends_on {
                let won = a.state.job(*d).and_then(|dj| {
                    dj.attempts
                        .iter()
                        .find(|t| {
                            t.outcome
                                .as_ref()
                                .is_some_and(|o| o.exit == cathedral_consensus::Exit::Code(0))
                        })
                        .map(|t| t.number)
                });
                let ok = won
                    .and_then(|t| finished.get(&(*d, t)))
                    .is_some_and(|succeeded| succeeded < first);
                if !ok {
                    report.violations.push(format!(
                        "{name}: job {job} was assigned at index {first} before its dependency {d} had succeeded"
                    ));
                }
            }
        }
    }
    let distinct_streams: BTreeSet<&Vec<String>> = streams.values().collect();
    if distinct_streams.len() > 1 {
        report.violations.push(format!(
            "the nodes' event streams differ ({} nodes compared)",
            streams.len()
        ));
    }
    report.streams = streams.len();
}

/// Offline replays of each node's directory.
fn check_replays(live: &[(String, Arc<Node>)], report: &mut Report) {
    // Each node's state is what an offline replay of its own data directory rebuilds
    // (`cathedral-log replay`, the same apply the servers run).
    for (name, node) in live {
        let (applied, hash) = report.states[name];
        let options = cathedral_consensus::replay::ReplayOptions {
            to: Some(applied),
            ..Default::default()
        };
        match cathedral_consensus::replay::replay(node.data_dir(), &options, &mut |_, _| {}) {
            Err(e) => report
                .violations
                .push(format!("{name}: its data directory does not replay: {e}")),
            Ok(r) => {
                if r.state.hash() != hash {
                    report.violations.push(format!(
                        "{name}: replaying its log to {applied} gives another state than it holds"
                    ));
                }
                for f in &r.findings {
                    report.violations.push(format!(
                        "{name}: replay finding at {}: {}",
                        f.index, f.reason
                    ));
                }
                report.replayed += 1;
            }
        }
    }
}

/// Checkpoint hashes, divergences and the final states.
fn check_checkpoints(live: &[(String, Arc<Node>)], report: &mut Report) {
    // Every checkpoint two nodes both hold has one hash, and no node saw a divergence.
    let mut at: BTreeMap<u64, BTreeSet<[u8; 32]>> = BTreeMap::new();
    for (name, node) in live {
        let a = node.state().read();
        for (i, h) in a.state.checkpoints() {
            at.entry(*i).or_default().insert(*h);
        }
        let d = a.state.counters().divergences;
        if d > 0 {
            report
                .violations
                .push(format!("{name}: {d} checkpoint divergences"));
        }
    }
    for (i, hashes) in &at {
        if hashes.len() > 1 {
            report.violations.push(format!(
                "checkpoint at index {i} has {} hashes",
                hashes.len()
            ));
        }
    }
    report.checkpoints = at.len();
    let distinct: BTreeSet<_> = report.states.values().collect();
    if distinct.len() > 1 {
        report.violations.push(format!(
            "nodes ended in different states: {:?}",
            report
                .states
                .iter()
                .map(|(k, (i, h))| format!("{k}@{i}:{}", cathedral_consensus::hex(&h[..4])))
                .collect::<Vec<_>>()
        ));
    }
}

/// No node ends the run in a joint configuration: a membership change half done stays so
/// (openraft 0.9 finishes none by itself), and one whose old half lost a member for good
/// elects no leader again.
fn check_memberships(live: &[(String, Arc<Node>)], report: &mut Report) {
    for (name, node) in live {
        let m = node.raft.metrics().borrow().membership_config.clone();
        let configs = m.membership().get_joint_config();
        if configs.len() > 1 {
            report.violations.push(format!(
                "{name}: the run ended in a joint configuration {configs:?} (log index {:?})",
                m.log_id().map(|l| l.index)
            ));
        }
    }
}

/// The nodes' logs.
fn check_logs(live: &[(String, Arc<Node>)], report: &mut Report) {
    // The logs, up to the lowest applied index, hold the same entries.
    let lowest = report.states.values().map(|(i, _)| *i).min().unwrap_or(0);
    let mut hashes = BTreeSet::new();
    for (_, node) in live {
        let mut h = blake3::Hasher::new();
        let mut from = 1;
        while from <= lowest {
            let Ok(r) = node.read_log(from, 1000) else {
                break;
            };
            if r.entries.is_empty() {
                break;
            }
            for e in &r.entries {
                if e.index > lowest {
                    break;
                }
                h.update(&e.index.to_le_bytes());
                h.update(&e.term.to_le_bytes());
                h.update(e.kind.as_bytes());
                h.update(&e.bytes.to_le_bytes());
                h.update(e.summary.as_bytes());
                if hashes.is_empty() {
                    report
                        .log
                        .push(format!("{} t{} {} {}", e.index, e.term, e.kind, e.summary));
                }
                from = e.index + 1;
            }
        }
        hashes.insert(*h.finalize().as_bytes());
    }
    if hashes.len() > 1 {
        report
            .violations
            .push(format!("logs differ below index {lowest}"));
    }
    report.log_hash = hashes.into_iter().next();
}
