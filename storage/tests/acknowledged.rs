//! Protocol-aware recovery: an acknowledged record is never cut as a torn tail.
//!
//! A sweep of damage of every shape — a flipped bit, a zeroed sector, zeroed 4, 8 and 64
//! KiB ranges, a record's header zeroed, the file cut short — over every position of the
//! acknowledged records of the log's last segment (a few records, many, a large segment,
//! and after a rotation): open must refuse with
//! `acknowledged entries damaged`, naming the first damaged index and the last
//! acknowledged one, and change nothing. The same shapes over bytes written after the last
//! acknowledged append (records appended `Buffered`, as a crash leaves them): open must cut
//! them and keep every acknowledged record. Misclassifications in either direction are
//! counted and must be zero. (Real SIGKILLs of a writer mid-append are `crash.rs`'s loop;
//! refetch and accept-loss opens are tested at the end.)

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use cathedral_storage::{inspect, Error, FindingKind, Log, Options, RecoveryMode};
use common::*;

/// Where a segment's first record starts (FORMAT.md).
const DATA_START: u64 = 64;

fn options(segment_bytes_max: u64) -> Options {
    Options {
        segment_bytes_max,
        compress_threshold_bytes: Some(512),
        preallocate: false,
        ..Options::default()
    }
}

/// A crash image: records `1..=acked` acknowledged durable (in rounds of `batch`), then
/// `acked+1..=written` appended `Buffered` (written, never acknowledged).
struct Image {
    dir: tempfile::TempDir,
    options: Options,
    /// The last segment file.
    active: PathBuf,
    /// First index of the last segment.
    first: u64,
    acked: u64,
    /// Byte range of every record of the last segment, by index.
    records: BTreeMap<u64, (u64, u64)>,
    /// Every file of the image as it was, to restore after an open that changed them.
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Image {
    fn build(segment_bytes_max: u64, acked: u64, written: u64, batch: u64) -> Image {
        let live = tempfile::tempdir().unwrap();
        let options = options(segment_bytes_max);
        let log = Log::open(live.path(), options.clone()).unwrap();
        fill(&log, 1, acked + 1, batch);
        fill_buffered(&log, acked + 1, written + 1, batch);
        let dir = crash_image_as_is(live.path());
        drop(log);
        let mut sizes = BTreeMap::new();
        let report = inspect(
            dir.path(),
            Some(&mut |v: cathedral_storage::Visit<'_>| {
                sizes.insert(v.index, v.record_bytes);
            }),
        )
        .unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        let last = report.segments.last().unwrap();
        assert!(!last.sealed);
        let w = last.watermark.expect("the active segment has a watermark");
        assert_eq!(
            w.acked_next,
            acked + 1,
            "the watermark is what was acknowledged"
        );
        let mut records = BTreeMap::new();
        let mut at = DATA_START;
        for i in last.first_index..=written {
            records.insert(i, (at, at + sizes[&i]));
            at += sizes[&i];
        }
        assert_eq!(at, last.data_bytes);
        let mut files = Vec::new();
        for p in segment_files(dir.path()).into_iter().chain([
            dir.path().join("meta"),
            dir.path().join("meta.mirror"),
            dir.path().join("log/acked"),
        ]) {
            files.push((p.clone(), std::fs::read(&p).unwrap()));
        }
        Image {
            active: last.path.clone(),
            first: last.first_index,
            options,
            acked,
            records,
            files,
            dir,
        }
    }

    fn acked_end(&self) -> u64 {
        if self.acked < self.first {
            DATA_START
        } else {
            self.records[&self.acked].1
        }
    }

    fn written_end(&self) -> u64 {
        self.records.values().last().map_or(DATA_START, |r| r.1)
    }

