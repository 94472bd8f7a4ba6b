//! `snapshot export | import | status`.
//!
//! - export: the state replayed through the recorded committed index (or `--to`) written as
//!   one portable snapshot file, or with `--held` the newest snapshot file as it is. Reads
//!   only; works beside a running server.
//! - import: verified first. Into a fresh data directory it is a restore: the state is
//!   placed as the directory's starting point and the server started on it forms a new
//!   cluster serving those jobs (nodes of the old cluster are declared failed and their
//!   attempts rerun). Into a node's existing directory it places the snapshot in the store
//!   when it fits the log (same term at its index, nothing purged past it). Refused while a
//!   server holds the directory.
//! - status: a snapshot file's metadata, sizes, checksum and what it holds.

use std::io::Read;
use std::path::Path;

use cathedral_consensus::raft::{read_snapshot, RaftSnapshotMeta};
use cathedral_consensus::replay::ReplayOptions;
use cathedral_consensus::{hex, ClusterState};
use cathedral_storage::{
    describe_snapshot, export_snapshot, inspect, read_metadata, survey_snapshots, verify_snapshot,
    SnapshotMeta, SnapshotOptions, SnapshotReader, SnapshotStore, SnapshotWriter,
};
use openraft::StoredMembership;
use serde_json::json;

use crate::progress::Bar;
use crate::{committed_of, CLEAN, DAMAGED};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print(as_json: bool, v: &serde_json::Value, text: impl FnOnce()) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v).expect("prints"));
    } else {
        text();
    }
}

/// Writes a snapshot to a file: with `--held` the newest valid one on disk, otherwise one
/// built by replaying the log through its committed index (or `--to`).
///
/// Long on purpose: one linear script — choose the source, check it, write and sync the
/// file, print what was written — whose every refusal message sits beside its check.
pub fn cmd_export(
    dir: &Path,
    out: &Path,
    to: Option<u64>,
    held: bool,
    as_json: bool,
) -> Result<u8, String> {
    if out.exists() {
        return Err(format!(
            "{} exists; remove it or choose another --out",
            out.display()
        ));
    }
    if held {
        // The newest snapshot whose checksum is good; damaged ones are named.
        let survey = survey_snapshots(&cathedral_storage::snapshots_dir(dir), true)
            .map_err(|e| e.to_string())?;
        let Some(latest) = survey.snapshots.last().cloned() else {
            let damaged: Vec<String> = survey
                .damaged
                .iter()
                .map(|d| crate::finding_line(&d.finding))
                .collect();
            return Err(format!(
                "{} holds no valid snapshot{}; export without --held writes one from the log",
                dir.display(),
                if damaged.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", damaged.join("; "))
                }
            ));
        };
        let info = export_snapshot(&latest.path, out).map_err(|e| e.to_string())?;
        let v = json!({
            "out": out.display().to_string(),
            "from": latest.path.display().to_string(),
            "last_index": info.meta.last.map(|l| l.0),
            "file_bytes": info.file_bytes,
        });
        print(as_json, &v, || {
            println!(
                "exported {} ({} bytes, through index {}) to {}",
                latest.path.display(),
                info.file_bytes,
                info.meta.last.map_or("-".into(), |l| l.0.to_string()),
                out.display()
            )
        });
        return Ok(CLEAN);
    }
    // Only committed entries belong in a snapshot: stop at the recorded committed index
    // unless told otherwise.
    // The metadata alone: no pass over the log before the replay's own.
    let metadata = read_metadata(dir).map_err(|e| e.to_string())?;
    let to = match (to, committed_of(metadata.as_ref())) {
        (Some(t), _) => Some(t),
        (None, Some(c)) => Some(c),
        (None, None) => None,
    };
    let r = crate::replay::run_replay(
        dir,
        &ReplayOptions {
            to,
            ..ReplayOptions::default()
        },
    )?;
    if !r.findings.is_empty() || r.log.damaged() {
        for f in &r.findings {
            eprintln!("FINDING at index {}: {}", f.index, f.reason);
        }
        return Err("the replay found problems (above); nothing exported".into());
    }
    let Some(last) = r.last else {
        return Err("the log holds no entry to export".into());
    };
    let meta = RaftSnapshotMeta {
        last_log_id: Some(last),
        membership: r.membership.clone(),
        snapshot_id: format!("export-{}-{}", last.leader_id.term, last.index),
    };
    let bar = Bar::new("export");
    let mut w = SnapshotWriter::to_file(
        out,
        SnapshotMeta {
            last: Some((last.index, last.leader_id.term)),
            data: postcard::to_stdvec(&meta).expect("encodes"),
            created_ms: now_ms(),
        },
        SnapshotOptions::default().compression_level,
    )
    .map_err(|e| e.to_string())?;
    r.state
        .write_snapshot(&mut w)
        .map_err(|e| format!("write {}: {e}", out.display()))?;
    let info = w.finish().map_err(|e| e.to_string())?;
    bar.finish();
    let v = json!({
        "out": out.display().to_string(),
        "last_index": last.index,
        "last_term": last.leader_id.term,
        "jobs": r.state.jobs().count(),
        "state_hash": r.state_hash(),
        "file_bytes": info.file_bytes,
        "body_bytes": info.body_bytes,
    });
    print(as_json, &v, || {
        println!(
            "exported the state through index {} (term {}): {} jobs, state hash {}, {} bytes ({} before compression) to {}",
            last.index,
            last.leader_id.term,
            v["jobs"],
            v["state_hash"].as_str().unwrap_or(""),
            info.file_bytes,
            info.body_bytes,
            out.display()
        )
    });
    Ok(CLEAN)
}

