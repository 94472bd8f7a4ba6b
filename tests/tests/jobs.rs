//! Jobs actually run: hello world end to end, a DAG in dependency order, retries with
//! backoff, timeouts and cancellation that leave no process behind, a memory limit. (A job
//! surviving the SIGKILL of its node is in `gossip.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, get, spec, submit, until_final, Server};

const WAIT: Duration = Duration::from_secs(60);

/// Live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            !zombie && String::from_utf8_lossy(&cmd).contains(marker)
        })
        .count()
}

/// Waits (up to 15 s: a loaded machine tears a pid namespace down slowly) until no
/// process with `marker` in its command line is left; panics naming the survivors.
fn none_left(marker: &str) {
    for _ in 0..300 {
        if processes_with(marker) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            cmd.contains(marker)
                .then(|| format!("{}: {cmd} [{stat}]", e.file_name().to_string_lossy()))
        })
        .collect();
    panic!("processes of the attempt ({marker}) survived: {survivors:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_world_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let id = s
        .cli_ok(&["submit", "--", "echo", "hello"])
        .trim()
        .to_string();
    let waited = s.cli(&["wait", &id, "--timeout", "60s"]);
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("succeeded"));
    assert_eq!(s.cli_ok(&["logs", &id]), "hello\n");
    let job: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["status", &id, "--json"])).unwrap();
    assert_eq!(job["attempts"][0]["outcome"]["exit"]["code"], 0);
    assert_eq!(job["attempts"][0]["outcome"]["output_tail"], "hello\n");
    // Ids are strings in JSON (no reader rounds a 64-bit node id); text is in words.
    assert_eq!(job["id"], serde_json::json!(id));
    assert!(job["attempts"][0]["node_id"].is_string(), "{job}");
    let text = s.cli_ok(&["status", &id]);
    assert!(
        text.contains(": exited 0 after") && !text.contains("{\"code\""),
        "{text}"
    );
    // A failing command: `wait` exits 1.
    let id = s
        .cli_ok(&["submit", "--", "sh", "-c", "echo bad >&2; exit 4"])
        .trim()
        .to_string();
    let waited = s.cli(&["wait", &id, "--timeout", "60s"]);
    assert_eq!(waited.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&waited.stdout).contains("exited with status 4"));
    assert_eq!(s.cli_ok(&["logs", &id]), "bad\n");
}

