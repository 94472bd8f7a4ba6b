//! Behaviour of the log through its public API, on real files.

mod common;

use std::sync::Arc;

use cathedral_storage::{Durability, Entry, Error, Log, Options};
use common::*;

#[test]
fn append_read_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (None, None));
    fill(&log, 1, 500, 7);
    check(&log, 1, 500);
    assert!(
        segment_files(dir.path()).len() > 10,
        "small segments rotate"
    );
    assert_eq!(log.last_entry(), Some((499, term_of(499))));
    assert_eq!(log.term(250).unwrap(), Some(term_of(250)));
    assert_eq!(log.get(500).unwrap(), None);
    assert_eq!(log.durable_index(), Some(499));
    log.close().unwrap();

    let log = Log::open(dir.path(), small_options()).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    check(&log, 1, 500);
    fill(&log, 500, 600, 13);
    check(&log, 1, 600);
}

#[test]
fn a_directory_reopened_with_another_segment_size_keeps_its_segments_and_uses_the_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let sized = |bytes: u64| Options {
        segment_bytes_max: bytes,
        ..small_options()
    };
    let log = Log::open(dir.path(), sized(64 << 10)).unwrap();
    fill(&log, 1, 200, 7);
    log.close().unwrap();
    let before = segment_files(dir.path()).len();
    // Smaller: the open segment is past the new size, so the next append starts another.
    let log = Log::open(dir.path(), sized(4 << 10)).unwrap();
    check(&log, 1, 200);
    fill(&log, 200, 400, 7);
    check(&log, 1, 400);
    log.close().unwrap();
    let smaller = segment_files(dir.path()).len();
    assert!(
        smaller > before + 5,
        "4 KiB segments rotate often ({before} -> {smaller})"
    );
    // Larger again: every segment written at either size still reads back.
    let log = Log::open(dir.path(), sized(1 << 20)).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    check(&log, 1, 400);
    fill(&log, 400, 500, 7);
    log.close().unwrap();
    let log = Log::open(dir.path(), sized(64 << 10)).unwrap();
    check(&log, 1, 500);
}

#[test]
fn an_inline_log_dropped_without_close_is_left_as_a_crash_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let inline = Options {
        inline_writer: true,
        ..small_options()
    };
    let log = Log::open(dir.path(), inline.clone()).unwrap();
    fill(&log, 1, 300, 7);
    check(&log, 1, 300);
    assert_eq!(log.durable_index(), Some(299));
    drop(log);
    // Not sealed: the next open scans the active segment, and finds every record.
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert!(
        log.recovery_report().scanned_bytes > 0,
        "{:?}",
        log.recovery_report()
    );
    assert!(log.recovery_report().torn_tail.is_none());
    check(&log, 1, 300);
    log.close().unwrap();
    // Closed, an inline log is sealed as a threaded one is.
    let log = Log::open(dir.path(), inline).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    fill(&log, 300, 320, 3);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    check(&log, 1, 320);
}

#[test]
fn appends_must_be_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 10, 20, 5);
    let p = payload(1);
    let e = |index| Entry {
        index,
        term: 9,
        payload: &p,
    };
    let err = log.append(&[e(25)], Durability::Durable).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonContiguous {
                expected: 20,
                got: 25
            }
        ),
        "{err}"
    );
    let err = log
        .append(&[e(20), e(22)], Durability::Durable)
        .unwrap_err();
    assert!(matches!(err, Error::NonContiguous { .. }), "{err}");
    // Nothing of a refused batch was written; the log goes on.
    check(&log, 10, 20);
    log.append(&[e(20)], Durability::Durable).unwrap();
    assert_eq!(log.last_index(), Some(20));
}

#[test]
fn truncate_inside_active_and_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 1, 300, 10);
    log.truncate(295).unwrap(); // inside the active segment
    check(&log, 1, 295);
    let before = segment_files(dir.path()).len();
    log.truncate(120).unwrap(); // inside a sealed segment: later segments go, it is unsealed
    check(&log, 1, 120);
    assert!(segment_files(dir.path()).len() < before);
    fill(&log, 120, 200, 9);
    check(&log, 1, 200);
    log.truncate(1000).unwrap(); // past the end: no-op
    check(&log, 1, 200);
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    check(&log, 1, 200);
    log.truncate(1).unwrap();
    check(&log, 1, 1);
    fill(&log, 1, 50, 4);
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    check(&log, 1, 50);
}

