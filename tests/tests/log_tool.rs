//! `cathedral-log` on data directories a real server wrote: inspect and verify a clean one,
//! find damage at its byte offset, tell a torn tail from corruption, and dump entries.

use std::process::Command;

use cathedral_tests::{bin, Server};

fn log_tool(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("cathedral-log"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
