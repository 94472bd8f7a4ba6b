//! Jobs, events and cluster status as text for people or JSON for programs.
//!
//! JSON convention (the CLI's, `cathedral-log`'s and the REST API's alike): every id — job,
//! workflow, node, cluster — is a string, as the protobuf JSON mapping writes 64-bit
//! integers, so no JSON reader rounds a node id. Counts, indexes, sizes and times stay
//! numbers here.

use cathedral_api::v1 as pb;
use serde_json::{json, Value};

pub fn state_name(v: i32) -> &'static str {
    match pb::JobState::try_from(v) {
        Ok(pb::JobState::Pending) => "pending",
        Ok(pb::JobState::Assigned) => "assigned",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        Ok(pb::JobState::TimedOut) => "timed_out",
        _ => "unknown",
    }
}

/// Parses a state name as `list --state` takes it.
pub fn state_from_name(s: &str) -> Option<pb::JobState> {
    Some(match s.replace('-', "_").as_str() {
        "pending" => pb::JobState::Pending,
        "assigned" => pb::JobState::Assigned,
        "running" => pb::JobState::Running,
        "succeeded" => pb::JobState::Succeeded,
        "failed" => pb::JobState::Failed,
        "cancelled" => pb::JobState::Cancelled,
        "timed_out" => pb::JobState::TimedOut,
        _ => return None,
    })
}

/// An id as JSON: a string (see the module's convention).
pub fn id(v: u64) -> Value {
    Value::String(v.to_string())
}

/// Ids as a JSON array of strings.
pub fn ids(v: &[u64]) -> Value {
    Value::Array(v.iter().map(|i| id(*i)).collect())
}

fn exit_json(o: &pb::Outcome) -> Value {
    use pb::outcome::Exit;
    let exit = match o.exit {
        Some(Exit::Code(c)) => json!({"code": c}),
        Some(Exit::Signal(s)) => json!({"signal": s}),
        Some(Exit::TimedOut(_)) => json!("timed_out"),
        Some(Exit::Lost(_)) => json!("lost"),
        None => Value::Null,
    };
    json!({
        "exit": exit,
        "duration_ms": o.duration_ms,
        "output_tail": String::from_utf8_lossy(&o.output_tail),
    })
}

pub fn job_json(j: &pb::Job) -> Value {
    let spec = j.spec.clone().unwrap_or_default();
    json!({
        "id": id(j.id),
        "name": spec.name,
        "state": state_name(j.state),
        "reason": j.reason,
        "command": spec.command,
        "submitted_at_ms": j.submitted_at_ms,
        "timeout_ms": spec.timeout_ms,
        "max_attempts": spec.retry.map(|r| r.max_attempts),
        "constraints": spec.constraints,
        "depends_on": ids(&spec.depends_on),
        "dependents": ids(&j.dependents),
        "workflow_id": (j.workflow_id != 0).then(|| id(j.workflow_id)),
        "idempotency_key": (!spec.idempotency_key.is_empty()).then_some(spec.idempotency_key),
        "submitted_by": (!j.submitted_by.is_empty()).then_some(&j.submitted_by),
        "retain_ms": spec.retain_ms,
        "collected_at_ms": j.collected_at_ms,
        "attempts": j.attempts.iter().map(|a| json!({
            "number": a.number,
            "node_id": id(a.node_id),
            "summary": a.summary,
            "assigned_at_ms": a.assigned_at_ms,
            "started_at_ms": a.started_at_ms,
            "finished_at_ms": a.finished_at_ms,
            "outcome": a.outcome.as_ref().map(exit_json),
        })).collect::<Vec<_>>(),
    })
}

