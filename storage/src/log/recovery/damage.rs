//! The damage phase of opening a log: what damage found in a segment is, and what each
//! recovery mode does with it (cut, refuse, copy aside and record, salvage).

use super::*;

/// Where the damaged segment is: the data directory, the metadata, the segment listing
/// and the damaged segment's position in it.
#[derive(Clone, Copy)]
pub(super) struct Place<'a> {
    pub(super) dir: &'a Path,
    pub(super) meta_path: &'a Path,
    pub(super) segs: &'a [(u64, PathBuf)],
    pub(super) k: usize,
}

/// Decides what the damage found in segment `k` is (`layout::judge`) and acts as the mode
/// says. A torn tail is cut. Acknowledged entries damaged are refused (strict), or copied
/// aside, recorded as owed (refetch) or as an accepted loss (salvage) — in the metadata,
/// durably, before anything is cut — and cut. Other damage is refused, or in salvage mode
/// the valid prefix is kept. Returns the cut segment when it keeps valid records: it
/// becomes the active one.
///
/// Long on purpose: the verdict and the three modes form one table, and every arm shares
/// the same cut, report and ordering of durable steps.
pub(super) fn settle_damage(
    place: Place<'_>,
    found: Found,
    mode: RecoveryMode,
    meta: &mut MetaFile,
    report: &mut RecoveryReport,
) -> Result<Option<Unsealed>> {
    let Found::Damaged {
        scan,
        offset,
        reason,
        torn,
        tail,
    } = found
    else {
        unreachable!("only damage is settled");
    };
    let Place { segs, k, .. } = place;
    let (first, path) = segs[k].clone();
    let is_last = k + 1 == segs.len();
    let valid_next = first + scan.offsets.len() as u64;
    let judged = tail.filter(|t| t.judged_by_watermark);
    let verdict = layout::judge(TailFacts {
        last_segment: is_last,
        header_ok: tail.is_some_and(|t| t.header_ok),
        has_watermark: judged.is_some(),
        watermark: judged.and_then(|t| t.watermark.map(|s| (s.acked_next, s.acked_term))),
        valid_next,
        torn,
    });
    report.watermark = judged.and_then(|t| t.watermark());
    // Bytes past the valid records, for what is cut or moved (a refusal reads none).
    let tail_bytes = || -> Result<u64> { Ok(nonzero_extent(&path)?.saturating_sub(scan.end)) };
    match (&verdict, mode) {
        (Verdict::Torn, RecoveryMode::Strict | RecoveryMode::Refetch) => {
            let bytes = tail_bytes()?;
            tracing::warn!(file = %path.display(), offset, bytes, %reason, "cutting torn tail");
            report.torn_tail = Some(TornTail {
                file: path.clone(),
                offset: scan.end,
                bytes,
                reason,
            });
        }
        (Verdict::Acknowledged { first, last, term }, RecoveryMode::Strict) => {
            return Err(Error::AcknowledgedDamaged {
                file: path,
                offset,
                first: *first,
                last: *last,
                term: *term,
                reason,
            })
        }
        (Verdict::Corruption(why), RecoveryMode::Strict | RecoveryMode::Refetch) => {
            let reason = if judged.is_some() && is_last {
                format!("{reason} ({why})")
            } else {
                reason
            };
            return Err(Error::corruption(&path, offset, reason));
        }
        (Verdict::Acknowledged { first, last, term }, RecoveryMode::Refetch) => {
            let s = salvage(place, &scan, tail_bytes()?, offset, reason.clone())?;
            let owed = Owed {
                index: *last,
                term: *term,
            };
            meta.owed = Some(
                meta.owed
                    .map_or(owed, |o| if o.index >= owed.index { o } else { owed }),
            );
            meta.store(place.meta_path)?;
            tracing::warn!(file = %path.display(), offset, first, last, moved_to = %s.moved_to.display(), %reason,
                "acknowledged entries damaged: cut, and owed until fetched again from the cluster");
            report.acknowledged_cut = Some(AcknowledgedCut {
                file: path.clone(),
                offset,
                first: *first,
                last: *last,
                term: *term,
                reason,
                owed: true,
                moved_to: s.moved_to,
            });
        }
        (_, RecoveryMode::Salvage) => {
            let s = salvage(place, &scan, tail_bytes()?, offset, reason.clone())?;
            // What this cut loses of what had been acknowledged: for acknowledged damage,
            // its range; for corruption, everything from the first record dropped through
            // the last one known to have existed.
            let lost = match &verdict {
                Verdict::Acknowledged { first, last, term } => Some((*first, *last, *term)),
                Verdict::Torn => None,
                Verdict::Corruption(_) => {
                    let known = known_last(segs, k, tail);
                    known
                        .filter(|l| *l >= valid_next)
                        .map(|l| (valid_next, l, 0))
                }
            };
            if let Some((first, last, term)) = lost {
                meta.record_loss(Loss {
                    first,
                    last,
                    at_ms: now_ms(),
                });
                meta.store(place.meta_path)?;
                tracing::warn!(first, last, "acknowledged entries accepted as lost");
                report.acknowledged_cut = Some(AcknowledgedCut {
                    file: path.clone(),
                    offset,
                    first,
                    last,
                    term,
                    reason: reason.clone(),
                    owed: false,
                    moved_to: s.moved_to.clone(),
                });
            }
            report.salvaged = Some(s);
        }
    }
    if scan.end == 0 {
        return Ok(None);
    }
    // Cut the file after its last good record; it becomes the active segment.
    let f = open_rw(&path)?;
    fsutil::set_len(&f, scan.end, &path)?;
    fsutil::sync_all(&f, &path)?;
    Ok(Some((first, path, scan, tail)))
}

