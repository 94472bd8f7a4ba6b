//! Rough durable-append throughput of the log: N appender threads, each appending one
//! record at a time with `Durability::Durable`, for a fixed time.
//!
//! ```text
//! cargo run --release -p cathedral-storage --example append_throughput -- \
//!     [--appenders 1,8] [--record-bytes 256] [--batch 1] [--cache-behind-mib 8|off] [--seconds 5] [--dir PATH]
//! ```
//!
//! Prints records/s, MB/s and how many records shared one fdatasync (group commit).
//! The side-by-side comparison with other engines lives in the `benches` crate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_storage::{Durability, Log, Options};

fn main() {
    let mut appenders = vec![1usize, 8];
    let mut record_bytes = 256usize;
    let mut batch = 1usize;
    let mut options = Options::default();
    let mut seconds = 5u64;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--appenders" => {
                appenders = value()
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .unwrap_or_else(|_| usage("--appenders takes numbers"))
                    })
                    .collect()
            }
            "--record-bytes" => {
                record_bytes = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--record-bytes takes a number"))
            }
            "--cache-behind-mib" => {
                options.cache_behind_bytes = match value().as_str() {
                    "off" => None,
                    n => Some(
                        n.parse::<u64>()
                            .unwrap_or_else(|_| usage("--cache-behind-mib takes a number or off"))
                            << 20,
                    ),
                }
            }
            "--batch" => {
                batch = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--batch takes a number"))
            }
            "--seconds" => {
                seconds = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seconds takes a number"))
            }
            "--dir" => dir = Some(value().into()),
            "--bench" => {} // passed by `cargo bench`; ignored
            other => usage(&format!("unknown argument {other}")),
        }
    }
    println!("appenders  record_bytes  records/s   MB/s   records/fdatasync");
    for &n in &appenders {
        let tmp = tempfile::tempdir_in(dir.clone().unwrap_or_else(std::env::temp_dir))
            .expect("temporary directory");
        let log = Arc::new(Log::open(tmp.path(), options.clone()).expect("open log"));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        // Distinct pseudo-random payloads: nothing compresses, as with real entries' bodies.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let payloads: Vec<Vec<u8>> = (0..batch)
            .map(|_| {
                (0..record_bytes)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let payloads = Arc::new(payloads);
        let start = Instant::now();
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (log, stop, count, payloads) =
                    (log.clone(), stop.clone(), count.clone(), payloads.clone());
                std::thread::spawn(move || {
                    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                    while !stop.load(Ordering::Relaxed) {
                        log.append_next(1, &refs, Durability::Durable)
                            .expect("append");
                        count.fetch_add(refs.len() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let records = count.load(Ordering::Relaxed) as f64;
        let stats = log.stats();
        println!(
            "{n:>9}  {record_bytes:>12}  {:>9.0}  {:>5.1}  {:>17.1}",
            records / elapsed,
            records * record_bytes as f64 / elapsed / 1e6,
            stats.records as f64 / stats.syncs.max(1) as f64
        );
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("append_throughput: {msg}\nusage: append_throughput [--appenders 1,8] [--record-bytes 256] [--batch 1] [--cache-behind-mib 8|off] [--seconds 5] [--dir PATH]");
    std::process::exit(2)
}