/// Imports a snapshot file into `dir`: as the starting point of a new cluster (an empty
/// directory, or `--force`), or to continue an existing log's history.
///
/// Long on purpose: every check is made before anything is placed, in the order an
/// operator reads the refusals (checksum, metadata, state, history, fit), each next to
/// its message; split up, the "nothing placed until everything is checked" rule is
/// harder to see.
pub fn cmd_import(dir: &Path, file: &Path, force: bool, as_json: bool) -> Result<u8, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let _lock = crate::repair::lock(dir)?;
    // Everything is checked before anything is placed: checksum, metadata, the state.
    let (meta, state) = read_snapshot(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // One pass over the log: its shape, and the term at the snapshot's last index.
    let at = meta.last_log_id.map(|l| l.index);
    let mut term_at = None;
    let log = {
        let mut visit = |v: cathedral_storage::Visit<'_>| {
            if Some(v.index) == at {
                term_at = Some(v.term);
            }
        };
        inspect(dir, Some(&mut visit)).map_err(|e| e.to_string())?
    };
    let fresh = log.metadata.is_none() && log.segments.is_empty();
    let store = SnapshotStore::open(
        cathedral_storage::snapshots_dir(dir),
        SnapshotOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    if fresh {
        if !store.list().map_err(|e| e.to_string())?.is_empty() && !force {
            return Err(format!(
                "{} has no log but already holds snapshots; --force replaces them",
                dir.display()
            ));
        }
        // A restore: the state becomes the starting point of a new cluster. Raft sees an
        // empty history (no last log id, no members), so the server initialises as usual
        // and its first entries follow the restored state.
        let restored = RaftSnapshotMeta {
            last_log_id: None,
            membership: StoredMembership::default(),
            snapshot_id: format!(
                "restored-{}",
                meta.last_log_id.map_or("initial".into(), |l| format!(
                    "{}-{}",
                    l.leader_id.term, l.index
                ))
            ),
        };
        let mut w = store
            .writer(SnapshotMeta {
                last: None,
                data: postcard::to_stdvec(&restored).expect("encodes"),
                created_ms: now_ms(),
            })
            .map_err(|e| e.to_string())?;
        // The old log's checkpoint indexes mean nothing in the new one.
        let mut state = state;
        state.rebase();
        state
            .write_snapshot(&mut w)
            .map_err(|e| format!("write the state: {e}"))?;
        let info = w.finish().map_err(|e| e.to_string())?;
        let v = json!({
            "mode": "restore",
            "placed": info.path.display().to_string(),
            "jobs": state.jobs().count(),
            "state_hash": hex(&state.hash()),
            "from_index": meta.last_log_id.map(|l| l.index),
        });
        print(as_json, &v, || {
            println!(
                "restored {} jobs (state hash {}) into {}; start cathedral-server on it: it forms a new cluster serving them",
                v["jobs"],
                v["state_hash"].as_str().unwrap_or(""),
                dir.display()
            )
        });
        return Ok(CLEAN);
    }
    // An existing node: the snapshot must continue this log's history.
    let Some(last) = meta.last_log_id else {
        return Err(
            "the snapshot holds no log position; it can only restore into a fresh data directory"
                .into(),
        );
    };
    let s = last.index;
    // The log continues from the snapshot when it holds the snapshot's entry (same term) or
    // starts right after it.
    let start = log
        .first_index()
        .or(log.purged_through.map(|p| p + 1))
        .unwrap_or(0);
    let end = log.last_index().or(log.purged_through);
    let fits = match term_at {
        Some(t) if t != last.leader_id.term => {
            return Err(format!(
                "the snapshot ends at index {s} term {}, but this log has term {t} there: it is from another history",
                last.leader_id.term
            ))
        }
        Some(_) => true,
        None => s + 1 == start,
    };
    if !fits {
        return Err(format!(
            "the snapshot ends at index {s}, but this log holds {start}..={}: a server could not continue from it; import it into a fresh directory instead",
            end.map_or("-".into(), |e| e.to_string())
        ));
    }
    let info = store.import(file, force).map_err(|e| {
        format!(
            "{e}{}",
            if force {
                ""
            } else {
                " (--force to place it anyway)"
            }
        )
    })?;
    let v = json!({
        "mode": "import",
        "placed": info.path.display().to_string(),
        "last_index": last.index,
        "jobs": state.jobs().count(),
        "state_hash": hex(&state.hash()),
    });
    print(as_json, &v, || {
        println!(
            "placed {} (through index {}, {} jobs)",
            info.path.display(),
            last.index,
            v["jobs"]
        )
    });
    Ok(CLEAN)
}

