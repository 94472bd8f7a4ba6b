//! `repair`: cuts a torn tail, or with `--accept-loss` everything from the first damage on
//! — acknowledged entries included, the loss recorded in the directory — after copying
//! what it removes into `<dir>/salvage/<time>/` (synced before anything is cut). Refuses
//! while a server holds the directory.
//!
//! The cutting itself is the storage crate's salvage-mode open, which is what a server
//! would do; this command adds the refusal of mid-log damage without `--salvage`, the
//! committed index brought back within the log, and a check afterwards.

use std::path::Path;

use cathedral_storage::{inspect, DirLock, Finding, InspectReport, Log, Options, RecoveryMode};
use openraft::{CommittedLeaderId, LogId};
use serde_json::json;

use crate::{committed_index, finding_line, CLEAN, DAMAGED};

/// Repairs `dir` by opening its log the way the server does (strict: cut a torn tail;
/// `--accept-loss`: move everything past the first damage aside, recording lost
/// acknowledged entries), then reports what changed.
///
/// Long on purpose: inspect before, open, inspect after, and report, in one place, so the
/// before/after comparison the operator sees is built from the same two reports.
pub fn cmd_repair(dir: &Path, accept_loss: bool, as_json: bool) -> Result<u8, String> {
    crate::refuse_if_locked(dir)?;
    let before = inspect(dir, None).map_err(|e| e.to_string())?;
    // Repair works on the log; damaged snapshots are named, never touched (their state is
    // restored from a peer or an export, not cut).
    let snapshot_damage = snapshot_findings(dir, &before);
    for f in &snapshot_damage {
        eprintln!("{} (repair does not change snapshots)", finding_line(f));
    }
    let before_log = log_findings(dir, &before);
    if before_log.is_empty() {
        if !snapshot_damage.is_empty() {
            eprintln!(
                "cathedral-log: the log needs no repair; the damaged snapshot files above are left as they are (a server sets aside the ones it does not need and refuses to start without one it needs)"
            );
            return Ok(DAMAGED);
        }
        report(
            as_json,
            json!({"repaired": false, "clean": true, "message": "nothing to repair"}),
        );
        return Ok(CLEAN);
    }
    let log_damaged = before_log
        .iter()
        .any(|f| f.kind != cathedral_storage::FindingKind::TornTail);
    let acknowledged = before_log
        .iter()
        .any(|f| f.kind == cathedral_storage::FindingKind::AcknowledgedDamaged);
    if log_damaged && !accept_loss {
        for f in &before_log {
            eprintln!("{}", finding_line(f));
        }
        let what = if acknowledged {
            "entries this node had acknowledged as durable are damaged (a crash never tears those)"
        } else {
            "the log is damaged before its end"
        };
        eprintln!(
            "cathedral-log: {what}; repair only cuts a torn tail. A member of a cluster \
             fetches them again by itself when its server starts. Otherwise restore the \
             directory from a copy or a snapshot export, or run `repair --accept-loss`: it \
             keeps the valid prefix, moves everything after the first damage to \
             {}/salvage/, and records the loss (shown by `inspect` and at every server start)",
            dir.display()
        );
        return Ok(DAMAGED);
    }
    let options = Options {
        recovery_mode: RecoveryMode::Salvage,
        verify_on_open: true,
        preallocate: false,
        ..Options::default()
    };
    let log = Log::open(dir, options).map_err(|e| format!("open for repair: {e}"))?;
    let recovery = log.recovery_report().clone();
    // A committed index past the new end would make Raft look for entries that are gone:
    // bring it back to the last entry kept (a lower committed index is always safe).
    let mut committed_note = None;
    if let Some(c) = committed_index(&before) {
        let last = log.last_entry();
        if last.is_none_or(|(i, _)| i < c) {
            let to: Option<LogId<u64>> =
                last.map(|(i, t)| LogId::new(CommittedLeaderId::new(t, 0), i));
            log.save_committed(postcard::to_stdvec(&to).expect("encodes"))
                .map_err(|e| format!("save committed: {e}"))?;
            committed_note = Some(format!(
                "committed index lowered from {c} to {}",
                to.map_or("-".into(), |l| l.index.to_string())
            ));
        }
    }
    log.close().map_err(|e| format!("close: {e}"))?;
    let after = inspect(dir, None).map_err(|e| e.to_string())?;
    let cut = recovery.salvaged.as_ref().map(|s| {
        json!({
            "file": s.file.display().to_string(),
            "offset": s.offset,
            "reason": s.reason,
            "bytes": s.bytes,
            "backup": s.moved_to.display().to_string(),
            "moved_files": s.moved_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        })
    });
    let after_log = log_findings(dir, &after);
    // The cut took every entry and no snapshot holds the state: the cluster's membership
    // went with them.
    let nothing_left = recovery.acknowledged_cut.is_some()
        && after.last_index().is_none()
        && after.purged_through.is_none()
        && after.snapshots.snapshots.is_empty();
    let clean = after_log.is_empty();
    let lost = recovery
        .acknowledged_cut
        .as_ref()
        .map(|c| json!({"first": c.first, "last": c.last, "reason": c.reason}));
    let value = json!({
        "nothing_left": nothing_left.then_some(NOTHING_LEFT),
        "repaired": cut.is_some(),
        "cut": cut,
        "lost": lost,
        "committed": committed_note,
        "last_index": after.last_index(),
        "clean": clean,
        "remaining_findings": after_log.iter().map(|f| finding_line(f)).collect::<Vec<_>>(),
        "snapshot_findings": snapshot_damage.iter().map(|f| finding_line(f)).collect::<Vec<_>>(),
    });
    if as_json {
        report(true, value);
    } else {
        match &recovery.salvaged {
            Some(s) => {
                println!(
                    "cut {} at byte {} ({}): {} bytes copied to {} first",
                    s.file.display(),
                    s.offset,
                    s.reason,
                    s.bytes,
                    s.moved_to.display()
                );
                for f in &s.moved_files {
                    println!("moved {} aside", f.display());
                }
            }
            None => println!("nothing was cut"),
        }
        if let Some(c) = &recovery.acknowledged_cut {
            println!(
                "LOST: acknowledged entries {}..={} ({}); the loss is recorded in the directory",
                c.first, c.last, c.reason
            );
        }
        if let Some(n) = &committed_note {
            println!("{n}");
        }
        println!(
            "the log now ends at index {}: {}",
            after.last_index().map_or("-".into(), |i| i.to_string()),
            if clean { "clean" } else { "still damaged" }
        );
        for f in &after_log {
            println!("{}", finding_line(f));
        }
        if nothing_left {
            println!("{NOTHING_LEFT}");
        }
    }
    Ok(if clean && snapshot_damage.is_empty() {
        CLEAN
    } else {
        DAMAGED
    })
}

