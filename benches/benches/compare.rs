//! Cathedral's log beside raft-engine 0.4 and sled 0.34, in one process run, on one file
//! system, at equal durability. Prints one table, then one JSON object per measurement,
//! then one line of key ratios.
//!
//! ```text
//! cargo bench -p cathedral-benches --bench compare -- --quick    # under a minute
//! cargo bench -p cathedral-benches --bench compare               # the full matrix
//!     [--dir PATH]       where the engines write (default: target/compare-tmp)
//!     [--seconds S]      time per append run (quick 0.3, full 1); three runs each
//!     [--engines a,b]    a subset of cathedral,raft-engine,sled
//! ```
//!
//! Workloads:
//! 1. durable appends: record sizes × records per durable write × concurrent writers;
//!    records/s, MB/s, p50/p99 latency of one durable write;
//! 2. the disk's raw sequential write bandwidth (1 MiB writes, one fdatasync at the end;
//!    buffered and O_DIRECT, the faster is the ceiling) and every engine's 64 KiB append
//!    bandwidth as a percentage of it;
//! 3. recovery: time to open a large log (bytes) and a log of many small records, after a
//!    clean close and after the writing process was killed with SIGKILL; page cache dropped
//!    first when the process may (root), so opens read the disk;
//! 4. reads after reopening the large log: random single records and sequential ranges.

mod peers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peers::{Kind, Subject};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

struct Plan {
    quick: bool,
    seconds: f64,
    dir: PathBuf,
    engines: Vec<Kind>,
    /// (record bytes, records per durable write, writers)
    appends: Vec<(usize, usize, usize)>,
    /// Bytes written at most per append configuration.
    append_bytes_cap: u64,
    /// The large log: total payload bytes in records of `large_record` bytes.
    large_bytes: u64,
    large_record: usize,
    /// The log of many small records.
    small_count: u64,
    small_record: usize,
    random_reads: u64,
    recovery_engines: Vec<Kind>,
    /// Runs of each append configuration (engine order rotated between runs).
    reps: usize,
}

fn plan() -> Plan {
    let mut quick = false;
    let mut seconds = None;
    let mut dir = None;
    let mut engines = Kind::ALL.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--engines" => {
                engines = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|e| Kind::parse(e).unwrap_or_else(|| die(&format!("unknown engine {e}"))))
                    .collect()
            }
            "--bench" => {}
            "--child-fill" => child_fill(args.collect()),
            other => die(&format!("unknown argument {other}")),
        }
    }
    let dir =
        dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/compare-tmp"));
    let appends = if quick {
        vec![
            (256, 1, 1),
            (256, 1, 8),
            (4096, 16, 1),
            (65536, 16, 1),
            (65536, 256, 1),
        ]
    } else {
        let mut v = Vec::new();
        for size in [64, 256, 4096, 65536] {
            for batch in [1, 16, 256] {
                for writers in [1, 8] {
                    v.push((size, batch, writers));
                }
            }
        }
        v
    };
    let recovery_engines: Vec<Kind> = engines
        .iter()
        .copied()
        .filter(|k| !quick || *k != Kind::Sled)
        .collect();
    Plan {
        quick,
        seconds: seconds.unwrap_or(if quick { 0.3 } else { 1.0 }),
        reps: 3,
        dir,
        engines,
        appends,
        append_bytes_cap: if quick { 256 << 20 } else { 2 << 30 },
        large_bytes: if quick { 128 << 20 } else { 1 << 30 },
        large_record: 4096,
        small_count: if quick { 400_000 } else { 4_000_000 },
        small_record: 64,
        random_reads: if quick { 20_000 } else { 200_000 },
        recovery_engines,
    }
}

fn die(msg: &str) -> ! {
    eprintln!("compare: {msg}");
    std::process::exit(2)
}

/// `count` distinct payloads of incompressible bytes, so compression — per record or per
/// batch, as the engines do it — neither helps nor hides anything.
fn payloads(len: usize, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (len as u64) << 32);
    (0..count)
        .map(|_| {
            let mut v = vec![0u8; len];
            rng.fill_bytes(&mut v);
            v
        })
        .collect()
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create benchmark directory");
    d
}

