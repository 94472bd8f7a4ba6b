//! Clusters of real processes: forming with --join, writes through followers, SIGKILL of
//! the leader, catching up after a restart, a snapshot for a node that joins after log
//! compaction, node removal, and Unavailable without a quorum.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{cluster, eventually, leader_index, spec, until_final, Server};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until every running node applied the same index with the same state hash.
async fn converged(nodes: &[&Server]) -> pb::StatusResponse {
    eventually(
        WAIT,
        "all nodes at one applied index and state hash",
        || async {
            let mut seen = Vec::new();
            for s in nodes {
                seen.push(s.status().await);
            }
            let first = seen[0].clone();
            seen.iter()
                .all(|st| {
                    st.applied_index == first.applied_index && st.state_hash == first.state_hash
                })
                .then_some(first)
        },
    )
    .await
}

async fn submit(s: &Server, name: &str) -> u64 {
    s.jobs()
        .await
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec(name, &["true"])),
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("submit {name} via {}: {e}", s.grpc))
        .into_inner()
        .job_id
}

async fn all_jobs(s: &Server) -> Vec<u64> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .jobs()
            .await
            .list_jobs(pb::ListJobsRequest {
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        out.extend(page.jobs.iter().map(|j| j.id));
        token = page.next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_crash_new_leader_no_acknowledged_job_lost_and_the_node_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &[]).await;
    let l = leader_index(&nodes).await;
    let follower = (l + 1) % 3;

    // Writes through a follower are forwarded, and readable there at once.
    let mut acked = Vec::new();
    for i in 0..20 {
        let id = submit(&nodes[follower], &format!("a{i}")).await;
        let got = nodes[follower]
            .jobs()
            .await
            .get_job(pb::GetJobRequest {
                job_id: id,
                ..Default::default()
            })
            .await
            .expect("read your write on the follower");
        assert_eq!(got.get_ref().id, id);
        acked.push(id);
    }
    let before = nodes[l].status().await;

    nodes[l].kill9();
    let l2 = leader_index(&nodes).await;
    assert_ne!(l2, l);
    let after = nodes[l2].status().await;
    assert!(
        after.term > before.term,
        "a new term: {} -> {}",
        before.term,
        after.term
    );
    let other = (0..3).find(|&i| i != l && i != l2).unwrap();
    for id in &acked {
        for s in [&nodes[l2], &nodes[other]] {
            s.jobs()
                .await
                .get_job(pb::GetJobRequest {
                    job_id: *id,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("acknowledged job {id} lost: {e}"));
        }
    }
    // New writes are accepted, through either survivor.
    for i in 0..10 {
        acked.push(
            submit(
                &nodes[if i % 2 == 0 { l2 } else { other }],
                &format!("b{i}"),
            )
            .await,
        );
    }

    // The killed node restarts with its identity and catches up.
    nodes[l].restart();
    nodes[l].wait_ready();
    let st = converged(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    assert_eq!(st.members.len(), 3);
    assert_eq!(all_jobs(&nodes[l]).await, acked);
    assert_eq!(nodes[l].status().await.node_id, before.node_id);
}

/// A follower answers a submit once the leader applied it, without waiting for its own
/// apply; its caller still reads the write there at once, in every call after it (gRPC
/// and REST): those wait until the follower applied what it answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_submit_answered_by_a_follower_is_read_there_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(tmp.path(), 3, &[]).await;
    let l = leader_index(&nodes).await;
    let f = &nodes[(l + 1) % 3];
    // One connection, as a client keeps: the next call leaves right after the answer.
    let mut jobs = f.jobs().await;
    for i in 0..300 {
        let r = jobs
            .submit_job(pb::SubmitJobRequest {
                spec: Some(spec(&format!("ryw{i}"), &["true"])),
                ..Default::default()
            })
            .await
            .expect("submit through the follower")
            .into_inner();
        let listed: Vec<u64> = if i % 10 == 9 {
            let (code, body) = f.http_get("/v1/jobs?page_size=1000").expect("GET /v1/jobs");
            assert_eq!(code, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            v["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("no jobs in {body}"))
                .iter()
                .filter_map(|j| {
                    let id = &j["id"];
                    id.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| id.as_u64())
                })
                .collect()
        } else {
            jobs.list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .jobs
            .iter()
            .map(|j| j.id)
            .collect()
        };
        assert!(
            listed.contains(&r.job_id),
            "submit {i}: job {} (index {}) missing from the follower's list right after it answered",
            r.job_id,
            r.index
        );
        if i % 20 == 0 {
            let w = jobs
                .submit_workflow(pb::SubmitWorkflowRequest {
                    name: format!("ryw-w{i}"),
                    jobs: vec![pb::WorkflowJob {
                        key: "a".into(),
                        spec: Some(spec("a", &["true"])),
                        after: vec![],
                    }],
                    ..Default::default()
                })
                .await
                .expect("submit a workflow through the follower")
                .into_inner();
            let listed = jobs
                .list_workflows(pb::ListWorkflowsRequest {
                    name_prefix: format!("ryw-w{i}"),
                    ..Default::default()
                })
                .await
                .expect("list workflows")
                .into_inner();
            assert!(
                listed.workflows.iter().any(|v| v.id == w.workflow_id),
                "workflow {} (submit {i}) missing from the follower's list right after it answered",
                w.workflow_id
            );
        }
    }
}

/// Jobs submitted right after the leader is SIGKILLed, with default settings (no retries
/// of their own), all run and succeed: the new leader places nothing on the dead leader's
/// node, which gossip still calls alive for seconds (it has not answered this leader), and
/// an attempt lost with its node before it started costs the job nothing.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_submitted_as_the_leader_dies_all_succeed_with_default_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &[]).await;
    let l = leader_index(&nodes).await;
    let dead = nodes[l].status().await.node_id;
    let survivor = (l + 1) % 3;
    nodes[l].kill9();
    // At once: the writes wait for the new leader, and are placed as soon as it leads.
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(submit(&nodes[survivor], &format!("after-crash-{i}")).await);
    }
    for id in ids {
        let j = until_final(&nodes[survivor], id).await;
        assert_eq!(
            j.state,
            pb::JobState::Succeeded as i32,
            "job {id} did not succeed: {} (attempts {:?})",
            j.reason,
            j.attempts
        );
        assert!(
            j.attempts.iter().all(|a| a.node_id != dead),
            "job {id} was placed on the dead leader's node {dead}: {:?}",
            j.attempts
        );
    }
}

