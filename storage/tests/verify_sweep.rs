//! Every damaged byte is found: a sweep over every byte of every file type of a data
//! directory — sealed segments, the active segment a crash leaves, the metadata file,
//! snapshot files — changes one byte at a time and checks that the read-only inspection
//! (what `cathedral-log verify` reports) names the file. Checksummed bytes and
//! value-checked fields (magics, versions, lengths, reserved zeros, the slots of the
//! acknowledgment file) are all
//! covered; in the active segment, damage to any acknowledged byte is acknowledged entries
//! damaged or corruption, never a torn tail. (`acknowledged.rs` sweeps damage of every
//! shape over the acknowledged region and what open does with it.)

mod common;

use std::path::{Path, PathBuf};

use cathedral_storage::{
    inspect, FindingKind, InspectReport, Log, Options, SnapshotMeta, SnapshotOptions, SnapshotStore,
};
use common::*;

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        compress_threshold_bytes: Some(512),
        preallocate: false,
        ..Options::default()
    }
}

/// A compacted data directory: sealed segments, a purge point with its id, a snapshot
/// holding the purged entries. Returns the directory and the purge point.
fn compacted_dir() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    fill(&log, 0, 40, 5);
    let purge = 12;
    log.purge(purge, Some(b"purged-id".to_vec())).unwrap();
    log.save_vote(b"vote".to_vec()).unwrap();
    log.save_committed(b"committed".to_vec()).unwrap();
    log.close().unwrap();
    let store =
        SnapshotStore::open(dir.path().join("snapshots"), SnapshotOptions::default()).unwrap();
    let mut w = store
        .writer(SnapshotMeta {
            last: Some((20, term_of(20))),
            data: b"caller metadata".to_vec(),
            created_ms: 1_700_000_000_000,
        })
        .unwrap();
    std::io::Write::write_all(&mut w, &[7u8; 3000]).unwrap();
    w.finish().unwrap();
    (dir, purge)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = segment_files(dir);
    v.push(dir.join("meta"));
    v.push(dir.join("meta.mirror"));
    v.push(dir.join("log/acked"));
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snaps.sort();
    v.extend(snaps);
    v
}

/// Whether `r` has a finding about `file` (or about the snapshot directory, for a damaged
/// snapshot that leaves the compacted log uncovered) of a kind in `kinds`.
fn names(r: &InspectReport, dir: &Path, file: &Path, kinds: &[FindingKind]) -> bool {
    r.findings
        .iter()
        .any(|f| kinds.contains(&f.kind) && (f.file == file || f.file == dir.join("snapshots")))
}

/// Flips each byte of `file` in turn (all its bits), inspects, restores it; returns the
/// offsets whose damage no finding of `kinds` named.
fn sweep(dir: &Path, file: &Path, kinds: &[FindingKind]) -> Vec<usize> {
    let original = std::fs::read(file).unwrap();
    let mut missed = Vec::new();
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0xff;
        std::fs::write(file, &bytes).unwrap();
        let r = inspect(dir, None).unwrap();
        if !names(&r, dir, file, kinds) {
            missed.push(at);
        }
    }
    std::fs::write(file, &original).unwrap();
    missed
}

#[test]
fn every_damaged_byte_of_a_clean_directory_is_found() {
    let (dir, purge) = compacted_dir();
    let clean = inspect(dir.path(), None).unwrap();
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
    assert_eq!(clean.purged_through, Some(purge));
    assert_eq!(clean.snapshots.snapshots.len(), 1);
    let all = files(dir.path());
    assert!(all.len() >= 4, "segments, meta and a snapshot: {all:?}");
    let damage = [
        FindingKind::AcknowledgedDamaged,
        FindingKind::Corruption,
        FindingKind::Inconsistent,
    ];
    let mut total = 0;
    for file in &all {
        total += std::fs::metadata(file).unwrap().len();
        let missed = sweep(dir.path(), file, &damage);
        assert!(
            missed.is_empty(),
            "damage at these bytes of {} went unreported: {missed:?}",
            file.display()
        );
    }
    assert!(total > 8000, "swept {total} bytes");
    assert!(inspect(dir.path(), None).unwrap().findings.is_empty());
}

#[test]
fn every_damaged_byte_of_a_crashed_log_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    fill(&log, 0, 12, 3);
    let image = crash_image(&log, dir.path());
    drop(log);
    let segs = segment_files(image.path());
    let active = segs.last().unwrap().clone();
    let mut last_record_bytes = 0u64;
    let clean = inspect(
        image.path(),
        Some(&mut |v: cathedral_storage::Visit<'_>| last_record_bytes = v.record_bytes),
    )
    .unwrap();
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
    assert!(!clean.segments.last().unwrap().sealed);
    let data_end = clean.segments.last().unwrap().data_bytes;
    let last_record_at = (data_end - last_record_bytes) as usize;
    let any = [
        FindingKind::TornTail,
        FindingKind::AcknowledgedDamaged,
        FindingKind::Corruption,
        FindingKind::Inconsistent,
    ];
    let missed = sweep(image.path(), &active, &any);
    assert!(
        missed.is_empty(),
        "damage at these bytes of the active segment went unreported: {missed:?}"
    );
    // Every record was acknowledged (the image was synced): damage anywhere up to the end
    // of the records is acknowledged entries damaged or corruption, never a torn tail.
    let hard = [
        FindingKind::AcknowledgedDamaged,
        FindingKind::Corruption,
        FindingKind::Inconsistent,
    ];
    let original = std::fs::read(&active).unwrap();
    for at in (0..data_end as usize)
        .step_by(7)
        .chain(last_record_at..data_end as usize)
    {
        let mut bytes = original.clone();
        bytes[at] ^= 0xff;
        std::fs::write(&active, &bytes).unwrap();
        let r = inspect(image.path(), None).unwrap();
        assert!(
            names(&r, image.path(), &active, &hard),
            "byte {at} of {}: {:?}",
            active.display(),
            r.findings
        );
    }
    std::fs::write(&active, &original).unwrap();
}

