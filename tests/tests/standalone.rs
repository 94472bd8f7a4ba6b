//! One standalone node: start, submit, query, restart (clean and after SIGKILL), and the
//! data directory's lock and identity.

use cathedral_tests::Server;

fn ids(list_json: &str) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(list_json).expect("list --json");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|j| j["id"].as_str().expect("id as a string").parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_status_restart_and_everything_is_still_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut s = Server::start(&dir, &[]);
    s.wait_ready();
    assert_eq!(s.http_get("/healthz").map(|r| r.0), Some(200));

    let id: u64 = s
        .cli_ok(&[
            "submit",
            "--name",
            "hello",
            "--timeout",
            "5s",
            "--",
            "echo",
            "hi",
        ])
        .trim()
        .parse()
        .expect("submit prints the job id");
    let status: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["status", &id.to_string(), "--json"])).unwrap();
    assert_eq!(status["name"], "hello");
    assert_eq!(status["state"], "pending");
    assert_eq!(status["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(status["timeout_ms"], 5000);
    let text = s.cli_ok(&["status", &id.to_string()]);
    assert!(text.contains("hello") && text.contains("echo hi"), "{text}");

    let mut submitted = vec![id];
    for i in 0..5 {
        let out = s.cli_ok(&["submit", "--", "sleep", &i.to_string()]);
        submitted.push(out.trim().parse().unwrap());
    }
    // The same idempotency key gives the same job.
    let a = s.cli_ok(&["submit", "--idempotency-key", "k1", "--", "true"]);
    let b = s.cli_ok(&["submit", "--idempotency-key", "k1", "--", "true"]);
    assert_eq!(a, b);
    submitted.push(a.trim().parse().unwrap());
    assert_eq!(ids(&s.cli_ok(&["list", "--json"])), submitted);
    assert_eq!(
        ids(&s.cli_ok(&["list", "--json", "--name-prefix", "sle"])).len(),
        5
    );
    let status_before = s.status().await;
    let node_id = status_before.node_id;

    // A clean stop (SIGTERM) exits 0; the restart keeps identity, cluster and jobs.
    assert_eq!(s.stop(), Some(0));
    s.restart();
    s.wait_ready();
    let after = s.status().await;
    assert_eq!(after.node_id, node_id);
    assert_eq!(after.cluster_id, status_before.cluster_id);
    assert_eq!(ids(&s.cli_ok(&["list", "--json"])), submitted);

    // After SIGKILL too; and new writes are accepted.
    s.kill9();
    s.restart();
    s.wait_ready();
    assert_eq!(ids(&s.cli_ok(&["list", "--json"])), submitted);
    let next: u64 = s.cli_ok(&["submit", "--", "true"]).trim().parse().unwrap();
    assert!(next > *submitted.iter().max().unwrap());
    let st = s.status().await;
    assert_eq!(st.node_id, node_id);
    assert_eq!(st.server_state, "leader");
    assert_eq!(st.members.len(), 1);
    assert_eq!(st.jobs as usize, submitted.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_cancel_wait_watch_and_completions_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflow.yaml");
    let out: serde_json::Value = serde_json::from_str(&s.cli_ok(&[
        "workflow",
        "submit",
        "--json",
        example.to_str().unwrap(),
    ]))
    .unwrap();
    let ids = out["job_ids"].as_object().expect("job ids by key");
    assert_eq!(ids.len(), 4);
    let build: u64 = ids["build"].as_str().unwrap().parse().unwrap();
    let test: u64 = ids["test"].as_str().unwrap().parse().unwrap();
    let job: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["status", "--json", &test.to_string()])).unwrap();
    assert_eq!(job["depends_on"], serde_json::json!([build.to_string()]));
    assert_eq!(job["workflow_id"], out["workflow_id"]);

    // Cancelling a job cancels what depends on it; `wait` exits 1 for a job that did not
    // succeed, and `watch` ends with the final state.
    let c = s.cli_ok(&["cancel", &build.to_string(), "--reason", "not today"]);
    assert!(c.contains("cancelled"), "{c}");
    let w = s.cli(&["wait", &test.to_string(), "--timeout", "20s"]);
    assert_eq!(w.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&w.stdout).contains("cancelled"));
    let watched = s.cli_ok(&["watch", "--json", &build.to_string()]);
    let last: serde_json::Value =
        serde_json::from_str(watched.lines().last().expect("an event")).unwrap();
    assert_eq!(last["state"], "cancelled");
    assert!(last["reason"].as_str().unwrap().contains("not today"));
    let listed = s.cli_ok(&["list", "--state", "cancelled", "--json"]);
    assert_eq!(ids_of(&listed).len(), 2, "build and test");
    // A job that has not run has no output yet.
    let logs = s.cli(&["logs", &build.to_string()]);
    assert_eq!(logs.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&logs.stderr).contains("no attempt"));

    // A snapshot on request covers everything applied so far.
    let applied = s.status().await.applied_index;
    let snap: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["snapshot", "trigger", "--json"])).unwrap();
    assert!(
        snap["snapshot_index"].as_u64().unwrap() >= applied,
        "{snap}"
    );
    assert_eq!(
        s.status().await.snapshot_index,
        snap["snapshot_index"].as_u64().unwrap()
    );

    let completions = std::process::Command::new(cathedral_tests::bin("cathedral"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("cathedral"));
    // A reader that stops early ends the CLI quietly, not with a panic.
    let cli = cathedral_tests::bin("cathedral");
    for line in [
        format!("{} completions zsh | head -1", cli.display()),
        format!("{} --server {} list | head -1", cli.display(), s.grpc),
    ] {
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "{line}: {err}"
        );
    }
    // Writes that print nothing else say what they did.
    assert_eq!(
        s.cli_ok(&[
            "cron",
            "create",
            "nightly",
            "--schedule",
            "0 3 * * *",
            "--",
            "./backup.sh"
        ])
        .lines()
        .next(),
        Some("cron nightly; next fires:")
    );
    assert_eq!(
        s.cli_ok(&["cron", "pause", "nightly"]),
        "cron nightly paused\n"
    );
    assert_eq!(
        s.cli_ok(&["cron", "resume", "nightly"]),
        "cron nightly resumed\n"
    );
    let shown = s.cli_ok(&["cron", "show", "nightly", "--json"]);
    let cron: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        cron["spec"]["job"]["name"], "nightly",
        "the jobs a cron launches are named after it: {cron}"
    );
    assert_eq!(
        s.cli_ok(&["cron", "delete", "nightly"]),
        "cron nightly deleted\n"
    );
}

