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
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // The node registers itself in the background; wait until nothing more is written
    // (longer than the upkeep period).
    let before = quiet(&s).await;

    // Empty command.
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(spec("empty", &[])),
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "spec.command",
    );
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: None,
            ..Default::default()
        })
        .await,
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
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "COMMAND_BYTES_MAX",
    );
    let huge = "y".repeat(cathedral_server::REQUEST_BYTES_MAX + 1);
    let r = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec("huge", &["echo", &huge])),
            request_id: String::new(),
            ..Default::default()
        })
        .await;
    let e = r.expect_err("a request past REQUEST_BYTES_MAX");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let out = s.cli(&["submit", "--timeout", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));

    // Unknown ids.
    expect_code(
        jobs.get_job(pb::GetJobRequest {
            job_id: 424242,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "job 424242",
    );
    expect_code(
        jobs.cancel_job(pb::CancelJobRequest {
            job_id: 424242,
            reason: String::new(),
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "job 424242",
    );
    expect_code(
        jobs.watch_job(pb::WatchJobRequest {
            job_id: 424242,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "job 424242",
    );
    let mut dep = spec("dep", &["true"]);
    dep.depends_on = vec![existing, 777];
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(dep),
            ..Default::default()
        })
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
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "cycle",
    );
    expect_code(
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: "w".into(),
            jobs: vec![wj("a", &["nope"])],
            request_id: String::new(),
            ..Default::default()
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

    // A write larger than an entry may hold (each job within its own bounds), under
    // REQUEST_BYTES_MAX: refused by name before it is proposed.
    let big = |n: usize| pb::SubmitWorkflowRequest {
        name: "big".into(),
        jobs: (0..n)
            .map(|i| pb::WorkflowJob {
                key: format!("k{i}"),
                spec: Some(spec("big", &["echo", &"x".repeat(60 * 1024)])),
                after: vec![],
            })
            .collect(),
        request_id: String::new(),
        ..Default::default()
    };
    expect_code(
        jobs.submit_workflow(big(20)).await,
        Code::InvalidArgument,
        "WRITE_BYTES_MAX",
    );

    // Nothing above took a log entry or touched the state.
    let after = s.status().await;
    assert_eq!(after.applied_index, before.applied_index);
    assert_eq!(after.state_hash, before.state_hash);
    assert_eq!(after.jobs, 1);
    // And the node still takes good input, up to the bound: 16 such jobs fit one entry.
    s.cli_ok(&["submit", "--", "true"]);
    jobs.submit_workflow(big(16))
        .await
        .expect("a workflow within WRITE_BYTES_MAX");
}

/// A gRPC message frame: the 5-byte prefix (not compressed, length) and the message.
fn grpc_frame(msg: &impl prost::Message) -> bytes::Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

fn grpc_request(method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost/cathedral.v1.JobService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A client that cancels many watches in a row is behaving normally: its connection must
/// stay up. Driven at the HTTP/2 level so that the cancellations are as quick as they can
/// be (HEADERS then RST_STREAM, many streams in one burst) — the pattern hyper's
/// rapid-reset guard looks for.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_many_watches_keeps_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &["--slots", "0"]);
    s.wait_ready();
    let id = cathedral_tests::submit(&s, spec("pending", &["true"])).await;
    let tcp = tokio::net::TcpStream::connect(&s.grpc).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let watch = grpc_frame(&pb::WatchJobRequest {
        job_id: id,
        ..Default::default()
    });
    for round in 0..5 {
        // 200 watches opened and cancelled back to back.
        for _ in 0..200 {
            let (_response, mut body) = client
                .send_request(grpc_request("WatchJob"), false)
                .unwrap_or_else(|e| panic!("round {round}: cannot open a stream: {e}"));
            body.send_data(watch.clone(), true).unwrap();
            body.send_reset(h2::Reason::CANCEL);
            client = client
                .ready()
                .await
                .unwrap_or_else(|e| panic!("round {round}: connection closed: {e}"));
        }
        // The connection still answers.
        let (response, mut body) = client
            .send_request(grpc_request("GetJob"), false)
            .unwrap_or_else(|e| panic!("round {round}: connection closed: {e}"));
        body.send_data(
            grpc_frame(&pb::GetJobRequest {
                job_id: id,
                ..Default::default()
            }),
            true,
        )
        .unwrap();
        let response = response
            .await
            .unwrap_or_else(|e| panic!("round {round}: the server dropped the connection: {e}"));
        assert_eq!(response.status(), 200);
        let mut data = response.into_body();
        let mut got = 0;
        while let Some(chunk) = data.data().await {
            got += chunk.unwrap().len();
        }
        assert!(got > 5, "round {round}: a job in the answer");
        client = client.ready().await.unwrap();
    }
    assert!(!conn.is_finished(), "the connection ended");
}

/// Waits until the node writes nothing more (its registration is done) and returns its
/// status.
async fn quiet(s: &Server) -> pb::StatusResponse {
    eventually(
        std::time::Duration::from_secs(10),
        "a quiet node",
        || async {
            let a = s.status().await;
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let b = s.status().await;
            (a.applied_index == b.applied_index).then_some(b)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn input_that_used_to_get_through_is_refused_and_repeats_take_no_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &["--slots", "0"]);
    s.wait_ready();
    let mut jobs = s.jobs().await;
    let keyed = |name: &str, key: &str| {
        let mut sp = spec(name, &["true"]);
        sp.idempotency_key = key.into();
        sp
    };
    let first = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(keyed("first", "k-first")),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let wj = |key: &str, idem: &str, after: &[&str]| pb::WorkflowJob {
        key: key.into(),
        spec: Some(keyed(key, idem)),
        after: after.iter().map(|a| a.to_string()).collect(),
    };
    let flow = || pb::SubmitWorkflowRequest {
        name: "flow".into(),
        jobs: vec![wj("a", "k-a", &[]), wj("b", "k-b", &["a"])],
        request_id: String::new(),
        ..Default::default()
    };
    let w = jobs.submit_workflow(flow()).await.unwrap().into_inner();
    let before = quiet(&s).await;

    // A NUL inside an environment value (it would cut the value short at exec).
    let mut nul = spec("nul", &["true"]);
    nul.env.insert("A".into(), "x\0y".into());
    expect_code(
        jobs.submit_job(pb::SubmitJobRequest {
            spec: Some(nul),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "must not contain NUL",
    );
    // Two jobs of one workflow with one idempotency key.
    expect_code(
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: "dup".into(),
            jobs: vec![wj("a", "same", &[]), wj("b", "same", &["a"])],
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "also the key of jobs[0]",
    );
    // A workflow reusing a key of another submission without repeating it whole.
    expect_code(
        jobs.submit_workflow(pb::SubmitWorkflowRequest {
            name: "partial".into(),
            jobs: vec![wj("a", "k-first", &[]), wj("z", "k-new", &["a"])],
            request_id: String::new(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "already names job",
    );
    // Constraints follow the tag rule of nodes: no tag key a node could never carry.
    for (key, says) in [
        ("zone name", "letters"),
        (&"k".repeat(65) as &str, "TAG_KEY_BYTES_MAX"),
    ] {
        let mut c = spec("c", &["true"]);
        c.constraints.insert(key.into(), "x".into());
        expect_code(
            jobs.submit_job(pb::SubmitJobRequest {
                spec: Some(c),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            says,
        );
    }
    let out = s.cli(&["submit", "--tag", "zone name=x", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Page tokens are exactly what the server issued.
    for token in ["+5", "05", "-1", " 5", "0"] {
        expect_code(
            jobs.list_jobs(pb::ListJobsRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "page_token",
        );
    }
    let page = jobs
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = jobs
        .list_jobs(pb::ListJobsRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(next.jobs[0].id, page.jobs[0].id);
    // Undecodable request bodies: INTERNAL, as gRPC's status table says for a request that
    // does not parse (the proto's header says so).
    #[derive(Clone, PartialEq, prost::Message)]
    struct NotASpec {
        // Field 1 of SubmitJobRequest is a message; a varint there does not decode.
        #[prost(uint64, tag = "1")]
        spec: u64,
    }
    let mut raw = tonic::client::Grpc::new(s.channel().await);
    raw.ready().await.unwrap();
    let r: Result<tonic::Response<pb::SubmitJobResponse>, _> = raw
        .unary(
            tonic::Request::new(NotASpec { spec: 7 }),
            "/cathedral.v1.JobService/SubmitJob".parse().unwrap(),
            tonic_prost::ProstCodec::<NotASpec, pb::SubmitJobResponse>::default(),
        )
        .await;
    let e = r.expect_err("an undecodable body");
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().contains("decode"), "{e:?}");

    // Repeats: the original ids, answered without a log entry.
    let again = jobs
        .submit_job(pb::SubmitJobRequest {
            spec: Some(keyed("first", "k-first")),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.job_id, first);
    let w2 = jobs.submit_workflow(flow()).await.unwrap().into_inner();
    assert_eq!(w2.workflow_id, w.workflow_id);
    assert_eq!(w2.job_ids, w.job_ids);
    let out = s.cli_ok(&["submit", "--idempotency-key", "k-first", "--", "true"]);
    assert_eq!(out.trim(), first.to_string());

    let after = s.status().await;
    assert_eq!(
        after.applied_index, before.applied_index,
        "no log entry was taken"
    );
    assert_eq!(after.state_hash, before.state_hash);
    assert_eq!(after.jobs, 3);
}