pub fn cmd_status(file: &Path, as_json: bool) -> Result<u8, String> {
    let info = describe_snapshot(file).map_err(|e| e.to_string())?;
    let checksum = verify_snapshot(file);
    let raft = RaftSnapshotMeta::decode(&info.meta.data);
    // What it holds: only when the checksum is good.
    let held = checksum
        .as_ref()
        .ok()
        .map(|_| -> Result<ClusterState, String> {
            let mut body = Vec::new();
            SnapshotReader::open(file)
                .map_err(|e| e.to_string())?
                .read_to_end(&mut body)
                .map_err(|e| e.to_string())?;
            ClusterState::from_snapshot(&body).map_err(|e| e.to_string())
        });
    let v = json!({
        "file": file.display().to_string(),
        "file_bytes": info.file_bytes,
        "body_bytes": info.body_bytes,
        "compression_ratio": if info.file_bytes > 0 { info.body_bytes as f64 / info.file_bytes as f64 } else { 0.0 },
        "created_ms": info.meta.created_ms,
        "last_index": info.meta.last.map(|l| l.0),
        "last_term": info.meta.last.map(|l| l.1),
        "checksum_ok": checksum.is_ok(),
        "checksum_error": checksum.as_ref().err().map(|e| e.to_string()),
        "snapshot_id": raft.as_ref().ok().map(|m| m.snapshot_id.clone()),
        "membership": raft.as_ref().ok().map(|m| format!("{}", m.membership.membership())),
        "jobs": held.as_ref().and_then(|h| h.as_ref().ok()).map(|s| s.jobs().count()),
        "state_hash": held.as_ref().and_then(|h| h.as_ref().ok()).map(|s| hex(&s.hash())),
        "state_error": held.as_ref().and_then(|h| h.as_ref().err()).cloned(),
    });
    let ok = checksum.is_ok() && raft.is_ok() && held.as_ref().is_some_and(|h| h.is_ok());
    print(as_json, &v, || {
        println!("file        {}", file.display());
        println!(
            "last entry  {}",
            info.meta.last.map_or(
                "none (a restored or initial state)".into(),
                |(i, t)| format!("index {i}, term {t}")
            )
        );
        println!(
            "created     {}",
            cathedral_consensus::words::time_ms(info.meta.created_ms)
        );
        println!(
            "size        {} ({} before compression)",
            cathedral_consensus::words::bytes(info.file_bytes),
            cathedral_consensus::words::bytes(info.body_bytes)
        );
        match &checksum {
            Ok(_) => println!("checksum    ok"),
            Err(e) => println!("checksum    BAD: {e}"),
        }
        if let Ok(m) = &raft {
            println!("snapshot id {}", m.snapshot_id);
            println!("{}", crate::membership_words(m.membership.membership()));
        }
        if let Some(Ok(s)) = &held {
            println!("jobs        {}", s.jobs().count());
            println!("state hash  {}", hex(&s.hash()));
        }
        if let Some(Err(e)) = &held {
            println!("state       BAD: {e}");
        }
    });
    Ok(if ok { CLEAN } else { DAMAGED })
}