    fn original(&self) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(p, _)| *p == self.active)
            .unwrap()
            .1
    }

    fn restore(&self) {
        for (p, bytes) in &self.files {
            std::fs::write(p, bytes).unwrap();
        }
        let _ = std::fs::remove_dir_all(self.dir.path().join("salvage"));
    }

    /// The index of the record holding byte `at` of the last segment.
    fn record_at(&self, at: u64) -> Option<u64> {
        self.records
            .iter()
            .find(|(_, (s, e))| (*s..*e).contains(&at))
            .map(|(i, _)| *i)
    }

    /// The first record `shape` changes (the segment's first index when it changes the
    /// segment header), or `None` when it changes no header or record byte.
    fn first_changed(&self, shape: Shape) -> Option<u64> {
        let original = self.original();
        match shape {
            Shape::Flip(at) if at < 64 => Some(self.first),
            Shape::Flip(at) => self.record_at(at),
            Shape::Zero(at, len) => {
                let end = (at + len).min(original.len() as u64);
                let nonzero = (at..end).find(|&p| original[p as usize] != 0)?;
                if nonzero < 64 {
                    return Some(self.first);
                }
                // The first record holding a changed byte.
                self.records
                    .iter()
                    .find(|(_, (s, e))| {
                        (*s.max(&at)..*e.min(&end)).any(|p| original[p as usize] != 0)
                    })
                    .map(|(i, _)| *i)
            }
            Shape::Truncate(at) if at < 64 => Some(self.first),
            Shape::Truncate(at) => self
                .records
                .iter()
                .find(|(_, (_, e))| *e > at)
                .map(|(i, _)| *i),
        }
    }

    /// Damages the last segment in place.
    fn damage(&self, shape: Shape) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.active)
            .unwrap();
        match shape {
            Shape::Flip(at) => f
                .write_all_at(&[self.original()[at as usize] ^ 0x10], at)
                .unwrap(),
            Shape::Zero(at, len) => {
                let end = (at + len).min(self.original().len() as u64);
                f.write_all_at(&vec![0u8; (end - at) as usize], at).unwrap();
            }
            Shape::Truncate(at) => f.set_len(at).unwrap(),
        }
    }

    /// Undoes [`damage`](Self::damage): the bytes it changed, written back.
    fn undamage(&self, shape: Shape) {
        let original = self.original();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.active)
            .unwrap();
        let (at, end) = match shape {
            Shape::Flip(at) => (at, at + 1),
            Shape::Zero(at, len) => (at, (at + len).min(original.len() as u64)),
            Shape::Truncate(at) => {
                f.set_len(original.len() as u64).unwrap();
                (at, original.len() as u64)
            }
        };
        f.write_all_at(&original[at as usize..end as usize], at)
            .unwrap();
    }
}

/// One shape of damage to the last segment's bytes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Flip(u64),
    Zero(u64, u64),
    Truncate(u64),
}

impl Shape {
    fn start(self) -> u64 {
        match self {
            Shape::Flip(a) | Shape::Zero(a, _) | Shape::Truncate(a) => a,
        }
    }
}

/// Every shape the sweep tries whose damage starts in `range` of the last segment: flipped
/// bits every `flip_step` bytes, every record's header zeroed alone, the file cut at and
/// inside every record, and zeroed ranges of a sector and of 4, 8 and 64 KiB starting and
/// ending at every sector, within the written data.
fn shapes(img: &Image, range: std::ops::Range<u64>, flip_step: u64) -> Vec<Shape> {
    let mut out = Vec::new();
    for at in range.clone().step_by(flip_step as usize) {
        out.push(Shape::Flip(at));
    }
    for (s, e) in img.records.values() {
        if range.contains(s) {
            out.push(Shape::Zero(*s, 24));
            out.push(Shape::Truncate(*s));
            out.push(Shape::Truncate(s + (e - s) / 2));
        }
    }
    let limit = img.written_end();
    for len in [512u64, 4096, 8192, 65536] {
        let mut starts: Vec<u64> = (range.start / 512 * 512..range.end).step_by(512).collect();
        starts.extend(
            (range.start..range.end + len)
                .step_by(512)
                .filter_map(|end| end.checked_sub(len)),
        );
        starts.push(range.end.saturating_sub(len));
        starts.sort();
        starts.dedup();
        for s in starts {
            let end = (s + len).min(limit);
            if end > range.start && end > s {
                out.push(Shape::Zero(s, end - s));
            }
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    cases: u64,
    misclassified: Vec<String>,
}

/// Damage to acknowledged records from byte `from` on: open must refuse, naming the
/// range, changing nothing.
fn sweep_acknowledged(img: &Image, from: u64, flip_step: u64, tally: &mut Tally) {
    let range = from.min(img.acked_end())..img.acked_end();
    let mut all = shapes(img, range, flip_step);
    // The last 8 KiB of written data zeroed (the operator's experiment in issue 29), and
    // ranges reaching back over the segment header.
    let end = img.acked_end();
    for len in [8192u64, 16384, 65536] {
        all.push(Shape::Zero(end.saturating_sub(len), len.min(end)));
    }
    for shape in all {
        let Some(first) = img.first_changed(shape) else {
            continue;
        };
        if first > img.acked {
            continue;
        }
        tally.cases += 1;
        img.damage(shape);
        let opened = Log::open(img.dir.path(), img.options.clone());
        // Refusals change nothing on disk (checked, sampled); after anything else the
        // whole image is put back.
        let _restore = Restore(img, shape, opened.is_ok());
        match opened {
            Err(Error::AcknowledgedDamaged {
                first: f, last: l, ..
            }) if f == first && l == img.acked => {
                if !tally.cases.is_multiple_of(16) {
                    continue;
                }
                let mut expect = img.original().to_vec();
                match shape {
                    Shape::Flip(at) => expect[at as usize] ^= 0x10,
                    Shape::Zero(at, len) => {
                        let end = ((at + len) as usize).min(expect.len());
                        expect[at as usize..end].fill(0)
                    }
                    Shape::Truncate(at) => expect.truncate(at as usize),
                }
                assert!(
                    std::fs::read(&img.active).unwrap() == expect,
                    "{shape:?}: the refused open changed the file"
                );
                let r = inspect(img.dir.path(), None).unwrap();
                if !r
                    .findings
                    .iter()
                    .any(|f| f.kind == FindingKind::AcknowledgedDamaged)
                {
                    tally
                        .misclassified
                        .push(format!("{shape:?}: inspect missed it: {:?}", r.findings));
                }
            }
            Err(e) => {
                tally.misclassified.push(format!(
                    "{shape:?} (first damaged {first}, acknowledged through {}): {e}",
                    img.acked
                ));
            }
            Ok(log) => {
                tally.misclassified.push(format!(
                    "{shape:?} (first damaged {first}, acknowledged through {}): opened, ending at {:?}",
                    img.acked,
                    log.last_index()
                ));
            }
        }
    }
}

/// Puts the image back when dropped: the bytes the shape damaged, or (after an open that
/// may have changed things) every file.
struct Restore<'a>(&'a Image, Shape, bool);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.2 {
            self.0.restore();
        } else {
            self.0.undamage(self.1);
        }
    }
}