/// The highest index known to have been written from segment `k` on: the last segment's
/// watermark, a damaged sealed segment's footer, and one before the first index of every
/// later segment file (a segment is created only after the one before it is sealed,
/// durable).
fn known_last(segs: &[(u64, PathBuf)], k: usize, tail: Option<Tail>) -> Option<u64> {
    let by_names = segs[k + 1..].last().map(|(f, _)| f.saturating_sub(1));
    let by_watermark = tail
        .and_then(|t| t.watermark)
        .and_then(|s| s.acked_next.checked_sub(1));
    by_names
        .max(by_watermark)
        .max(tail.and_then(|t| t.footer_last))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Salvage's move: the bytes after the valid prefix of segment `k` (copied and synced
/// first) and every later segment go to `<dir>/salvage/<time>/`.
fn salvage(
    place: Place<'_>,
    scan: &Scan,
    tail: u64,
    offset: u64,
    reason: String,
) -> Result<Salvaged> {
    let Place { dir, segs, k, .. } = place;
    let (first, path) = &segs[k];
    let moved_to = dir.join("salvage").join(format!("{}", now_ms()));
    fsutil::create_dir_all(&moved_to)?;
    if tail > 0 && scan.end > 0 {
        let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let end = (scan.end + tail) as usize;
        let name = format!("{}.from-{}", segment::file_name(*first), scan.end);
        // The copy is synced before the segment is cut: the bytes are never only in the
        // page cache when the original goes.
        let copy = moved_to.join(name);
        fs::write(&copy, &data[scan.end as usize..end])
            .and_then(|()| File::open(&copy)?.sync_all())
            .map_err(|e| Error::io("write", &copy, e))?;
    }
    let mut moved_files = Vec::new();
    let whole_from = if scan.end == 0 { k } else { k + 1 };
    for (_, p) in &segs[whole_from..] {
        let to = moved_to.join(p.file_name().unwrap());
        fsutil::rename(p, &to)?;
        moved_files.push(to);
    }
    fsutil::sync_dir(&moved_to)?;
    fsutil::sync_dir(moved_to.parent().unwrap_or(dir))?;
    fsutil::sync_dir(dir)?;
    tracing::warn!(file = %path.display(), offset, %reason, moved_to = %moved_to.display(), "salvaged log");
    Ok(Salvaged {
        file: path.clone(),
        offset,
        reason,
        moved_to,
        moved_files,
        bytes: tail,
    })
}