/// What an operator is told when a repair leaves no entry and no snapshot.
const NOTHING_LEFT: &str =
    "the loss took every entry the log held, and no snapshot holds the state: this \
directory no longer holds a cluster (its membership was among them). A standalone node: move the \
directory aside and start afresh, or restore a snapshot export into a fresh directory. A cluster \
member: wipe the directory and add the node again with --join";

/// Findings about the log and its metadata.
fn log_findings<'a>(dir: &Path, r: &'a InspectReport) -> Vec<&'a Finding> {
    let snaps = cathedral_storage::snapshots_dir(dir);
    r.findings
        .iter()
        .filter(|f| !f.file.starts_with(&snaps))
        .collect()
}

/// Findings about the snapshot directory.
fn snapshot_findings<'a>(dir: &Path, r: &'a InspectReport) -> Vec<&'a Finding> {
    let snaps = cathedral_storage::snapshots_dir(dir);
    r.findings
        .iter()
        .filter(|f| f.file.starts_with(&snaps))
        .collect()
}

fn report(as_json: bool, v: serde_json::Value) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).expect("prints"));
    } else if let Some(m) = v["message"].as_str() {
        println!("{m}");
    }
}

/// Keeps the lock for the life of a modifying command.
pub fn lock(dir: &Path) -> Result<DirLock, String> {
    DirLock::acquire(dir).map_err(|e| match e {
        cathedral_storage::Error::Locked { .. } => format!(
            "{} is in use by a running server (it holds {}); stop the server first",
            dir.display(),
            dir.join("LOCK").display()
        ),
        other => other.to_string(),
    })
}