/// Damage only to bytes written after the last acknowledged append: open must cut it and
/// keep every acknowledged record.
fn sweep_unacknowledged(img: &Image, flip_step: u64, tally: &mut Tally) {
    let range = img.acked_end()..img.written_end();
    assert!(!range.is_empty());
    for shape in shapes(img, range.clone(), flip_step) {
        // Only shapes that stay past the acknowledged records (a zeroed range may start
        // before them: that is the other sweep's).
        if shape.start() < range.start {
            continue;
        }
        if img.first_changed(shape).is_none() && !matches!(shape, Shape::Truncate(_)) {
            continue;
        }
        tally.cases += 1;
        img.damage(shape);
        match Log::open(img.dir.path(), img.options.clone()) {
            Ok(log) => {
                let last = log.last_index().unwrap_or(0);
                if last < img.acked {
                    tally.misclassified.push(format!(
                        "{shape:?}: opened but ends at {last} < {}",
                        img.acked
                    ));
                } else {
                    check(&log, 1, last + 1);
                }
                drop(log);
            }
            Err(e) => tally.misclassified.push(format!(
                "{shape:?} (past acknowledged {}): refused: {e}",
                img.acked
            )),
        }
        img.restore();
    }
}

fn report(name: &str, tally: Tally) {
    eprintln!(
        "{name}: {} cases, {} misclassified",
        tally.cases,
        tally.misclassified.len()
    );
    assert!(tally.cases > 0);
    assert!(
        tally.misclassified.is_empty(),
        "{name}: {} of {} cases misclassified:\n{}",
        tally.misclassified.len(),
        tally.cases,
        tally.misclassified.join("\n")
    );
}

#[test]
fn a_segment_of_few_records_damaged_over_its_header() {
    // A few records: zeroing the last 8 KiB of the data reaches the segment header.
    let img = Image::build(32 << 10, 10, 14, 2);
    assert!(img.acked_end() < DATA_START + 8192);
    let mut tally = Tally::default();
    sweep_acknowledged(&img, DATA_START, 3, &mut tally);
    sweep_unacknowledged(&img, 7, &mut tally);
    report("few records", tally);
}

#[test]
fn a_segment_of_many_records_damaged_anywhere() {
    let img = Image::build(64 << 10, 120, 130, 7);
    let mut tally = Tally::default();
    sweep_acknowledged(&img, DATA_START, 17, &mut tally);
    sweep_unacknowledged(&img, 19, &mut tally);
    report("many records", tally);
}

