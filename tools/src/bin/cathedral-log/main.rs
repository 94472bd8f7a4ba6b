//! `cathedral-log`: look inside a data directory without a running server.
//!
//! The reading commands (`inspect`, `verify`, `dump`, `replay`, `snapshot export`,
//! `snapshot status`) take no lock and change nothing, so they work on a stopped server's
//! directory, on a copy, or (with the caveat that the tail may be moving) beside a running
//! server. The modifying ones (`repair`, `snapshot import`) take the directory's lock and
//! refuse while a server holds it.
//!
//! Exit codes: 0 clean, 1 damage or divergence found, 2 usage or I/O error (or refused).

mod inspect;
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

use inspect::{run_inspect, run_verify};

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
