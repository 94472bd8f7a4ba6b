//! Gossip membership with real processes: tags set through the CLI steer placement; a
//! worker killed with SIGKILL while running a job is failed by the detector (node-failed
//! committed), the job reruns on the other worker and succeeds once, and the worker is
//! recovered when it returns; datagrams without the cluster key are dropped and counted.

use std::time::{Duration, Instant};

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, get, spec, submit, succeeded_attempts, until_final, Server};

const WAIT: Duration = Duration::from_secs(90);
const KEY: &str = "integration-test-key";

async fn nodes(s: &Server) -> pb::ListNodesResponse {
    s.cluster()
        .await
        .list_nodes(pb::ListNodesRequest {})
        .await
        .expect("list nodes")
        .into_inner()
}

async fn node_view(s: &Server, id: u64) -> Option<pb::NodeView> {
    nodes(s).await.nodes.into_iter().find(|n| n.id == id)
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_steer_placement_and_a_sigkilled_worker_is_failed_and_its_job_reruns_once() {
    let tmp = tempfile::tempdir().unwrap();
    // The coordinator runs nothing: every job goes to a worker.
    let mut coord = Server::start(
        &tmp.path().join("c"),
        &[
            "--role",
            "coordinator",
            "--voters",
            "1",
            "--slots",
            "0",
            "--cluster-key",
            KEY,
        ],
    );
    coord.wait_ready();
    let join = coord.grpc.clone();
    let mut workers: Vec<Server> = (1..=2)
        .map(|i| {
            Server::start(
                &tmp.path().join(format!("w{i}")),
                &[
                    "--role",
                    "worker",
                    "--join",
                    &join,
                    "--slots",
                    "2",
                    "--cluster-key",
                    KEY,
                ],
            )
        })
        .collect();
    for w in workers.iter_mut() {
        w.wait_ready();
    }
    let mut ids = Vec::new();
    for w in &workers {
        ids.push(w.status().await.node_id);
    }
    eventually(
        WAIT,
        "three nodes alive in gossip and in the state",
        || async {
            let r = nodes(&coord).await;
            (r.nodes.len() == 3
                && r.nodes
                    .iter()
                    .all(|n| n.state == "alive" && n.gossip_state == "alive")
                && r.health == "healthy")
                .then_some(())
        },
    )
    .await;

    // Tags set through any node reach the node named, spread by gossip, and steer work.
    coord.cli_ok(&["node", "tag", "set", &ids[0].to_string(), "zone=a"]);
    let out = workers[0].cli_ok(&["node", "tag", "set", &ids[1].to_string(), "zone=b", "gpu=1"]);
    assert_eq!(out, "gpu=1\nzone=b\n");
    let bad = coord.cli(&["node", "tag", "set", &ids[1].to_string(), "role=x"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--role"),
        "{bad:?}"
    );
    eventually(WAIT, "the tags everywhere", || async {
        let mut ok = true;
        for s in [&coord, &workers[0], &workers[1]] {
            let b = node_view(s, ids[1]).await.unwrap();
            let a = node_view(s, ids[0]).await.unwrap();
            ok &= b.tags.get("zone").map(String::as_str) == Some("b")
                && b.tags.get("gpu").map(String::as_str) == Some("1")
                && a.tags.get("zone").map(String::as_str) == Some("a");
        }
        ok.then_some(())
    })
    .await;
    let mut pinned = spec("pinned", &["true"]);
    pinned.constraints.insert("zone".into(), "b".into());
    let id = submit(&coord, pinned).await;
    let j = until_final(&coord, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts[0].node_id, ids[1], "zone=b is worker 2");
    // Drained (available=false): work goes elsewhere.
    coord.cli_ok(&["node", "tag", "set", &ids[1].to_string(), "available=false"]);
    eventually(WAIT, "worker 2 unavailable at the leader", || async {
        let n = node_view(&coord, ids[1]).await.unwrap();
        (n.tags.get("available").map(String::as_str) == Some("false")).then_some(())
    })
    .await;
    for _ in 0..3 {
        let id = submit(&coord, spec("drained", &["true"])).await;
        let j = until_final(&coord, id).await;
        assert_eq!(j.attempts[0].node_id, ids[0], "{j:?}");
    }
    coord.cli_ok(&["node", "tag", "set", &ids[1].to_string(), "available=true"]);
    coord.cli_ok(&["node", "tag", "unset", &ids[0].to_string(), "zone"]);

    // A long job; SIGKILL the worker running it.
    let mut sp = spec(
        "long",
        &["sh", "-c", "sleep 4; echo done-$CATHEDRAL_ATTEMPT"],
    );
    sp.retry = Some(pb::RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 100,
        max_backoff_ms: 1000,
        multiplier_milli: 2000,
    });
    let id = submit(&coord, sp).await;
    let running = eventually(WAIT, "the job to run", || async {
        let j = get(&coord, id).await;
        (j.state == pb::JobState::Running as i32).then_some(j)
    })
    .await;
    let victim_id = running.attempts[0].node_id;
    let v = ids
        .iter()
        .position(|i| *i == victim_id)
        .expect("a worker runs it");
    let other = 1 - v;
    workers[v].kill9();
    let killed = Instant::now();
    eventually(
        WAIT,
        "node-failed committed for the killed worker",
        || async {
            let n = node_view(&coord, victim_id).await.unwrap();
            (n.state == "failed" && n.gossip_state == "failed").then_some(())
        },
    )
    .await;
    eprintln!("kill -9 → node-failed committed in {:?}", killed.elapsed());
    let j = until_final(&coord, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    let succeeded = succeeded_attempts(&j);
    assert_eq!(succeeded.len(), 1, "exactly one success: {j:?}");
    assert_eq!(
        succeeded[0].node_id, ids[other],
        "it reran on the other worker"
    );
    assert_eq!(
        j.attempts[0].outcome.as_ref().unwrap().exit,
        Some(pb::outcome::Exit::Lost(true)),
        "the first attempt was lost with its node"
    );

    // Back again: node-recovered committed; its run-time tags survived the restart.
    workers[v].restart();
    workers[v].wait_ready();
    eventually(WAIT, "the worker recovered", || async {
        let n = node_view(&coord, victim_id).await.unwrap();
        (n.state == "alive" && n.gossip_state == "alive").then_some(n)
    })
    .await;
    let n = node_view(&coord, victim_id).await.unwrap();
    if v == 1 {
        assert_eq!(n.tags.get("gpu").map(String::as_str), Some("1"), "{n:?}");
    } else {
        assert!(!n.tags.contains_key("zone"), "the unset survived: {n:?}");
    }
    let r = nodes(&coord).await;
    assert_eq!(
        r.gossip.unwrap().rejected_mac,
        0,
        "one key, nothing rejected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gossip_datagram_with_a_bad_mac_is_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("n"), &["--cluster-key", KEY]);
    s.wait_ready();
    eventually(WAIT, "the node registered", || async {
        (nodes(&s).await.nodes.len() == 1).then_some(())
    })
    .await;
    let before = nodes(&s).await.gossip.unwrap().rejected_mac;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Junk, and a datagram shaped like a real one (a body and 32 bytes of MAC) under no key.
    sock.send_to(b"junk", &s.gossip).unwrap();
    let mut forged = vec![0x44u8; 100];
    forged.extend([0u8; 32]);
    sock.send_to(&forged, &s.gossip).unwrap();
    let r = eventually(WAIT, "both datagrams counted", || async {
        let r = nodes(&s).await;
        (r.gossip.as_ref().unwrap().rejected_mac >= before + 2).then_some(r)
    })
    .await;
    assert_eq!(r.nodes.len(), 1, "nobody joined: {r:?}");
    let text = s.cli_ok(&["cluster", "nodes"]);
    assert!(text.contains("bad MAC"), "{text}");
    // The node still serves.
    s.cli_ok(&["submit", "--", "true"]);
}
