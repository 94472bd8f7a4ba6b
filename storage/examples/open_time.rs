//! Times opening a log directory, or first fills one.
//!
//! ```text
//! cargo run --release -p cathedral-storage --example open_time -- fill DIR MIB RECORD_BYTES
//! cargo run --release -p cathedral-storage --example open_time -- open DIR
//! ```

use std::time::Instant;

use cathedral_storage::{Durability, Log, Options};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: open_time fill DIR MIB RECORD_BYTES | open DIR");
        std::process::exit(2)
    };
    match args.first().map(String::as_str) {
        Some("fill") if args.len() == 4 => {
            let mib: u64 = args[2].parse().unwrap_or_else(|_| usage());
            let record: usize = args[3].parse().unwrap_or_else(|_| usage());
            let log = Log::open(&args[1], Options::default()).expect("open");
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let per = ((1 << 20) / record).max(1);
            let batch: Vec<Vec<u8>> = (0..per)
                .map(|_| {
                    (0..record)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x as u8
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = batch.iter().map(|b| b.as_slice()).collect();
            let records = (mib << 20) / record as u64;
            let mut done = 0;
            while done < records {
                let n = (records - done).min(per as u64) as usize;
                log.append_next(1, &refs[..n], Durability::Buffered)
                    .expect("append");
                done += n as u64;
            }
            log.close().expect("close");
        }
        Some("open") if args.len() == 2 => {
            let t = Instant::now();
            let log = Log::open(&args[1], Options::default()).expect("open");
            let opened = t.elapsed();
            println!(
                "opened in {:.1} ms: records {:?}..{:?}, {} segments",
                opened.as_secs_f64() * 1e3,
                log.first_index(),
                log.last_index(),
                log.recovery_report().segments
            );
        }
        _ => usage(),
    }
}
