//! Committed writes per second of an in-process three-node Raft cluster on real disk logs
//! (one directory per node, the in-process router as network), with N concurrent proposers
//! each submitting one job at a time through the leader.
//!
//! ```text
//! cargo bench -p cathedral-benches --bench cluster_writes -- [--proposers 1,64] [--seconds 5] [--dir PATH]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_consensus::raft::RaftSettings;
use cathedral_consensus::testkit::{start_node, Router};
use cathedral_consensus::{Command, JobSpec};
use openraft::{BasicNode, ServerState};

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut proposers = vec![1usize, 64];
    let mut seconds = 5u64;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/cluster-bench");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--proposers" => {
                proposers = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|p| p.parse().expect("--proposers takes numbers"))
                    .collect()
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds takes a number")
            }
            "--dir" => dir = args.next().expect("--dir takes a path").into(),
            "--bench" => {}
            other => {
                eprintln!("cluster_writes: unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    println!("proposers  committed writes/s  p50 ms  p99 ms");
    for &p in &proposers {
        let _ = std::fs::remove_dir_all(&dir);
        let router = Arc::new(Router::default());
        let settings = RaftSettings::default();
        for id in 1..=3u64 {
            start_node(&router, id, &dir.join(format!("node-{id}")), &settings)
                .await
                .expect("start node");
        }
        let members: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|i| (i, BasicNode::new(format!("node-{i}"))))
            .collect();
        let first = router.nodes.lock().unwrap()[&1].clone();
        first.initialize(members).await.expect("initialize");
        let leader = loop {
            let m = first.metrics().borrow().clone();
            if let Some(l) = m.current_leader {
                let raft = router.nodes.lock().unwrap()[&l].clone();
                if raft.metrics().borrow().state == ServerState::Leader {
                    break raft;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let tasks: Vec<_> = (0..p)
            .map(|w| {
                let leader = leader.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut k = 0u64;
                    while Instant::now() < deadline {
                        k += 1;
                        let cmd = Command::SubmitJobs {
                            at_ms: k,
                            jobs: vec![JobSpec::new(&format!("w{w}-{k}"), &["true"])],
                        };
                        let t = Instant::now();
                        leader.client_write(cmd).await.expect("write");
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        let pct =
            |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
        println!(
            "{p:>9}  {:>18.0}  {:>6.2}  {:>6.2}",
            lat.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99)
        );
        let nodes: Vec<_> = router.nodes.lock().unwrap().values().cloned().collect();
        for raft in nodes {
            raft.shutdown().await.expect("shutdown");
        }
        router.nodes.lock().unwrap().clear();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