#[test]
fn purge_deletes_whole_segments_and_records_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 1, 400, 10);
    let files = segment_files(dir.path()).len();
    log.purge(150, Some(b"purged 150".to_vec())).unwrap();
    check(&log, 151, 400);
    assert!(segment_files(dir.path()).len() < files);
    assert!(matches!(
        log.get(150),
        Err(Error::Purged {
            index: 150,
            first_index: 151
        })
    ));
    assert!(matches!(log.read(100..200), Err(Error::Purged { .. })));
    assert!(matches!(log.truncate(100), Err(Error::Purged { .. })));
    assert_eq!(log.metadata().purged.as_deref(), Some(&b"purged 150"[..]));
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    check(&log, 151, 400);
    assert_eq!(log.metadata().purged.as_deref(), Some(&b"purged 150"[..]));
    // Purging past the end empties the log; the next append continues after the point.
    log.purge(1000, None).unwrap();
    assert_eq!(log.last_index(), None);
    assert!(segment_files(dir.path()).is_empty());
    let err = log
        .append(
            &[Entry {
                index: 400,
                term: 9,
                payload: b"x",
            }],
            Durability::Durable,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::NonContiguous { expected: 1001, .. }),
        "{err}"
    );
    fill(&log, 1001, 1010, 3);
    drop(log);
    let log = Log::open(dir.path(), small_options()).unwrap();
    check(&log, 1001, 1010);
}

#[test]
fn metadata_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.metadata().vote, None);
    log.save_vote(b"vote: term 4 for node 2".to_vec()).unwrap();
    log.save_committed(b"committed 17".to_vec()).unwrap();
    drop(log);
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let m = log.metadata();
    assert_eq!(m.vote.as_deref(), Some(&b"vote: term 4 for node 2"[..]));
    assert_eq!(m.committed.as_deref(), Some(&b"committed 17"[..]));
    let err = log.save_vote(vec![0; 100_000]).unwrap_err();
    assert!(err.to_string().contains("META_FIELD_BYTES_MAX"), "{err}");
    assert_eq!(
        log.metadata().vote,
        m.vote,
        "a refused update changes nothing"
    );
}

#[test]
fn bounds_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        record_bytes_max: 1000,
        batch_records_max: 4,
        batch_bytes_max: 2000,
        ..small_options()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    fill(&log, 1, 5, 2);
    let big = vec![1u8; 1001];
    let err = log
        .append(
            &[Entry {
                index: 5,
                term: 1,
                payload: &big,
            }],
            Durability::Durable,
        )
        .unwrap_err();
    assert!(err.to_string().contains("record_bytes_max"), "{err}");
    let small = [0u8; 10];
    let five: Vec<_> = (5..10)
        .map(|index| Entry {
            index,
            term: 1,
            payload: &small,
        })
        .collect();
    let err = log.append(&five, Durability::Durable).unwrap_err();
    assert!(err.to_string().contains("batch_records_max"), "{err}");
    let mid = vec![0u8; 900];
    let three: Vec<_> = (5..8)
        .map(|index| Entry {
            index,
            term: 1,
            payload: &mid,
        })
        .collect();
    let err = log.append(&three, Durability::Durable).unwrap_err();
    assert!(err.to_string().contains("batch_bytes_max"), "{err}");
    check(&log, 1, 5);
    fill(&log, 5, 8, 2);
    check(&log, 1, 8);

    let err = Log::open(
        tempfile::tempdir().unwrap().path(),
        Options {
            segment_bytes_max: 10,
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("segment_bytes_max"), "{err}");
}

