//! Throughput of the offline tools' two passes over a large log: `verify` (every record
//! checksum, header, footer and index: the storage crate's `inspect`) and `replay` (the same
//! read plus decoding and applying every entry to a `ClusterState`, hashing the state at
//! every checkpoint). These are the functions `cathedral-log verify` and `cathedral-log
//! replay` run.
//!
//! The log is a realistic job workload made once (in `--dir`) and kept: one worker node, then per job a
//! submission, an assignment, a start and a finish with a 256-byte output tail, and a
//! checkpoint with the leader's hash every `--checkpoint-interval` entries (the server's
//! default: 10,000).
//!
//! ```text
//! cargo bench -p cathedral-benches --bench offline -- [--dir DIR] [--gib 1.0]
//!     [--checkpoint-interval 10000] [--regenerate] [--passes 2]
//! ```
//!
//! Drop the page cache first (`sync; echo 3 > /proc/sys/vm/drop_caches`) for cold figures;
//! the bench runs both passes `--passes` times and prints each (later ones are warm).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cathedral_consensus::raft::{encode_entry, TypeConfig};
use cathedral_consensus::replay::{replay, ReplayOptions};
use cathedral_consensus::{
    Assignment, Capacity, ClusterState, Command, Exit, JobSpec, NodeInfo, Outcome, Response, Role,
};
use cathedral_storage::{inspect, Durability, Entry as Record, Log, Options};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

struct Args {
    dir: PathBuf,
    gib: f64,
    checkpoint_interval: u64,
    regenerate: bool,
    passes: usize,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("target/offline-bench-log"),
        gib: 1.0,
        checkpoint_interval: 10_000,
        regenerate: false,
        passes: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--dir" => a.dir = it.next().expect("--dir DIR").into(),
            "--gib" => a.gib = it.next().expect("--gib N").parse().expect("a number"),
            "--checkpoint-interval" => {
                a.checkpoint_interval = it.next().expect("N").parse().expect("a number")
            }
            "--regenerate" => a.regenerate = true,
            "--passes" => a.passes = it.next().expect("--passes N").parse().expect("a number"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Writes the workload until the log holds `bytes`; returns the entries written.
fn generate(dir: &Path, bytes: u64, checkpoint_interval: u64) -> u64 {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(dir, Options::default()).expect("open");
    let mut state = ClusterState::new();
    let mut index = 0u64;
    let written = std::cell::Cell::new(0u64);
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut since_checkpoint = 0u64;
    let mut job = 0u64;
    let flush = |batch: &mut Vec<(u64, Vec<u8>)>, log: &Log| {
        let records: Vec<Record<'_>> = batch
            .iter()
            .map(|(i, p)| Record {
                index: *i,
                term: 1,
                payload: p,
            })
            .collect();
        log.append(&records, Durability::Buffered).expect("append");
        batch.clear();
    };
    let push = |cmd: Command,
                state: &mut ClusterState,
                index: &mut u64,
                batch: &mut Vec<(u64, Vec<u8>)>|
     -> Response {
        let r = state.apply(*index, &cmd);
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), *index),
            payload: EntryPayload::Normal(cmd),
        };
        let p = encode_entry(&e);
        written.set(written.get() + p.len() as u64 + 32);
        batch.push((*index, p));
        *index += 1;
        r
    };
    push(
        Command::NodeRegistered {
            at_ms: 1,
            node: NodeInfo {
                id: 1,
                address: "10.0.0.1:50051".into(),
                role: Role::Worker,
                tags: Default::default(),
                capacity: Capacity {
                    slots: 1 << 20,
                    cpu_millis: 1 << 30,
                    memory_bytes: 1 << 50u64,
                },
            },
        },
        &mut state,
        &mut index,
        &mut batch,
    );
    let tail = b"x".repeat(256);
    while written.get() < bytes {
        job += 1;
        let at = 1_700_000_000_000 + job;
        let mut spec = JobSpec::new(
            &format!("nightly-report-{job}"),
            &[
                "/usr/bin/python3",
                "-m",
                "reports.build",
                "--date",
                "2026-11-21",
            ],
        );
        spec.env.insert("REGION".into(), "eu-west-1".into());
        for cmd in [
            Command::SubmitJobs {
                at_ms: at,
                jobs: vec![spec],
            },
            Command::AssignTasks {
                at_ms: at + 1,
                assignments: vec![Assignment {
                    job,
                    attempt: 1,
                    node: 1,
                }],
            },
            Command::TaskStarted {
                at_ms: at + 2,
                job,
                attempt: 1,
                node: 1,
            },
            Command::TaskFinished {
                at_ms: at + 3,
                job,
                attempt: 1,
                node: 1,
                outcome: Outcome {
                    exit: Exit::Code(0),
                    duration_ms: 1234,
                    output_tail: tail.clone(),
                },
            },
        ] {
            push(cmd, &mut state, &mut index, &mut batch);
            since_checkpoint += 1;
        }
        if checkpoint_interval > 0 && since_checkpoint >= checkpoint_interval {
            since_checkpoint = 0;
            let at_index = index;
            if let Response::CheckpointRecorded { hash } = push(
                Command::Checkpoint { at_ms: at + 4 },
                &mut state,
                &mut index,
                &mut batch,
            ) {
                push(
                    Command::CheckpointHash {
                        at_ms: at + 5,
                        index: at_index,
                        hash,
                    },
                    &mut state,
                    &mut index,
                    &mut batch,
                );
            }
        }
        if batch.len() >= 4096 {
            flush(&mut batch, &log);
        }
    }
    flush(&mut batch, &log);
    log.sync().expect("sync");
    log.close().expect("close");
    index
}

