//! How long one job waits to be placed behind another namespace's burst: a real
//! `cathedral-server` (one node, `--slots 4`), a burst of jobs that each hold a slot a
//! while, then one probe job; its queue wait is the time from its submission to its
//! assignment, both as the leader's log records them (`submitted_at_ms`,
//! `attempts[0].assigned_at_ms`). Three scenarios, each on a fresh server (warmed up by
//! one job placed first):
//!
//! - `alone`: the probe in namespace `web`, nothing else queued (the floor);
//! - `burst in another namespace`: the burst in `batch`, then the probe in `web` — fair
//!   share gives it the next free slot;
//! - `burst in the same namespace`: the burst and the probe in `default` — the probe
//!   waits behind every job of the burst (the single-tenant cluster of before), cut off at
//!   `--give-up-secs`.
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p cathedral-benches --bench namespace_wait -- --server-bin target/release/cathedral-server
//!     [--burst 10000] [--slots 4] [--hold-ms 1000] [--trials 5] [--give-up-secs 20]
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cathedral_server::api::v1 as pb;
use pb::job_service_client::JobServiceClient;
use pb::namespace_service_client::NamespaceServiceClient;
use tonic::transport::Channel;

struct Args {
    server_bin: PathBuf,
    burst: usize,
    slots: u32,
    hold_ms: u64,
    trials: usize,
    give_up_secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        server_bin: PathBuf::from("target/release/cathedral-server"),
        burst: 10_000,
        slots: 4,
        hold_ms: 1000,
        trials: 5,
        give_up_secs: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{x} needs a value"));
        match x.as_str() {
            "--server-bin" => a.server_bin = PathBuf::from(val()),
            "--burst" => a.burst = val().parse().expect("--burst N"),
            "--slots" => a.slots = val().parse().expect("--slots N"),
            "--hold-ms" => a.hold_ms = val().parse().expect("--hold-ms N"),
            "--trials" => a.trials = val().parse().expect("--trials N"),
            "--give-up-secs" => a.give_up_secs = val().parse().expect("--give-up-secs N"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One server on a fresh directory, killed on drop.
struct Server {
    child: Child,
    grpc: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(a: &Args) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let grpc = format!("127.0.0.1:{}", free_port());
        let child = Command::new(&a.server_bin)
            .arg("--data-dir")
            .arg(dir.path().join("n"))
            .args(["--bind", &grpc])
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .args(["--gossip-bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--slots", &a.slots.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", a.server_bin.display()));
        Server {
            child,
            grpc,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ep = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
                .expect("uri");
            if let Ok(ch) = ep.connect().await {
                // Ready once it answers a read.
                let mut jobs = JobServiceClient::new(ch.clone());
                if jobs
                    .list_jobs(pb::ListJobsRequest {
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    return ch;
                }
            }
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn job(name: &str, argv: &[&str]) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        sandbox: pb::Sandbox::Process as i32,
        ..Default::default()
    }
}

/// Submits `n` jobs holding a slot `hold_ms` each, in namespace `ns`, as workflows of up
/// to 10,000 independent jobs (one entry each).
async fn burst(ch: &Channel, ns: &str, n: usize, hold_ms: u64) {
    let mut jobs = JobServiceClient::new(ch.clone());
    let secs = format!("{}.{:03}", hold_ms / 1000, hold_ms % 1000);
    let mut left = n;
    let mut k = 0;
    while left > 0 {
        let now = left.min(10_000);
        let req = pb::SubmitWorkflowRequest {
            name: format!("burst-{k}"),
            jobs: (0..now)
                .map(|i| pb::WorkflowJob {
                    key: format!("j{i}"),
                    spec: Some(job("burst", &["sleep", &secs])),
                    after: vec![],
                })
                .collect(),
            namespace: ns.into(),
            ..Default::default()
        };
        jobs.submit_workflow(req).await.expect("burst accepted");
        left -= now;
        k += 1;
    }
}

/// The probe's queue wait in milliseconds (submission to assignment, the leader's clock),
/// or `None` when it was not placed within `give_up`.
async fn probe(ch: &Channel, ns: &str, give_up: Duration) -> Option<u64> {
    let mut jobs = JobServiceClient::new(ch.clone());
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(job("probe", &["true"])),
            namespace: ns.into(),
            ..Default::default()
        })
        .await
        .expect("probe accepted")
        .into_inner()
        .job_id;
    let deadline = Instant::now() + give_up;
    loop {
        let j = jobs
            .get_job(pb::GetJobRequest {
                job_id: id,
                namespace: ns.into(),
            })
            .await
            .expect("probe readable")
            .into_inner();
        if let Some(a) = j.attempts.first() {
            return Some(a.assigned_at_ms.saturating_sub(j.submitted_at_ms));
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn make(ch: &Channel, name: &str) {
    NamespaceServiceClient::new(ch.clone())
        .create_namespace(pb::CreateNamespaceRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("namespace made");
}

/// Waits until every slot is busy with the burst (so the probe meets a full cluster).
async fn slots_full(ch: &Channel, ns: &str, slots: u32) {
    let mut n = NamespaceServiceClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = n
            .get_namespace(pb::GetNamespaceRequest { name: ns.into() })
            .await
            .expect("namespace readable")
            .into_inner();
        if v.usage.is_some_and(|u| u.running >= u64::from(slots)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the burst never filled the slots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let a = args();
    let give_up = Duration::from_secs(a.give_up_secs);
    println!(
        "queue wait of one job (submission to assignment, ms), one node with --slots {}, burst of {} jobs holding a slot {} ms each, {} trials",
        a.slots, a.burst, a.hold_ms, a.trials
    );
    let scenarios = [
        "alone",
        "burst in another namespace",
        "burst in the same namespace",
    ];
    for scenario in scenarios {
        let mut waits = Vec::new();
        let mut gave_up = 0;
        for _ in 0..a.trials {
            let s = Server::start(&a);
            let ch = s.channel().await;
            // A fresh leader gives its node a gossip timeout to be seen before it places
            // work: a first job, run to its assignment, leaves that out of the figures.
            make(&ch, "warm-up").await;
            probe(&ch, "warm-up", Duration::from_secs(60))
                .await
                .expect("the warm-up job is placed");
            let started = Instant::now();
            let probe_ns = match scenario {
                "alone" => {
                    make(&ch, "web").await;
                    "web"
                }
                "burst in another namespace" => {
                    make(&ch, "batch").await;
                    make(&ch, "web").await;
                    burst(&ch, "batch", a.burst, a.hold_ms).await;
                    slots_full(&ch, "batch", a.slots).await;
                    "web"
                }
                _ => {
                    burst(&ch, "", a.burst, a.hold_ms).await;
                    slots_full(&ch, "default", a.slots).await;
                    ""
                }
            };
            let setup = started.elapsed();
            match probe(&ch, probe_ns, give_up).await {
                Some(ms) => waits.push(ms),
                None => gave_up += 1,
            }
            eprintln!("  {scenario}: set up in {setup:?}");
        }
        let shown = if waits.is_empty() {
            "-".to_string()
        } else {
            format!(
                "median {} ms, max {} ms",
                median(waits.clone()),
                waits.iter().max().unwrap()
            )
        };
        println!(
            "{scenario:<30} {shown}; not placed within {} s: {gave_up} of {}",
            a.give_up_secs, a.trials
        );
    }
}
