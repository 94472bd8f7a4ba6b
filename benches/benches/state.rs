//! Criterion benchmark of `ClusterState::apply`: the full life of a job (submit, assign,
//! start, finish) as four commands, on a state already holding many jobs; and the same
//! four as requests (`Command::Request`, as every write is proposed), whose ids go through
//! the answered-request table (full, at `REQUESTS_REMEMBERED_MAX`, once 25,000 jobs ran).
//!
//! `cargo bench -p cathedral-benches --bench state`

use std::collections::BTreeMap;

use cathedral_consensus::requests::RequestId;
use cathedral_consensus::{
    Assignment, Capacity, ClusterState, Command, Exit, JobSpec, NodeInfo, Outcome, Role,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn lifecycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    for (preload, as_requests) in [(0u64, false), (0, true), (100_000, false), (100_000, true)] {
        let mut s = ClusterState::new();
        let mut index = 0u64;
        for n in 1..=16u64 {
            index += 1;
            s.apply(
                index,
                &Command::NodeRegistered {
                    at_ms: 0,
                    node: NodeInfo {
                        id: n,
                        address: String::new(),
                        role: Role::Worker,
                        tags: BTreeMap::new(),
                        capacity: Capacity {
                            slots: 64,
                            cpu_millis: 64_000,
                            memory_bytes: 1 << 36,
                        },
                    },
                },
            );
        }
        let spec = JobSpec::new("bench", &["echo", "hello"]);
        let mut next_job = 1u64;
        let mut seq = 0u64;
        let mut one = |s: &mut ClusterState, index: &mut u64| {
            let job = next_job;
            next_job += 1;
            let node = 1 + job % 16;
            let cmds = [
                Command::SubmitJobs {
                    at_ms: *index,
                    jobs: vec![spec.clone()],
                },
                Command::AssignTasks {
                    at_ms: *index,
                    assignments: vec![Assignment {
                        job,
                        attempt: 1,
                        node,
                    }],
                },
                Command::TaskStarted {
                    at_ms: *index,
                    job,
                    attempt: 1,
                    node,
                },
                Command::TaskFinished {
                    at_ms: *index,
                    job,
                    attempt: 1,
                    node,
                    outcome: Outcome {
                        exit: Exit::Code(0),
                        duration_ms: 1,
                        output_tail: b"hello\n".to_vec(),
                    },
                },
            ];
            for c in cmds {
                *index += 1;
                if as_requests {
                    seq += 1;
                    let id = RequestId::Node {
                        node,
                        incarnation: 7,
                        seq,
                    };
                    s.apply(*index, &c.once(id));
                } else {
                    s.apply(*index, &c);
                }
            }
        };
        for _ in 0..preload {
            one(&mut s, &mut index);
        }
        g.throughput(Throughput::Elements(4));
        g.bench_function(
            format!(
                "job-lifecycle-4-{}/{preload}-jobs-held",
                if as_requests { "requests" } else { "commands" }
            ),
            |b| b.iter(|| one(&mut s, &mut index)),
        );
    }
    g.finish();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
