//! Criterion benchmark of the scheduler's placement, a pure function: 10,000 pending jobs
//! over 100 live nodes (16 slots each, a quarter with a `zone` tag, one job in ten
//! constrained to a zone), one call deciding a full entry's worth of assignments, with each
//! placement strategy.
//!
//! `cargo bench -p cathedral-benches --bench placement`

use std::collections::BTreeMap;

use cathedral_consensus::{Capacity, ClusterState, Command, JobSpec, NodeInfo, Role};
use cathedral_server::{place, Candidates, Placement, Strategy, ASSIGNMENTS_PER_ENTRY_MAX};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn placement(c: &mut Criterion) {
    let mut s = ClusterState::new();
    let mut index = 0u64;
    for n in 1..=100u64 {
        index += 1;
        let mut tags = BTreeMap::new();
        if n % 4 == 0 {
            tags.insert("zone".to_string(), format!("z{}", n % 3));
        }
        s.apply(
            index,
            &Command::NodeRegistered {
                at_ms: 0,
                node: NodeInfo {
                    id: n,
                    address: String::new(),
                    role: Role::Worker,
                    tags,
                    capacity: Capacity {
                        slots: 16,
                        cpu_millis: 16_000,
                        memory_bytes: 64 << 30,
                    },
                },
            },
        );
    }
    let jobs: Vec<JobSpec> = (0..10_000i32)
        .map(|i| {
            let mut j = JobSpec::new(&format!("j{i}"), &["true"]);
            j.priority = i % 7;
            j.resources.cpu_millis = 250;
            if i % 10 == 0 {
                j.constraints.insert("zone".into(), format!("z{}", i % 3));
            }
            j
        })
        .collect();
    index += 1;
    s.apply(index, &Command::SubmitJobs { at_ms: 0, jobs });
    // Every node alive and available, advertising the tags it registered.
    let alive: Candidates = s
        .nodes()
        .map(|n| (n.info.id, n.info.tags.clone()))
        .collect();
    let mut g = c.benchmark_group("place");
    for (name, placement) in [
        ("10k_pending_100_nodes", Placement::LeastLoaded),
        ("10k_pending_100_nodes_round_robin", Placement::RoundRobin),
        ("10k_pending_100_nodes_random", Placement::Random),
    ] {
        let mut strategy = Strategy::new(placement, 7);
        let decided = place(&s, &alive, 1, ASSIGNMENTS_PER_ENTRY_MAX, &mut strategy).len();
        assert_eq!(decided, ASSIGNMENTS_PER_ENTRY_MAX);
        g.throughput(Throughput::Elements(decided as u64));
        g.bench_function(name, |b| {
            b.iter(|| place(&s, &alive, 1, ASSIGNMENTS_PER_ENTRY_MAX, &mut strategy))
        });
    }
    g.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