#[test]
fn the_segment_after_a_rotation_damaged() {
    // Small segments: the log rotates; the last segment is young, the ones before sealed.
    let img = Image::build(16 << 10, 90, 95, 3);
    assert!(img.first > 1, "the log rotated");
    let mut tally = Tally::default();
    sweep_acknowledged(&img, DATA_START, 5, &mut tally);
    sweep_unacknowledged(&img, 13, &mut tally);
    report("after rotation", tally);
}

#[test]
fn a_large_segment_damaged_at_its_end() {
    // More than 1 MiB of records in the segment.
    let img = Image::build(2 << 20, 3600, 3620, 40);
    assert!(img.acked_end() > DATA_START + (1 << 20));
    let mut tally = Tally::default();
    // The last 40 KiB of acknowledged data, with flips sampled.
    sweep_acknowledged(&img, img.acked_end() - (40 << 10), 131, &mut tally);
    sweep_unacknowledged(&img, 29, &mut tally);
    report("large segment", tally);
}

/// Zeroes the last `len` bytes of the acknowledged records; returns the indexes damaged.
fn zero_tail(img: &Image, len: u64) -> (u64, u64) {
    let end = img.acked_end();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.active)
        .unwrap();
    f.write_all_at(&vec![0u8; len as usize], end - len).unwrap();
    let first = img.record_at(end - len).unwrap();
    (first, img.acked)
}

#[test]
fn refetch_cuts_owes_and_settles_once_the_entries_are_back() {
    let img = Image::build(256 << 10, 120, 120, 7);
    let (first, last) = zero_tail(&img, 8192);
    // Strict refuses; refetch cuts, copies the bytes aside and owes the range.
    assert!(matches!(
        Log::open(img.dir.path(), img.options.clone()),
        Err(Error::AcknowledgedDamaged { .. })
    ));
    let refetch = Options {
        recovery_mode: RecoveryMode::Refetch,
        ..img.options.clone()
    };
    let log = Log::open(img.dir.path(), refetch).unwrap();
    let cut = log.recovery_report().acknowledged_cut.clone().unwrap();
    assert_eq!((cut.first, cut.last, cut.owed), (first, last, true));
    assert!(std::fs::read_dir(&cut.moved_to).unwrap().count() >= 1);
    assert_eq!(log.last_index(), Some(first - 1));
    let owed = log.owed().expect("owed");
    assert_eq!((owed.index, owed.term), (last, term_of(last)));
    drop(log);
    // Owed survives a restart — strict opens now (nothing damaged), still owing.
    let log = Log::open(img.dir.path(), img.options.clone()).unwrap();
    assert_eq!(log.owed().map(|o| o.index), Some(last));
    assert!(log.losses().is_empty());
    // The cluster sends the entries again: once `last` is durable, nothing is owed.
    fill(&log, first, last, 5);
    assert!(log.owed().is_some(), "not yet: {} is not back", last);
    fill(&log, last, last + 3, 5);
    assert_eq!(log.owed(), None);
    check(&log, 1, last + 3);
    drop(log);
    let log = Log::open(img.dir.path(), img.options.clone()).unwrap();
    assert_eq!(log.owed(), None);
    let r = inspect(img.dir.path(), None).unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn a_purge_covering_what_is_owed_settles_it() {
    let img = Image::build(256 << 10, 60, 60, 4);
    let (first, last) = zero_tail(&img, 4096);
    let refetch = Options {
        recovery_mode: RecoveryMode::Refetch,
        ..img.options.clone()
    };
    let log = Log::open(img.dir.path(), refetch).unwrap();
    assert_eq!(log.owed().map(|o| o.index), Some(last));
    assert!(first <= last);
    // A snapshot through `last` arrives: the log is purged past its end.
    log.purge(last + 2, None).unwrap();
    assert_eq!(log.owed(), None);
}

#[test]
fn salvage_accepts_the_loss_and_records_it() {
    let img = Image::build(256 << 10, 80, 80, 5);
    let (first, last) = zero_tail(&img, 8192);
    let salvage = Options {
        recovery_mode: RecoveryMode::Salvage,
        ..img.options.clone()
    };
    let log = Log::open(img.dir.path(), salvage).unwrap();
    assert_eq!(log.last_index(), Some(first - 1));
    assert_eq!(log.owed(), None);
    let losses = log.losses();
    assert_eq!(losses.len(), 1);
    assert_eq!((losses[0].first, losses[0].last), (first, last));
    assert!(losses[0].at_ms > 1_600_000_000_000);
    drop(log);
    // Strict opens afterwards; the loss stays visible to inspect.
    let log = Log::open(img.dir.path(), img.options.clone()).unwrap();
    assert_eq!(log.losses().len(), 1);
    drop(log);
    let r = inspect(img.dir.path(), None).unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.losses.len(), 1);
}

