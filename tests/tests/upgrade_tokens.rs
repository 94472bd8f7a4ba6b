//! Tokens made before namespaces existed keep working after an upgrade:
//! `tests/fixtures/main-v5-acl` is a data directory written by the build of 1c8a5cf (the
//! last before namespaces) with access control on — a management token, one token of
//! each other policy, and two jobs the submit token submitted (secrets and ids in
//! `main-v5-acl.json`). A server of this build starts on it: each token does what its
//! policy allowed, in the `default` namespace where the old jobs now are, and in the
//! namespaces made after the upgrade.

use std::path::Path;

use cathedral_tests::{copy_dir, stdout_ok, Server};
use serde_json::Value;

fn run(s: &Server, secret: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--token", secret];
    all.extend_from_slice(args);
    s.cli(&all)
}

#[test]
fn tokens_made_before_namespaces_keep_their_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("main-v5-acl.json")).unwrap())
            .unwrap();
    let secret = |p: &str| f["secrets"][p].as_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    copy_dir(&root.join("main-v5-acl"), &dir);
    let mut s = Server::start(&dir, &["--slots", "2"]);
    s.wait_ready();
    let (mgmt, read, submit, operator) = (
        secret("management"),
        secret("read"),
        secret("submit"),
        secret("operator"),
    );
    let jobs: Vec<String> = f["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_u64().unwrap().to_string())
        .collect();
    // No token: refused, as before.
    assert_eq!(s.cli(&["list"]).status.code(), Some(5));
    // read: sees the old jobs (in `default`) and their output; cannot submit.
    for id in &jobs {
        let shown: Value =
            serde_json::from_str(&stdout_ok(run(&s, &read, &["status", id, "--json"]))).unwrap();
        assert_eq!(shown["state"], "succeeded", "{shown}");
        assert!(!stdout_ok(run(&s, &read, &["logs", id])).is_empty());
    }
    assert_eq!(
        run(&s, &read, &["submit", "--", "true"]).status.code(),
        Some(5)
    );
    // submit: submits and cancels its own; not another's.
    let mine = stdout_ok(run(&s, &submit, &["submit", "--", "sleep", "30"]));
    let mine = mine.trim();
    let theirs = stdout_ok(run(&s, &mgmt, &["submit", "--", "sleep", "30"]));
    assert_eq!(
        run(&s, &submit, &["cancel", theirs.trim()]).status.code(),
        Some(5)
    );
    stdout_ok(run(&s, &submit, &["cancel", mine]));
    // operator: namespaces (new) and any job; not tokens.
    stdout_ok(run(&s, &operator, &["namespace", "create", "after"]));
    stdout_ok(run(&s, &operator, &["cancel", theirs.trim()]));
    assert_eq!(
        run(
            &s,
            &operator,
            &["acl", "token", "create", "--policy", "read"]
        )
        .status
        .code(),
        Some(5)
    );
    // The policies span the namespace made after the upgrade, too.
    let there = stdout_ok(run(
        &s,
        &submit,
        &["--namespace", "after", "submit", "--", "true"],
    ));
    stdout_ok(run(
        &s,
        &read,
        &["--namespace", "after", "status", there.trim()],
    ));
    // management: tokens, scoped ones too.
    stdout_ok(run(
        &s,
        &mgmt,
        &[
            "acl",
            "token",
            "create",
            "--policy",
            "read",
            "--grant",
            "after=read",
        ],
    ));
}
