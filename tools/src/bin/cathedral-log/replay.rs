//! `replay`: the data directory's state rebuilt from its snapshot and log, with every
//! checkpoint checked (the work is in `cathedral_consensus::replay`).

use std::path::Path;

use cathedral_consensus::replay::{replay, Replay, ReplayOptions, Start};
use cathedral_consensus::JobState;
use serde_json::json;

use crate::progress::Bar;
use crate::{committed_index, CLEAN, DAMAGED};

/// Replays with a progress bar on a terminal.
pub fn run_replay(dir: &Path, options: &ReplayOptions) -> Result<Replay, String> {
    let bar = Bar::new("replay");
    let r = replay(dir, options, &mut |done, total| bar.update(done, total));
    bar.finish();
    r.map_err(|e| e.to_string())
}

/// A summary of the replayed state: where it started, how far it got, jobs by state,
/// nodes, Raft members, checkpoints, the state hash.
pub fn summary(r: &Replay) -> serde_json::Value {
    let jobs: serde_json::Map<String, serde_json::Value> = JobState::ALL
        .iter()
        .map(|s| (s.name().to_string(), json!(r.state.jobs_in(*s).count())))
        .collect();
    let nodes: Vec<serde_json::Value> = r
        .state
        .nodes()
        .map(|n| {
            json!({
                "id": n.info.id,
                "address": n.info.address,
                "role": n.info.role.name(),
                "status": cathedral_consensus::words::node_status(n.status),
                "slots": n.info.capacity.slots,
            })
        })
        .collect();
    // Tokens by accessor and policy; the state holds no secret to print.
    let acl = r.state.acl();
    let tokens: Vec<serde_json::Value> = acl
        .tokens()
        .map(|t| json!({"accessor": t.accessor, "name": t.name, "policy": t.policy.name()}))
        .collect();
    let m = r.membership.membership();
    let voters: Vec<u64> = m.voter_ids().collect();
    let learners: Vec<u64> = m.learner_ids().collect();
    json!({
        "acl": {"enforced": acl.enforced, "tokens": tokens},
        "start": match &r.start {
            Start::Empty => json!({"from": "empty"}),
            Start::Restored { path } => json!({"from": "restored", "file": path.display().to_string()}),
            Start::Snapshot { path, index, term } =>
                json!({"from": "snapshot", "file": path.display().to_string(), "index": index, "term": term}),
        },
        "last_index": r.last.map(|l| l.index),
        "last_term": r.last.map(|l| l.leader_id.term),
        "committed_recorded": committed_index(&r.log),
        "entries_applied": r.entries,
        "bytes_applied": r.bytes,
        "jobs_total": r.state.jobs().count(),
        "jobs": jobs,
        "workflows": r.state.workflows().count(),
        "nodes": nodes,
        "raft": {"voters": voters, "learners": learners},
        "checkpoints": {
            "recorded": r.checkpoints,
            "matched": r.checkpoints_matched,
            "unverifiable": r.checkpoints_unverifiable,
        },
        "snapshots_compared": r.snapshots_compared,
        "counters": {
            "fenced_reports": r.state.counters().fenced_reports,
            "ignored_assignments": r.state.counters().ignored_assignments,
            "rejected_commands": r.state.counters().rejected_commands,
            "divergences": r.state.counters().divergences,
        },
        "state_hash": r.state_hash(),
        "notes": r.notes,
        "findings": r.findings,
        "log_findings": r.log.findings.iter().map(crate::finding_json).collect::<Vec<_>>(),
    })
}

