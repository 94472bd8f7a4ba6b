//! Snapshot write and read throughput, and chunked transfer through an in-memory channel,
//! for a state of `--mib` MiB (default 100).
//!
//! ```text
//! cargo run --release -p cathedral-storage --example snapshot_throughput -- [--mib 100] [--chunk-kib 1024] [--dir PATH]
//! ```
//!
//! The body is state-like: three quarters repetitive text, one quarter noise.

use std::io::{Read, Write};
use std::time::Instant;

use cathedral_storage::{
    ChunkReceiver, ChunkSender, ReceiverLimits, SnapshotMeta, SnapshotOptions, SnapshotStore,
};

fn main() {
    let mut mib = 100u64;
    let mut chunk_kib = 1024u64;
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("snapshot_throughput: {a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--mib" => mib = value().parse().expect("--mib takes a number"),
            "--chunk-kib" => chunk_kib = value().parse().expect("--chunk-kib takes a number"),
            "--dir" => dir = value().into(),
            "--bench" => {}
            other => {
                eprintln!("snapshot_throughput: unknown argument {other}\nusage: snapshot_throughput [--mib 100] [--chunk-kib 1024] [--dir PATH]");
                std::process::exit(2)
            }
        }
    }
    let len = mib << 20;
    let body = state_like(len);
    let a = tempfile::tempdir_in(&dir).expect("temporary directory");
    let store = SnapshotStore::open(a.path(), SnapshotOptions::default()).expect("store");
    let meta = SnapshotMeta {
        last: Some((1_000_000, 7)),
        data: b"membership".to_vec(),
        created_ms: 0,
    };

    let t = Instant::now();
    let mut w = store.writer(meta).expect("writer");
    for piece in body.chunks(1 << 20) {
        w.write_all(piece).expect("write");
    }
    let info = w.finish().expect("finish");
    let write_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut r = store.read(&info).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(n, len);

    let b = tempfile::tempdir_in(&dir).expect("temporary directory");
    let target = SnapshotStore::open(b.path(), SnapshotOptions::default()).expect("store");
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let path = info.path.clone();
    let sender = std::thread::spawn(move || {
        let mut s = ChunkSender::open(&path, chunk_kib << 10).expect("sender");
        while let Some(c) = s.next_chunk().expect("chunk") {
            tx.send(c).expect("send");
        }
    });
    let mut receiver = ChunkReceiver::new(&target, ReceiverLimits::default()).expect("receiver");
    for c in rx {
        receiver.accept(&c).expect("accept");
    }
    sender.join().unwrap();
    let installed = receiver.finish().expect("install");
    let transfer_s = t.elapsed().as_secs_f64();
    assert_eq!(installed.file_bytes, info.file_bytes);

    let mb = len as f64 / 1e6;
    let file_mb = info.file_bytes as f64 / 1e6;
    println!(
        "state {mib} MiB, snapshot file {file_mb:.1} MB (ratio {:.2})",
        info.file_bytes as f64 / len as f64
    );
    println!(
        "write    {:>8.1} MB/s of state ({write_s:.2} s, compress + checksum + fsync + rename)",
        mb / write_s
    );
    println!(
        "read     {:>8.1} MB/s of state ({read_s:.2} s, checksum pass + decompress)",
        mb / read_s
    );
    println!(
        "transfer {:>8.1} MB/s of file, {:>8.1} MB/s of state ({transfer_s:.2} s, {chunk_kib} KiB chunks, verify + install)",
        file_mb / transfer_s,
        mb / transfer_s
    );
}

fn state_like(len: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|pos| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if pos % 4096 < 1024 {
                x as u8
            } else {
                let text = b"{\"job\":17,\"state\":\"succeeded\"} ";
                text[(pos % text.len() as u64) as usize]
            }
        })
        .collect()
}
