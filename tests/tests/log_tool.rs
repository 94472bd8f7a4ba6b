//! `cathedral-log` on data directories a real server wrote: inspect and verify a clean one,
//! find damage at its byte offset, tell a torn tail from corruption, and dump entries.

use cathedral_tests::{log_tool, Server};

#[test]
fn verify_inspect_and_dump_a_servers_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut s = Server::start(&dir, &["--slots", "0"]);
    s.wait_ready();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(s.cli_ok(&[
            "submit",
            "--name",
            &format!("j{i}"),
            "--",
            "echo",
            &"x".repeat(200),
        ]));
    }
    s.cli_ok(&["cancel", ids[7].trim()]);
    assert_eq!(s.stop(), Some(0));

    let (code, out, err) = log_tool(&dir, &["verify", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clean"], true);
    let (code, out, _) = log_tool(&dir, &["inspect", "--json"]);
    assert_eq!(code, Some(0));
    let inspect: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seg = &inspect["segments"][0];
    assert_eq!(seg["sealed"], true, "a clean stop seals the segment");
    assert_eq!(inspect["totals"]["records"], v["records"]);
    assert!(inspect["metadata"]["committed"]["index"].as_u64().is_some());

    // Dump: every SubmitJobs entry, and the commands about the cancelled job.
    let (code, out, _) = log_tool(&dir, &["dump", "--json", "--type", "submit_jobs"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 30);
    // Every write went as a request: the dump names its id (the CLI's).
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["request"]["Client"]
                .as_str()
                .is_some_and(|r| r.starts_with("cli-")),
            "{line}"
        );
    }
    let (_, out, _) = log_tool(&dir, &["dump", "--job", ids[7].trim()]);
    assert!(out.contains("cancel_job"), "{out}");

    // A flipped byte in the middle of the sealed segment: exit 1, the file and an offset
    // at or before the flipped byte (the start of the damaged record).
    let file = seg["file"].as_str().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let pos = (seg["data_bytes"].as_u64().unwrap() / 2) as usize;
    bytes[pos] ^= 0x40;
    std::fs::write(file, &bytes).unwrap();
    let (code, out, _) = log_tool(&dir, &["verify", "--json"]);
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["kind"], "corruption");
    assert_eq!(f["file"], file);
    let at = f["offset"].as_u64().unwrap() as usize;
    assert!(
        at <= pos && pos - at < 400,
        "finding at {at}, flipped byte at {pos}"
    );

    // Not a data directory: a usage error.
    let (code, _, err) = log_tool(&tmp.path().join("nothing"), &["verify"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a Cathedral data directory"), "{err}");
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `(id, name, state)` of every job, as the server lists them.
fn listed(s: &Server) -> Vec<(u64, String, String)> {
    let v = json_of(&s.cli_ok(&["list", "--json"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().parse::<u64>().unwrap(),
                j["name"].as_str().unwrap().to_string(),
                j["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The applied index and state hash once the node stops changing.
fn settled(s: &Server) -> (u64, String) {
    let mut last = (u64::MAX, String::new());
    for _ in 0..100 {
        let v = json_of(&s.cli_ok(&["cluster", "status", "--json"]));
        let now = (
            v["applied_index"].as_u64().unwrap(),
            v["state_hash"].as_str().unwrap().to_string(),
        );
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    panic!("the node kept applying entries");
}

#[test]
fn replay_matches_the_live_state_and_a_snapshot_restores_it_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    // Frequent checkpoints and snapshots, so replay crosses both.
    let mut s = Server::start(
        &dir,
        &[
            "--slots",
            "2",
            "--checkpoint-interval",
            "10",
            "--snapshot-threshold",
            "40",
        ],
    );
    s.wait_ready();
    let mut ids = Vec::new();
    for i in 0..24 {
        let argv: &[&str] = if i % 5 == 4 { &["false"] } else { &["true"] };
        let name = format!("j{i}");
        let mut args = vec!["submit", "--name", &name, "--"];
        args.extend_from_slice(argv);
        ids.push(s.cli_ok(&args).trim().to_string());
    }
    for id in &ids {
        let _ = s.cli(&["wait", id]);
    }
    let (applied, hash) = settled(&s);
    let jobs = listed(&s);
    assert_eq!(jobs.len(), 24);

    // While the server holds the directory, modifying commands are refused.
    let (code, _, err) = log_tool(&dir, &["repair"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("running server"), "{err}");
    let (code, _, err) = log_tool(&dir, &["snapshot", "import", "/nonexistent.snap"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("running server"), "{err}");
    assert_eq!(s.stop(), Some(0));

    // Replay from the latest snapshot and from the first entry: the live hash at the
    // applied index, every checkpoint matched, the snapshots agreeing with the log.
    let to = applied.to_string();
    let (code, out, err) = log_tool(&dir, &["replay", "--json", "--to", &to]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = json_of(&out);
    assert_eq!(r["start"]["from"], "snapshot", "{r}");
    assert_eq!(r["last_index"], applied);
    assert_eq!(r["state_hash"], hash.as_str(), "{r}");
    assert_eq!(r["jobs"]["succeeded"], 20);
    assert_eq!(r["jobs"]["failed"], 4);
    // Every checkpoint replayed is matched; one more is matched when the snapshot fell
    // between a Checkpoint and its CheckpointHash (the snapshot holds the hash recorded).
    let recorded = r["checkpoints"]["recorded"].as_u64().unwrap();
    let matched = r["checkpoints"]["matched"].as_u64().unwrap();
    assert!(matched == recorded || matched == recorded + 1, "{r}");
    let (code, out, err) = log_tool(&dir, &["replay", "--json", "--from-start", "--to", &to]);
    assert_eq!(code, Some(0), "{out}{err}");
    let full = json_of(&out);
    assert_eq!(full["start"]["from"], "empty");
    assert_eq!(full["state_hash"], hash.as_str());
    assert!(
        full["checkpoints"]["recorded"].as_u64().unwrap() >= 2,
        "{full}"
    );
    assert_eq!(
        full["checkpoints"]["matched"],
        full["checkpoints"]["recorded"]
    );
    assert!(full["snapshots_compared"].as_u64().unwrap() >= 1, "{full}");
    // The whole state, and one job's history from submission to its end.
    let (_, out, _) = log_tool(&dir, &["replay", "--state", "--to", &to]);
    let st = json_of(&out);
    assert_eq!(st["state"]["jobs"].as_object().unwrap().len(), 24);
    let (code, out, _) = log_tool(&dir, &["replay", "--json", "--job", &ids[4]]);
    assert_eq!(code, Some(0));
    let h = json_of(&out);
    let steps: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["command"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"submit_jobs"), "{h}");
    assert_eq!(steps.last(), Some(&"task_finished"), "{h}");
    assert_eq!(
        h["history"].as_array().unwrap().last().unwrap()["state"],
        "failed"
    );

    // Export the state, describe the file, restore it into a fresh directory and serve it.
    let file = tmp.path().join("backup.snap");
    let (code, out, err) = log_tool(
        &dir,
        &[
            "snapshot",
            "export",
            "--out",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let e = json_of(&out);
    assert_eq!(
        e["state_hash"], r["state_hash"],
        "the export is the replayed state"
    );
    let (code, out, _) = log_tool(
        &dir,
        &["snapshot", "status", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(code, Some(0));
    let st = json_of(&out);
    assert_eq!(st["checksum_ok"], true);
    assert_eq!(st["jobs"], 24);
    assert_eq!(st["last_index"], e["last_index"]);
    // A damaged copy is refused by status (exit 1) and by import (nothing placed).
    let bad = tmp.path().join("bad.snap");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let (code, out, _) = log_tool(&dir, &["snapshot", "status", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    let fresh = tmp.path().join("restored");
    let (code, _, err) = log_tool(&fresh, &["snapshot", "import", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        std::fs::read_dir(fresh.join("snapshots")).map_or(true, |mut d| d.next().is_none()),
        "nothing placed from a damaged file"
    );
    let (code, out, err) = log_tool(&fresh, &["snapshot", "import", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    // Before any server ran on it, the restored directory is one the tools read.
    for cmd in ["inspect", "verify"] {
        let (code, out, err) = log_tool(&fresh, &[cmd]);
        assert_eq!(code, Some(0), "{cmd}: {out}{err}");
    }
    let mut restored = Server::start(&fresh, &["--slots", "1", "--checkpoint-interval", "5"]);
    restored.wait_ready();
    assert_eq!(
        listed(&restored),
        jobs,
        "the restored node serves the same jobs"
    );
    // And it keeps working: new jobs run there, checkpoints are taken in the new log, and
    // replaying the restored directory gives the live hash.
    for _ in 0..3 {
        let id = restored
            .cli_ok(&["submit", "--", "true"])
            .trim()
            .to_string();
        assert_eq!(restored.cli(&["wait", &id]).status.code(), Some(0));
    }
    let (applied, hash) = settled(&restored);
    assert_eq!(restored.stop(), Some(0));
    let (code, out, err) = log_tool(&fresh, &["replay", "--json", "--to", &applied.to_string()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = json_of(&out);
    assert_eq!(r["start"]["from"], "restored", "{r}");
    assert_eq!(r["state_hash"], hash.as_str(), "{r}");
    assert_eq!(r["jobs_total"], 27);
    let recorded = r["checkpoints"]["recorded"].as_u64().unwrap();
    assert!(recorded >= 1, "{r}");
    assert_eq!(r["checkpoints"]["matched"], recorded, "{r}");
}

#[test]
fn repair_cuts_a_torn_tail_with_a_backup_and_loses_no_acknowledged_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut s = Server::start(&dir, &["--slots", "0"]);
    s.wait_ready();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            s.cli_ok(&["submit", "--name", &format!("t{i}"), "--", "true"])
                .trim()
                .to_string(),
        );
    }
    // A crash: the active segment stays unsealed; then half a record lands after the last
    // good one, as a write cut short by power loss would leave it.
    s.kill9();
    let (_, out, _) = log_tool(&dir, &["inspect", "--json"]);
    let inspect = json_of(&out);
    let seg = inspect["segments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(seg["sealed"], false, "{seg}");
    let file = seg["file"].as_str().unwrap().to_string();
    let end = seg["data_bytes"].as_u64().unwrap() as usize;
    let garbage: Vec<u8> = (0..37u8).map(|b| b.wrapping_mul(37) | 1).collect();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[end..end + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(&file, &bytes).unwrap();

    let (code, out, _) = log_tool(&dir, &["verify", "--json"]);
    let v = json_of(&out);
    assert_eq!(code, Some(0), "a torn tail alone is not damage: {v}");
    assert_eq!(v["findings"][0]["kind"], "torn tail", "{v}");
    assert_eq!(v["findings"][0]["offset"], end as u64);

    let (code, out, err) = log_tool(&dir, &["repair", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = json_of(&out);
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["cut"]["offset"], end as u64, "{r}");
    let backup_dir = std::path::PathBuf::from(r["cut"]["backup"].as_str().unwrap());
    let saved: Vec<_> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(
        std::fs::read(&saved[0]).unwrap(),
        garbage,
        "the backup holds the bytes cut"
    );
    let (code, out, _) = log_tool(&dir, &["verify", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(json_of(&out)["clean"], true, "{out}");
    // Repairing a clean directory does nothing.
    let (code, out, _) = log_tool(&dir, &["repair"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing to repair"), "{out}");

    s.restart();
    s.wait_ready();
    let names: Vec<String> = listed(&s).into_iter().map(|j| j.1).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    assert_eq!(names, expected, "every acknowledged job survived");
    assert_eq!(s.stop(), Some(0));

    // Damage before the end (the server stopped cleanly: a sealed segment): repair refuses
    // and changes nothing; --accept-loss keeps the valid prefix, moves the rest aside and
    // records the loss.
    let (_, out, _) = log_tool(&dir, &["inspect", "--json"]);
    let seg = json_of(&out)["segments"][0].clone();
    let file = seg["file"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&file).unwrap();
    // Records start after the 64-byte segment header (FORMAT.md).
    let records_at = 64;
    let pos = (records_at + (seg["data_bytes"].as_u64().unwrap() - records_at) / 2) as usize;
    bytes[pos] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let (code, _, err) = log_tool(&dir, &["repair"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("damaged before its end"), "{err}");
    assert!(err.contains("--accept-loss"), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "a refused repair changes nothing"
    );
    let (code, out, err) = log_tool(&dir, &["repair", "--accept-loss", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = json_of(&out);
    assert_eq!(r["clean"], true, "{r}");
    assert!(r["lost"]["first"].as_u64().is_some(), "{r}");
    let moved = std::path::PathBuf::from(r["cut"]["backup"].as_str().unwrap());
    assert!(std::fs::read_dir(&moved).unwrap().next().is_some(), "{r}");
    let (code, out, _) = log_tool(&dir, &["verify"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("loss accepted earlier"), "{out}");
    let last = r["last_index"].as_u64().unwrap();
    assert!(
        last > 0 && last < seg["last_index"].as_u64().unwrap(),
        "{r}"
    );
}

/// Copies a data directory (no LOCK) so each case starts from the same bytes.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    v.sort();
    v
}

/// Starts a server on `dir` expecting it to refuse; returns what it printed.
fn refused_start(dir: &std::path::Path) -> String {
    Server::start_refused(dir, &["--slots", "0"])
}

#[test]
fn damaged_snapshots_are_found_by_every_reader_and_refused_by_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    // Small thresholds: the log is snapshotted and compacted while the test writes.
    let mut s = Server::start(
        &dir,
        &[
            "--slots",
            "0",
            "--snapshot-threshold",
            "20",
            "--log-compaction-threshold",
            "5",
        ],
    );
    s.wait_ready();
    for i in 0..90 {
        s.cli_ok(&["submit", "--name", &format!("j{i}"), "--", "true"]);
    }
    let purged = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let v = json_of(&s.cli_ok(&["cluster", "status", "--json"]));
            let p = v["purged_index"].as_u64().unwrap_or(0);
            if p > 20 {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "no purge: {v}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    assert_eq!(s.stop(), Some(0));

    // Healthy and compacted: clean; the purged id decodes; --from-start is refused (exit 2)
    // because the range is not held, not reported as damage.
    let (code, out, err) = log_tool(&dir, &["verify", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = log_tool(&dir, &["inspect", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let inspect = json_of(&out);
    assert!(
        inspect["purged_through"].as_u64().unwrap() >= purged,
        "{inspect}"
    );
    assert_eq!(
        inspect["metadata"]["purged"]["index"], inspect["purged_through"],
        "{inspect}"
    );
    let (code, out, err) = log_tool(&dir, &["replay", "--from-start"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("no longer held"), "{err}");
    let (code, out, err) = log_tool(&dir, &["replay", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let held = snapshot_files(&dir);
    assert!(!held.is_empty());

    // Each kind of damage to every snapshot: verify, inspect and replay exit 1 naming the
    // file, and the server refuses to start naming it and saying how to restore.
    type Damage = fn(&mut Vec<u8>);
    let cases: Vec<(&str, Damage)> = vec![
        ("magic", |b| b[0] ^= 0xff),
        ("version", |b| b[8] = 7),
        ("header length", |b| {
            b[12..16].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
        ("trailer length", |b| {
            let n = b.len();
            b[n - 24] ^= 0x10
        }),
        ("truncated", |b| {
            let n = b.len();
            b.truncate(n - 1000.min(n / 2))
        }),
        ("zeroed 4 KiB block across the trailer", |b| {
            let n = b.len();
            let from = n.saturating_sub(2048);
            b.truncate(from);
            b.resize(from + 4096, 0)
        }),
        ("body bit", |b| {
            let n = b.len();
            b[n / 2] ^= 0x04
        }),
    ];
    for (k, (what, damage)) in cases.into_iter().enumerate() {
        let case = tmp.path().join(format!("case{k}"));
        copy_dir(&dir, &case);
        let files = snapshot_files(&case);
        for f in &files {
            let mut bytes = std::fs::read(f).unwrap();
            damage(&mut bytes);
            std::fs::write(f, &bytes).unwrap();
        }
        let named = files[0].display().to_string();
        let (code, out, _) = log_tool(&case, &["verify", "--json"]);
        assert_eq!(code, Some(1), "{what}: {out}");
        let v = json_of(&out);
        let findings = v["findings"].as_array().unwrap();
        assert!(
            findings
                .iter()
                .any(|f| f["file"] == named.as_str() && f["kind"] == "corruption"),
            "{what}: {v}"
        );
        assert!(
            findings.iter().any(|f| f["reason"]
                .as_str()
                .unwrap()
                .contains("no valid snapshot holds them")),
            "{what}: {v}"
        );
        let (code, out, _) = log_tool(&case, &["inspect"]);
        assert_eq!(code, Some(1), "{what}: {out}");
        assert!(out.contains(&format!("{named}  DAMAGED")), "{what}: {out}");
        let (code, out, _) = log_tool(&case, &["replay"]);
        assert_eq!(code, Some(1), "{what}: {out}");
        let text = refused_start(&case);
        assert!(text.contains(&named), "{what}: {text}");
        assert!(text.contains("Restore it from a peer"), "{what}: {text}");
        assert!(
            !text.contains("Failed to get log entries"),
            "{what}: {text}"
        );
    }

    // Every snapshot deleted from the compacted directory: a finding naming the gap, and
    // the same refusal.
    let gone = tmp.path().join("gone");
    copy_dir(&dir, &gone);
    for f in snapshot_files(&gone) {
        std::fs::remove_file(f).unwrap();
    }
    let (code, out, _) = log_tool(&gone, &["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("there is no snapshot file"), "{out}");
    let text = refused_start(&gone);
    assert!(text.contains("there is no snapshot file"), "{text}");

    // A snapshot the node does not need (the log was never compacted, so it is rebuilt
    // from the first entry): the server sets it aside (kept, named in its log) and serves
    // every job; verify still reports it.
    let whole = tmp.path().join("whole");
    let mut s = Server::start(&whole, &["--slots", "0", "--snapshot-threshold", "20"]);
    s.wait_ready();
    for i in 0..30 {
        s.cli_ok(&["submit", "--name", &format!("w{i}"), "--", "true"]);
    }
    assert_eq!(s.stop(), Some(0));
    let newest = snapshot_files(&whole).pop().expect("a snapshot was taken");
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&newest, &bytes).unwrap();
    let (code, out, _) = log_tool(&whole, &["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&newest.display().to_string()), "{out}");
    s.restart();
    s.wait_ready();
    assert_eq!(listed(&s).len(), 30);
    assert!(
        s.log_text().contains("damaged snapshot set aside"),
        "{}",
        s.log_text()
    );
    assert_eq!(s.stop(), Some(0));
    let (code, out, _) = log_tool(&whole, &["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(".snap.damaged"), "{out}");
    assert!(out.contains("set aside"), "{out}");
}
