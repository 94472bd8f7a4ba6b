//! Damage on disk: torn tails (past the acknowledged watermark) are cut and reported,
//! acknowledged records damaged fail open with their index range, corruption anywhere else
//! fails open with the exact file and byte offset, salvage keeps the valid prefix, moves
//! the rest aside and records the loss.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cathedral_storage::{Error, Log, Options, RecoveryMode};
use common::*;

const HEADER: u64 = 64; // segment header (FORMAT.md)
const REC: u64 = 24; // record header (FORMAT.md)

fn plain() -> Options {
    Options {
        compress_threshold_bytes: None,
        ..Options::default()
    }
}

/// Byte offset of record `index` in a single-segment log starting at 1, written uncompressed.
fn offset_of(index: u64) -> u64 {
    HEADER
        + (1..index)
            .map(|i| REC + payload(i).len() as u64)
            .sum::<u64>()
}

fn poke(path: &Path, offset: u64, f: impl Fn(u8) -> u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[f(b[0])], offset).unwrap();
    file.sync_all().unwrap();
}

/// A log of one unsealed segment as a crash leaves it (see `crash_image`).
fn one_segment_log(records: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), plain()).unwrap();
    fill(&log, 1, records + 1, 10);
    let image = crash_image(&log, dir.path());
    let segs = segment_files(image.path());
    assert_eq!(segs.len(), 1);
    (image, segs[0].clone())
}

/// A log of one unsealed segment whose records `1..=acked` were acknowledged durable and
/// `acked+1..=records` only written when the crash came (SIGKILL keeps the page cache).
fn one_segment_log_with_unacked_tail(
    acked: u64,
    records: u64,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), plain()).unwrap();
    fill(&log, 1, acked + 1, 10);
    fill_buffered(&log, acked + 1, records + 1, 10);
    let image = crash_image_as_is(dir.path());
    let segs = segment_files(image.path());
    (image, segs[0].clone())
}

fn expect_acknowledged(err: Error, seg: &Path, at: u64, range: (u64, u64)) -> String {
    let text = err.to_string();
    match err {
        Error::AcknowledgedDamaged {
            file,
            offset,
            first,
            last,
            reason,
            ..
        } => {
            assert_eq!((file.as_path(), offset), (seg, at), "{reason}");
            assert_eq!((first, last), range, "{reason}");
            assert!(text.contains("acknowledged entries damaged"), "{text}");
            reason
        }
        other => panic!("expected acknowledged entries damaged, got {other}"),
    }
}

/// The same log closed cleanly: its one segment is sealed.
fn one_sealed_segment_log(records: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), plain()).unwrap();
    fill(&log, 1, records + 1, 10);
    log.close().unwrap();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1);
    (dir, segs[0].clone())
}

#[test]
fn a_flipped_byte_in_an_acknowledged_record_is_refused_with_its_range() {
    let (dir, seg) = one_segment_log(100);
    // A byte inside the payload of record 40 (payload(40) is not empty).
    assert!(payload(40).len() > 3);
    poke(&seg, offset_of(40) + REC + 3, |b| b ^ 0x01);
    let err = Log::open(dir.path(), plain()).unwrap_err();
    let text = err.to_string();
    let reason = expect_acknowledged(err, &seg, offset_of(40), (40, 100));
    assert!(reason.contains("checksum"), "{reason}");
    assert!(
        text.contains(&seg.display().to_string()) && text.contains(&offset_of(40).to_string()),
        "{text}"
    );
    // Nothing was changed by the refused open.
    assert!(dir.path().join("salvage").read_dir().is_err());
}

