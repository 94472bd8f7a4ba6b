//! `inspect` and `verify`: what a data directory holds and every problem found in it,
//! as text or JSON.

use super::*;

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
pub(super) fn run_inspect(dir: &Path, as_json: bool) -> Result<u8, String> {
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

pub(super) fn run_verify(dir: &Path, as_json: bool) -> Result<u8, String> {
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
