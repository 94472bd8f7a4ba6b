//! `cathedral-log`: look inside a data directory without a running server.
//!
//! The reading commands (`inspect`, `verify`, `dump`, `replay`, `snapshot export`,
//! `snapshot status`) take no lock and change nothing, so they work on a stopped server's
//! directory, on a copy, or (with the caveat that the tail may be moving) beside a running
//! server. The modifying ones (`repair`, `snapshot import`) take the directory's lock and
//! refuse while a server holds it.
//!
//! Exit codes: 0 clean, 1 damage or divergence found, 2 usage or I/O error (or refused).

mod progress;
mod repair;
mod replay;
mod snapshot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cathedral_consensus::raft::decode_entry;
use cathedral_consensus::replay::ReplayOptions;
use cathedral_storage::{inspect_with_progress, Finding, FindingKind, InspectReport};
use clap::{Parser, Subcommand};
use openraft::EntryPayload;
use serde_json::json;

/// Exit codes.
pub(crate) const CLEAN: u8 = 0;
pub(crate) const DAMAGED: u8 = 1;
pub(crate) const USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "cathedral-log",
    version,
    about = "Inspect, verify, dump, replay and repair a Cathedral data directory offline; export and import snapshots.",
    after_help = "Exit codes: 0 clean, 1 damage or divergence found, 2 usage or I/O error (or refused: a server holds the directory)."
)]
struct Cli {
    /// The server's data directory.
    #[arg(long, env = "CATHEDRAL_DATA_DIR", default_value = "./cathedral-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segments, snapshots, metadata and totals.
    Inspect {
        #[arg(long)]
        json: bool,
    },
    /// Every checksum, header, footer and index; exit 0 clean, 1 damage found, 2 error.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Entries, one per line, decoded.
    Dump {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        /// Only these command kinds (e.g. SubmitJobs, TaskFinished); repeatable.
        #[arg(long = "type")]
        kinds: Vec<String>,
        /// Only entries about this job.
        #[arg(long)]
        job: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the state from the latest snapshot plus the log, checking every checkpoint;
    /// print a summary, the whole state (--state), or one job's history (--job).
    Replay {
        /// Stop after this index.
        #[arg(long)]
        to: Option<u64>,
        /// Replay the whole log from its first entry (it must be complete), comparing every
        /// snapshot on the way.
        #[arg(long)]
        from_start: bool,
        /// Print the history of this job.
        #[arg(long)]
        job: Option<u64>,
        /// Print the whole state as JSON (with the summary).
        #[arg(long)]
        state: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cut a torn tail (never acknowledged), copying the bytes to <data-dir>/salvage/ first;
    /// refuses acknowledged entries damaged and other damage unless --accept-loss. Refused
    /// while a server holds the directory.
    Repair {
        /// Keep the valid prefix and move everything after the first damage aside, accepting
        /// the loss of acknowledged entries there (recorded in the directory, shown by
        /// `inspect` and at every server start). `--salvage` is the older name.
        #[arg(long, alias = "salvage")]
        accept_loss: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export, import or describe a snapshot file.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCmd,
    },
    /// The archive of the jobs retention collected (DATA_DIR/archive).
    Archive {
        #[command(subcommand)]
        command: ArchiveCmd,
    },
}

#[derive(Subcommand)]
enum ArchiveCmd {
    /// Each day file: its jobs, its entry indexes, its bytes.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One collected job's final record, as JSON.
    Show { id: u64 },
    /// Reads every frame of every file; exit 0 whole, 1 damage found.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Write the state (replayed through the recorded committed index, or --to) as one
    /// portable snapshot file; --held copies the newest held snapshot instead.
    Export {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, conflicts_with = "held")]
        to: Option<u64>,
        #[arg(long)]
        held: bool,
        #[arg(long)]
        json: bool,
    },
    /// Verify FILE and place it: into a fresh data directory as a restore (the server started
    /// on it serves its jobs as a new cluster), into a node's directory when it fits the log.
    /// Refused while a server holds the directory.
    Import {
        file: PathBuf,
        /// Replace newer snapshots (kept aside as *.superseded).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// A snapshot file's metadata, sizes, checksum and contents summary.
    Status {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that need no data directory, or may create one.
    let early = match &cli.command {
        Cmd::Snapshot {
            command: SnapshotCmd::Status { file, json },
        } => Some(snapshot::cmd_status(file, *json)),
        Cmd::Snapshot {
            command: SnapshotCmd::Import { file, force, json },
        } => Some(snapshot::cmd_import(&cli.data_dir, file, *force, *json)),
        _ => None,
    };
    if let Some(result) = early {
        return finish(result);
    }
    // A directory `snapshot import` restored into holds only snapshots/ until the server
    // first starts on it: still a data directory.
    if !["meta", "log", "snapshots"]
        .iter()
        .any(|p| cli.data_dir.join(p).exists())
    {
        eprintln!(
            "cathedral-log: {} is not a Cathedral data directory (no meta, no log/, no snapshots/)",
            cli.data_dir.display()
        );
        return ExitCode::from(USAGE);
    }
    let result = match cli.command {
        Cmd::Inspect { json } => run_inspect(&cli.data_dir, json),
        Cmd::Verify { json } => run_verify(&cli.data_dir, json),
        Cmd::Dump {
            from,
            to,
            kinds,
            job,
            json,
        } => run_dump(&cli.data_dir, from, to, &kinds, job, json),
        Cmd::Replay {
            to,
            from_start,
            job,
            state,
            json,
        } => replay::cmd_replay(
            &cli.data_dir,
            &ReplayOptions {
                to,
                from_start,
                job,
            },
            state,
            json,
        ),
        Cmd::Repair { accept_loss, json } => repair::cmd_repair(&cli.data_dir, accept_loss, json),
        Cmd::Snapshot { command } => match command {
            SnapshotCmd::Export {
                out,
                to,
                held,
                json,
            } => snapshot::cmd_export(&cli.data_dir, &out, to, held, json),
            SnapshotCmd::Import { .. } | SnapshotCmd::Status { .. } => unreachable!("ran above"),
        },
        Cmd::Archive { command } => run_archive(&cli.data_dir, command),
    };
    finish(result)
}

/// `archive ls|show|verify`: the archive read offline, file by file.
fn run_archive(dir: &Path, command: ArchiveCmd) -> Result<u8, String> {
    use cathedral_consensus::archive::{files, find, frames, ARCHIVE_DIR};
    let adir = dir.join(ARCHIVE_DIR);
    match command {
        ArchiveCmd::Show { id } => match find(&adir, id) {
            Some(r) => {
                let mut v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
                ids_as_strings(&mut v);
                println!("{}", serde_json::to_string_pretty(&v).expect("prints"));
                Ok(CLEAN)
            }
            None => Err(format!(
                "job {id} is not in the archive at {}",
                adir.display()
            )),
        },
        ArchiveCmd::Ls { json } | ArchiveCmd::Verify { json } => {
            let verify = matches!(command, ArchiveCmd::Verify { .. });
            let mut rows = Vec::new();
            let mut damaged = false;
            for path in files(&adir) {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let (_, records, problem) = frames(&bytes);
                damaged |= problem.is_some();
                rows.push(json!({
                    "file": path.display().to_string(),
                    "bytes": bytes.len(),
                    "jobs": records.len(),
                    "job_ids": records.iter().map(|r| r.collected.job.id.to_string()).collect::<Vec<_>>(),
                    "first_index": records.iter().map(|r| r.index).min(),
                    "last_index": records.iter().map(|r| r.index).max(),
                    "problem": problem,
                }));
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"files": rows, "damaged": damaged}))
                        .expect("prints")
                );
            } else {
                if rows.is_empty() {
                    println!("no archive at {} (nothing collected yet)", adir.display());
                }
                for r in &rows {
                    println!(
                        "{}  {} jobs  entries {}..{}  {}{}",
                        r["file"].as_str().unwrap_or(""),
                        r["jobs"],
                        r["first_index"],
                        r["last_index"],
                        cathedral_consensus::words::bytes(r["bytes"].as_u64().unwrap_or(0)),
                        r["problem"]
                            .as_str()
                            .map_or(String::new(), |p| format!("  DAMAGE: {p}"))
                    );
                }
            }
            Ok(if verify && damaged { DAMAGED } else { CLEAN })
        }
    }
}

