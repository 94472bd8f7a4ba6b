//! Output that outlives its node: a finished attempt's output is copied to another voter,
//! so `cathedral logs` works after the node that ran it is SIGKILLed and removed.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{cluster, eventually, get, leader_index, submit, until_final};

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

/// The node that ran an attempt deletes its output (retention; here it restarts with
/// `--output-retention-hours 0`, so every output is old, and retention runs as a node
/// starts) only once
/// the replica holder confirms its copy: with the holder frozen the file stays; with the
/// copy made it goes, and the output is still served — from the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executing_node_deletes_only_what_the_holder_confirms() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &["--docker-host", "none"]).await;
    let job = submit(
        &nodes[0],
        pb::JobSpec {
            name: "slow".into(),
            command: vec!["sh".into(), "-c".into(), "sleep 2; echo kept".into()],
            ..Default::default()
        },
    )
    .await;
    let ran_on = eventually(Duration::from_secs(30), "the attempt to start", || async {
        let j = get(&nodes[0], job).await;
        (j.state == pb::JobState::Running as i32).then(|| j.attempts[0].node_id)
    })
    .await;
    let mut ids = Vec::new();
    for n in &nodes {
        ids.push(n.status().await.node_id);
    }
    let holder_id =
        cathedral_server::replicas::replica_holder(&ids, job, 1, ran_on).expect("a holder");
    let x = ids.iter().position(|i| *i == ran_on).unwrap();
    let h = ids.iter().position(|i| *i == holder_id).unwrap();
    let third = (0..3).find(|i| *i != x && *i != h).unwrap();
    nodes[h].freeze();
    let j = until_final(&nodes[third], job).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32);
    let file = nodes[x].dir.join(format!("outputs/{job}-1.log"));
    assert!(file.exists());
    // A restart runs retention at once: the file is old, but unconfirmed.
    nodes[x].stop();
    nodes[x]
        .args
        .extend(["--output-retention-hours".to_string(), "0".to_string()]);
    nodes[x].restart();
    nodes[x].wait_ready();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(file.exists(), "kept while the holder cannot confirm a copy");
    nodes[h].thaw();
    let copy = nodes[h].dir.join(format!("outputs/{job}-1.log"));
    eventually(Duration::from_secs(30), "the copy", || {
        let c = copy.exists();
        async move { c.then_some(()) }
    })
    .await;
    nodes[x].stop();
    nodes[x].restart();
    nodes[x].wait_ready();
    eventually(
        Duration::from_secs(30),
        "retention to delete the confirmed output",
        || {
            let gone = !file.exists();
            async move { gone.then_some(()) }
        },
    )
    .await;
    assert_eq!(nodes[x].cli_ok(&["logs", &job.to_string()]), "kept\n");
    for n in nodes.iter_mut() {
        n.stop();
    }
}
