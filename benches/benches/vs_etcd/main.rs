//! Cathedral against etcd, side by side on this machine: committed writes per second,
//! latency, fdatasyncs and server CPU per write, for one node and three, 1 to 64 clients;
//! the time from a leader's SIGKILL to the first accepted write; and trivial jobs run end
//! to end against how fast this machine can start processes at all.
//!
//! Both systems are driven by the same closed-loop client: N clients, each on its own
//! connection (its own HTTP/2 channel) with one request in flight; a Cathedral write is a
//! `SubmitJob` of a 200-byte argument (answered once committed and applied), an etcd write
//! a `Put` of a 200-byte value (answered once committed and applied). The systems take
//! turns: every round runs etcd, then Cathedral, on fresh data directories, and the
//! figures are medians over the rounds. fdatasync and fsync calls are counted in the
//! servers with `perf stat` on the syscall tracepoints (or, where perf cannot, as flushes
//! of the data directory's disk in `/proc/diskstats`); CPU is the servers' user + system
//! time from `/proc/PID/stat`.
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p cathedral-benches --bench vs_etcd -- --server-bin target/release/cathedral-server
//!     [--etcd-bin etcd] [--secs 10] [--warmup 2] [--rounds 3] [--clients 1,16,64] [--nodes 1,3]
//!     [--failover-trials 10] [--jobs-secs 10] [--skip writes,failover,jobs] [--json]
//! ```
//! `scripts/bench-vs-etcd.sh` installs etcd from Debian's packages and runs it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_executor::{AttemptSpec, Backend, BwrapBackend};
use cathedral_server::api::v1 as pb;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

mod counters;
mod scenarios;

use counters::{cpu_secs, SyncCounter};
use scenarios::{bwrap_spawn_rate, failover, jobs_per_sec, spawn_rate};