pub fn job_text(j: &pb::Job) -> String {
    let spec = j.spec.clone().unwrap_or_default();
    let mut s = format!(
        "job {}  {}\n  state:    {}{}\n  command:  {}\n",
        j.id,
        spec.name,
        state_name(j.state),
        if j.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", j.reason)
        },
        shell_words(&spec.command),
    );
    if !spec.depends_on.is_empty() {
        let after: Vec<String> = spec.depends_on.iter().map(u64::to_string).collect();
        s += &format!("  after:    {}\n", after.join(", "));
    }
    if j.workflow_id != 0 {
        s += &format!("  workflow: {}\n", j.workflow_id);
    }
    match spec.retain_ms {
        Some(0) => s += "  retain:   kept (retention does not collect it)\n",
        Some(ms) => {
            s += &format!(
                "  retain:   {} after it ends\n",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            )
        }
        None => {}
    }
    if let Some(at) = j.collected_at_ms {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
        s += &format!(
            "  collected: {} (retention; answered from the node's archive)\n",
            humantime::format_rfc3339_seconds(t)
        );
    }
    for a in &j.attempts {
        if a.summary.is_empty() {
            // A server that does not say it in words.
            let outcome = a.outcome.as_ref().map_or("in flight".to_string(), |o| {
                exit_json(o)["exit"].to_string()
            });
            s += &format!("  attempt {} on node {}: {outcome}\n", a.number, a.node_id);
        } else {
            s += &format!("  {}\n", a.summary);
        }
    }
    let mut outputs: Vec<_> = j.outputs.iter().collect();
    outputs.sort();
    for (k, v) in outputs {
        s += &format!("  output {k} = {v:?}\n");
    }
    s
}

/// The header of [`job_line`]'s columns.
pub const JOB_LINE_HEADER: &str =
    "      ID  STATE       NAME                      NODE                  COMMAND";

/// One job in a listing: id, state, name, the node of its last attempt, command.
pub fn job_line(j: &pb::Job) -> String {
    let spec = j.spec.clone().unwrap_or_default();
    let node = j
        .attempts
        .last()
        .map_or("-".to_string(), |a| a.node_id.to_string());
    format!(
        "{:>8}  {:<10}  {:<24}  {:<20}  {}",
        j.id,
        state_name(j.state),
        spec.name,
        node,
        shell_words(&spec.command)
    )
}

pub fn event_json(e: &pb::JobEvent) -> Value {
    json!({
        "job_id": id(e.job_id),
        "state": state_name(e.state),
        "attempt": e.attempt,
        "node_id": (e.node_id != 0).then(|| id(e.node_id)),
        "reason": e.reason,
        "index": e.index,
        "outcome": e.outcome.as_ref().map(exit_json),
    })
}

pub fn event_text(e: &pb::JobEvent) -> String {
    let mut s = format!("job {}: {}", e.job_id, state_name(e.state));
    if e.attempt > 0 {
        s += &format!(" (attempt {} on node {})", e.attempt, e.node_id);
    }
    if !e.reason.is_empty() {
        s += &format!(": {}", e.reason);
    }
    s
}

/// One cluster event: `INDEX.SEQ KIND` and what it concerns.
pub fn cluster_event_text(e: &pb::ClusterEvent) -> String {
    let mut s = format!("{}.{} {}", e.index, e.seq, e.kind);
    if let Some(j) = e.job_id {
        s += &format!(" job {j}");
    }
    if let Some(w) = e.workflow_id {
        s += &format!(" workflow {w}");
    }
    if let Some(a) = e.attempt {
        s += &format!(" attempt {a}");
    }
    if let Some(n) = e.node_id {
        s += &format!(" node {n}");
    }
    if !e.detail.is_empty() {
        s += &format!(": {}", e.detail);
    }
    s
}

pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "node_id": id(s.node_id),
        "cluster_id": s.cluster_id,
        "server_state": s.server_state,
        "leader_id": (s.leader_id != 0).then(|| id(s.leader_id)),
        "leader_address": s.leader_address,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "state_hash": s.state_hash,
        "snapshot_index": s.snapshot_index,
        "purged_index": s.purged_index,
        "jobs": s.jobs,
        "members": s.members.iter().map(|m| json!({
            "id": id(m.id),
            "address": m.address,
            "role": m.role,
            "last_contact_ms": m.last_contact_ms,
            "matched_index": m.matched_index,
        })).collect::<Vec<_>>(),
    })
}

