//! A data directory written by the previous release (`tests/fixtures/main-v4`: snapshot
//! body version 4, a log with checkpoints, written by the build of e7c679e) is read by
//! this one: the offline replay reaches the state hash that release served, with every
//! checkpoint matched and its snapshot equal to the replayed state; a server of this build
//! starts on it, serves every job, runs new ones, writes a snapshot of the new version,
//! and starts again on it.

use std::path::{Path, PathBuf};

use cathedral_tests::{copy_dir, log_tool, Server};
use serde_json::Value;

fn fixture() -> (PathBuf, Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("main-v4.json")).unwrap()).unwrap();
    (root.join("main-v4"), expected)
}

fn listed(s: &Server) -> Vec<u64> {
    let v: Value = serde_json::from_str(&s.cli_ok(&["list", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_directory_of_the_previous_release_replays_and_serves() {
    let (from, expected) = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    copy_dir(&from, &dir);

    // Offline: the same state as the release served, its snapshot checked from the start.
    let (code, out, err) = log_tool(&dir, &["replay", "--from-start", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["state_hash"], expected["state_hash"], "{r}");
    assert_eq!(r["last_index"], expected["applied_index"], "{r}");
    assert!(r["snapshots_compared"].as_u64().unwrap() >= 1, "{r}");
    let c = &r["checkpoints"];
    assert!(
        c["recorded"].as_u64().unwrap() >= 1 && c["recorded"] == c["matched"],
        "{r}"
    );

    // A server of this build on it: every job, new ones run, a new snapshot, a restart.
    let jobs: Vec<u64> = expected["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut s = Server::start(&dir, &["--slots", "2"]);
    s.wait_ready();
    assert_eq!(listed(&s), jobs);
    let id = s
        .cli_ok(&["submit", "--", "echo", "upgraded"])
        .trim()
        .to_string();
    assert_eq!(s.cli(&["wait", &id]).status.code(), Some(0));
    s.cli_ok(&["snapshot", "trigger"]);
    assert_eq!(s.stop(), Some(0));
    s.restart();
    s.wait_ready();
    let mut all = jobs.clone();
    all.push(id.parse().unwrap());
    assert_eq!(listed(&s), all);
    assert_eq!(s.stop(), Some(0));
    let (code, out, err) = log_tool(&dir, &["replay", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
}