/// A node started on its directory with another address than the one its cluster recorded
/// says so in one line, naming both and the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_on_its_directory_with_another_address_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &[]).await;
    let l = leader_index(&nodes).await;
    let f = (l + 1) % 3;
    let recorded = nodes[f].grpc.clone();
    nodes[f].stop();
    // The leader's AppendEntries stream to the follower ended with its shutdown, which
    // did not wait on it.
    let stopped = nodes[f].log_text();
    assert!(
        !stopped.contains("after the shutdown began"),
        "a follower's shutdown waited:\n{stopped}"
    );
    let moved = Server::start(&nodes[f].dir, &["--role", "coordinator"]);
    let line = eventually(WAIT, "the address line in the log", || async {
        moved
            .log_text()
            .lines()
            .find(|l| l.contains("recorded its address as"))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains(&recorded) && line.contains(&moved.grpc) && line.contains("--bind"),
        "{line}"
    );
    let errors = moved
        .log_text()
        .lines()
        .filter(|l| l.contains("recorded its address as"))
        .count();
    assert_eq!(errors, 1, "said once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joining_after_log_compaction_receives_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    // No slots: the jobs stay pending, so the log grows only by what the test writes and
    // the snapshot the worker gets can be compared with the leader's applied index.
    let small = [
        "--snapshot-threshold",
        "20",
        "--log-compaction-threshold",
        "5",
        "--slots",
        "0",
    ];
    let nodes = cluster(tmp.path(), 3, &small).await;
    let l = leader_index(&nodes).await;
    let mut acked = Vec::new();
    for i in 0..80 {
        acked.push(submit(&nodes[l], &format!("j{i}")).await);
    }
    let st = eventually(WAIT, "the leader to purge its log", || async {
        let st = nodes[l].status().await;
        (st.purged_index > 20).then_some(st)
    })
    .await;
    assert!(st.snapshot_index > 0);

    let worker_args = [
        "--role",
        "worker",
        "--slots",
        "0",
        "--join",
        nodes[(l + 1) % 3].grpc.as_str(),
    ];
    let mut worker = Server::start(&tmp.path().join("worker"), &worker_args);
    worker.wait_ready();
    let ws = eventually(WAIT, "the worker to install a snapshot", || async {
        let st = worker.status().await;
        (st.snapshot_index > 0).then_some(st)
    })
    .await;
    assert!(ws.snapshot_index <= st.applied_index + 10);
    assert!(
        worker.log_text().contains("snapshot received"),
        "{}",
        worker.log_text()
    );
    converged(&[&nodes[0], &nodes[1], &nodes[2], &worker]).await;
    assert_eq!(all_jobs(&worker).await, acked);
    let members = nodes[l].status().await.members;
    let w = members
        .iter()
        .find(|m| m.id == ws.node_id)
        .expect("worker is a member");
    assert_eq!(w.role, "learner", "a worker is never promoted");

    // Removing it takes it out of the membership.
    let out = nodes[l].cli_ok(&["cluster", "remove-node", &ws.node_id.to_string()]);
    assert!(out.contains("removed"), "{out}");
    eventually(WAIT, "the worker to leave the membership", || async {
        let st = nodes[(l + 2) % 3].status().await;
        (!st.members.iter().any(|m| m.id == ws.node_id)).then_some(())
    })
    .await;
    let out = nodes[l].cli(&["cluster", "remove-node", "12345"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_quorum_writes_fail_with_unavailable_and_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &["--write-timeout-ms", "1500"]).await;
    submit(&nodes[0], "before").await;
    nodes[1].kill9();
    nodes[2].kill9();
    let out = nodes[0].cli(&["submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(4), "exit code for Unavailable");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unavailable") && err.contains("majority"),
        "{err}"
    );
    // Reads still answer from the applied state.
    assert_eq!(all_jobs(&nodes[0]).await.len(), 1);
    // The quorum returns, and so do writes: at once where node 0 leads with a fresh
    // quorum, else once its gossip sees node 1 again (until then it answers Unavailable,
    // which a client retries, here under one request id).
    nodes[1].restart();
    nodes[1].wait_ready();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = nodes[0]
            .jobs()
            .await
            .submit_job(pb::SubmitJobRequest {
                spec: Some(spec("after", &["true"])),
                request_id: "after-the-quorum-returns".into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => break,
            Err(e)
                if e.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("submit after the quorum returned: {e}"),
        }
    }
    // Node 0 holds the job submitted after (and maybe the one that timed out: a write
    // refused for want of a majority after it was appended may still commit).
    let n0 = &nodes[0];
    eventually(WAIT, "node 0 to hold the job submitted after", || async {
        (all_jobs(n0).await.len() >= 2).then_some(())
    })
    .await;
}
