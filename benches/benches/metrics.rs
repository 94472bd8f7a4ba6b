//! Criterion benchmark of what `/metrics` adds to one committed submit: the counting a
//! gRPC call passes through (the method's label, the call counted with its latency by the
//! auth layer, the proposal counted with its latency) and its share of an entry's events
//! (an entry of 16 submits read from the event feed by the metrics task and counted by
//! kind). Divided by the server's CPU time per write (BENCHMARKS.md), it bounds the cost
//! where end-to-end runs on this machine are too noisy to resolve a few percent.
//!
//! `cargo bench -p cathedral-benches --bench metrics`

use std::time::Duration;

use cathedral_consensus::events::{Event, EventKind};
use cathedral_consensus::raft::EventFeed;
use cathedral_server::metrics;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn counting(c: &mut Criterion) {
    metrics::install();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one submit: label, API call, proposal", |b| {
        b.iter(|| {
            let method = metrics::method_label(black_box("/cathedral.v1.JobService/SubmitJob"));
            metrics::api_call(method, "OK", Duration::from_micros(black_box(700)));
            metrics::proposal(true, Duration::from_micros(black_box(650)));
        })
    });
    // The metrics task's share: one applied entry of 16 submits, read from the feed and
    // counted by kind (the same steps as `scrape::follow_events`).
    let feed = EventFeed::with_capacity(1 << 16);
    let by_kind: Vec<::metrics::Counter> = EventKind::ALL
        .iter()
        .map(|k| ::metrics::counter!("cathedral_events_total", "kind" => k.name()))
        .collect();
    let mut index = 0u64;
    g.throughput(Throughput::Elements(16));
    g.bench_function("an entry of 16 submits: events read and counted", |b| {
        b.iter(|| {
            index += 1;
            let events: Vec<Event> = (0..16u32)
                .map(|seq| {
                    let mut e = Event::new(EventKind::JobSubmitted);
                    e.index = index;
                    e.seq = seq;
                    e.job = Some(index * 16 + seq as u64);
                    e.detail = "pending".into();
                    e
                })
                .collect();
            feed.push(index, events);
            for e in feed.read((index, 0), 256).expect("held") {
                if let Some(i) = EventKind::ALL.iter().position(|k| *k == e.kind) {
                    by_kind[i].increment(1);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