fn finish(result: Result<u8, String>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cathedral-log: {e}");
            ExitCode::from(USAGE)
        }
    }
}

/// Refuses (with a message naming the lock) while a server holds `dir`.
pub(crate) fn refuse_if_locked(dir: &Path) -> Result<(), String> {
    repair::lock(dir).map(drop)
}

/// The committed index recorded in `metadata`, if any.
pub(crate) fn committed_of(metadata: Option<&cathedral_storage::Metadata>) -> Option<u64> {
    metadata
        .and_then(|m| m.committed.as_ref())
        .and_then(|b| postcard::from_bytes::<Option<openraft::LogId<u64>>>(b).ok())
        .flatten()
        .map(|l| l.index)
}

/// The committed index recorded in an inspection's metadata, if any.
pub(crate) fn committed_index(r: &InspectReport) -> Option<u64> {
    committed_of(r.metadata.as_ref())
}

/// Inspects with a progress bar on a terminal.
fn inspect_bar(
    dir: &Path,
    visit: Option<&mut dyn FnMut(cathedral_storage::Visit<'_>)>,
    label: &'static str,
) -> Result<InspectReport, String> {
    let bar = progress::Bar::new(label);
    let r = inspect_with_progress(dir, visit, &mut |d, t| bar.update(d, t));
    bar.finish();
    r.map_err(|e| e.to_string())
}

/// A storage finding as one line: `kind: file at byte N: reason`.
/// Fields that hold ids (of jobs, nodes, workflows), as the state and the commands name
/// them in JSON.
const ID_FIELDS: &[&str] = &[
    "id",
    "job",
    "node",
    "workflow",
    "from",
    "depends_on",
    "dependents",
    "job_id",
    "node_id",
    "workflow_id",
    "leader_id",
];

/// Writes every id in `v` as a string (the JSON convention of the CLI, these tools and the
/// REST API's protobuf mapping: a 64-bit id is a string, so no JSON reader rounds it).
/// Ids are found by field name ([`ID_FIELDS`]), at any depth; an object keyed by job id
/// keeps its keys.
pub(crate) fn ids_as_strings(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn stringify(v: &mut Value) {
        match v {
            Value::Number(n) => *v = Value::String(n.to_string()),
            Value::Array(items) => items.iter_mut().for_each(stringify),
            _ => {}
        }
    }
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if ID_FIELDS.contains(&k.as_str())
                    && (x.is_number()
                        || x.as_array().is_some_and(|a| a.iter().all(Value::is_number)))
                {
                    stringify(x);
                } else {
                    ids_as_strings(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(ids_as_strings),
        _ => {}
    }
}

pub(crate) fn finding_line(f: &Finding) -> String {
    format!(
        "{}: {} at byte {}: {}",
        kind_name(f.kind),
        f.file.display(),
        f.offset,
        f.reason
    )
}

/// A storage finding as JSON.
pub(crate) fn finding_json(f: &Finding) -> serde_json::Value {
    json!({
        "kind": kind_name(f.kind),
        "file": f.file.display().to_string(),
        "offset": f.offset,
        "reason": f.reason,
    })
}

pub(crate) fn kind_name(k: FindingKind) -> &'static str {
    match k {
        FindingKind::TornTail => "torn tail",
        FindingKind::AcknowledgedDamaged => "acknowledged entries damaged",
        FindingKind::Corruption => "corruption",
        FindingKind::Inconsistent => "inconsistent",
    }
}

/// The last segment's durable watermark as JSON: the last acknowledged index, its term and
/// where it ends.
fn watermark_json(r: &InspectReport) -> serde_json::Value {
    r.watermark().map_or(serde_json::Value::Null, |w| {
        json!({
            "acked_through": w.acked_next.checked_sub(1),
            "term": w.term,
            "end": w.end,
            "seq": w.seq,
        })
    })
}

/// Accepted losses as JSON.
fn losses_json(r: &InspectReport) -> serde_json::Value {
    json!(r
        .losses
        .iter()
        .map(|l| json!({"first": l.first, "last": l.last, "at_ms": l.at_ms}))
        .collect::<Vec<_>>())
}

/// The decoded vote, committed and purged log ids, as JSON (a field that does not decode
/// says so).
fn metadata_json(r: &InspectReport) -> serde_json::Value {
    let Some(m) = &r.metadata else {
        return serde_json::Value::Null;
    };
    let log_id = |l: openraft::LogId<u64>| json!({"term": l.leader_id.term, "index": l.index});
    let undecodable = |e: postcard::Error| json!(format!("undecodable: {e}"));
    // The log store writes `committed` as an optional log id and `purged` as a plain one
    // (FORMAT.md, "What the consensus crate stores").
    let committed = m.committed.as_ref().map_or(serde_json::Value::Null, |b| {
        postcard::from_bytes::<Option<openraft::LogId<u64>>>(b)
            .map(|l| l.map_or(serde_json::Value::Null, log_id))
            .unwrap_or_else(undecodable)
    });
    let purged = m.purged.as_ref().map_or(serde_json::Value::Null, |b| {
        postcard::from_bytes::<openraft::LogId<u64>>(b)
            .map(log_id)
            .unwrap_or_else(undecodable)
    });
    let vote = m.vote.as_ref().map_or(serde_json::Value::Null, |b| {
        postcard::from_bytes::<openraft::Vote<u64>>(b)
            .map(|v| json!({"term": v.leader_id.term, "node": v.leader_id.voted_for(), "committed": v.committed}))
            .unwrap_or_else(undecodable)
    });
    json!({"vote": vote, "committed": committed, "purged": purged})
}

/// Checks that need the consensus encoding: every metadata field decodes, committed within
/// the log, the purged id at the purge point.
fn metadata_findings(r: &InspectReport) -> Vec<String> {
    let mut out = Vec::new();
    let m = metadata_json(r);
    for field in ["vote", "committed", "purged"] {
        if let Some(e) = m[field].as_str() {
            out.push(format!("metadata field {field} is {e}"));
        }
    }
    if let (Some(c), Some(last)) = (committed_index(r), r.last_index()) {
        if c > last {
            out.push(format!("committed index {c} is past the last index {last}"));
        }
    }
    if let (Some(p), Some(through)) = (m["purged"]["index"].as_u64(), r.purged_through) {
        if p != through {
            out.push(format!(
                "the purged log id names index {p}, the purge point is {through}"
            ));
        }
    }
    out
}

/// Every finding: the storage inspection's (log, metadata, snapshots) and the consensus
/// checks of the metadata.
fn all_findings(dir: &Path, r: &InspectReport) -> Vec<serde_json::Value> {
    let mut findings: Vec<serde_json::Value> = r.findings.iter().map(finding_json).collect();
    for m in metadata_findings(r) {
        findings.push(json!({
            "kind": "inconsistent",
            "file": dir.join("meta").display().to_string(),
            "offset": 0,
            "reason": m,
        }));
    }
    findings
}

/// The snapshot directory as JSON: valid snapshots, damaged files, files kept aside.
fn snapshots_json(r: &InspectReport) -> serde_json::Value {
    let s = &r.snapshots;
    json!({
        "valid": s.snapshots.iter().map(|i| json!({
            "file": i.path.display().to_string(),
            "last_index": i.meta.last.map(|l| l.0),
            "last_term": i.meta.last.map(|l| l.1),
            "file_bytes": i.file_bytes,
            "body_bytes": i.body_bytes,
            "checksum_ok": true,
        })).collect::<Vec<_>>(),
        "damaged": s.damaged.iter().map(|d| json!({
            "file": d.finding.file.display().to_string(),
            "offset": d.finding.offset,
            "reason": d.finding.reason,
            "last_index_by_name": d.named_last.map(|l| l.0),
            "set_aside": d.set_aside,
        })).collect::<Vec<_>>(),
        "kept": s.kept.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "unknown": s.unknown.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}

/// Prints what is on disk: metadata, segments, snapshots and every finding.
///
/// Long on purpose: it is the text layout of the report, field by field, next to the JSON
/// one, so the two stay the same report.
fn run_inspect(dir: &Path, as_json: bool) -> Result<u8, String> {
    let r = inspect_bar(dir, None, "inspect")?;
    let snaps = snapshots_json(&r);
    let findings = all_findings(dir, &r);
    let damaged = findings.iter().any(|f| f["kind"] != "torn tail");
    let segments: Vec<serde_json::Value> = r
        .segments
        .iter()
        .map(|s| {
            json!({
                "file": s.path.display().to_string(),
                "first_index": s.first_index,
                "last_index": s.last_index,
                "records": s.records,
                "file_bytes": s.file_bytes,
                "data_bytes": s.data_bytes,
                "sealed": s.sealed,
                "watermark": s.watermark.map(|w| json!({"acked_next": w.acked_next, "term": w.term, "end": w.end, "seq": w.seq})),
                "payload_bytes": s.payload_bytes,
                "stored_payload_bytes": s.stored_payload_bytes,
                "compression_ratio": if s.stored_payload_bytes > 0 { s.payload_bytes as f64 / s.stored_payload_bytes as f64 } else { 1.0 },
            })
        })
        .collect();
    let totals = json!({
        "segments": r.segments.len(),
        "records": r.records(),
        "first_index": r.first_index(),
        "last_index": r.last_index(),
        "file_bytes": r.segments.iter().map(|s| s.file_bytes).sum::<u64>(),
        "data_bytes": r.segments.iter().map(|s| s.data_bytes).sum::<u64>(),
        "snapshots": r.snapshots.snapshots.len(),
        "findings": findings.len(),
    });
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "log_id": r.log_id.map(|i| format!("{i:016x}")),
                "purged_through": r.purged_through,
                "metadata": metadata_json(&r),
                "watermark": watermark_json(&r),
                "owed": r.owed.map(|o| json!({"index": o.index, "term": o.term})),
                "losses": losses_json(&r),
                "segments": segments,
                "snapshots": snaps,
                "findings": findings,
                "totals": totals,
            }))
            .expect("prints")
        );
    } else {
        println!(
            "log {}  purged through {}",
            r.log_id.map_or("-".into(), |i| format!("{i:016x}")),
            r.purged_through.map_or("-".into(), |p| p.to_string())
        );
        println!("metadata {}", metadata_json(&r));
        match r.watermark() {
            Some(w) => println!(
                "acknowledged through index {} (term {}, byte {} of the last segment)",
                w.acked_next.saturating_sub(1),
                w.term,
                w.end
            ),
            None => println!("acknowledged watermark: - (no unsealed segment)"),
        }
        if let Some(o) = r.owed {
            println!(
                "OWED: acknowledged entries through index {} (term {}) were lost to disk damage; the cluster sends them back",
                o.index, o.term
            );
        }
        for l in &r.losses {
            println!(
                "LOSS ACCEPTED: entries {}..={} (at {} ms since the epoch)",
                l.first, l.last, l.at_ms
            );
        }
        println!("\nSEGMENT                          FIRST        LAST     RECORDS       BYTES  SEALED  RATIO");
        for s in &segments {
            println!(
                "{:<28} {:>10} {:>11} {:>11} {:>11}  {:<6}  {:.2}",
                Path::new(s["file"].as_str().unwrap_or(""))
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                s["first_index"].to_string(),
                s["last_index"].to_string(),
                s["records"].to_string(),
                s["data_bytes"].to_string(),
                s["sealed"].to_string(),
                s["compression_ratio"].as_f64().unwrap_or(1.0),
            );
        }
        println!("\nSNAPSHOT");
        for s in snaps["valid"].as_array().into_iter().flatten() {
            println!(
                "{}  last index {}  {} bytes  checksum ok",
                s["file"].as_str().unwrap_or(""),
                s["last_index"],
                s["file_bytes"],
            );
        }
        for s in snaps["damaged"].as_array().into_iter().flatten() {
            println!(
                "{}  DAMAGED at byte {}: {}",
                s["file"].as_str().unwrap_or(""),
                s["offset"],
                s["reason"].as_str().unwrap_or(""),
            );
        }
        for p in snaps["kept"].as_array().into_iter().flatten() {
            println!("{}  kept aside (never read)", p.as_str().unwrap_or(""));
        }
        for p in snaps["unknown"].as_array().into_iter().flatten() {
            println!("{}  NOT A SNAPSHOT FILE", p.as_str().unwrap_or(""));
        }
        if !findings.is_empty() {
            println!("\nFINDINGS");
            print_findings(&findings);
        }
        println!("\ntotals {totals}");
    }
    Ok(if damaged { DAMAGED } else { CLEAN })
}

