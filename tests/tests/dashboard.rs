//! The dashboard in a real browser: headless Chromium driven by Selenium
//! (tests/python/dashboard.py) against a three-node cluster running a workflow with a
//! failing job that is retried, a cron, and one node named by a `name` tag. Checks the
//! rendered DOM:
//! - cluster: the leader and members, nodes by name (the tag, else the address) with
//!   their ids, tags in sorted order;
//! - jobs: the list (newest first) and counts, a node column, the search by name prefix
//!   and by node;
//! - a job: its attempts in words, streamed output, its history in the log, the
//!   explain section; a job turning succeeded on its open page without a reload; a
//!   cancel from the page (its attempt then says it was stopped, not running); a
//!   timed-out job's kill reason;
//! - workflows: the list shows "dashboard" by name with its state; its view has the
//!   name in its heading, the DAG, a rerun control, and a timeline with a time axis and
//!   each bar's title in words naming the node;
//! - crons: "nightly" listed with its schedule, zone and next fire; Pause then Resume
//!   flip its state on the page and in the cluster;
//! - namespaces: the selector lists "ml"; across all, ml's job is marked with it; choosing
//!   ml shows only its job and its own cron "nightly";
//! - charts: every chart has a title and an accessible label, and lines or the empty
//!   state;
//! - the log: entries, checkpoints, no divergence;
//! - Rerun from here on the failing job's page: the page says so, and the cluster runs
//!   it again (more attempts, then failed again, its dependent cancelled again).
//!
//! Screenshots go to `target/dashboard/`.
//!
//! Needs `CATHEDRAL_PYTHON` with Selenium, and Debian's `chromium` and `chromium-driver`
//! (scripts/test.sh installs them); without them the test says so and passes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cathedral_tests::{cluster, eventually, leader_index, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn post(s: &Server, path: &str, body: &Value) -> Value {
    s.post_json(path, body)
}