#[test]
fn verify_on_open_finds_a_flipped_byte_in_a_cleanly_closed_log() {
    let (dir, seg) = one_sealed_segment_log(100);
    poke(&seg, offset_of(40) + REC + 3, |b| b ^ 0x01);
    // A plain open reads footers only; the damaged record is refused when read.
    let log = Log::open(dir.path(), plain()).unwrap();
    match log.get(40).unwrap_err() {
        Error::Corruption { file, offset, .. } => {
            assert_eq!((file, offset), (seg.clone(), offset_of(40)))
        }
        other => panic!("expected corruption, got {other}"),
    }
    drop(log);
    let verify = Options {
        verify_on_open: true,
        ..plain()
    };
    match Log::open(dir.path(), verify.clone()).unwrap_err() {
        Error::Corruption {
            file,
            offset,
            reason,
        } => {
            assert_eq!((file, offset), (seg.clone(), offset_of(40)), "{reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    // Salvage with verification keeps records 1..40 and moves the rest aside.
    let salvage = Options {
        recovery_mode: RecoveryMode::Salvage,
        ..verify
    };
    let log = Log::open(dir.path(), salvage).unwrap();
    assert_eq!(
        log.recovery_report().salvaged.as_ref().unwrap().offset,
        offset_of(40)
    );
    check(&log, 1, 40);
}

#[test]
fn flipped_byte_in_a_record_header_fails_open_too() {
    let (dir, seg) = one_segment_log(100);
    poke(&seg, offset_of(77) + 9, |b| b ^ 0x80); // inside the index field
    let err = Log::open(dir.path(), plain()).unwrap_err();
    expect_acknowledged(err, &seg, offset_of(77), (77, 100));
}

#[test]
fn acknowledged_records_zeroed_at_the_very_end_are_refused_not_cut() {
    // The end of the written data zeroed from a record boundary: the scan sees a clean end,
    // only the watermark knows records 91..=100 were acknowledged.
    let (dir, seg) = one_segment_log(100);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(
        &vec![0u8; (offset_of(101) - offset_of(91)) as usize],
        offset_of(91),
    )
    .unwrap();
    drop(f);
    let err = Log::open(dir.path(), plain()).unwrap_err();
    let reason = expect_acknowledged(err, &seg, offset_of(91), (91, 100));
    assert!(reason.contains("acknowledged"), "{reason}");
}

#[test]
fn half_written_last_record_is_a_torn_tail() {
    // Records 1..=99 acknowledged, 100 written when the crash came.
    let (dir, seg) = one_segment_log_with_unacked_tail(99, 100);
    let last = offset_of(100);
    let len = REC + payload(100).len() as u64;
    // Zero the second half of the last record, as a write cut short leaves it.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0u8; (len - len / 2) as usize], last + len / 2)
        .unwrap();
    drop(f);
    let log = Log::open(dir.path(), plain()).unwrap();
    let torn = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!((torn.file.as_path(), torn.offset), (seg.as_path(), last));
    assert!(torn.bytes > 0 && torn.bytes <= len / 2 + 1, "{torn:?}");
    let w = log.recovery_report().watermark.expect("watermark read");
    assert_eq!((w.acked_next, w.end), (100, last));
    check(&log, 1, 100);
    // The log goes on from the cut.
    fill(&log, 100, 120, 5);
    drop(log);
    let log = Log::open(dir.path(), plain()).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    check(&log, 1, 120);
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let (dir, seg) = one_segment_log(50);
    let end = offset_of(51);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(b"\x13\x37 half a header", end).unwrap();
    drop(f);
    let log = Log::open(dir.path(), plain()).unwrap();
    assert_eq!(
        log.recovery_report().torn_tail.as_ref().unwrap().offset,
        end
    );
    check(&log, 1, 51);
}

#[test]
fn salvage_keeps_the_valid_prefix_and_moves_the_rest_aside() {
    let (dir, seg) = one_segment_log(100);
    poke(&seg, offset_of(60) + REC, |b| b.wrapping_add(1));
    let opts = Options {
        recovery_mode: RecoveryMode::Salvage,
        ..plain()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let s = log
        .recovery_report()
        .salvaged
        .clone()
        .expect("salvage reported");
    assert_eq!((s.file.as_path(), s.offset), (seg.as_path(), offset_of(60)));
    check(&log, 1, 60);
    // Records 60..=100 had been acknowledged: the loss is recorded, and stays.
    let cut = log.recovery_report().acknowledged_cut.clone().unwrap();
    assert_eq!((cut.first, cut.last, cut.owed), (60, 100, false));
    let losses = log.losses();
    assert_eq!(losses.len(), 1);
    assert_eq!((losses[0].first, losses[0].last), (60, 100));
    // The dropped bytes were copied aside before the cut: records 60..=100 exactly.
    let moved: Vec<_> = std::fs::read_dir(&s.moved_to)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let bytes = std::fs::read(&moved[0]).unwrap();
    assert_eq!(bytes.len() as u64, offset_of(101) - offset_of(60));
    assert_eq!(s.bytes, bytes.len() as u64);
    drop(log);
    // After salvage the directory opens cleanly in strict mode, the loss still shown.
    let log = Log::open(dir.path(), plain()).unwrap();
    check(&log, 1, 60);
    assert_eq!(log.losses().len(), 1);
}

#[test]
fn corruption_in_a_sealed_segment_is_found_on_read_and_by_footer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes_max: 8192,
        ..plain()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    fill(&log, 1, 300, 10);
    drop(log);
    let segs = segment_files(dir.path());
    assert!(segs.len() > 3);
    // Record 1 starts right after the header of the first (sealed) segment.
    poke(&segs[0], HEADER + REC, |b| b ^ 0xFF);
    let log = Log::open(dir.path(), opts.clone()).unwrap(); // footers only: opens
    match log.get(1).unwrap_err() {
        Error::Corruption { file, offset, .. } => {
            assert_eq!((file, offset), (segs[0].clone(), HEADER))
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(log.get(2).unwrap().unwrap().payload, payload(2));
    drop(log);
    // A damaged footer of a segment that is not the last fails open at the trailer.
    let len = std::fs::metadata(&segs[1]).unwrap().len();
    poke(&segs[1], len - 20, |b| b ^ 0x04); // inside the trailer's data_end field
    match Log::open(dir.path(), opts).unwrap_err() {
        Error::Corruption {
            file,
            offset,
            reason,
        } => {
            assert_eq!(file, segs[1]);
            assert!(offset >= len - 32 && offset < len, "{offset} {reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn misplaced_or_missing_files_are_refused() {
    // A segment from another log is never read as ours.
    let (a, _) = one_segment_log(10);
    let (b, seg_b) = one_segment_log(10);
    let seg_a = segment_files(a.path())[0].clone();
    std::fs::copy(&seg_b, &seg_a).unwrap();
    let err = Log::open(a.path(), plain()).unwrap_err();
    assert!(err.to_string().contains("belongs to log"), "{err}");
    drop(b);

    // A gap between segments.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes_max: 4096,
        ..plain()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    fill(&log, 1, 100, 10);
    drop(log);
    let segs = segment_files(dir.path());
    std::fs::remove_file(&segs[1]).unwrap();
    match Log::open(dir.path(), opts).unwrap_err() {
        Error::Corruption {
            file,
            offset,
            reason,
        } => {
            assert_eq!((file, offset), (segs[2].clone(), 0));
            assert!(reason.contains("expected"), "{reason}");
        }
        other => panic!("expected corruption, got {other}"),
    }

    // Segments without their metadata file: its mirror copy serves; without both, refused.
    let (c, _) = one_segment_log(5);
    std::fs::remove_file(c.path().join("meta")).unwrap();
    check(&Log::open(c.path(), plain()).unwrap(), 1, 6);
    assert!(
        c.path().join("meta").exists(),
        "open heals the missing copy"
    );
    std::fs::remove_file(c.path().join("meta")).unwrap();
    std::fs::remove_file(c.path().join("meta.mirror")).unwrap();
    let err = Log::open(c.path(), plain()).unwrap_err();
    assert!(
        err.to_string().contains("metadata file is missing"),
        "{err}"
    );
}

#[test]
fn newer_format_version_is_refused_clearly() {
    let (dir, seg) = one_segment_log(5);
    // Version field at bytes 8..10; fix up the header checksum so only the version differs.
    let mut h = std::fs::read(&seg).unwrap()[..64].to_vec();
    h[8] = 9;
    let crc = crc32(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&h, 0).unwrap();
    drop(f);
    match Log::open(dir.path(), plain()).unwrap_err() {
        Error::UnsupportedVersion {
            found, supported, ..
        } => assert_eq!((found, supported), (9, 1)),
        other => panic!("expected unsupported version, got {other}"),
    }
}

/// CRC-32 (IEEE), bit by bit: an independent check of the format's checksum.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The offline inspector reads without the lock and without changing a byte.
fn inspect_unchanged(dir: &Path) -> cathedral_storage::InspectReport {
    let before: Vec<Vec<u8>> = segment_files(dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let mut seen = Vec::new();
    let mut visit = |v: cathedral_storage::Visit<'_>| {
        assert_eq!(v.payload, payload(v.index).as_slice());
        seen.push(v.index);
    };
    let report = cathedral_storage::inspect(dir, Some(&mut visit)).unwrap();
    let after: Vec<Vec<u8>> = segment_files(dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "inspect changed the files");
    assert_eq!(
        seen,
        (report.first_index().unwrap_or(1)..=report.last_index().unwrap_or(0)).collect::<Vec<_>>()
    );
    report
}

#[test]
fn inspect_reports_clean_logs_torn_tails_and_mid_log_corruption_exactly() {
    use cathedral_storage::FindingKind;
    // Clean, sealed, while another process would hold the lock: inspection needs none.
    let (dir, _seg) = one_sealed_segment_log(100);
    let held = Log::open(dir.path(), plain()).unwrap();
    let r = inspect_unchanged(dir.path());
    drop(held);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(
        (r.first_index(), r.last_index(), r.records()),
        (Some(1), Some(100), 100)
    );
    assert!(r.segments[0].sealed);

    // A byte flipped inside record 40 of a sealed segment: exactly that record's offset.
    let (dir, seg) = one_sealed_segment_log(100);
    poke(&seg, offset_of(40) + REC + 3, |b| b ^ 0x01);
    let r = inspect_unchanged(dir.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(
        (f.kind, &f.file, f.offset),
        (FindingKind::Corruption, &seg, offset_of(40))
    );
    assert!(f.reason.contains("checksum"), "{}", f.reason);
    assert!(r.damaged());

    // The same in an unsealed segment, below the watermark: acknowledged entries damaged.
    let (dir, seg) = one_segment_log(100);
    poke(&seg, offset_of(60) + REC + 1, |b| b ^ 0x80);
    let r = inspect_unchanged(dir.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(
        (r.findings[0].kind, r.findings[0].offset),
        (FindingKind::AcknowledgedDamaged, offset_of(60))
    );
    assert!(
        r.findings[0].reason.contains("60..=100"),
        "{}",
        r.findings[0].reason
    );
    assert_eq!(r.last_index(), Some(59));
    assert_eq!(r.watermark().unwrap().acked_next, 101);
    assert!(r.damaged());

    // The file cut short inside acknowledged records: the acknowledgment file knows.
    let (dir, seg) = one_segment_log(100);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(offset_of(101) - 5).unwrap();
    drop(f);
    let r = inspect_unchanged(dir.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(
        (r.findings[0].kind, r.findings[0].offset),
        (FindingKind::AcknowledgedDamaged, offset_of(100))
    );

    // A half-written last record past the watermark: a torn tail, not damage.
    let (dir, seg) = one_segment_log_with_unacked_tail(99, 100);
    let end = offset_of(101);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(end - 5).unwrap();
    drop(f);
    let r = inspect_unchanged(dir.path());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(
        (r.findings[0].kind, r.findings[0].offset),
        (FindingKind::TornTail, offset_of(100))
    );
    assert!(!r.damaged());
    assert_eq!(r.last_index(), Some(99));
}
