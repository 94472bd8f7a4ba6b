//! A node started in-process with edges of its own: the clock it is given is the one its
//! commands carry (what a simulation relies on to run nodes on simulated, skewed time);
//! a disk that fails under it stops it, and it restarts from its directory.

use std::sync::Arc;
use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_server::api::v1::job_service_client::JobServiceClient;
use cathedral_server::edges::{Clock, Edges, Skewed, SystemClock};
use cathedral_server::{start_with, Config};

fn config(data: &std::path::Path, grpc: &str, http: &str) -> Config {
    Config::from_args([
        "cathedral-server",
        "--data-dir",
        data.to_str().unwrap(),
        "--bind",
        grpc,
        "--http",
        http,
        "--slots",
        "0",
        "--metrics",
        "false",
    ])
    .unwrap()
}

/// Submits a job named `name` (request id the same), retrying while the node is not ready,
/// for at most `within`.
async fn submit(grpc: &str, name: &str, within: Duration) -> Result<u64, String> {
    let spec = pb::JobSpec {
        name: name.into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let tried = async {
            let mut c = JobServiceClient::connect(format!("http://{grpc}")).await?;
            let r = c
                .submit_job(pb::SubmitJobRequest {
                    spec: Some(spec.clone()),
                    request_id: name.into(),
                    ..Default::default()
                })
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(r.into_inner().job_id)
        }
        .await;
        match tried {
            Ok(id) => return Ok(id),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// The black-box tests' port picker: ports outside the ephemeral range, which no outgoing
// connection can take between the pick and the server's bind.
#[path = "../../tests/src/ports.rs"]
mod ports;
use ports::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_commands_carry_the_clock_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("d");
    let config = Config::from_args([
        "cathedral-server",
        "--data-dir",
        data.to_str().unwrap(),
        "--bind",
        &grpc,
        "--http",
        &http,
        "--slots",
        "0",
        "--metrics",
        "false",
    ])
    .unwrap();
    let hour_ms = 3_600_000;
    let edges = Edges {
        clock: Arc::new(Skewed {
            base: SystemClock,
            offset_ms: hour_ms,
        }),
        ..Edges::system()
    };
    let running = start_with(config, edges).await.unwrap();
    let spec = pb::JobSpec {
        name: "skewed".into(),
        command: vec!["true".into()],
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        let tried = async {
            let mut c = JobServiceClient::connect(format!("http://{grpc}")).await?;
            let r = c
                .submit_job(pb::SubmitJobRequest {
                    spec: Some(spec.clone()),
                    request_id: "skewed-1".into(),
                    ..Default::default()
                })
                .await?;
            Ok::<_, Box<dyn std::error::Error>>(r.into_inner().job_id)
        }
        .await;
        match tried {
            Ok(id) => break id,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("no submit: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut c = JobServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let job = c
        .get_job(pb::GetJobRequest {
            job_id: id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let wall = SystemClock.now_ms();
    // Submitted by the skewed clock: an hour ahead of the wall clock (less the test's own
    // time since the submit).
    let ahead = job.submitted_at_ms as i64 - wall as i64;
    assert!(
        (hour_ms - 60_000..=hour_ms + 1_000).contains(&ahead),
        "submitted {ahead} ms ahead of the wall clock, expected about {hour_ms}"
    );
    running.shutdown().await;
}

/// Fail-stop: a sync of the log that fails stops the node (the engine cannot know what
/// reached the disk), the write it carried is not acknowledged, and a restart on the same
/// directory — having lost every write not synced, as a power loss would — holds every
/// job acknowledged before and takes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fails_a_sync_stops_and_restarts_with_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let running = start_with(config(&data, &grpc, &http), Edges::system())
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        let id = submit(&grpc, &format!("before-{i}"), Duration::from_secs(60))
            .await
            .expect("a healthy node takes jobs");
        acked.push(id);
    }
    let disk = cathedral_storage::disk_faults::attach(&data);
    // A segment's fdatasync: the one that acknowledges the next write (the
    // acknowledgment file's own sync, on a thread of its own, is tried in ClusterSim).
    disk.fail_next_sync_of(".seg", libc::EIO);
    let refused = submit(&grpc, "during", Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "acknowledged a write whose sync failed: {refused:?}"
    );
    assert_eq!(disk.fired(), 1);
    let cause = tokio::time::timeout(Duration::from_secs(30), running.failed())
        .await
        .expect("the node stops once its log failed");
    assert!(
        cause.contains("fdatasync") || cause.contains("Input/output"),
        "{cause}"
    );
    running.shutdown().await;
    let lost = disk
        .lose_unsynced(|n| n.saturating_sub(1) / 2)
        .expect("lose unsynced writes");
    cathedral_storage::disk_faults::detach(&data);
    eprintln!("lost at the crash: {lost:?}");

    let running = start_with(config(&data, &grpc, &http), Edges::system())
        .await
        .expect("a restart recovers the directory");
    let mut c = loop {
        match JobServiceClient::connect(format!("http://{grpc}")).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let after = submit(&grpc, "after", Duration::from_secs(60))
        .await
        .expect("the restarted node takes jobs");
    for id in acked.iter().chain([&after]) {
        let job = c
            .get_job(pb::GetJobRequest {
                job_id: *id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("job {id} acknowledged before the failure is gone: {e}"));
        assert_eq!(job.into_inner().id, *id);
    }
    running.shutdown().await;
}