fn get(s: &Server, path: &str) -> Value {
    let (code, body) = s.http_get(path).expect("GET");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("a JSON answer")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_cluster_and_its_jobs_live_in_a_browser() {
    let Some(python) = std::env::var_os("CATHEDRAL_PYTHON") else {
        eprintln!("SKIPPED: CATHEDRAL_PYTHON is not set (scripts/test.sh sets it up)");
        return;
    };
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("chromium") || !have("chromedriver") {
        eprintln!("SKIPPED: chromium and chromedriver are not installed (scripts/test.sh installs Debian's chromium and chromium-driver)");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(tmp.path(), 3, &[]).await;
    let leader = leader_index(&nodes).await;
    let s = &nodes[(leader + 1) % 3];

    // The page itself is served by every node.
    let (code, page) = s.http_get("/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/ui/app.js"), "{page}");

    // A workflow: hello, then a job that fails (exit 3) twice — one retry — and one that
    // depends on it (cancelled when it fails).
    let wf = post(
        s,
        "/v1/workflows",
        &json!({"name": "dashboard", "jobs": [
            {"key": "hello", "spec": {"name": "hello", "command": ["echo", "hello from the dashboard test"]}},
            {"key": "failing", "after": ["hello"], "spec": {"name": "failing", "command": ["sh", "-c", "exit 3"],
                "retry": {"max_attempts": 2, "initial_backoff_ms": 100, "max_backoff_ms": 1000, "multiplier_milli": 2000}}},
            {"key": "after", "after": ["failing"], "spec": {"name": "after", "command": ["true"]}},
        ]}),
    );
    let id = |k: &str| {
        wf["job_ids"][k]
            .as_str()
            .unwrap_or_else(|| panic!("{wf}"))
            .to_string()
    };
    let (hello, failing, after) = (id("hello"), id("failing"), id("after"));
    let workflow = wf["workflow_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{wf}"))
        .to_string();

    // A cron for the crons view to list, pause and resume (next fire at 03:00 UTC).
    let cron = post(
        s,
        "/v1/crons",
        &json!({"spec": {"name": "nightly", "schedule": "0 3 * * *", "tz": "UTC",
            "job": {"name": "nightly", "command": ["true"]}}}),
    );
    assert!(
        cron["next_ms"].as_array().is_some_and(|n| !n.is_empty()),
        "{cron}"
    );

    // A second namespace with a job, and a cron named as default's: the namespace
    // selector narrows the views to one.
    s.cli_ok(&["namespace", "create", "ml"]);
    let ml_job = post(
        s,
        "/v1/jobs",
        &json!({"namespace": "ml", "spec": {"name": "ml-job", "command": ["true"]}}),
    )["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ml_cron = post(
        s,
        "/v1/crons",
        &json!({"namespace": "ml", "spec": {"name": "nightly", "schedule": "0 4 * * *", "tz": "UTC",
            "job": {"name": "ml-nightly", "command": ["true"]}}}),
    );
    assert!(ml_cron["next_ms"].as_array().is_some(), "{ml_cron}");

    // One node named by its `name` tag; the dashboard shows the others by address.
    let named = &nodes[(leader + 2) % 3];
    // Listed, registered and alive in gossip: a node gossip lists before its
    // registration is applied, or while it is suspected, cannot be reached to be tagged.
    let named_id = eventually(WAIT, "the node to name listed alive", || async {
        get(s, "/v1/nodes")["nodes"]
            .as_array()
            .and_then(|all| {
                all.iter().find(|n| {
                    n["address"] == named.grpc.as_str()
                        && n["state"] == "alive"
                        && n["gossip_state"] == "alive"
                })
            })
            .and_then(|n| n["id"].as_str())
            .map(str::to_string)
    })
    .await;
    let tagged = post(
        s,
        &format!("/v1/nodes/{named_id}/tags"),
        &json!({"set": {"name": "north"}}),
    );
    assert_eq!(tagged["tags"]["name"], "north", "{tagged}");
    let seen = tokio::time::timeout(WAIT, async {
        while !get(s, "/v1/nodes")["nodes"].as_array().is_some_and(|all| {
            all.iter()
                .any(|n| n["id"] == named_id.as_str() && n["tags"]["name"] == "north")
        }) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // What both nodes' gossip says (views, counters) when the tag does not arrive.
    assert!(
        seen.is_ok(),
        "the name tag was not seen within {WAIT:?}\nthe node asked ({}): {}\nthe named node ({}): {}",
        s.http,
        get(s, "/v1/nodes"),
        named.http,
        get(named, "/v1/nodes")
    );
    let sleeper = post(
        s,
        "/v1/jobs",
        &json!({"spec": {"name": "sleeper", "command": ["sleep", "120"]}}),
    )["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let timed = post(
        s,
        "/v1/jobs",
        &json!({"spec": {"name": "too slow", "command": ["sleep", "30"], "timeout_ms": 500}}),
    )["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(WAIT, "the slow job to time out", || async {
        (get(s, &format!("/v1/jobs/{timed}"))["state"] == "JOB_STATE_TIMED_OUT").then_some(())
    })
    .await;
    eventually(WAIT, "the failing job to fail", || async {
        (get(s, &format!("/v1/jobs/{failing}"))["state"] == "JOB_STATE_FAILED").then_some(())
    })
    .await;
    let failing_attempts = get(s, &format!("/v1/jobs/{failing}"))["attempts"]
        .as_array()
        .map_or(0, |a| a.len());
    let status = get(s, "/v1/cluster");
    let facts = json!({
        "http": s.http,
        "leader": status["leader_id"],
        "jobs": [hello, failing, after, sleeper],
        "hello": hello,
        "failing": failing,
        "after": after,
        "sleeper": sleeper,
        "timed": timed,
        "workflow": workflow,
        "workflow_name": "dashboard",
        "cron": "nightly",
        "ml_job": ml_job,
        "named": {"id": named_id, "name": "north"},
        "failing_attempts": failing_attempts,
        "screenshots": repo.join("target/dashboard"),
    });
    let out = Command::new(python)
        .arg(repo.join("tests/python/dashboard.py"))
        .arg(facts.to_string())
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        eprintln!("SKIPPED: {stderr}");
        return;
    }
    assert!(
        out.status.success(),
        "the browser checks failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The cancel clicked in the page took effect in the cluster.
    assert_eq!(
        get(s, &format!("/v1/jobs/{sleeper}"))["state"],
        "JOB_STATE_CANCELLED"
    );
    // Pause then Resume left the cron running.
    assert_ne!(get(s, "/v1/crons/nightly")["paused"], true);
    // The rerun clicked in the page ran the failing job again: more attempts than before
    // (it exits 3 again, so it fails again and its dependent is cancelled again).
    eventually(WAIT, "the failing job rerun", || async {
        let j = get(s, &format!("/v1/jobs/{failing}"));
        (j["attempts"].as_array().map_or(0, |a| a.len()) > failing_attempts).then_some(())
    })
    .await;
    eventually(WAIT, "the rerun to fail again", || async {
        (get(s, &format!("/v1/jobs/{failing}"))["state"] == "JOB_STATE_FAILED"
            && get(s, &format!("/v1/jobs/{after}"))["state"] == "JOB_STATE_CANCELLED")
            .then_some(())
    })
    .await;
}
