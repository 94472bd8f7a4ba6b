//! Output that outlives its node: a finished attempt's output is copied to another voter,
//! so `cathedral logs` works after the node that ran it is SIGKILLed and removed.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{cluster, eventually, leader_index, submit, until_final};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_outlive_the_node_that_ran_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &["--docker-host", "none"]).await;
    let job = submit(
        &nodes[0],
        pb::JobSpec {
            name: "talk".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    let j = until_final(&nodes[0], job).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32);
    let ran_on = j.attempts[0].node_id;
    let expected: String = (0..300).map(|i| format!("line {i}\n")).collect();
    // Which test server is the node that ran it.
    let mut ids = Vec::new();
    for n in &nodes {
        ids.push(n.status().await.node_id);
    }
    let x = ids
        .iter()
        .position(|id| *id == ran_on)
        .expect("a member ran it");
    // The copy lands on one of the others.
    let file = format!("outputs/{job}-1.log");
    eventually(Duration::from_secs(30), "a copy on another node", || {
        let found = nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != x && n.dir.join(&file).exists());
        async move { found.then_some(()) }
    })
    .await;
    nodes[x].kill9();
    let others: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    let l = leader_index(&nodes).await;
    assert_ne!(l, x);
    nodes[l].cli_ok(&["cluster", "remove-node", &ran_on.to_string()]);
    for i in others {
        assert_eq!(
            nodes[i].cli_ok(&["logs", &job.to_string()]),
            expected,
            "node {i} serves the output of a removed node"
        );
    }
    for n in nodes.iter_mut() {
        n.stop();
    }
}
