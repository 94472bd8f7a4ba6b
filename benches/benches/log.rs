//! Criterion benchmarks of the storage log's own paths (no peers):
//! appends (buffered and durable), single and range reads, and open.
//!
//! `cargo bench -p cathedral-benches --bench log`

use cathedral_storage::{Durability, Log, Options};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for size in [256usize, 4096] {
        let payload = vec![0x42u8; size];
        for (name, d) in [
            ("buffered", Durability::Buffered),
            ("durable", Durability::Durable),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), Options::default()).unwrap();
            g.throughput(Throughput::Elements(16));
            g.bench_function(format!("{name}/{size}B/16-per-write"), |b| {
                let refs: Vec<&[u8]> = (0..16).map(|_| payload.as_slice()).collect();
                b.iter(|| log.append_next(1, &refs, d).unwrap())
            });
        }
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes_max: 8 << 20,
        ..Options::default()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    let payload = vec![7u8; 1000];
    let refs: Vec<&[u8]> = (0..1000).map(|_| payload.as_slice()).collect();
    for _ in 0..100 {
        log.append_next(1, &refs, Durability::Buffered).unwrap();
    }
    log.sync().unwrap();
    let mut g = c.benchmark_group("read");
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("get/1000B", |b| {
        b.iter(|| {
            i = (i * 7919 + 13) % 100_000;
            log.get(i + 1).unwrap().unwrap()
        })
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("range256/1000B", |b| {
        b.iter(|| {
            i = (i * 7919 + 13) % 99_000;
            log.read(i + 1..i + 257).unwrap()
        })
    });
    g.finish();
    drop(log);
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function("100k-records-13-segments", |b| {
        b.iter_batched(
            || (),
            |()| Log::open(dir.path(), opts.clone()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
