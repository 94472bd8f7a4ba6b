//! A node started in-process with edges of its own: the clock it is given is the one its
//! commands carry (what a simulation relies on to run nodes on simulated, skewed time).

use std::sync::Arc;
use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_server::api::v1::job_service_client::JobServiceClient;
use cathedral_server::edges::{Clock, Edges, Skewed, SystemClock};
use cathedral_server::{start_with, Config};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
        .get_job(pb::GetJobRequest { job_id: id })
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