#[test]
fn damaged_and_missing_snapshots_are_findings() {
    let (dir, purge) = compacted_dir();
    let snaps = dir.path().join("snapshots");
    let snap = files(dir.path()).pop().unwrap();
    let original = std::fs::read(&snap).unwrap();
    let len = original.len();
    // Truncated, a zeroed 4 KiB block across the trailer, the trailer's length field.
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", original[..len - 10].to_vec()),
        ("magic", {
            let mut b = original.clone();
            b[0] = b'X';
            b
        }),
        ("version", {
            let mut b = original.clone();
            b[8] = 9;
            b
        }),
        ("stored length", {
            let mut b = original.clone();
            b[len - 24] ^= 1;
            b
        }),
    ];
    let mut zeroed = original.clone();
    let from = len.saturating_sub(4096 - 100);
    zeroed[from..].fill(0);
    zeroed.resize(from + 4096, 0);
    cases.push(("zeroed block", zeroed));
    for (what, bytes) in cases {
        std::fs::write(&snap, &bytes).unwrap();
        let r = inspect(dir.path(), None).unwrap();
        assert!(r.damaged(), "{what}: {:?}", r.findings);
        assert!(
            r.findings
                .iter()
                .any(|f| f.file == snap && f.kind == FindingKind::Corruption),
            "{what}: {:?}",
            r.findings
        );
        // The compacted log is no longer covered: that is a finding too, naming the file.
        let gap = r
            .findings
            .iter()
            .find(|f| f.file == snaps)
            .unwrap_or_else(|| panic!("{what}: no gap finding in {:?}", r.findings));
        assert!(
            gap.reason.contains(&format!("through index {purge}")),
            "{gap:?}"
        );
        assert!(gap.reason.contains(&snap.display().to_string()), "{gap:?}");
        assert_eq!(r.snapshots.damaged.len(), 1);
        assert_eq!(r.snapshots.damaged[0].named_last, Some((20, term_of(20))));
    }
    // Every snapshot gone from a compacted directory.
    std::fs::remove_file(&snap).unwrap();
    let r = inspect(dir.path(), None).unwrap();
    let gap = r.findings.iter().find(|f| f.file == snaps).unwrap();
    assert!(gap.reason.contains("no snapshot file"), "{gap:?}");
    // A stray file in the snapshot directory is a finding; kept-aside files are not.
    std::fs::write(&snap, &original).unwrap();
    std::fs::write(snaps.join("notes.txt"), b"hello").unwrap();
    std::fs::write(snaps.join("x.snap.superseded"), b"old").unwrap();
    let r = inspect(dir.path(), None).unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].file, snaps.join("notes.txt"));
    assert_eq!(r.snapshots.kept, vec![snaps.join("x.snap.superseded")]);
}

#[test]
fn a_server_sets_aside_what_it_does_not_need() {
    let (dir, purge) = compacted_dir();
    let store =
        SnapshotStore::open(dir.path().join("snapshots"), SnapshotOptions::default()).unwrap();
    // A newer snapshot, then damage to it: the older one still covers the purge point.
    let mut w = store
        .writer(SnapshotMeta {
            last: Some((35, term_of(35))),
            data: Vec::new(),
            created_ms: 1_700_000_000_001,
        })
        .unwrap();
    std::io::Write::write_all(&mut w, &[9u8; 100]).unwrap();
    let newer = w.finish().unwrap();
    let mut bytes = std::fs::read(&newer.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&newer.path, &bytes).unwrap();
    let survey = store.survey(true).unwrap();
    assert_eq!(survey.snapshots.len(), 1);
    assert_eq!(survey.damaged.len(), 1);
    assert_eq!(
        survey.gap(Some(purge)),
        None,
        "the older snapshot covers it"
    );
    // Without checksums the damage is not seen: only a survey with them is trusted.
    assert_eq!(store.survey(false).unwrap().damaged.len(), 0);
    let aside = store.set_aside(&newer.path).unwrap();
    assert!(aside.to_string_lossy().ends_with(".snap.damaged"));
    assert_eq!(
        store.latest().unwrap().unwrap().meta.last,
        Some((20, term_of(20)))
    );
    // Still a finding offline, named as set aside.
    let r = inspect(dir.path(), None).unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].file, aside);
    assert!(
        r.findings[0].reason.contains("set aside"),
        "{:?}",
        r.findings
    );
    // A purge past every valid snapshot: the gap names the set-aside file.
    let gap = store
        .survey(true)
        .unwrap()
        .gap(Some(30))
        .unwrap()
        .to_string();
    assert!(gap.contains("through index 30"), "{gap}");
    assert!(gap.contains(".snap.damaged"), "{gap}");
}
