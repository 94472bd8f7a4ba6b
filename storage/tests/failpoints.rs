//! Fault injection through the `fail` crate's named failpoints (build with the `failpoints`
//! feature). After any write or sync error the log fails stop: the failing call and every
//! later one return the error, no append whose bytes were not synced is acknowledged, and
//! what was acknowledged before survives a reopen.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cathedral_storage::{Durability, Entry, Error, Log};
use common::*;
use fail::FailScenario;

fn append_one(log: &Log, index: u64) -> cathedral_storage::Result<()> {
    let p = payload(index);
    log.append(
        &[Entry {
            index,
            term: term_of(index),
            payload: &p,
        }],
        Durability::Durable,
    )
}

fn assert_stopped(err: &Error, cause: &str) {
    assert!(
        matches!(err, Error::Stopped { .. }),
        "expected a stopped log, got {err}"
    );
    assert!(err.to_string().contains(cause), "{err} should name {cause}");
}

/// Runs the scenario: `count` good appends, then `failpoint` set to `action`, then one
/// append that must fail; every later call must fail too; reopen keeps 1..=count.
fn fail_stop(failpoint: &str, action: &str, cause: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 1, 51, 5);
    fail::cfg(failpoint, action).unwrap();
    let err = append_one(&log, 51).unwrap_err();
    assert_stopped(&err, cause);
    fail::remove(failpoint);
    // The log stays failed even though the fault is gone.
    assert_stopped(&append_one(&log, 51).unwrap_err(), cause);
    assert_stopped(&append_one(&log, 52).unwrap_err(), cause);
    assert_stopped(&log.get(1).unwrap_err(), cause);
    assert_stopped(&log.sync().unwrap_err(), cause);
    assert_stopped(&log.truncate(10).unwrap_err(), cause);
    assert_stopped(&log.save_vote(b"v".to_vec()).unwrap_err(), cause);
    assert_stopped(&log.close().unwrap_err(), cause);
    let log = Log::open(dir.path(), small_options()).unwrap();
    let last = log.last_index().unwrap();
    assert!(last == 50 || last == 51, "last index {last}");
    check(&log, 1, last + 1);
    dir
}

#[test]
fn fsync_error_fails_stop() {
    let scenario = FailScenario::setup();
    fail_stop("log::fsync::err", "return", "Input/output error");
    scenario.teardown();
}

#[test]
fn short_write_fails_stop_and_leaves_a_torn_tail() {
    let scenario = FailScenario::setup();
    let dir = fail_stop("log::write::short", "return", "Input/output error");
    // The half-written record was cut as a torn tail on the reopen inside fail_stop; a
    // further reopen is clean.
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    check(&log, 1, 51);
    scenario.teardown();
}

#[test]
fn no_space_fails_stop() {
    let scenario = FailScenario::setup();
    fail_stop("log::write::enospc", "return", "No space left on device");
    scenario.teardown();
}

#[test]
fn directory_sync_error_during_rotation_fails_stop() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 1, 5, 1);
    fail::cfg("log::dirsync::err", "return").unwrap();
    let mut i = 5;
    let err = loop {
        // Appends succeed until one needs a new segment, whose rename must be synced.
        match append_one(&log, i) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 1000, "rotation never happened");
    };
    assert_stopped(&err, "Input/output error");
    fail::remove("log::dirsync::err");
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert!(log.last_index().unwrap() >= i - 1);
    check(&log, 1, log.last_index().unwrap() + 1);
    scenario.teardown();
}

#[test]
fn metadata_sync_error_fails_stop_and_keeps_the_old_value() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    log.save_vote(b"old".to_vec()).unwrap();
    fail::cfg("meta::before_sync", "return").unwrap();
    let err = log.save_vote(b"new".to_vec()).unwrap_err();
    assert_stopped(&err, "Input/output error");
    fail::remove("meta::before_sync");
    assert!(log.save_vote(b"newer".to_vec()).is_err());
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert_eq!(log.metadata().vote.as_deref(), Some(&b"old"[..]));
    scenario.teardown();
}

/// Eight appenders share group commits; the third sync fails. Every append acknowledged
/// before the failure is on disk after reopen, and no append is acknowledged after it.
#[test]
fn concurrent_appenders_get_no_false_acknowledgement() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_options()).unwrap());
    fail::cfg("log::fsync::err", "20*off->return").unwrap();
    let failed_seen = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let (log, failed_seen) = (log.clone(), failed_seen.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for k in 0..200u32 {
                    let p = [vec![t], k.to_le_bytes().to_vec()].concat();
                    let after_failure = failed_seen.load(Ordering::SeqCst);
                    match log.append_next(1, &[&p], Durability::Durable) {
                        Ok(r) => {
                            assert!(
                                !after_failure,
                                "an append started after the failure was acknowledged"
                            );
                            acked.push((r.start, p));
                        }
                        Err(e) => {
                            assert!(matches!(e, Error::Stopped { .. }), "{e}");
                            failed_seen.store(true, Ordering::SeqCst);
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    fail::remove("log::fsync::err");
    assert!(failed_seen.load(Ordering::SeqCst));
    assert!(!acked.is_empty());
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    for (index, p) in &acked {
        assert_eq!(
            &log.get(*index).unwrap().unwrap().payload,
            p,
            "acknowledged {index} lost"
        );
    }
    scenario.teardown();
}
