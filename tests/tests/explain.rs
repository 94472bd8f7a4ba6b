//! `cathedral explain` on a real server: a constraint no node satisfies (named per node),
//! a job backing off after a failure (until when), a job waiting for a dependency, a
//! finished job, and an unknown one.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, get, submit, until_final, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_a_job_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("n"), &["--docker-host", "none"]);
    s.wait_ready();

    let id = s.cli_ok(&["submit", "--tag", "zone=mars", "--", "true"]);
    let id = id.trim();
    // Once the node has registered, it is named with the constraint it fails.
    let out = eventually(Duration::from_secs(30), "the node's verdict", || {
        let out = s.cli_ok(&["explain", id]);
        async move { out.contains("constraint").then_some(out) }
    })
    .await;
    assert!(out.contains("pending: no node can run it now"), "{out}");
    assert!(
        out.contains("constraint zone=mars: the node has no zone tag"),
        "{out}"
    );

    // A failing job with a long backoff.
    let failing = submit(
        &s,
        pb::JobSpec {
            name: "flaky".into(),
            command: vec!["false".into()],
            retry: Some(pb::RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 60_000,
                max_backoff_ms: 60_000,
                multiplier_milli: 1000,
            }),
            ..Default::default()
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the first attempt to fail",
        || async {
            let j = get(&s, failing).await;
            (j.attempts.len() == 1 && j.state == pb::JobState::Pending as i32).then_some(())
        },
    )
    .await;
    let e = s
        .jobs()
        .await
        .explain_job(pb::ExplainJobRequest {
            job_id: failing,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        e.summary
            .starts_with("pending: backing off after 1 failed attempt(s)"),
        "{e:?}"
    );
    let j = get(&s, failing).await;
    assert_eq!(e.runnable_at_ms, j.not_before_ms);
    assert!(
        e.details[0].contains("attempt 1 on node")
            && e.details[0].contains("exited with status 1")
            && e.details[0].contains("allows 3 attempt(s)"),
        "{e:?}"
    );

    // Waiting on it.
    let after = s.cli_ok(&["submit", "--depends-on", &failing.to_string(), "--", "true"]);
    let out = s.cli_ok(&["explain", after.trim()]);
    assert!(
        out.contains(&format!("waiting for dependencies {failing} (pending)")),
        "{out}"
    );

    let done = submit(&s, cathedral_tests::spec("ok", &["true"])).await;
    until_final(&s, done).await;
    let out = s.cli_ok(&["explain", &done.to_string(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"], "succeeded");

    let missing = s.cli(&["explain", "999"]);
    assert_eq!(missing.status.code(), Some(3), "not found");
    s.stop();
}
