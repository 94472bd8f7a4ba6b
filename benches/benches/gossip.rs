//! Gossip membership figures.
//!
//! - **Tag propagation**: in-process nodes (real chitchat over loopback UDP with the
//!   authenticated transport, default 500 ms rounds) for each `--nodes` count; a tag is set
//!   on one node and the time until every node's view holds it is measured, `--trials`
//!   times per size.
//! - **Gossip traffic**: bytes sent per node per second over a steady `--traffic-secs`
//!   window of the same clusters.
//! - **Failure detection** (with `--server-bin`): five `cathedral-server` processes (one
//!   coordinator running no jobs, four workers); a worker is killed with SIGKILL and the
//!   time until the coordinator lists it as failed in the job state (node-failed
//!   committed) is measured, then it is restarted and recovered; `--detect-trials` times.
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p cathedral-benches --bench gossip -- [--nodes 10,50,100] [--trials 5]
//!     [--traffic-secs 10] [--server-bin target/release/cathedral-server] [--detect-trials 10]
//!     [--skip-tags]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_server::api::v1 as pb;
use cathedral_server::gossip::{GossipSettings, Liveness, Membership, Published};

struct Args {
    nodes: Vec<u64>,
    trials: usize,
    traffic_secs: u64,
    server_bin: Option<PathBuf>,
    detect_trials: usize,
}