mod etcdpb {
    #![allow(clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

// ---------------------------------------------------------------------------------------
// Arguments

struct Args {
    server_bin: PathBuf,
    etcd_bin: PathBuf,
    secs: u64,
    warmup: u64,
    rounds: usize,
    clients: Vec<usize>,
    /// Cluster sizes of the write rows (1 and 3).
    nodes: Vec<usize>,
    payload: usize,
    failover_trials: usize,
    jobs_secs: u64,
    skip: Vec<String>,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        server_bin: from_workspace("target/release/cathedral-server"),
        etcd_bin: PathBuf::from("etcd"),
        secs: 10,
        warmup: 2,
        rounds: 3,
        clients: vec![1, 16, 64],
        nodes: vec![1, 3],
        payload: 200,
        failover_trials: 10,
        jobs_secs: 10,
        skip: Vec::new(),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>| -> u64 { v.expect("a value").parse().expect("a number") };
    while let Some(x) = it.next() {
        match x.as_str() {
            "--server-bin" => a.server_bin = from_workspace(&it.next().expect("a path")),
            "--etcd-bin" => a.etcd_bin = PathBuf::from(it.next().expect("a path")),
            "--secs" => a.secs = num(it.next()),
            "--warmup" => a.warmup = num(it.next()),
            "--rounds" => a.rounds = num(it.next()) as usize,
            "--payload" => a.payload = num(it.next()) as usize,
            "--failover-trials" => a.failover_trials = num(it.next()) as usize,
            "--jobs-secs" => a.jobs_secs = num(it.next()),
            "--clients" => {
                a.clients = it
                    .next()
                    .expect("1,16,64")
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--nodes" => {
                a.nodes = it
                    .next()
                    .expect("1,3")
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--skip" => {
                a.skip = it
                    .next()
                    .expect("writes,failover,jobs")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--json" => a.json = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A relative path is taken from the workspace root (cargo runs benches in the crate's
/// directory).
fn from_workspace(p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        return path;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

// ---------------------------------------------------------------------------------------
// Processes and clusters

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Etcd,
    Cathedral,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Cathedral => "cathedral",
        }
    }
}

/// One server process of a cluster, restartable with the same arguments.
struct Proc {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// The client (gRPC) address.
    client: String,
}

impl Proc {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        // BENCH_SERVER_LOG: a log filter for the Cathedral servers (to look into a run).
        match std::env::var("BENCH_SERVER_LOG") {
            Ok(filter) => cmd.env("CATHEDRAL_LOG", filter),
            Err(_) => cmd.env_remove("CATHEDRAL_LOG"),
        };
        let child = cmd
            .args(&self.args)
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    kind: Kind,
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes (1 or 3) of `kind` in fresh directories and waits until they serve.
    async fn start(kind: Kind, n: usize, a: &Args, fast_election: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vs-{}-", kind.name()))
            .tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
        let mut procs = Vec::new();
        match kind {
            Kind::Etcd => {
                let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
                let initial: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
                    .collect();
                for (i, (client, peer)) in ports.iter().enumerate() {
                    let mut args: Vec<String> = [
                        "--name",
                        &format!("n{i}"),
                        "--data-dir",
                        &dir.path().join(format!("n{i}")).display().to_string(),
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                        "--listen-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                        "--initial-cluster",
                        &initial.join(","),
                        "--initial-cluster-state",
                        "new",
                        "--log-level",
                        "warn",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    if fast_election {
                        args.extend(
                            ["--heartbeat-interval", "50", "--election-timeout", "300"]
                                .map(String::from),
                        );
                    }
                    procs.push(Proc {
                        bin: a.etcd_bin.clone(),
                        args,
                        log: dir.path().join(format!("n{i}.log")),
                        child: None,
                        client: format!("127.0.0.1:{client}"),
                    });
                }
                for p in &mut procs {
                    p.spawn();
                }
            }
            Kind::Cathedral => {
                let first = format!("127.0.0.1:{}", free_port());
                for i in 0..n {
                    let grpc = if i == 0 {
                        first.clone()
                    } else {
                        format!("127.0.0.1:{}", free_port())
                    };
                    let mut args: Vec<String> = [
                        "--data-dir",
                        &dir.path().join(format!("n{i}")).display().to_string(),
                        "--bind",
                        &grpc,
                        "--http",
                        &format!("127.0.0.1:{}", free_port()),
                        "--slots",
                        "0",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    if n > 1 {
                        args.extend(["--role".to_string(), "coordinator".to_string()]);
                        if i > 0 {
                            args.extend(["--join".to_string(), first.clone()]);
                        }
                    }
                    procs.push(Proc {
                        bin: a.server_bin.clone(),
                        args,
                        log: dir.path().join(format!("n{i}.log")),
                        child: None,
                        client: grpc,
                    });
                }
                for p in &mut procs {
                    p.spawn();
                    if n > 1 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            }
        }
        let c = Cluster {
            kind,
            procs,
            _dir: dir,
        };
        c.wait_healthy(Duration::from_secs(60)).await;
        c
    }

    fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(|p| p.pid()).collect()
    }

    fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The leader's position in `procs`, as the running nodes see it.
    async fn leader(&self) -> Option<usize> {
        for (i, p) in self.procs.iter().enumerate() {
            if p.child.is_none() {
                continue;
            }
            match self.kind {
                Kind::Etcd => {
                    let Ok(ch) = channel(&p.client).await else {
                        continue;
                    };
                    let mut m = etcdpb::maintenance_client::MaintenanceClient::new(ch);
                    if let Ok(r) = m.status(etcdpb::StatusRequest {}).await {
                        let r = r.into_inner();
                        if r.leader != 0 && r.header.as_ref().map(|h| h.member_id) == Some(r.leader)
                        {
                            return Some(i);
                        }
                    }
                }
                Kind::Cathedral => {
                    let Ok(ch) = channel(&p.client).await else {
                        continue;
                    };
                    let mut c = pb::cluster_service_client::ClusterServiceClient::new(ch);
                    if let Ok(r) = c.status(pb::StatusRequest {}).await {
                        let r = r.into_inner();
                        if r.server_state == "leader" {
                            return Some(i);
                        }
                    }
                }
            }
        }
        None
    }

    /// Waits until there is a leader and every running node answers (Cathedral: as a
    /// voter of a cluster of all of them).
    async fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.healthy().await {
                return;
            }
            if Instant::now() > deadline {
                for p in &self.procs {
                    eprintln!("{}", std::fs::read_to_string(&p.log).unwrap_or_default());
                }
                panic!(
                    "{} cluster not healthy within {timeout:?}",
                    self.kind.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthy(&self) -> bool {
        if self.leader().await.is_none() {
            return false;
        }
        if self.kind == Kind::Cathedral {
            let n = self.procs.len();
            for p in &self.procs {
                let Ok(ch) = channel(&p.client).await else {
                    return false;
                };
                let mut c = pb::cluster_service_client::ClusterServiceClient::new(ch);
                let Ok(r) = c.status(pb::StatusRequest {}).await else {
                    return false;
                };
                let r = r.into_inner();
                let voters = r.members.iter().filter(|m| m.role == "voter").count();
                if voters != n || r.leader_id == 0 || r.applied_index == 0 {
                    return false;
                }
            }
            // Writes go through: registration done, a leader that commits.
            let mut w = Writer::connect(Kind::Cathedral, &self.procs[0].client, 8, 0).await;
            return w.write(0).await.is_ok();
        }
        let mut w = Writer::connect(Kind::Etcd, &self.procs[0].client, 8, 0).await;
        w.write(0).await.is_ok()
    }
}

async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

// ---------------------------------------------------------------------------------------
// The client

/// One client: its own connection, one request in flight.
#[derive(Clone)]
enum Writer {
    Etcd {
        kv: etcdpb::kv_client::KvClient<Channel>,
        value: Vec<u8>,
        id: usize,
    },
    Cathedral {
        jobs: pb::job_service_client::JobServiceClient<Channel>,
        arg: String,
    },
}

impl Writer {
    async fn connect(kind: Kind, addr: &str, payload: usize, id: usize) -> Writer {
        let ch = loop {
            match channel(addr).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        match kind {
            Kind::Etcd => Writer::Etcd {
                kv: etcdpb::kv_client::KvClient::new(ch),
                value: vec![b'v'; payload],
                id,
            },
            Kind::Cathedral => Writer::Cathedral {
                jobs: pb::job_service_client::JobServiceClient::new(ch),
                arg: "a".repeat(payload),
            },
        }
    }

    async fn write(&mut self, n: u64) -> Result<(), String> {
        match self {
            Writer::Etcd { kv, value, id } => kv
                .put(etcdpb::PutRequest {
                    key: format!("k{id}-{n}").into_bytes(),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|s| s.to_string()),
            Writer::Cathedral { jobs, arg } => jobs
                .submit_job(pb::SubmitJobRequest {
                    spec: Some(pb::JobSpec {
                        name: "bench".into(),
                        command: vec!["true".into(), arg.clone()],
                        ..Default::default()
                    }),
                    // The node assigns the request id, as for any client that sends none.
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|s| s.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One measurement

#[derive(Clone, Debug, Default)]
struct Measured {
    writes: u64,
    errors: u64,
    per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    syncs_per_write: Option<f64>,
    cpu_us_per_write: f64,
    sync_source: &'static str,
}

async fn measure(cluster: &Cluster, targets: &[String], clients: usize, a: &Args) -> Measured {
    let start_at = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = targets[c % targets.len()].clone();
        let (kind, payload) = (cluster.kind, a.payload);
        let (start_at, stop) = (start_at.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut w = Writer::connect(kind, &addr, payload, c).await;
            let mut h = Histogram::<u64>::new(3).unwrap();
            let (mut n, mut ok, mut errors) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let counting = start_at.load(Ordering::Relaxed);
                let t = Instant::now();
                let r = w.write(n).await;
                n += 1;
                if counting && !stop.load(Ordering::Relaxed) {
                    match r {
                        Ok(()) => {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                } else if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (ok, errors, h)
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let pids = cluster.pids();
    let counter = SyncCounter::start(&pids, cluster.data_dir());
    let cpu0 = cpu_secs(&pids);
    let t0 = Instant::now();
    start_at.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(&pids) - cpu0;
    let (syncs, source) = counter.finish();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let (mut writes, mut errors) = (0, 0);
    for t in tasks {
        let (ok, e, hist) = t.await.unwrap();
        writes += ok;
        errors += e;
        h.add(hist).unwrap();
    }
    Measured {
        writes,
        errors,
        per_sec: writes as f64 / secs,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        syncs_per_write: syncs.map(|s| s as f64 / writes.max(1) as f64),
        cpu_us_per_write: cpu * 1e6 / writes.max(1) as f64,
        sync_source: source,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct RowFigures {
    etcd: Vec<Measured>,
    cathedral: Vec<Measured>,
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let skip = |s: &str| a.skip.iter().any(|x| x == s);
    let mut json = serde_json::Map::new();
    if !skip("writes") {
        // (row label, nodes, spread over all nodes)
        let mut rows: BTreeMap<(usize, &'static str, usize), RowFigures> = BTreeMap::new();
        for round in 0..a.rounds {
            for &nodes in &a.nodes {
                for kind in [Kind::Etcd, Kind::Cathedral] {
                    let cluster = Cluster::start(kind, nodes, &a, false).await;
                    let leader = cluster.leader().await.expect("a leader");
                    let all: Vec<String> = cluster.procs.iter().map(|p| p.client.clone()).collect();
                    let modes: Vec<(&'static str, Vec<String>)> = if nodes == 1 {
                        vec![("to the node", all.clone())]
                    } else {
                        vec![
                            ("to the leader", vec![all[leader].clone()]),
                            ("clients spread", all.clone()),
                        ]
                    };
                    for (mode, targets) in &modes {
                        for &clients in &a.clients {
                            if *mode == "clients spread" && clients == 1 {
                                continue;
                            }
                            let m = measure(&cluster, targets, clients, &a).await;
                            eprintln!(
                                "round {round}: {} {nodes} node(s) {mode} {clients} clients: {} writes, {:.0}/s p50 {} us p99 {} us p999 {} us max {} us, syncs/write {:?}, cpu {:.0} us/write, {} errors",
                                kind.name(),
                                m.writes,
                                m.per_sec,
                                m.p50_us,
                                m.p99_us,
                                m.p999_us,
                                m.max_us,
                                m.syncs_per_write,
                                m.cpu_us_per_write,
                                m.errors
                            );
                            let row = rows.entry((nodes, mode, clients)).or_default();
                            match kind {
                                Kind::Etcd => row.etcd.push(m),
                                Kind::Cathedral => row.cathedral.push(m),
                            }
                        }
                    }
                }
            }
        }
        println!("\n## Committed writes, medians of {} rounds ({} s each, {} s warm-up), {}-byte payload", a.rounds, a.secs, a.warmup, a.payload);
        println!();
        println!("| cluster | clients | etcd writes/s | Cathedral submits/s | ratio | p50 µs etcd / Cathedral | p999 ms etcd / Cathedral | max ms etcd / Cathedral (worst round) | fdatasyncs per write etcd / Cathedral | server CPU µs per write etcd / Cathedral |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut out_rows = Vec::new();
        for ((nodes, mode, clients), f) in &rows {
            let med =
                |v: &Vec<Measured>, g: &dyn Fn(&Measured) -> f64| median(v.iter().map(g).collect());
            let e_rate = med(&f.etcd, &|m| m.per_sec);
            let c_rate = med(&f.cathedral, &|m| m.per_sec);
            let e_p50 = med(&f.etcd, &|m| m.p50_us as f64);
            let c_p50 = med(&f.cathedral, &|m| m.p50_us as f64);
            let e_sync = med(&f.etcd, &|m| m.syncs_per_write.unwrap_or(f64::NAN));
            let c_sync = med(&f.cathedral, &|m| m.syncs_per_write.unwrap_or(f64::NAN));
            let e_p999 = med(&f.etcd, &|m| m.p999_us as f64) / 1000.0;
            let c_p999 = med(&f.cathedral, &|m| m.p999_us as f64) / 1000.0;
            let worst =
                |v: &Vec<Measured>| v.iter().map(|m| m.max_us).max().unwrap_or(0) as f64 / 1000.0;
            let (e_max, c_max) = (worst(&f.etcd), worst(&f.cathedral));
            let e_cpu = med(&f.etcd, &|m| m.cpu_us_per_write);
            let c_cpu = med(&f.cathedral, &|m| m.cpu_us_per_write);
            let cluster = if *nodes == 1 {
                "1 node".to_string()
            } else {
                format!("3 nodes, {mode}")
            };
            println!(
                "| {cluster} | {clients} | {e_rate:.0} | {c_rate:.0} | {:.2} | {e_p50:.0} / {c_p50:.0} | {e_p999:.1} / {c_p999:.1} | {e_max:.1} / {c_max:.1} | {e_sync:.3} / {c_sync:.3} | {e_cpu:.0} / {c_cpu:.0} |",
                c_rate / e_rate
            );
            out_rows.push(serde_json::json!({
                "cluster": cluster, "clients": clients,
                "etcd_per_sec": e_rate, "cathedral_per_sec": c_rate, "ratio": c_rate / e_rate,
                "etcd_p50_us": e_p50, "cathedral_p50_us": c_p50,
                "etcd_p999_ms": e_p999, "cathedral_p999_ms": c_p999,
                "etcd_max_ms": e_max, "cathedral_max_ms": c_max,
                "rounds": f.etcd.iter().zip(&f.cathedral).map(|(e, c)| serde_json::json!({
                    "etcd_p999_us": e.p999_us, "etcd_max_us": e.max_us,
                    "cathedral_p999_us": c.p999_us, "cathedral_max_us": c.max_us,
                })).collect::<Vec<_>>(),
                "etcd_syncs_per_write": e_sync, "cathedral_syncs_per_write": c_sync,
                "etcd_cpu_us_per_write": e_cpu, "cathedral_cpu_us_per_write": c_cpu,
                "sync_source": f.cathedral.first().map(|m| m.sync_source),
            }));
        }
        json.insert("writes".into(), serde_json::Value::Array(out_rows));
    }
    if !skip("failover") && a.failover_trials > 0 {
        eprintln!("failover trials");
        let e = failover(Kind::Etcd, &a).await;
        let c = failover(Kind::Cathedral, &a).await;
        let (e50, c50) = (median(e.clone()), median(c.clone()));
        let max = |v: &Vec<f64>| v.iter().cloned().fold(f64::NAN, f64::max);
        println!(
            "\n## Leader SIGKILL to the first accepted write, {} trials each",
            a.failover_trials
        );
        println!();
        println!("| system | settings | p50 ms | max ms |");
        println!("|---|---|---:|---:|");
        println!(
            "| etcd | heartbeat 50 ms, election 300 ms | {e50:.0} | {:.0} |",
            max(&e)
        );
        println!(
            "| Cathedral | defaults (heartbeat 30 ms, election 100–150 ms) | {c50:.0} | {:.0} |",
            max(&c)
        );
        println!("\nratio (Cathedral / etcd, p50): {:.2}", c50 / e50);
        json.insert(
            "failover".into(),
            serde_json::json!({"etcd_ms": e, "cathedral_ms": c, "etcd_p50_ms": e50, "cathedral_p50_ms": c50}),
        );
    }
    if !skip("jobs") {
        eprintln!("jobs");
        let base = spawn_rate(64, a.jobs_secs.min(5), OsStr::new("true"), &[]);
        let bwrap_base = bwrap_spawn_rate(64, a.jobs_secs.min(5));
        let (plain, n1) = jobs_per_sec(&a, pb::Sandbox::Process, 64).await;
        let (bwrap, n2) = jobs_per_sec(&a, pb::Sandbox::Bubblewrap, 64).await;
        println!("\n## Trivial jobs (`true`) end to end on one node, --slots 64, 64 clients submitting and watching, {} s", a.jobs_secs);
        println!();
        println!("| what | per second | jobs counted | of its ceiling |");
        println!("|---|---:|---:|---:|");
        println!(
            "| `true` started and reaped by 64 threads (ceiling, plain) | {base:.0} | - | 1.00 |"
        );
        println!(
            "| Cathedral jobs, plain process | {plain:.0} | {n1} | {:.2} |",
            plain / base
        );
        match bwrap_base {
            Some(b) => println!(
                "| `true` in the executor's bubblewrap sandbox, 64 threads (ceiling, bubblewrap) | {b:.0} | - | 1.00 |"
            ),
            None => println!("| bubblewrap ceiling | not measured: no working bwrap here | - | - |"),
        }
        println!(
            "| Cathedral jobs, bubblewrap | {bwrap:.0} | {n2} | {:.2} |",
            bwrap / bwrap_base.unwrap_or(f64::NAN)
        );
        json.insert(
            "jobs".into(),
            serde_json::json!({"spawn_per_sec": base, "bwrap_spawn_per_sec": bwrap_base, "process_per_sec": plain, "bubblewrap_per_sec": bwrap}),
        );
    }
    if a.json {
        println!("{}", serde_json::Value::Object(json));
    }
}
