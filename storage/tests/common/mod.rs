//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::Path;

use cathedral_storage::{Durability, Entry, Log, Options};

/// Options with small segments so tests rotate often.
pub fn small_options() -> Options {
    Options {
        segment_bytes_max: 4096,
        compress_threshold_bytes: Some(512),
        preallocate: true,
        ..Options::default()
    }
}

/// A deterministic payload for `index`: its length and bytes depend only on the index, so
/// any test can tell a record is exactly the one written.
pub fn payload(index: u64) -> Vec<u8> {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = (x % 700) as usize;
    let compressible = index.is_multiple_of(3);
    (0..len)
        .map(|i| {
            if compressible {
                (i % 7) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

pub fn term_of(index: u64) -> u64 {
    1 + index / 50
}

/// Appends indexes `from..to` with deterministic payloads in batches of `batch`, each
/// acknowledged durable.
pub fn fill(log: &Log, from: u64, to: u64, batch: u64) {
    fill_as(log, from, to, batch, Durability::Durable)
}

/// Appends indexes `from..to` written but not made durable: what a crash can tear.
pub fn fill_buffered(log: &Log, from: u64, to: u64, batch: u64) {
    fill_as(log, from, to, batch, Durability::Buffered)
}

fn fill_as(log: &Log, from: u64, to: u64, batch: u64, durability: Durability) {
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        let payloads: Vec<Vec<u8>> = (i..end).map(payload).collect();
        let entries: Vec<Entry<'_>> = (i..end)
            .zip(&payloads)
            .map(|(index, p)| Entry {
                index,
                term: term_of(index),
                payload: p,
            })
            .collect();
        log.append(&entries, durability).unwrap();
        i = end;
    }
}

/// Checks that `log` holds exactly `from..to` with the deterministic payloads.
pub fn check(log: &Log, from: u64, to: u64) {
    if from == to {
        assert_eq!(log.last_index(), None, "log should be empty");
        return;
    }
    assert_eq!(log.first_index(), Some(from));
    assert_eq!(log.last_index(), Some(to - 1));
    let records = log.read(from..to).unwrap();
    assert_eq!(records.len() as u64, to - from);
    for r in records {
        assert_eq!(r.term, term_of(r.index), "term of {}", r.index);
        assert_eq!(r.payload, payload(r.index), "payload of {}", r.index);
    }
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The seed of a random test: `CATHEDRAL_SEED` when set, else fresh. Printed either way so
/// a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("CATHEDRAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed = {seed} (replay with CATHEDRAL_SEED={seed})");
    seed
}

/// What a crash would leave: a copy of `dir` taken while `log` is open, after a sync, so
/// the active segment is unsealed (as after SIGKILL or power loss). The copy holds no lock.
pub fn crash_image(log: &Log, dir: &Path) -> tempfile::TempDir {
    log.sync().unwrap();
    crash_image_as_is(dir)
}

/// What SIGKILL would leave right now: a copy of `dir` as the page cache holds it, without
/// a sync first — records appended `Buffered` since the last durable append are in it,
/// past the acknowledged watermark.
pub fn crash_image_as_is(dir: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    copy_tree(dir, image.path());
    image
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