fn args() -> Args {
    let mut a = Args {
        nodes: vec![10, 50, 100],
        trials: 5,
        traffic_secs: 10,
        server_bin: None,
        detect_trials: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--nodes" => {
                a.nodes = it
                    .next()
                    .expect("--nodes 10,50")
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--trials" => a.trials = it.next().expect("N").parse().expect("a number"),
            "--traffic-secs" => a.traffic_secs = it.next().expect("N").parse().expect("a number"),
            "--server-bin" => {
                // cargo bench runs in the package's directory; a relative path may be the
                // workspace's.
                let p = PathBuf::from(it.next().expect("PATH"));
                let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
                a.server_bin = Some(if p.exists() { p } else { root.join(p) });
            }
            "--skip-tags" => a.nodes.clear(),
            "--detect-trials" => a.detect_trials = it.next().expect("N").parse().expect("a number"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn in_process(n: u64) -> Vec<Arc<Membership>> {
    let first = free_udp();
    let mut nodes = Vec::new();
    for id in 1..=n {
        let addr = if id == 1 { first } else { free_udp() };
        let mut s = GossipSettings::new(addr);
        if id > 1 {
            s.seeds = vec![first.to_string()];
        }
        s.cluster_keys = vec!["bench".into()];
        let p = Published {
            node_id: id,
            grpc: format!("127.0.0.1:{}", 20_000 + id),
            role: "worker".into(),
            tags: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            slots: 4,
            cpu_millis: 4000,
            memory_bytes: 1 << 32,
        };
        nodes.push(
            Membership::start(s, p, Default::default())
                .await
                .expect("start"),
        );
    }
    nodes
}

async fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn tags_and_traffic(a: &Args) {
    println!("## tag propagation and gossip traffic (in-process, 500 ms rounds, phi 8)\n");
    println!(
        "| nodes | tag to every node p50 | max | bytes sent / node / s | datagrams / node / s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &n in &a.nodes {
        let nodes = in_process(n).await;
        wait("convergence", Duration::from_secs(120), || {
            nodes.iter().all(|m| {
                let v = m.view();
                v.members.len() as u64 == n
                    && v.members.values().all(|x| x.liveness == Liveness::Alive)
            })
        })
        .await;
        // Settle, then measure steady traffic.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before: Vec<_> = nodes.iter().map(|m| m.counters()).collect();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(a.traffic_secs)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (mut bytes, mut dgrams) = (0u64, 0u64);
        for (m, b) in nodes.iter().zip(&before) {
            let c = m.counters();
            bytes += c.bytes_sent - b.bytes_sent;
            dgrams += c.datagrams_sent - b.datagrams_sent;
        }
        let mut times = Vec::new();
        for t in 0..a.trials {
            let who = &nodes[t % nodes.len()];
            let value = format!("v{t}");
            let set = BTreeMap::from([("bench".to_string(), value.clone())]);
            let start = Instant::now();
            who.set_tags(&set, &[]).await.expect("set tag");
            let id = who.node_id();
            wait("the tag everywhere", Duration::from_secs(60), || {
                nodes.iter().all(|m| {
                    m.view()
                        .member(id)
                        .is_some_and(|x| x.tags.get("bench") == Some(&value))
                })
            })
            .await;
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "| {n} | {} | {} | {:.0} | {:.1} |",
            ms(percentile(&times, 0.5)),
            ms(*times.last().unwrap()),
            bytes as f64 / n as f64 / secs,
            dgrams as f64 / n as f64 / secs,
        );
        for m in &nodes {
            m.stop().await;
        }
    }
    println!();
}

/// One server process.
struct Proc {
    args: Vec<String>,
    grpc: String,
    bin: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(bin: &Path, dir: PathBuf, extra: &[&str]) -> Proc {
        let grpc = format!("127.0.0.1:{}", free_tcp());
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.display().to_string(),
            "--bind".into(),
            grpc.clone(),
            "--http".into(),
            format!("127.0.0.1:{}", free_tcp()),
            "--gossip-bind".into(),
            free_udp().to_string(),
            "--cluster-key".into(),
            "bench".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = Proc {
            args,
            grpc,
            bin: bin.to_path_buf(),
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        self.child = Some(
            Command::new(&self.bin)
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start cathedral-server"),
        );
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

async fn list(addr: &str) -> Option<pb::ListNodesResponse> {
    let mut c = pb::cluster_service_client::ClusterServiceClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    c.list_nodes(pb::ListNodesRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn node_id(addr: &str) -> Option<u64> {
    let mut c = pb::cluster_service_client::ClusterServiceClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    c.status(pb::StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner().node_id)
}

async fn until_state(coord: &str, id: u64, state: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(r) = list(coord).await {
            if r.nodes.iter().any(|n| n.id == id && n.state == state) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < within, "node {id} never {state}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn detection(a: &Args, bin: &Path) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let coord = Proc::start(
        bin,
        tmp.path().join("c"),
        &["--role", "coordinator", "--voters", "1", "--slots", "0"],
    );
    let mut coord_id = None;
    while coord_id.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        coord_id = node_id(&coord.grpc).await;
    }
    let mut workers: Vec<Proc> = (1..=4)
        .map(|i| {
            Proc::start(
                bin,
                tmp.path().join(format!("w{i}")),
                &["--role", "worker", "--join", &coord.grpc, "--slots", "1"],
            )
        })
        .collect();
    let mut ids = Vec::new();
    for w in &workers {
        loop {
            if let Some(id) = node_id(&w.grpc).await {
                ids.push(id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let all_alive = || async {
        list(&coord.grpc).await.is_some_and(|r| {
            r.nodes.len() == 5
                && r.nodes
                    .iter()
                    .all(|n| n.state == "alive" && n.gossip_state == "alive")
        })
    };
    let start = Instant::now();
    while !all_alive().await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "cluster never formed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("## failure detection: kill -9 → node-failed committed (5 processes, 500 ms rounds, phi 8, 1 s grace)\n");
    let mut times = Vec::new();
    for t in 0..a.detect_trials {
        let w = t % workers.len();
        // Let the detector sample the restarted node before killing it again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        workers[w].kill9();
        let took = until_state(&coord.grpc, ids[w], "failed", Duration::from_secs(60)).await;
        println!("trial {t}: worker {} failed after {}", ids[w], ms(took));
        times.push(took);
        workers[w].spawn();
        until_state(&coord.grpc, ids[w], "alive", Duration::from_secs(60)).await;
        let start = Instant::now();
        while !all_alive().await {
            assert!(start.elapsed() < Duration::from_secs(60), "not recovered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    println!(
        "\n| trials | p50 | max |\n|---:|---:|---:|\n| {} | {} | {} |\n",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap())
    );
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if !a.nodes.is_empty() {
            tags_and_traffic(&a).await;
        }
        match &a.server_bin {
            Some(bin) => detection(&a, bin).await,
            None => println!(
                "(failure detection skipped: pass --server-bin target/release/cathedral-server)"
            ),
        }
    });
}
