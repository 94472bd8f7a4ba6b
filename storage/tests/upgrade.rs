//! A data directory written by the previous release (metadata version 1, no
//! acknowledgment file: `tests/fixtures/v1`) opens with this one: every record, the
//! metadata, the purge point. The open adds the acknowledgment file (with the watermark of
//! an unsealed segment it finds), records in the metadata — now two version-2 copies —
//! that the log keeps it, and from then on its absence is damage.

mod common;

use std::path::Path;

use cathedral_storage::{inspect, Log, Options};
use common::*;

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    copy(&from, dir.path());
    dir
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Findings about the log and metadata (the fixtures hold no snapshot for their purge
/// point: that gap is the snapshot survey's finding, not this test's subject).
fn log_findings(r: &cathedral_storage::InspectReport) -> Vec<&cathedral_storage::Finding> {
    r.findings
        .iter()
        .filter(|f| !f.file.ends_with("snapshots"))
        .collect()
}

fn options() -> Options {
    Options {
        segment_bytes_max: 8192,
        compress_threshold_bytes: Some(512),
        preallocate: false,
        ..Options::default()
    }
}

#[test]
fn directories_from_before_the_acknowledgment_file_open_and_keep_one() {
    for name in ["clean", "crashed"] {
        let dir = copy_fixture(name);
        let before = inspect(dir.path(), None).unwrap();
        assert!(
            log_findings(&before).is_empty(),
            "{name}: {:?}",
            before.findings
        );
        assert_eq!(before.segments.last().unwrap().sealed, name == "clean");
        assert!(
            before.watermark().is_none(),
            "{name}: no acknowledgment file yet"
        );
        assert_eq!(before.purged_through, Some(10));

        let log = Log::open(dir.path(), options()).unwrap();
        assert_eq!(log.purged_through(), Some(10), "{name}");
        let m = log.metadata();
        assert_eq!(m.vote.as_deref(), Some(&b"vote-bytes"[..]), "{name}");
        assert_eq!(m.committed.as_deref(), Some(&b"committed-bytes"[..]));
        assert_eq!(m.purged.as_deref(), Some(&b"purged-id"[..]));
        check(&log, 11, 61);
        fill(&log, 61, 90, 4);
        log.save_vote(b"vote-2".to_vec()).unwrap();
        drop(log);

        let after = inspect(dir.path(), None).unwrap();
        assert!(
            log_findings(&after).is_empty(),
            "{name}: {:?}",
            after.findings
        );
        assert!(dir.path().join("meta.mirror").exists(), "{name}");
        assert!(dir.path().join("log/acked").exists(), "{name}");
        // The log keeps the file now: without it, the next open refuses.
        let saved = std::fs::read(dir.path().join("log/acked")).unwrap();
        std::fs::remove_file(dir.path().join("log/acked")).unwrap();
        let err = Log::open(dir.path(), options()).unwrap_err();
        assert!(
            err.to_string().contains("acknowledgment file is missing"),
            "{err}"
        );
        std::fs::write(dir.path().join("log/acked"), saved).unwrap();
        let log = Log::open(dir.path(), options()).unwrap();
        check(&log, 11, 90);
        assert_eq!(log.metadata().vote.as_deref(), Some(&b"vote-2"[..]));
    }
}

#[test]
fn without_the_acknowledgment_file_a_torn_tail_is_cut_by_the_old_rule() {
    // Without an acknowledgment file nothing says what was acknowledged: damage with
    // nothing valid after it is torn (the old rule, once).
    let dir = copy_fixture("crashed");
    let last = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let log = Log::open(dir.path(), options()).unwrap();
    assert!(log.recovery_report().torn_tail.is_some());
    check(&log, 11, 60);
    // The open wrote the watermark of what it kept: damage to it is refused from now on.
    let r = inspect(dir.path(), None).unwrap();
    assert_eq!(r.watermark().unwrap().acked_next, 60);
    drop(log);
}

#[test]
fn a_first_open_that_did_not_finish_leaves_nothing_that_blocks_the_next() {
    // The first open of an old directory crashed after creating the acknowledgment file
    // and before the metadata named it: the file is empty, short, or zeroed. Nothing was
    // acknowledged through it, so inspect finds nothing and the next open makes it anew.
    for left in [Vec::new(), vec![0u8; 100], vec![0u8; 8192]] {
        let dir = copy_fixture("crashed");
        std::fs::write(dir.path().join("log/acked"), &left).unwrap();
        let r = inspect(dir.path(), None).unwrap();
        assert!(
            log_findings(&r).is_empty(),
            "{} bytes left: {:?}",
            left.len(),
            r.findings
        );
        let log = Log::open(dir.path(), options()).unwrap();
        check(&log, 11, 61);
        drop(log);
        let r = inspect(dir.path(), None).unwrap();
        assert!(log_findings(&r).is_empty(), "{:?}", r.findings);
        // The file is whole again and kept: a reopen judges by it and finds all.
        assert_eq!(
            std::fs::metadata(dir.path().join("log/acked"))
                .unwrap()
                .len(),
            8192
        );
        let log = Log::open(dir.path(), options()).unwrap();
        check(&log, 11, 61);
    }
}
