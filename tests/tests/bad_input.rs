//! Bad input gets a clear error naming the field or bound, and changes nothing: no log
//! entry is written, so the applied index and the state hash stay as they were.

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, spec, Server};
use tonic::Code;

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, says: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(says),
                "{:?} should mention {says}",
                s.message()
            );
        }
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_and_the_state_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let mut jobs = s.jobs().await;
    let existing = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec("ok", &["true"])),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // The node registers itself in the background; wait until nothing more is written
    // (longer than the upkeep period).
    let before = eventually(
        std::time::Duration::from_secs(10),
        "a quiet node",
        || async {
            let a = s.status().await;
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let b = s.status().await;
            (a.applied_index == b.applied_index).then_some(b)
        },
    )
    .await;

    // Empty command.
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(spec("empty", &[])),
        })
        .await,
        Code::InvalidArgument,
        "spec.command",
    );
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest { spec: None }).await,
        Code::InvalidArgument,
        "spec",
    );
    let out = s.cli(&["submit", "--"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));

    // Oversized: past the spec's bound, and past the request bound.
    let big = "x".repeat(100 * 1024);
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(spec("big", &["echo", &big])),
        })
        .await,
        Code::InvalidArgument,
        "COMMAND_BYTES_MAX",
    );
    let huge = "y".repeat(cathedral_server::REQUEST_BYTES_MAX + 1);
    let r = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec("huge", &["echo", &huge])),
        })
        .await;
    let e = r.expect_err("a request past REQUEST_BYTES_MAX");
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{e:?}"
    );
    let out = s.cli(&["submit", "--timeout", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));

    // Unknown ids.
    expect_code(
        jobs.get_job(pb::GetJobRequest { job_id: 424242 }).await,
        Code::NotFound,
        "job 424242",
    );
    expect_code(
        jobs.cancel_job(pb::CancelJobRequest {
            job_id: 424242,
            reason: String::new(),
        })
        .await,
        Code::NotFound,
        "job 424242",
    );
    expect_code(
        jobs.watch_job(pb::WatchJobRequest { job_id: 424242 }).await,
        Code::NotFound,
        "job 424242",
    );
    let mut dep = spec("dep", &["true"]);
    dep.depends_on = vec![existing, 777];
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest { spec: Some(dep) })
            .await,
        Code::InvalidArgument,
        "unknown job 777",
    );
    let out = s.cli(&["status", "424242"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // A workflow with a cycle, from a file, through the CLI and through gRPC.
    let file = tmp.path().join("cycle.yaml");
    std::fs::write(
        &file,
        "name: loop\njobs:\n  - key: a\n    command: [\"true\"]\n    after: [c]\n  - key: b\n    command: [\"true\"]\n    after: [a]\n  - key: c\n    command: [\"true\"]\n    after: [b]\n",
    )
    .unwrap();
    let out = s.cli(&["workflow", "submit", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle among: a, b, c"), "{err}");
    let wj = |key: &str, after: &[&str]| pb::WorkflowJob {
        key: key.into(),
        spec: Some(spec(key, &["true"])),
        after: after.iter().map(|a| a.to_string()).collect(),
    };
    expect_code(
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: "w".into(),
            jobs: vec![wj("a", &["b"]), wj("b", &["a"])],
        })
        .await,
        Code::InvalidArgument,
        "cycle",
    );
    expect_code(
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: "w".into(),
            jobs: vec![wj("a", &["nope"])],
        })
        .await,
        Code::InvalidArgument,
        "jobs[0].after",
    );

    // Bad list arguments.
    expect_code(
        jobs.list_jobs(pb::ListJobsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "LIST_PAGE_SIZE_MAX",
    );
    expect_code(
        jobs.list_jobs(pb::ListJobsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_token",
    );

    // Nothing above took a log entry or touched the state.
    let after = s.status().await;
    assert_eq!(after.applied_index, before.applied_index);
    assert_eq!(after.state_hash, before.state_hash);
    assert_eq!(after.jobs, 1);
    // And the node still takes good input.
    s.cli_ok(&["submit", "--", "true"]);
}