fn main() {
    let a = args();
    let target = (a.gib * (1u64 << 30) as f64) as u64;
    // The log is made once: a later run measures the same one (--regenerate to remake it).
    if a.regenerate || !a.dir.join("meta").exists() {
        eprintln!(
            "generating a {:.2} GiB log in {} ...",
            a.gib,
            a.dir.display()
        );
        let t = Instant::now();
        let n = generate(&a.dir, target, a.checkpoint_interval);
        eprintln!("{n} entries in {:.1} s", t.elapsed().as_secs_f64());
    }
    for pass in ["first", "second", "third"].into_iter().take(a.passes) {
        let t = Instant::now();
        let r = inspect(&a.dir, None).expect("inspect");
        let verify_s = t.elapsed().as_secs_f64();
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        let bytes: u64 = r.segments.iter().map(|s| s.file_bytes).sum();
        let entries = r.records();
        let t = Instant::now();
        let rp = replay(&a.dir, &ReplayOptions::default(), &mut |_, _| {}).expect("replay");
        let replay_s = t.elapsed().as_secs_f64();
        assert!(rp.findings.is_empty(), "{:?}", rp.findings);
        let mib = bytes as f64 / (1 << 20) as f64;
        println!(
            "{pass:>8}: {entries} entries, {mib:.0} MiB in {} segments, {} jobs, {} checkpoints",
            r.segments.len(),
            rp.state.jobs().count(),
            rp.checkpoints
        );
        println!(
            "{pass:>8}: verify {verify_s:.2} s = {:.0} entries/s, {:.0} MiB/s",
            entries as f64 / verify_s,
            mib / verify_s
        );
        println!(
            "{pass:>8}: replay {replay_s:.2} s = {:.0} entries/s, {:.0} MiB/s (state hash {})",
            entries as f64 / replay_s,
            mib / replay_s,
            rp.state_hash()
        );
        println!(
            "{{\"pass\":\"{pass}\",\"entries\":{entries},\"bytes\":{bytes},\"verify_s\":{verify_s:.3},\"replay_s\":{replay_s:.3},\"checkpoints\":{}}}",
            rp.checkpoints
        );
    }
}