/// Findings (as JSON) one per line: `kind: file at byte N: reason`.
fn print_findings(findings: &[serde_json::Value]) {
    for f in findings {
        println!(
            "{}: {} at byte {}: {}",
            f["kind"].as_str().unwrap_or(""),
            f["file"].as_str().unwrap_or(""),
            f["offset"],
            f["reason"].as_str().unwrap_or("")
        );
    }
}

fn run_verify(dir: &Path, as_json: bool) -> Result<u8, String> {
    let r = inspect_bar(dir, None, "verify")?;
    let findings = all_findings(dir, &r);
    let damaged = findings.iter().any(|f| f["kind"] != "torn tail");
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "clean": findings.is_empty(),
                "records": r.records(),
                "first_index": r.first_index(),
                "last_index": r.last_index(),
                "snapshots": r.snapshots.snapshots.len(),
                "findings": findings,
            }))
            .expect("prints")
        );
    } else {
        print_findings(&findings);
        for l in &r.losses {
            println!(
                "loss accepted earlier: entries {}..={} (not damage now; recorded by repair --accept-loss)",
                l.first, l.last
            );
        }
        println!(
            "{} records, indexes {}..={}, {} valid snapshot(s): {}",
            r.records(),
            r.first_index().map_or("-".into(), |i| i.to_string()),
            r.last_index().map_or("-".into(), |i| i.to_string()),
            r.snapshots.snapshots.len(),
            if findings.is_empty() {
                "clean".to_string()
            } else if damaged {
                format!("{} problem(s)", findings.len())
            } else {
                "a torn tail only (a normal open or repair cuts it)".to_string()
            }
        );
    }
    Ok(if damaged { DAMAGED } else { CLEAN })
}