#[test]
fn second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let err = Log::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(log);
    Log::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn concurrent_appenders_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_options()).unwrap());
    let writers: Vec<_> = (0..8u8)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for k in 0..200u32 {
                    let p = [vec![w], k.to_le_bytes().to_vec()].concat();
                    let durability = if k.is_multiple_of(2) {
                        Durability::Durable
                    } else {
                        Durability::Buffered
                    };
                    let r = log.append_next(3, &[&p, &p], durability).unwrap();
                    mine.push((r.start, p));
                }
                mine
            })
        })
        .collect();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while reads < 2000 {
                if let Some(last) = log.last_index() {
                    let from = last.saturating_sub(20).max(1);
                    let recs = log.read(from..last + 1).unwrap();
                    assert_eq!(recs.len() as u64, last + 1 - from);
                    for (i, r) in recs.iter().enumerate() {
                        assert_eq!(r.index, from + i as u64);
                    }
                }
                reads += 1;
            }
        })
    };
    let written: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    reader.join().unwrap();
    assert_eq!(log.last_index(), Some(8 * 200 * 2));
    for (first, p) in &written {
        assert_eq!(&log.get(*first).unwrap().unwrap().payload, p);
        assert_eq!(&log.get(first + 1).unwrap().unwrap().payload, p);
    }
    log.sync().unwrap();
    assert_eq!(log.durable_index(), Some(3200));
}

#[test]
fn async_append_completes_in_order_of_durability() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 1..=100u64 {
        let tx = tx.clone();
        let p = payload(i);
        log.append_with(
            &[Entry {
                index: i,
                term: 1,
                payload: &p,
            }],
            Durability::Durable,
            move |r| tx.send((i, r.is_ok())).unwrap(),
        )
        .unwrap();
    }
    drop(tx);
    // An acknowledged append reads back at once: Raft applies (and answers) what it was
    // told is flushed, reading it from the log, with no wait for the writer in between.
    let done: Vec<_> = rx
        .iter()
        .inspect(|&(i, ok)| {
            if ok {
                assert_eq!(log.get(i).unwrap().map(|r| r.payload), Some(payload(i)));
            }
        })
        .collect();
    assert_eq!(done.len(), 100);
    assert!(done.iter().all(|(_, ok)| *ok));
    assert_eq!(log.durable_index(), Some(100));
    // Group commit: 100 durable appends queued at once share fdatasyncs.
    let stats = log.stats();
    assert_eq!(stats.records, 100);
    assert!(
        stats.syncs < 100 && stats.syncs <= stats.rounds,
        "{stats:?}"
    );
}

#[test]
fn large_compressible_records_are_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let p = vec![b'a'; 1 << 20];
    log.append(
        &[Entry {
            index: 1,
            term: 1,
            payload: &p,
        }],
        Durability::Durable,
    )
    .unwrap();
    drop(log);
    let seg = &segment_files(dir.path())[0];
    // The preallocated segment is mostly zeros; the record itself must be far below 1 MiB.
    let data = std::fs::read(seg).unwrap();
    let used = data.iter().rposition(|&b| b != 0).unwrap();
    assert!(used < 64 * 1024, "record took {used} bytes");
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.get(1).unwrap().unwrap().payload, p);
}

#[test]
fn lowering_record_bytes_max_keeps_existing_records_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        Options {
            compress_threshold_bytes: None,
            ..Options::default()
        },
    )
    .unwrap();
    let big = vec![7u8; 10_000];
    log.append(
        &[Entry {
            index: 1,
            term: 1,
            payload: &big,
        }],
        Durability::Durable,
    )
    .unwrap();
    drop(log);
    // The option bounds new input; what is on disk is checked against the format's limit.
    let log = Log::open(
        dir.path(),
        Options {
            record_bytes_max: 1000,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(log.get(1).unwrap().unwrap().payload, big);
    let err = log
        .append(
            &[Entry {
                index: 2,
                term: 1,
                payload: &big,
            }],
            Durability::Durable,
        )
        .unwrap_err();
    assert!(err.to_string().contains("record_bytes_max"), "{err}");
}

#[test]
fn clean_close_seals_so_reopen_scans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_options()).unwrap();
    fill(&log, 1, 200, 10);
    let image = crash_image(&log, dir.path());
    log.close().unwrap();
    // Every segment, the last included, ends with the footer magic.
    for seg in segment_files(dir.path()) {
        let data = std::fs::read(&seg).unwrap();
        assert_eq!(&data[data.len() - 8..], b"CATHFTR\0", "{}", seg.display());
    }
    let log = Log::open(dir.path(), small_options()).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    check(&log, 1, 200);
    // Appends go on in a new segment.
    fill(&log, 200, 210, 5);
    check(&log, 1, 210);
    // What a crash leaves is scanned: its unsealed last segment.
    let log = Log::open(image.path(), small_options()).unwrap();
    assert!(log.recovery_report().scanned_bytes > 0);
    check(&log, 1, 200);
}