/// Replays the log into a state and prints it: a summary, the whole state, or one job's
/// history (`--job`).
///
/// Long on purpose: the three views share one replay and one exit-code rule, and each
/// prints both as text and as JSON; splitting them would repeat the replay and the rule.
pub fn cmd_replay(
    dir: &Path,
    options: &ReplayOptions,
    whole_state: bool,
    as_json: bool,
) -> Result<u8, String> {
    let r = run_replay(dir, options)?;
    let damaged = !r.findings.is_empty() || r.log.damaged();
    if let Some(job) = options.job {
        if r.state.job(job).is_none() {
            return Err(format!(
                "job {job} does not exist as of index {}",
                r.last.map_or("-".into(), |l| l.index.to_string())
            ));
        }
        if as_json {
            let mut v = json!({
                "job": job,
                "history": r.history,
                "now": serde_json::to_value(r.state.job(job)).unwrap_or_default(),
                "notes": r.notes,
                "findings": r.findings,
            });
            crate::ids_as_strings(&mut v);
            println!("{}", serde_json::to_string_pretty(&v).expect("prints"));
        } else {
            println!(
                "{:>10} {:>5} {:<24}  {:<16} {:<10} WHAT",
                "INDEX", "TERM", "AT (UTC)", "COMMAND", "STATE"
            );
            for e in &r.history {
                println!(
                    "{:>10} {:>5} {:<24}  {:<16} {:<10} {}",
                    e.index,
                    e.term,
                    cathedral_consensus::words::time_ms(e.at_ms),
                    e.command,
                    e.state,
                    e.note
                );
            }
            print_notes(&r);
            print_findings(&r);
        }
        return Ok(if damaged { DAMAGED } else { CLEAN });
    }
    let mut s = summary(&r);
    if as_json || whole_state {
        if whole_state {
            s["state"] = serde_json::to_value(&r.state).map_err(|e| e.to_string())?;
            // The state's own encoding leaves the jobs to the snapshot code: put them in.
            let jobs: serde_json::Map<String, serde_json::Value> = r
                .state
                .jobs()
                .map(|j| Ok((j.id.to_string(), serde_json::to_value(&*j)?)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(|e| e.to_string())?;
            s["state"]["jobs"] = serde_json::Value::Object(jobs);
            s["crons"] = serde_json::to_value(r.state.crons()).map_err(|e| e.to_string())?;
        }
        crate::ids_as_strings(&mut s);
        println!("{}", serde_json::to_string_pretty(&s).expect("prints"));
        return Ok(if damaged { DAMAGED } else { CLEAN });
    }
    match &r.start {
        Start::Empty => println!("replayed from the first entry"),
        Start::Restored { path } => println!(
            "replayed from the restored state {} and the first entry on",
            path.display()
        ),
        Start::Snapshot { path, index, term } => println!(
            "replayed from snapshot {} (through {index}, term {term})",
            path.display()
        ),
    }
    println!(
        "applied {} entries ({} bytes) through index {} (term {})",
        r.entries,
        r.bytes,
        r.last.map_or("-".into(), |l| l.index.to_string()),
        r.last.map_or("-".into(), |l| l.leader_id.term.to_string()),
    );
    if let (Some(c), Some(l)) = (s["committed_recorded"].as_u64(), r.last) {
        if l.index > c {
            println!(
                "note: the recorded committed index is {c}; entries after it may not have been \
                 committed yet (the record lags the real one by up to a second)"
            );
        }
    }
    let by_state: Vec<String> = JobState::ALL
        .iter()
        .map(|st| format!("{} {}", st.name(), s["jobs"][st.name()]))
        .collect();
    println!("jobs: {} — {}", s["jobs_total"], by_state.join(", "));
    println!("workflows: {}", s["workflows"]);
    println!(
        "raft voters {}, learners {}",
        s["raft"]["voters"], s["raft"]["learners"]
    );
    for n in s["nodes"].as_array().into_iter().flatten() {
        println!(
            "node {:>20}  {:<12} {:<8} {:<8} slots {}",
            n["id"],
            n["role"].as_str().unwrap_or(""),
            n["status"].as_str().unwrap_or(""),
            n["address"].as_str().unwrap_or(""),
            n["slots"]
        );
    }
    println!(
        "checkpoints: {} recorded, {} matched the leader's hash, {} older than the start",
        r.checkpoints, r.checkpoints_matched, r.checkpoints_unverifiable
    );
    if options.from_start {
        println!("snapshots compared with the log: {}", r.snapshots_compared);
    }
    println!("state hash {}", r.state_hash());
    print_notes(&r);
    print_findings(&r);
    Ok(if damaged { DAMAGED } else { CLEAN })
}

fn print_notes(r: &Replay) {
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn print_findings(r: &Replay) {
    for f in &r.findings {
        println!("FINDING at index {}: {}", f.index, f.reason);
    }
    for f in &r.log.findings {
        println!("{}", crate::finding_line(f));
    }
}