/// Prints the records of a data directory's log. Long on purpose: one format per
/// output mode (text, JSON) over the same walk.
fn run_dump(
    dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    kinds: &[String],
    job: Option<u64>,
    as_json: bool,
) -> Result<u8, String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut errors = Vec::new();
    let mut visit = |v: cathedral_storage::Visit<'_>| {
        if from.is_some_and(|f| v.index < f) || to.is_some_and(|t| v.index > t) {
            return;
        }
        let entry = match decode_entry(v.payload) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("entry {}: {e}", v.index));
                return;
            }
        };
        // A batch is shown as its commands, each on its own line with the entry's index
        // and its place in the batch, so filters see every command; a request as the
        // command it carries, with its request id.
        let items: Vec<DumpItem> = match &entry.payload {
            EntryPayload::Blank => vec![(
                "Blank".to_string(),
                json!(null),
                None,
                None,
                "a new leader's first entry".to_string(),
            )],
            EntryPayload::Membership(m) => vec![(
                "Membership".to_string(),
                json!(format!("{m}")),
                None,
                None,
                membership_words(m),
            )],
            EntryPayload::Normal(cmd) => {
                let all = cmd.commands();
                let batched = matches!(cmd, cathedral_consensus::Command::Batch { .. });
                all.iter()
                    .enumerate()
                    .map(|(k, c)| {
                        let request = match c {
                            cathedral_consensus::Command::Request { id, .. } => Some(id),
                            _ => None,
                        };
                        let words = cathedral_consensus::words::command(c);
                        let c = c.inner();
                        (
                            c.kind().to_string(),
                            serde_json::to_value(c).unwrap_or(json!(null)),
                            batched.then_some((k + 1, all.len())),
                            request,
                            words,
                        )
                    })
                    .collect()
            }
        };
        for (kind, body, batch, request, words) in items {
            if !kinds.is_empty() && !kinds.iter().any(|k| k.eq_ignore_ascii_case(&kind)) {
                continue;
            }
            if let Some(j) = job {
                if !mentions_job(&body, j) {
                    continue;
                }
            }
            let line = if as_json {
                let mut v =
                    json!({"index": v.index, "term": v.term, "kind": kind, "command": body});
                if let Some((k, n)) = batch {
                    v["batch"] = json!({"position": k, "of": n});
                }
                if let Some(r) = request {
                    v["request"] = serde_json::to_value(r).unwrap_or(json!(null));
                }
                ids_as_strings(&mut v);
                v.to_string()
            } else {
                let at = batch.map_or(String::new(), |(k, n)| format!(" [{k}/{n}]"));
                let req = request.map_or(String::new(), |r| format!(" request {r}"));
                format!(
                    "{:>10} t{:<4} {:<16} {words}{at}{req}",
                    v.index, v.term, kind
                )
            };
            let _ = writeln!(out, "{line}");
        }
    };
    let r = inspect_bar(dir, Some(&mut visit), "dump")?;
    for e in &errors {
        eprintln!("cathedral-log: {e}");
    }
    for f in &r.findings {
        eprintln!("cathedral-log: {}", finding_line(f));
    }
    Ok(if errors.is_empty() && !r.damaged() {
        CLEAN
    } else {
        DAMAGED
    })
}

/// One command of a dumped entry: kind, body, `(position, of)` within a batch, the
/// request id it was proposed under, and what it decided in words.
type DumpItem<'a> = (
    String,
    serde_json::Value,
    Option<(usize, usize)>,
    Option<&'a cathedral_consensus::requests::RequestId>,
    String,
);

/// A Raft membership in words: its voters and learners.
pub(crate) fn membership_words(m: &openraft::Membership<u64, openraft::BasicNode>) -> String {
    let list = |ids: Vec<u64>| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "membership: voters {}; learners {}",
        list(m.voter_ids().collect()),
        list(m.learner_ids().collect())
    )
}

/// Whether a command (as JSON) names job `id`: a `job` field, or in `assignments`.
fn mentions_job(body: &serde_json::Value, id: u64) -> bool {
    let Some(obj) = body.as_object().and_then(|o| o.values().next()) else {
        return false;
    };
    if obj.get("job").and_then(|j| j.as_u64()) == Some(id) {
        return true;
    }
    obj.get("assignments")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|x| x["job"].as_u64() == Some(id)))
}