/// A short attempt is reported started and ended together (the worker's
/// `START_REPORT_HOLD`): the start first, in the entry of the end or before it — sharing it
/// where writes queue (never when the end waited for the start to commit). A longer
/// attempt reads `running` while it runs, its start timed when it started.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_attempts_start_and_end_go_together_and_a_long_one_reads_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut s = Server::start(&dir, &["--slots", "16"]);
    s.wait_ready();
    let long = submit(&s, spec("long", &["sleep", "2"])).await;
    let running = eventually(Duration::from_secs(30), "the long job running", || async {
        let j = get(&s, long).await;
        (j.state == pb::JobState::Running as i32).then_some(j)
    })
    .await;
    let a = &running.attempts[0];
    let started = a.started_at_ms.expect("a running attempt has its start");
    assert!(started >= a.assigned_at_ms, "{a:?}");
    // Many at once: a start and its end then queue behind the batch in flight together
    // (on an idle node the batcher may take the start alone before the end comes).
    let mut short = Vec::new();
    for i in 0..60 {
        short.push(submit(&s, spec(&format!("short{i}"), &["true"])).await);
    }
    for id in &short {
        let j = until_final(&s, *id).await;
        assert_eq!(j.state, pb::JobState::Succeeded as i32);
        let a = &j.attempts[0];
        let (started, finished) = (a.started_at_ms.unwrap(), a.finished_at_ms.unwrap());
        assert!(started <= finished, "{a:?}");
    }
    assert_eq!(
        until_final(&s, long).await.state,
        pb::JobState::Succeeded as i32
    );
    assert_eq!(s.stop(), Some(0));

    // In the log: (index, position in its batch) of each short job's start and end.
    let mut shared = 0;
    for id in short {
        let (code, out, err) =
            cathedral_tests::log_tool(&dir, &["dump", "--json", "--job", &id.to_string()]);
        assert_eq!(code, Some(0), "{err}");
        let place = |kind: &str| {
            out.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|v| v["kind"] == kind)
                .map(|v| {
                    (
                        v["index"].as_u64().unwrap(),
                        v["batch"]["position"].as_u64().unwrap_or(0),
                    )
                })
                .unwrap_or_else(|| panic!("no {kind} for job {id}: {out}"))
        };
        let (start, end) = (place("task_started"), place("task_finished"));
        assert!(
            start < end,
            "job {id}: the start at {start:?}, the end at {end:?}"
        );
        shared += (start.0 == end.0) as usize;
    }
    assert!(shared > 0, "no short job's start and end shared an entry");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_twenty_job_dag_runs_in_dependency_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &["--slots", "4"]);
    s.wait_ready();
    // Job k depends on jobs k-1 and k/2 (k >= 1): chains and fan-ins.
    let mut jobs = Vec::new();
    for k in 0..20usize {
        let mut after = Vec::new();
        if k >= 1 {
            after.push(format!("j{}", k - 1));
            if k / 2 != k - 1 {
                after.push(format!("j{}", k / 2));
            }
        }
        jobs.push(pb::WorkflowJob {
            key: format!("j{k}"),
            spec: Some(spec(&format!("j{k}"), &["sh", "-c", "sleep 0.05"])),
            after,
        });
    }
    let r = s
        .jobs()
        .await
        .submit_workflow(pb::SubmitWorkflowRequest {
            name: "dag".into(),
            jobs: jobs.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut done = BTreeMap::new();
    for (key, id) in &r.job_ids {
        let j = until_final(&s, *id).await;
        assert_eq!(j.state, pb::JobState::Succeeded as i32, "{key}: {j:?}");
        assert_eq!(j.attempts.len(), 1);
        done.insert(key.clone(), j);
    }
    for wj in &jobs {
        let me = &done[&wj.key].attempts[0];
        for a in &wj.after {
            let dep = &done[a].attempts[0];
            assert!(
                me.started_at_ms.unwrap() >= dep.finished_at_ms.unwrap(),
                "{} started before {a} finished",
                wj.key
            );
            assert!(me.assigned_at_ms >= dep.finished_at_ms.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_twice_then_succeeding_with_backoff() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let mut sp = spec(
        "flaky",
        &[
            "sh",
            "-c",
            "echo attempt $CATHEDRAL_ATTEMPT; [ $CATHEDRAL_ATTEMPT -ge 3 ]",
        ],
    );
    sp.retry = Some(pb::RetryPolicy {
        max_attempts: 5,
        initial_backoff_ms: 400,
        max_backoff_ms: 10_000,
        multiplier_milli: 2000,
    });
    let id = submit(&s, sp).await;
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts.len(), 3);
    let code = |a: &pb::Attempt| match a.outcome.as_ref().unwrap().exit {
        Some(pb::outcome::Exit::Code(c)) => c,
        ref e => panic!("{e:?}"),
    };
    assert_eq!(
        j.attempts.iter().map(code).collect::<Vec<_>>(),
        vec![1, 1, 0]
    );
    // Backoff: 400 ms before attempt 2, 800 ms before attempt 3 (the proposer's clock).
    for (i, wait) in [(1usize, 400u64), (2, 800)] {
        let gap = j.attempts[i].assigned_at_ms - j.attempts[i - 1].finished_at_ms.unwrap();
        assert!(
            gap >= wait,
            "attempt {} after {gap} ms, backoff {wait} ms",
            i + 1
        );
    }
    assert_eq!(
        s.cli_ok(&["logs", &id.to_string(), "--attempt", "2"]),
        "attempt 2\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_cancellation_leave_no_process_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let mut sp = spec("slow", &["sh", "-c", "sleep 61.25 & sleep 61.25"]);
    sp.timeout_ms = Some(1000);
    let id = submit(&s, sp).await;
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::TimedOut as i32, "{j:?}");
    none_left("61.25");

    let id = submit(&s, spec("victim", &["sh", "-c", "sleep 62.5 & sleep 62.5"])).await;
    eventually(WAIT, "the job to run", || async {
        (get(&s, id).await.state == pb::JobState::Running as i32 && processes_with("62.5") >= 2)
            .then_some(())
    })
    .await;
    let out = s.cli_ok(&["cancel", &id.to_string()]);
    assert!(out.contains("cancelled"), "{out}");
    none_left("62.5");
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_is_killed_and_reported_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    if !cgroups_usable() {
        return;
    }
    let mut sp = spec(
        "hog",
        &[
            "python3",
            "-c",
            "b = bytearray(400 * 1024 * 1024); print(len(b))",
        ],
    );
    sp.memory_bytes = 64 << 20;
    let id = submit(&s, sp).await;
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Failed as i32, "{j:?}");
    let o = j.attempts[0].outcome.as_ref().unwrap();
    assert_eq!(o.exit, Some(pb::outcome::Exit::Signal(9)));
    assert!(
        String::from_utf8_lossy(&o.output_tail).contains("memory limit"),
        "{o:?}"
    );
}

/// Whether the host lets the executor use cgroups; says why not when it does not.
fn cgroups_usable() -> bool {
    match cathedral_executor::CgroupSupport::detect() {
        cathedral_executor::CgroupSupport::None { why } => {
            eprintln!("SKIPPED: cgroups cannot be used on this host: {why}");
            false
        }
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_output_until_the_attempt_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let id = submit(
        &s,
        spec(
            "chatty",
            &["sh", "-c", "echo first; sleep 1.5; echo second"],
        ),
    )
    .await;
    eventually(WAIT, "the job to run", || async {
        (get(&s, id).await.state == pb::JobState::Running as i32).then_some(())
    })
    .await;
    // Started while the job runs: prints what is there, waits for the rest, then ends.
    let out = s.cli_ok(&["logs", "--follow", &id.to_string()]);
    assert_eq!(out, "first\nsecond\n");
    assert_eq!(get(&s, id).await.state, pb::JobState::Succeeded as i32);
}

/// A graceful stop (SIGTERM) kills the running attempt and does not exit before its
/// report is committed: the attempt is recorded lost by the node that shut down (its note
/// says so; a report left to the restart would say "restarted"), before any restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_waits_for_the_reports_of_the_attempts_it_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut s = Server::start(&dir, &[]);
    s.wait_ready();
    let mut sp = spec(
        "interrupted",
        &["sh", "-c", "[ $CATHEDRAL_ATTEMPT -ge 2 ] || sleep 61.25"],
    );
    sp.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 100,
        max_backoff_ms: 1000,
        multiplier_milli: 2000,
    });
    let id = submit(&s, sp).await;
    eventually(WAIT, "the first attempt to run", || async {
        (get(&s, id).await.state == pb::JobState::Running as i32 && processes_with("61.25") > 0)
            .then_some(())
    })
    .await;
    // A client following the job's output does not hold the stop: its stream ends.
    let mut follower = std::process::Command::new(cathedral_tests::bin("cathedral"))
        .args(["--server", &s.grpc, "logs", "--follow", &id.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.stop(), Some(0), "{}", s.log_text());
    none_left("61.25");
    let ended = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        follower.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = follower.kill();
    }
    assert!(ended, "the follower's stream outlived the server");
    // Offline, before any restart: the log holds the stopped node's own report.
    let out = std::process::Command::new(cathedral_tests::bin("cathedral-log"))
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "replay",
            "--json",
            "--job",
        ])
        .arg(id.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = &replayed["now"]["attempts"][0];
    assert_eq!(first["outcome"]["exit"], "Lost", "{text}");
    assert!(
        s.log_text().contains("waiting for the attempts' reports"),
        "{}",
        s.log_text()
    );
    // The restart finds nothing to report; the retry runs and succeeds.
    s.restart();
    s.wait_ready();
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts.len(), 2, "{j:?}");
    let tail = &j.attempts[0].outcome.as_ref().unwrap().output_tail;
    assert!(
        String::from_utf8_lossy(tail).contains("the node shut down"),
        "{}",
        String::from_utf8_lossy(tail)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_lost_in_a_restart_is_reported_lost_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let mut sp = spec(
        "survivor",
        &["sh", "-c", "[ $CATHEDRAL_ATTEMPT -ge 2 ] || sleep 63.75"],
    );
    sp.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 100,
        max_backoff_ms: 1000,
        multiplier_milli: 2000,
    });
    let id = submit(&s, sp).await;
    eventually(WAIT, "the first attempt to run", || async {
        (get(&s, id).await.state == pb::JobState::Running as i32 && processes_with("63.75") > 0)
            .then_some(())
    })
    .await;
    s.kill9();
    // The restart finds the attempt recorded as running here but not running, and reports
    // it lost. (Under bubblewrap, the default here, its processes die with the server:
    // --die-with-parent. A plain-process attempt would outlive a SIGKILLed server.)
    s.restart();
    s.wait_ready();
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts.len(), 2, "{j:?}");
    assert_eq!(
        j.attempts[0].outcome.as_ref().unwrap().exit,
        Some(pb::outcome::Exit::Lost(true))
    );
    none_left("63.75");
}
