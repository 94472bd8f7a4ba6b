//! Retention at scale, the state machine alone: job lifecycles (submit, assign, start,
//! finish) at a simulated 1,000 jobs/s, with `Collect` entries as the leader writes them
//! (every simulated minute, the jobs that ended an hour ago or more) and a checkpoint every
//! 10,000 entries (each node hashes its state there), printing every
//! simulated 10 minutes the jobs held, the encoded snapshot's size and bytes per job held,
//! and the process's RSS. After the first retention period the state must be flat.
//!
//! `cargo bench -p cathedral-benches --bench retention -- --jobs 10000000`
//! (`--retention-s`, `--rate` change the simulation; the default is 10 M jobs;
//! `--legacy-hash 1` hashes as a log written before `Feature::JobDigestsCoverTheirRecords`.)

use std::collections::BTreeMap;
use std::time::Instant;

use cathedral_consensus::limits::COLLECT_PER_ENTRY_MAX;
use cathedral_consensus::{
    Assignment, Capacity, ClusterState, Command, Exit, Feature, JobSpec, NodeInfo, Outcome, Role,
    Rules,
};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let jobs = arg("--jobs", 10_000_000);
    let retention_ms = arg("--retention-s", 3600) * 1000;
    let rate = arg("--rate", 1000);
    let step_ms = (1000 / rate).max(1);
    let mut s = ClusterState::new();
    let mut index = 0u64;
    let mut apply = |s: &mut ClusterState, c: Command| {
        index += 1;
        s.apply(index, &c)
    };
    for n in 1..=16u64 {
        apply(
            &mut s,
            Command::NodeRegistered {
                at_ms: 0,
                node: NodeInfo {
                    id: n,
                    address: format!("10.0.0.{n}:50051"),
                    role: Role::Worker,
                    tags: BTreeMap::new(),
                    capacity: Capacity {
                        slots: 1024,
                        cpu_millis: 64_000,
                        memory_bytes: 1 << 36,
                    },
                },
            },
        );
    }
    apply(
        &mut s,
        Command::SetRules {
            at_ms: 0,
            rules: Rules::default(),
        },
    );
    // And the features of apply a leader of this build turns on (`--legacy-hash 1`: none,
    // as a log written before them replays: the state hash encodes the per-job maps whole).
    if arg("--legacy-hash", 0) == 0 {
        for feature in Feature::ALL {
            apply(&mut s, Command::Enable { at_ms: 0, feature });
        }
    }
    let spec = JobSpec::new("bench", &["sh", "-c", "echo hello from a benchmark job"]);
    println!(
        "{} jobs at {rate}/s simulated, retention {} s, a collection pass every simulated minute",
        jobs,
        retention_ms / 1000
    );
    println!(
        "{:>10} {:>12} {:>12} {:>14} {:>10} {:>10}",
        "sim time", "jobs ever", "jobs held", "snapshot B", "B/job", "RSS MB"
    );
    let started = Instant::now();
    let mut collected = 0u64;
    let mut next_collect = 60_000u64;
    let mut next_sample = 600_000u64;
    let mut samples = Vec::new();
    for k in 0..jobs {
        let at = k * step_ms;
        let job = k + 1;
        let node = 1 + job % 16;
        apply(
            &mut s,
            Command::SubmitJobs {
                at_ms: at,
                jobs: vec![spec.clone()],
            },
        );
        apply(
            &mut s,
            Command::AssignTasks {
                at_ms: at,
                assignments: vec![Assignment {
                    job,
                    attempt: 1,
                    node,
                }],
            },
        );
        apply(
            &mut s,
            Command::TaskStarted {
                at_ms: at,
                job,
                attempt: 1,
                node,
            },
        );
        apply(
            &mut s,
            Command::TaskFinished {
                at_ms: at,
                job,
                attempt: 1,
                node,
                outcome: Outcome {
                    exit: Exit::Code(0),
                    duration_ms: 3,
                    output_tail: b"hello from a benchmark job\n".to_vec(),
                },
            },
        );
        // A checkpoint every 10,000 entries, as the leader writes them by default: every
        // node hashes its state there (and keeps the per-job digests that takes).
        if job % 2_500 == 0 {
            apply(&mut s, Command::Checkpoint { at_ms: at });
        }
        if at >= next_collect {
            next_collect += 60_000;
            loop {
                let due = s.collection_due(at, retention_ms, COLLECT_PER_ENTRY_MAX);
                if due.is_empty() {
                    break;
                }
                collected += due.len() as u64;
                apply(
                    &mut s,
                    Command::Collect {
                        at_ms: at,
                        jobs: due,
                    },
                );
            }
        }
        if at >= next_sample {
            next_sample += 600_000;
            let snap = s.to_snapshot().len() as u64;
            let held = s.job_count() as u64;
            let rss = rss_bytes();
            println!(
                "{:>9}m {:>12} {:>12} {:>14} {:>10} {:>10}",
                at / 60_000,
                job,
                held,
                snap,
                snap / held.max(1),
                rss >> 20
            );
            samples.push((at, held, snap, rss));
        }
    }
    // What a checkpoint costs every node (apply waits for it): one more job ended, then
    // the state hash.
    let t = Instant::now();
    let r = apply(
        &mut s,
        Command::CancelJob {
            at_ms: jobs * step_ms,
            job: jobs,
            reason: String::new(),
        },
    );
    let _ = r;
    apply(
        &mut s,
        Command::Checkpoint {
            at_ms: jobs * step_ms,
        },
    );
    println!(
        "a checkpoint with {} jobs held: {:.1} ms",
        s.job_count(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    // What taking a snapshot costs the state machine: the copy made under the applied
    // state's lock (`get_snapshot_builder`), then the encoding, which runs beside it.
    let t = Instant::now();
    let copy = s.snapshot_copy();
    let cloned = t.elapsed();
    let t = Instant::now();
    let bytes = copy.to_snapshot().len();
    println!(
        "snapshot of {} jobs: the copy under the lock {:.0} ms, the encoding {:.0} ms ({} bytes)",
        copy.job_count(),
        cloned.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0,
        bytes
    );
    let after: Vec<_> = samples
        .iter()
        .filter(|(at, ..)| *at >= retention_ms + 600_000)
        .collect();
    if let (Some(first), Some(last)) = (after.first(), after.last()) {
        let change = |a: u64, b: u64| (b as f64 - a as f64) / a.max(1) as f64 * 100.0;
        println!(
            "after the first retention period: snapshot {:+.1}%, RSS {:+.1}% (first {} min to last {} min); {} jobs collected; {:.1} s",
            change(first.2, last.2),
            change(first.3, last.3),
            first.0 / 60_000,
            last.0 / 60_000,
            collected,
            started.elapsed().as_secs_f64()
        );
    }
}