pub fn status_text(s: &pb::StatusResponse) -> String {
    let mut t = format!(
        "cluster {}\nnode {} ({})\nleader {} at {}, term {}\ncommit index {}, applied {}, snapshot {}, purged {}\nstate hash {}\njobs {}\n\nMEMBER                ROLE     ADDRESS                LAST CONTACT  MATCHED\n",
        s.cluster_id,
        s.node_id,
        s.server_state,
        if s.leader_id == 0 { "none".to_string() } else { s.leader_id.to_string() },
        if s.leader_address.is_empty() { "-" } else { &s.leader_address },
        s.term,
        s.commit_index,
        s.applied_index,
        s.snapshot_index,
        s.purged_index,
        s.state_hash,
        s.jobs,
    );
    for m in &s.members {
        t += &format!(
            "{:<20}  {:<7}  {:<21}  {:>12}  {}\n",
            m.id,
            m.role,
            m.address,
            m.last_contact_ms.map_or("-".into(), |c| format!("{c} ms")),
            m.matched_index.map_or("-".into(), |i| i.to_string()),
        );
    }
    t
}

fn tags_text(tags: &std::collections::HashMap<String, String>) -> String {
    let mut kv: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    kv.sort();
    kv.join(",")
}

pub fn nodes_json(r: &pb::ListNodesResponse) -> Value {
    let g = r.gossip.unwrap_or_default();
    json!({
        "node_id": id(r.node_id),
        "health": r.health,
        "alive": r.alive,
        "known": r.known,
        "join_error": (!r.join_error.is_empty()).then_some(&r.join_error),
        "gossip": {
            "datagrams_sent": g.datagrams_sent,
            "bytes_sent": g.bytes_sent,
            "datagrams_received": g.datagrams_received,
            "bytes_received": g.bytes_received,
            "rejected_mac": g.rejected_mac,
            "malformed": g.malformed,
            "events_dropped": g.events_dropped,
        },
        "nodes": r.nodes.iter().map(|n| json!({
            "id": id(n.id),
            "address": n.address,
            "role": n.role,
            "state": n.state,
            "gossip_state": n.gossip_state,
            "phi": n.phi,
            "tags": n.tags.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "running": n.running,
            "slots": n.slots,
            "gossip_address": n.gossip_address,
            "version": n.version,
        })).collect::<Vec<_>>(),
    })
}

pub fn nodes_text(r: &pb::ListNodesResponse) -> String {
    let mut t = format!(
        "seen from node {}: {} ({} of {} known nodes alive)
",
        r.node_id, r.health, r.alive, r.known
    );
    if !r.join_error.is_empty() {
        t += &format!("gossip join failed: {}\n", r.join_error);
    }
    if let Some(g) = &r.gossip {
        if g.rejected_mac > 0 {
            t += &format!(
                "{} gossip datagrams dropped for a bad MAC (another --cluster-key?)\n",
                g.rejected_mac
            );
        }
    }
    t += "\nNODE                  ROLE         STATE         GOSSIP    PHI     LOAD     ADDRESS                TAGS\n";
    for n in &r.nodes {
        t += &format!(
            "{:<20}  {:<11}  {:<12}  {:<8}  {:>5}  {:>7}  {:<21}  {}\n",
            n.id,
            n.role,
            n.state,
            n.gossip_state,
            n.phi.map_or("-".into(), |p| format!("{p:.1}")),
            format!("{}/{}", n.running, n.slots),
            n.address,
            tags_text(&n.tags),
        );
    }
    t
}

/// argv as a shell would show it.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
