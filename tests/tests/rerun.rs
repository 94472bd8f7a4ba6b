//! `cathedral workflow rerun`: a three-step workflow whose middle step fails is rerun
//! from that step — the first step keeps its one successful attempt, the middle step runs
//! again (its failed attempt stays in its history), the last step (cancelled with it)
//! runs — and a rerun from a succeeded step is refused.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, get, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_from_a_failed_middle_step() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("n"), &["--docker-host", "none"]);
    s.wait_ready();
    let go = tmp.path().join("go");
    let file = tmp.path().join("w.yaml");
    std::fs::write(
        &file,
        format!(
            "name: three\njobs:\n  - key: fetch\n    command: [echo, fetched]\n  - key: build\n    command: [test, -e, {}]\n    sandbox: process\n    after: [fetch]\n  - key: ship\n    command: [echo, shipped]\n    after: [build]\n",
            go.display()
        ),
    )
    .unwrap();
    let out = s.cli_ok(&["workflow", "submit", file.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let workflow: u64 = v["workflow_id"].as_str().unwrap().parse().unwrap();
    let id = |k: &str| -> u64 { v["job_ids"][k].as_str().unwrap().parse().unwrap() };
    let (fetch, build, ship) = (id("fetch"), id("build"), id("ship"));
    eventually(Duration::from_secs(60), "build to fail", || async {
        (get(&s, ship).await.state == pb::JobState::Cancelled as i32).then_some(())
    })
    .await;
    assert_eq!(get(&s, build).await.state, pb::JobState::Failed as i32);

    std::fs::write(&go, "").unwrap();
    let out = s.cli_ok(&[
        "workflow",
        "rerun",
        &workflow.to_string(),
        "--from",
        "build",
    ]);
    assert_eq!(
        out.trim(),
        format!("workflow {workflow}: rerunning jobs {build}, {ship}")
    );
    eventually(Duration::from_secs(60), "ship to succeed", || async {
        (get(&s, ship).await.state == pb::JobState::Succeeded as i32).then_some(())
    })
    .await;
    let (f, b, sh) = (
        get(&s, fetch).await,
        get(&s, build).await,
        get(&s, ship).await,
    );
    assert_eq!(f.attempts.len(), 1, "the upstream step kept its result");
    assert_eq!(b.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        b.attempts.len(),
        2,
        "the failed attempt stays in the history"
    );
    assert_ne!(
        b.attempts[0].outcome.as_ref().unwrap().exit,
        Some(pb::outcome::Exit::Code(0))
    );
    assert_eq!(sh.attempts.len(), 1);
    assert_eq!(s.cli_ok(&["logs", &ship.to_string()]), "shipped\n");

    // Rerun events are in the log like everything else.
    let events = s.cli_ok(&["events", "--job", &build.to_string()]);
    assert!(events.contains("rerun"), "{events}");

    let refused = s.cli(&[
        "workflow",
        "rerun",
        &workflow.to_string(),
        "--from",
        &fetch.to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("only a failed, timed-out or cancelled job is rerun"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    s.stop();
}

/// Step outputs: a job leaves files in `$CATHEDRAL_OUTPUTS`; its dependents get them as
/// `${{ jobs.KEY.outputs.NAME }}` (in arguments and environment values) and as
/// `CATHEDRAL_OUTPUT_KEY_NAME`; a reference to an output never published fails the job
/// that makes it, saying which; a reference to a job that is not a dependency (a typo in
/// its key) is refused at submit, naming the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_outputs_flow_between_three_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("n"), &["--docker-host", "none"]);
    s.wait_ready();
    let file = tmp.path().join("w.yaml");
    std::fs::write(
        &file,
        r#"name: release
jobs:
  - key: version
    command: [sh, -c, 'printf 1.2.3 > "$CATHEDRAL_OUTPUTS/version"; printf amd64 > "$CATHEDRAL_OUTPUTS/arch"']
  - key: build
    after: [version]
    command: [sh, -c, 'echo building ${{ jobs.version.outputs.version }} for $CATHEDRAL_OUTPUT_VERSION_ARCH; printf "app-${{ jobs.version.outputs.version }}.tar" > "$CATHEDRAL_OUTPUTS/artifact"']
  - key: ship
    after: [build]
    command: [echo, 'shipping ${{ jobs.build.outputs.artifact }}']
  - key: typo
    after: [version]
    command: [echo, '${{ jobs.version.outputs.nope }}']
"#,
    )
    .unwrap();
    let out = s.cli_ok(&["workflow", "submit", file.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = |k: &str| -> u64 { v["job_ids"][k].as_str().unwrap().parse().unwrap() };
    let ship = id("ship");
    let j = cathedral_tests::until_final(&s, ship).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(
        s.cli_ok(&["logs", &ship.to_string()]),
        "shipping app-1.2.3.tar\n"
    );
    assert_eq!(
        s.cli_ok(&["logs", &id("build").to_string()]),
        "building 1.2.3 for amd64\n"
    );
    let version = get(&s, id("version")).await;
    assert_eq!(version.outputs["version"], "1.2.3");
    assert_eq!(version.outputs["arch"], "amd64");
    assert_eq!(
        get(&s, id("build")).await.outputs["artifact"],
        "app-1.2.3.tar"
    );

    let typo = cathedral_tests::until_final(&s, id("typo")).await;
    assert_eq!(typo.state, pb::JobState::Failed as i32);
    let tail = String::from_utf8_lossy(&typo.attempts[0].outcome.as_ref().unwrap().output_tail)
        .into_owned();
    assert!(
        tail.contains("job version published no output nope"),
        "{tail}"
    );

    // (Jobs ran, so the leader has turned its features of apply on, the check among them.)
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"name: typo
jobs:
  - key: version
    command: [sh, -c, 'printf 1 > "$CATHEDRAL_OUTPUTS/version"']
  - key: build
    after: [version]
    command: [echo, '${{ jobs.versoin.outputs.version }}']
"#,
    )
    .unwrap();
    let jobs_before = s.cli_ok(&["list", "--json"]);
    let out = s.cli(&["workflow", "submit", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("jobs[1].command[1]")
            && err.contains("jobs.versoin.outputs.version")
            && err.contains("not a direct dependency")
            && err.contains("version"),
        "{err}"
    );
    assert_eq!(
        s.cli_ok(&["list", "--json"]),
        jobs_before,
        "nothing accepted"
    );
    s.stop();
}
