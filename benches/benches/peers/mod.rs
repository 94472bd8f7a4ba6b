//! The three engines behind one small interface, at equal durability: every `append` returns
//! only after the records are on disk (Cathedral: `Durability::Durable`; raft-engine:
//! `write(.., sync = true)`; sled: `apply_batch` then `flush`).
//!
//! Each writer has its own stream: a raft-engine region, a sled tree. Cathedral has one
//! log, as a Raft node does; concurrent writers share it and its group commit.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cathedral_storage::{Durability, Log, Options};
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};

#[allow(clippy::all, unused, nonstandard_style, mismatched_lifetime_syntaxes)]
mod entry {
    include!(concat!(env!("OUT_DIR"), "/entry.rs"));
}
pub use entry::Entry;

#[derive(Clone)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cathedral,
    RaftEngine,
    Sled,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Cathedral, Kind::RaftEngine, Kind::Sled];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Cathedral => "cathedral",
            Kind::RaftEngine => "raft-engine",
            Kind::Sled => "sled",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

// One value per benchmark run; boxing the variants would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum Subject {
    Cathedral(Log),
    RaftEngine {
        engine: Engine,
        next: Vec<AtomicU64>,
    },
    Sled {
        db: sled::Db,
        trees: Vec<sled::Tree>,
        next: Vec<AtomicU64>,
    },
}

const STREAMS: usize = 64;

impl Subject {
    pub fn open(kind: Kind, dir: &Path) -> Subject {
        match kind {
            Kind::Cathedral => {
                Subject::Cathedral(Log::open(dir, Options::default()).expect("open cathedral log"))
            }
            Kind::RaftEngine => {
                let cfg = Config {
                    dir: dir.to_str().expect("utf-8 path").to_owned(),
                    ..Config::default()
                };
                let engine = Engine::open(cfg).expect("open raft-engine");
                let next = (0..STREAMS)
                    .map(|r| AtomicU64::new(engine.last_index(r as u64 + 1).map_or(1, |l| l + 1)))
                    .collect();
                Subject::RaftEngine { engine, next }
            }
            Kind::Sled => {
                let db = sled::Config::new().path(dir).open().expect("open sled");
                let trees: Vec<sled::Tree> = (0..STREAMS)
                    .map(|w| db.open_tree(format!("w{w}")).expect("open sled tree"))
                    .collect();
                let next = trees
                    .iter()
                    .map(|t| {
                        let last = t
                            .last()
                            .expect("sled last")
                            .map_or(0, |(k, _)| key_index(&k));
                        AtomicU64::new(last + 1)
                    })
                    .collect();
                Subject::Sled { db, trees, next }
            }
        }
    }

    /// Appends `payloads` durably to `writer`'s stream.
    pub fn append(&self, writer: usize, payloads: &[&[u8]]) {
        self.append_with(writer, payloads, true)
    }

    /// Appends without waiting for the disk (for filling large data sets); see `sync`.
    pub fn append_buffered(&self, writer: usize, payloads: &[&[u8]]) {
        self.append_with(writer, payloads, false)
    }

    fn append_with(&self, writer: usize, payloads: &[&[u8]], durable: bool) {
        match self {
            Subject::Cathedral(log) => {
                let d = if durable {
                    Durability::Durable
                } else {
                    Durability::Buffered
                };
                log.append_next(1, payloads, d).expect("cathedral append");
            }
            Subject::RaftEngine { engine, next } => {
                let n = payloads.len() as u64;
                let first = next[writer].fetch_add(n, Ordering::Relaxed);
                let entries: Vec<Entry> = payloads
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let mut e = Entry::new();
                        e.index = first + k as u64;
                        e.term = 1;
                        e.data = p.to_vec();
                        e
                    })
                    .collect();
                let mut batch = LogBatch::default();
                batch
                    .add_entries::<EntryExt>(writer as u64 + 1, &entries)
                    .expect("raft-engine add_entries");
                engine
                    .write(&mut batch, durable)
                    .expect("raft-engine write");
            }
            Subject::Sled { db, trees, next } => {
                let n = payloads.len() as u64;
                let first = next[writer].fetch_add(n, Ordering::Relaxed);
                let mut batch = sled::Batch::default();
                for (k, p) in payloads.iter().enumerate() {
                    batch.insert(&(first + k as u64).to_be_bytes(), *p);
                }
                trees[writer].apply_batch(batch).expect("sled apply_batch");
                if durable {
                    db.flush().expect("sled flush");
                }
            }
        }
    }

    pub fn sync(&self) {
        match self {
            Subject::Cathedral(log) => log.sync().expect("cathedral sync"),
            Subject::RaftEngine { engine, .. } => engine.sync().expect("raft-engine sync"),
            Subject::Sled { db, .. } => {
                db.flush().expect("sled flush");
            }
        }
    }

    /// `(first, last)` index of writer 0's stream.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        match self {
            Subject::Cathedral(log) => Some((log.first_index()?, log.last_index()?)),
            Subject::RaftEngine { engine, .. } => {
                Some((engine.first_index(1)?, engine.last_index(1)?))
            }
            Subject::Sled { trees, .. } => {
                let first = key_index(&trees[0].first().ok()??.0);
                let last = key_index(&trees[0].last().ok()??.0);
                Some((first, last))
            }
        }
    }

    /// Reads one record of writer 0's stream; returns its payload length.
    pub fn get(&self, index: u64) -> usize {
        match self {
            Subject::Cathedral(log) => log
                .get(index)
                .expect("cathedral get")
                .expect("present")
                .payload
                .len(),
            Subject::RaftEngine { engine, .. } => engine
                .get_entry::<EntryExt>(1, index)
                .expect("raft-engine get_entry")
                .expect("present")
                .data
                .len(),
            Subject::Sled { trees, .. } => trees[0]
                .get(index.to_be_bytes())
                .expect("sled get")
                .expect("present")
                .len(),
        }
    }

    /// Reads `start..end` of writer 0's stream; returns the payload bytes read.
    pub fn range(&self, start: u64, end: u64) -> usize {
        match self {
            Subject::Cathedral(log) => log
                .read(start..end)
                .expect("cathedral read")
                .iter()
                .map(|r| r.payload.len())
                .sum(),
            Subject::RaftEngine { engine, .. } => {
                let mut v = Vec::with_capacity((end - start) as usize);
                engine
                    .fetch_entries_to::<EntryExt>(1, start, end, None, &mut v)
                    .expect("raft-engine fetch");
                v.iter().map(|e| e.data.len()).sum()
            }
            Subject::Sled { trees, .. } => trees[0]
                .range(start.to_be_bytes()..end.to_be_bytes())
                .map(|kv| kv.expect("sled range").1.len())
                .sum(),
        }
    }
}

fn key_index(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().expect("8-byte key"))
}

/// raft-engine's file size, so the benchmarks can state it.
pub fn raft_engine_target_file_size() -> ReadableSize {
    Config::default().target_file_size
}