fn ids_of(list_json: &str) -> Vec<u64> {
    ids(list_json)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut a = Server::start(&dir, &[]);
    a.wait_ready();
    let mut b = Server::start(&dir, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        if let Some(code) = b.exited() {
            break code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "second server kept running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(code, Some(1));
    let log = b.log_text();
    assert!(log.contains("lock"), "{log}");
    // The first one is unharmed.
    a.cli_ok(&["submit", "--", "true"]);
}

#[test]
fn bad_flags_exit_2_with_the_reason() {
    let out = std::process::Command::new(cathedral_tests::bin("cathedral-server"))
        .args(["--role", "worker"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --join"), "{err}");
}

/// A snapshot requested while another is being built (and ends short of what the
/// request saw applied) is still written: the request triggers again once the build in
/// progress ends, instead of waiting for a snapshot that was never started.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_requested_during_another_build_is_written() {
    use cathedral_server::api::v1 as pb;
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "0"]);
    s.wait_ready();
    // Enough state that a build takes a while.
    let mut jobs = s.jobs().await;
    for w in 0..15 {
        let specs: Vec<pb::WorkflowJob> = (0..2_000)
            .map(|i| pb::WorkflowJob {
                key: format!("k{i}"),
                spec: Some(cathedral_tests::spec(&format!("fill-{w}-{i}"), &["true"])),
                after: Vec::new(),
            })
            .collect();
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: format!("fill-{w}"),
            jobs: specs,
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("fill");
    }
    for round in 0..8 {
        // One request starts a build; a write lands; a second request, which saw it
        // applied, arrives while the first build may still run.
        let mut first = s.cluster().await;
        let a = tokio::spawn(async move {
            first
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map(|r| r.into_inner().snapshot_index)
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(cathedral_tests::spec(
                &format!("between-{round}"),
                &["true"],
            )),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("submit");
        let applied = s.status().await.applied_index;
        let second = s
            .cluster()
            .await
            .trigger_snapshot(pb::TriggerSnapshotRequest {})
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .into_inner();
        assert!(second.snapshot_index >= applied, "round {round}");
        a.await.unwrap().expect("the first request");
    }
}