#[test]
fn the_acknowledgment_file_has_a_twin_for_every_slot_and_is_never_optional() {
    let img = Image::build(64 << 10, 40, 40, 3);
    let acked = img.dir.path().join("log/acked");
    let bytes = std::fs::read(&acked).unwrap();
    assert_eq!(bytes.len(), 8192, "two rings of 4 KiB");
    // One ring garbled whole: its twin answers; inspect names the damage, open goes on.
    for ring in [0..4096, 4096..8192] {
        let mut b = bytes.clone();
        b[ring.clone()].iter_mut().for_each(|x| *x ^= 0x5a);
        std::fs::write(&acked, &b).unwrap();
        let r = inspect(img.dir.path(), None).unwrap();
        assert!(
            !r.findings.is_empty()
                && r.findings
                    .iter()
                    .all(|f| f.kind == FindingKind::Corruption && f.file == acked),
            "{:?}",
            r.findings
        );
        assert_eq!(r.watermark().unwrap().acked_next, 41, "{ring:?}");
        let log = Log::open(img.dir.path(), img.options.clone()).unwrap();
        check(&log, 1, 41);
        drop(log);
        img.restore();
    }
    // Both rings gone: nothing can tell a torn write from damage — refused, not guessed.
    std::fs::write(&acked, vec![0u8; 8192]).unwrap();
    let err = Log::open(img.dir.path(), img.options.clone()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("acknowledgment file"), "{err}");
    img.restore();
    // The file deleted: refused too (the metadata says the log keeps one).
    std::fs::remove_file(&acked).unwrap();
    let err = Log::open(img.dir.path(), img.options.clone()).unwrap_err();
    assert!(
        err.to_string().contains("acknowledgment file is missing"),
        "{err}"
    );
    img.restore();
    check(
        &Log::open(img.dir.path(), img.options.clone()).unwrap(),
        1,
        41,
    );
}

#[test]
fn a_truncate_lowers_the_watermark_before_it_cuts() {
    // A truncate (Raft conflict) legitimately removes acknowledged records: the watermark
    // goes down with them, so neither a crash right after nor a restart calls it damage.
    let dir = tempfile::tempdir().unwrap();
    let opts = options(64 << 10);
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    fill(&log, 1, 200, 9);
    log.truncate(150).unwrap();
    let image = crash_image_as_is(dir.path());
    let r = inspect(image.path(), None).unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.watermark().unwrap().acked_next, 150);
    let reopened = Log::open(image.path(), opts.clone()).unwrap();
    check(&reopened, 1, 150);
    drop(reopened);
    // Truncating into a sealed segment unseals it; same rule.
    log.truncate(20).unwrap();
    fill(&log, 20, 40, 3);
    let image = crash_image_as_is(dir.path());
    let reopened = Log::open(image.path(), opts).unwrap();
    check(&reopened, 1, 40);
}

#[test]
fn records_that_disagree_with_the_watermark_are_corruption_not_a_torn_tail() {
    // The acknowledgment file says record 39 is of term 1; the segment's record 39 —
    // whole, its checksum good — is of term 7 (the records after a truncate, beside the
    // acknowledgment file from before it: files from two different moments). Not a write
    // cut short: open refuses, and inspect calls it corruption.
    let dir = tempfile::tempdir().unwrap();
    let opts = options(64 << 10);
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    fill(&log, 1, 40, 5);
    log.sync().unwrap();
    let before = std::fs::read(dir.path().join("log/acked")).unwrap();
    log.truncate(30).unwrap();
    let payloads: Vec<Vec<u8>> = (30..40).map(payload).collect();
    let entries: Vec<cathedral_storage::Entry<'_>> = (30..40)
        .zip(&payloads)
        .map(|(index, p)| cathedral_storage::Entry {
            index,
            term: 7,
            payload: p,
        })
        .collect();
    log.append(&entries, cathedral_storage::Durability::Durable)
        .unwrap();
    let image = crash_image_as_is(dir.path());
    drop(log);
    std::fs::write(image.path().join("log/acked"), &before).unwrap();
    let err = Log::open(image.path(), opts.clone()).unwrap_err();
    assert!(
        matches!(err, Error::Corruption { ref reason, .. } if reason.contains("disagree")),
        "{err}"
    );
    let r = inspect(image.path(), None).unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::Corruption && f.reason.contains("disagree")),
        "{:?}",
        r.findings
    );
}