/// Drops the page cache so an open reads the disk. Needs root; says whether it worked.
fn drop_caches() -> bool {
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Report {
    rows: Vec<String>,
    json: Vec<serde_json::Value>,
}

impl Report {
    fn add(&mut self, row: String, value: serde_json::Value) {
        eprintln!("  {row}");
        self.rows.push(row);
        self.json.push(value);
    }
}

fn main() {
    let plan = plan();
    std::fs::create_dir_all(&plan.dir).expect("create benchmark directory");
    let cold = drop_caches();
    eprintln!(
        "compare: {} mode, {} s per append configuration, data in {}, page cache {}",
        if plan.quick { "quick" } else { "full" },
        plan.seconds,
        plan.dir.display(),
        if cold {
            "dropped before each open"
        } else {
            "not droppable (not root): opens are warm"
        }
    );
    let mut report = Report {
        rows: Vec::new(),
        json: Vec::new(),
    };
    let mut appends: Vec<(Kind, usize, usize, usize, f64, f64)> = Vec::new();

    // 1. Durable appends.
    eprintln!(
        "durable appends ({} runs each, engine order rotated, median reported):",
        plan.reps
    );
    for &(size, batch, writers) in &plan.appends {
        let mut runs: Vec<Vec<AppendResult>> = plan.engines.iter().map(|_| Vec::new()).collect();
        for rep in 0..plan.reps {
            for k in 0..plan.engines.len() {
                let e = (k + rep) % plan.engines.len();
                let kind = plan.engines[e];
                let dir = fresh_dir(&plan.dir, kind.name());
                let subject = Arc::new(Subject::open(kind, &dir));
                let seconds = plan.seconds;
                runs[e].push(run_appends(
                    &subject,
                    size,
                    batch,
                    writers,
                    seconds,
                    plan.append_bytes_cap,
                ));
                drop(subject);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        for (e, reps) in runs.into_iter().enumerate() {
            let kind = plan.engines[e];
            let r = AppendResult::median(reps);
            appends.push((kind, size, batch, writers, r.records_per_s, r.mb_per_s));
            report.add(
                format!(
                    "append   {:<11} {:>6} B x {:>3}/write x {} writers: {:>10.0} rec/s {:>8.1} MB/s  p50 {:>7} us  p99 {:>7} us",
                    kind.name(), size, batch, writers, r.records_per_s, r.mb_per_s, r.p50_us, r.p99_us
                ),
                json!({"workload": "append", "engine": kind.name(), "record_bytes": size, "records_per_write": batch,
                       "writers": writers, "records_per_s": r.records_per_s, "mb_per_s": r.mb_per_s,
                       "p50_us": r.p50_us, "p99_us": r.p99_us, "records": r.records}),
            );
        }
    }

    // 2. Bandwidth ceiling.
    eprintln!("bandwidth:");
    let raw_total = plan.append_bytes_cap.min(1 << 30);
    let buffered = raw_bandwidth(&plan.dir, raw_total, false);
    let direct = raw_bandwidth(&plan.dir, raw_total, true);
    for (how, mb) in [("buffered", buffered), ("O_DIRECT", direct)] {
        report.add(
            format!(
                "raw      sequential {how} write {} MiB, one fdatasync: {mb:.1} MB/s",
                raw_total >> 20
            ),
            json!({"workload": "raw_bandwidth", "mode": how, "bytes": raw_total, "mb_per_s": mb}),
        );
    }
    // The ceiling is the faster of the two, so percentages never flatter an engine: on
    // some virtual machines plain buffered writes that grow the page cache are far slower
    // than the disk.
    let raw = buffered.max(direct);
    let mut best64 = Vec::new();
    for &kind in &plan.engines {
        let rows: Vec<_> = appends
            .iter()
            .filter(|a| a.0 == kind && a.1 == 65536)
            .collect();
        for a in &rows {
            report.add(
                format!(
                    "bandwidth {:<11} 64 KiB x {:>3}/write x {} writers: {:>5.1}% of the raw ceiling",
                    kind.name(),
                    a.2,
                    a.3,
                    100.0 * a.5 / raw
                ),
                json!({"workload": "bandwidth_pct", "engine": kind.name(), "records_per_write": a.2,
                       "writers": a.3, "mb_per_s": a.5, "pct_of_raw": 100.0 * a.5 / raw}),
            );
        }
        let best = rows.iter().map(|a| a.5).fold(0.0, f64::max);
        best64.push((kind, best));
    }

    // 3. Recovery and 4. reads.
    eprintln!("recovery and reads:");
    let mut opens: Vec<(Kind, &str, &str, f64)> = Vec::new();
    for &kind in &plan.recovery_engines {
        for (set, bytes, record) in [
            ("large", plan.large_bytes, plan.large_record),
            (
                "small",
                plan.small_count * plan.small_record as u64,
                plan.small_record,
            ),
        ] {
            if kind == Kind::Sled && set == "small" {
                // sled needs over a minute and many GB of memory for 4M records (the full
                // run was OOM-killed with it); it is measured on the large log only.
                continue;
            }
            let count = bytes / record as u64;
            let dir = fresh_dir(&plan.dir, &format!("{}-{set}", kind.name()));
            let t = Instant::now();
            fill(kind, &dir, count, record);
            let fill_s = t.elapsed().as_secs_f64();
            for how in ["clean", "killed"] {
                if how == "killed" {
                    // A child process writes the same data set again into a fresh directory
                    // and kills itself with SIGKILL once it is synced.
                    let _ = std::fs::remove_dir_all(&dir);
                    let status = std::process::Command::new(std::env::current_exe().unwrap())
                        .args([
                            "--child-fill",
                            kind.name(),
                            dir.to_str().unwrap(),
                            &count.to_string(),
                            &record.to_string(),
                        ])
                        .status()
                        .expect("spawn fill child");
                    assert!(!status.success(), "the fill child must die by SIGKILL");
                }
                drop_caches();
                let t = Instant::now();
                let subject = Subject::open(kind, &dir);
                let bounds = subject.bounds();
                let open_s = t.elapsed().as_secs_f64();
                assert_eq!(
                    bounds.map(|b| b.1 - b.0 + 1),
                    Some(count),
                    "{} {set} reopened with every record",
                    kind.name()
                );
                opens.push((kind, set, how, open_s));
                report.add(
                    format!(
                        "open     {:<11} {set:>5} log ({} records of {record} B, {} MiB) after {how:<6}: {:>8.3} s (fill {:.1} s)",
                        kind.name(), count, (count * record as u64) >> 20, open_s, fill_s
                    ),
                    json!({"workload": "open", "engine": kind.name(), "set": set, "after": how, "records": count,
                           "record_bytes": record, "seconds": open_s, "cold_cache": cold}),
                );
                if set == "large" && how == "clean" {
                    reads(
                        &subject,
                        count,
                        record,
                        plan.random_reads,
                        &mut report,
                        kind,
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    // Table, JSON lines, ratios.
    println!(
        "\n== Cathedral vs raft-engine vs sled ({} mode) ==",
        if plan.quick { "quick" } else { "full" }
    );
    for r in &report.rows {
        println!("{r}");
    }
    println!();
    for j in &report.json {
        println!("{j}");
    }
    let rate = |kind: Kind| {
        appends
            .iter()
            .find(|a| a.0 == kind && a.1 == 256 && a.2 == 1 && a.3 == 8)
            .map(|a| a.4)
    };
    let ratio = match (rate(Kind::Cathedral), rate(Kind::RaftEngine)) {
        (Some(c), Some(r)) => format!("{:.2}", c / r),
        _ => "n/a".into(),
    };
    let bw = best64
        .iter()
        .find(|b| b.0 == Kind::Cathedral)
        .map_or("n/a".into(), |b| format!("{:.0}%", 100.0 * b.1 / raw));
    let open_ratio = |set: &str| {
        let t = |k| {
            opens
                .iter()
                .find(|o| o.0 == k && o.1 == set && o.2 == "clean")
                .map(|o| o.3)
        };
        match (t(Kind::RaftEngine), t(Kind::Cathedral)) {
            (Some(r), Some(c)) => format!("{:.1}x", r / c),
            _ => "n/a".into(),
        }
    };
    println!(
        "ratios: cathedral/raft-engine durable rec/s (256 B x 8 writers) = {ratio}; cathedral 64 KiB bandwidth / raw = {bw}; \
         raft-engine/cathedral open time: large log {}, small records {}",
        open_ratio("large"),
        open_ratio("small")
    );
}

struct AppendResult {
    records: u64,
    records_per_s: f64,
    mb_per_s: f64,
    p50_us: u32,
    p99_us: u32,
    latencies: Vec<u32>,
}

impl AppendResult {
    /// The run with the median rate, with latency percentiles over all runs.
    fn median(mut runs: Vec<AppendResult>) -> AppendResult {
        let mut all: Vec<u32> = runs
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        all.sort_unstable();
        runs.sort_by(|a, b| a.records_per_s.total_cmp(&b.records_per_s));
        let mut r = runs.swap_remove(runs.len() / 2);
        r.p50_us = percentile(&all, 0.50);
        r.p99_us = percentile(&all, 0.99);
        r
    }
}

fn run_appends(
    subject: &Arc<Subject>,
    size: usize,
    batch: usize,
    writers: usize,
    seconds: f64,
    cap: u64,
) -> AppendResult {
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (subject, stop, bytes, latencies) = (
                subject.clone(),
                stop.clone(),
                bytes.clone(),
                latencies.clone(),
            );
            std::thread::spawn(move || {
                let data = payloads(size, batch, w as u64);
                let refs: Vec<&[u8]> = data.iter().map(|p| p.as_slice()).collect();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    subject.append(w, &refs);
                    mine.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if bytes.fetch_add((size * batch) as u64, Ordering::Relaxed) >= cap {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    while start.elapsed().as_secs_f64() < seconds && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let records = lat.len() as u64 * batch as u64;
    AppendResult {
        records,
        records_per_s: records as f64 / elapsed,
        mb_per_s: (records * size as u64) as f64 / elapsed / 1e6,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        latencies: lat,
    }
}

/// Sequential write bandwidth of plain 1 MiB writes and one fdatasync at the end.
/// Sequential write bandwidth of 1 MiB writes and one fdatasync at the end: plain buffered
/// writes, or `O_DIRECT` writes from an aligned buffer (bypassing the page cache).
fn raw_bandwidth(root: &Path, total: u64, direct: bool) -> f64 {
    use std::os::unix::fs::OpenOptionsExt;
    let path = fresh_dir(root, "raw").join("raw.bin");
    let data = payloads(1 << 20, 1, 1).remove(0);
    let layout = std::alloc::Layout::from_size_align(data.len(), 4096).unwrap();
    // SAFETY: the layout has a non-zero size; the buffer is freed below, after its last use.
    let ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null(), "allocation failed");
    let chunk = unsafe { std::slice::from_raw_parts_mut(ptr, data.len()) };
    chunk.copy_from_slice(&data);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(&path)
        .expect("create raw file");
    let t = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(chunk).expect("raw write");
        written += chunk.len() as u64;
    }
    unsafe { std::alloc::dealloc(ptr, layout) };
    f.sync_data().expect("raw fdatasync");
    let mb = written as f64 / t.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    mb
}

/// Writes `count` records of `record` bytes to writer 0's stream, syncs and closes.
fn fill(kind: Kind, dir: &Path, count: u64, record: usize) {
    fill_into(&Subject::open(kind, dir), count, record);
}

/// Writes `count` records of `record` bytes to writer 0's stream, 1 MiB a call, and syncs.
fn fill_into(subject: &Subject, count: u64, record: usize) {
    let per_batch = (1 << 20) / record;
    let data = payloads(record, per_batch, 99);
    let refs: Vec<&[u8]> = data.iter().map(|p| p.as_slice()).collect();
    let mut done = 0;
    while done < count {
        let n = (count - done).min(per_batch as u64) as usize;
        subject.append_buffered(0, &refs[..n]);
        done += n as u64;
    }
    subject.sync();
}

/// Child process: fill, then die by SIGKILL without closing anything.
fn child_fill(args: Vec<String>) -> ! {
    let kind = Kind::parse(&args[0]).expect("engine");
    let dir = PathBuf::from(&args[1]);
    let count: u64 = args[2].parse().expect("count");
    let record: usize = args[3].parse().expect("record");
    let subject = Subject::open(kind, &dir);
    fill_into(&subject, count, record);
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}

fn reads(subject: &Subject, count: u64, record: usize, n: u64, report: &mut Report, kind: Kind) {
    let (first, last) = subject.bounds().expect("non-empty");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += subject.get(rng.gen_range(first..=last));
    }
    let s = t.elapsed().as_secs_f64();
    assert_eq!(bytes as u64, n * record as u64);
    report.add(
        format!("read     {:<11} random single records: {:>10.0} reads/s {:>8.1} MB/s", kind.name(), n as f64 / s, bytes as f64 / s / 1e6),
        json!({"workload": "read_random", "engine": kind.name(), "reads": n, "reads_per_s": n as f64 / s, "mb_per_s": bytes as f64 / s / 1e6}),
    );
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut i = first;
    while i <= last {
        let end = (i + 256).min(last + 1);
        bytes += subject.range(i, end) as u64;
        i = end;
    }
    let s = t.elapsed().as_secs_f64();
    assert_eq!(bytes, count * record as u64);
    report.add(
        format!("read     {:<11} sequential ranges of 256: {:>10.0} records/s {:>8.1} MB/s", kind.name(), count as f64 / s, bytes as f64 / s / 1e6),
        json!({"workload": "read_sequential", "engine": kind.name(), "records": count, "records_per_s": count as f64 / s, "mb_per_s": bytes as f64 / s / 1e6}),
    );
}
