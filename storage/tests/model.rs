//! Model-based test: random sequences of append, truncate, purge, sync and reopen against
//! an in-memory vector; contents must be equal after every step. Each open runs the writer
//! on its own thread or inline on the caller's (`Options::inline_writer`), as the sequence
//! says, so a log written one way reopens the other. Prints its seed; replay with
//! CATHEDRAL_SEED=<seed>. CATHEDRAL_MODEL_CASES sets the number of sequences.

mod common;

use cathedral_storage::{Durability, Entry, Log, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: u8,
        len: u16,
        durable: bool,
        new_term: bool,
    },
    Truncate {
        back: u16,
    },
    Purge {
        ahead: u16,
    },
    Sync,
    Reopen {
        inline: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..12, 0u16..1500, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(count, len, durable, new_term)| Op::Append { count, len, durable, new_term }),
        2 => (0u16..40).prop_map(|back| Op::Truncate { back }),
        2 => (0u16..60).prop_map(|ahead| Op::Purge { ahead }),
        1 => Just(Op::Sync),
        2 => any::<bool>().prop_map(|inline| Op::Reopen { inline }),
    ]
}

struct Model {
    first: u64,
    records: Vec<(u64, Vec<u8>)>,
    term: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

fn options(inline_writer: bool) -> Options {
    Options {
        segment_bytes_max: 4096,
        compress_threshold_bytes: Some(700),
        inline_writer,
        ..Options::default()
    }
}

fn body(i: u64, len: u16) -> Vec<u8> {
    // Half compressible, half not, so both record kinds appear.
    (0..len as u64)
        .map(|k| {
            if i.is_multiple_of(2) {
                (k % 5) as u8
            } else {
                (i.wrapping_mul(31) ^ k.wrapping_mul(0x9E37)) as u8 ^ (k >> 3) as u8
            }
        })
        .collect()
}

fn same(log: &Log, m: &Model) -> Result<(), TestCaseError> {
    let nonempty = !m.records.is_empty();
    prop_assert_eq!(log.first_index(), nonempty.then_some(m.first));
    prop_assert_eq!(log.last_index(), nonempty.then(|| m.next() - 1));
    let got = log
        .read(m.first..m.next())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got.len(), m.records.len());
    for (k, r) in got.iter().enumerate() {
        prop_assert_eq!(r.index, m.first + k as u64);
        prop_assert_eq!(r.term, m.records[k].0);
        prop_assert!(
            r.payload == m.records[k].1,
            "payload of {} differs",
            r.index
        );
    }
    Ok(())
}

fn run((inline, ops): (bool, Vec<Op>)) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Some(Log::open(dir.path(), options(inline)).unwrap());
    let mut m = Model {
        first: 1,
        records: Vec::new(),
        term: 1,
    };
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append {
                count,
                len,
                durable,
                new_term,
            } => {
                if new_term {
                    m.term += 1;
                }
                let start = m.next();
                let bodies: Vec<Vec<u8>> =
                    (0..count as u64).map(|k| body(start + k, len)).collect();
                let entries: Vec<Entry<'_>> = bodies
                    .iter()
                    .enumerate()
                    .map(|(k, p)| Entry {
                        index: start + k as u64,
                        term: m.term,
                        payload: p,
                    })
                    .collect();
                let d = if durable {
                    Durability::Durable
                } else {
                    Durability::Buffered
                };
                l.append(&entries, d)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.records.extend(bodies.into_iter().map(|b| (m.term, b)));
            }
            Op::Truncate { back } => {
                let from = m.next() - (back as u64 % (m.records.len() as u64 + 1));
                l.truncate(from)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.records.truncate((from - m.first) as usize);
            }
            Op::Purge { ahead } => {
                let upto = m.first - 1 + ahead as u64 % (m.records.len() as u64 + 4);
                l.purge(upto, Some(upto.to_le_bytes().to_vec()))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if upto + 1 >= m.next() {
                    m.records.clear();
                    m.first = upto + 1;
                } else if upto >= m.first {
                    m.records.drain(..(upto + 1 - m.first) as usize);
                    m.first = upto + 1;
                }
            }
            Op::Sync => l.sync().map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Reopen { inline } => {
                log.take()
                    .unwrap()
                    .close()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let l = Log::open(dir.path(), options(inline))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(
                    l.recovery_report().torn_tail.is_none(),
                    "clean reopen found {:?}",
                    l.recovery_report()
                );
                log = Some(l);
            }
        }
        same(log.as_ref().unwrap(), &m)?;
    }
    Ok(())
}

#[test]
fn log_matches_vector_model() {
    let seed = common::seed("log_matches_vector_model");
    let cases = std::env::var("CATHEDRAL_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let result = runner.run(&(any::<bool>(), prop::collection::vec(op(), 1..120)), run);
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}
