//! Crons on real servers: every scheduled time is decided exactly once — across a leader
//! SIGKILLed mid-schedule, and across a server down for longer than the catch-up window
//! (the fires in the window run, older ones are one skipped range) — and the overlap
//! policies hold: `skip` never runs two at once, `queue` runs the held fires one after
//! another, `allow` overlaps. (DST rules are tested with a fixed clock in
//! `consensus/src/cron/`.)

use std::collections::BTreeSet;
use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_server::api::v1::cron_service_client::CronServiceClient;
use cathedral_tests::{cluster, eventually, get, leader_index, Server};
use tonic::transport::Channel;

async fn crons(s: &Server) -> CronServiceClient<Channel> {
    CronServiceClient::new(s.channel().await)
}

fn every_second(
    name: &str,
    overlap: pb::CronOverlap,
    catch_up_ms: u64,
    argv: &[&str],
) -> pb::CronSpec {
    pb::CronSpec {
        name: name.into(),
        schedule: "* * * * * *".into(),
        tz: "UTC".into(),
        overlap: overlap as i32,
        catch_up_ms: Some(catch_up_ms),
        target: Some(pb::cron_spec::Target::Job(pb::JobSpec {
            name: name.into(),
            command: argv.iter().map(|s| s.to_string()).collect(),
            sandbox: pb::Sandbox::Process as i32,
            ..Default::default()
        })),
    }
}

async fn create(s: &Server, spec: pb::CronSpec) {
    crons(s)
        .await
        .create_cron(pb::CreateCronRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .expect("create the cron");
}

async fn show(s: &Server, name: &str) -> pb::Cron {
    crons(s)
        .await
        .get_cron(pb::GetCronRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("get the cron")
        .into_inner()
}

async fn pause(s: &Server, name: &str) {
    crons(s)
        .await
        .set_cron_paused(pb::SetCronPausedRequest {
            name: name.into(),
            paused: true,
            ..Default::default()
        })
        .await
        .expect("pause");
}

/// The scheduled times a history covers, one per fire (a skipped range stands for every
/// second in it), checked to be strictly increasing: no time decided twice.
fn covered(c: &pb::Cron) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for f in &c.history {
        let times: Vec<u64> = if f.count > 1 {
            (0..f.count).map(|i| f.scheduled_ms + i * 1000).collect()
        } else {
            vec![f.scheduled_ms]
        };
        assert_eq!(*times.last().unwrap(), f.through_ms, "{f:?}");
        for t in times {
            assert!(
                out.last().is_none_or(|l| *l < t),
                "{t} decided twice or out of order"
            );
            out.push(t);
        }
    }
    out
}

/// Every second from the first to the last is there: nothing lost either.
fn contiguous(times: &[u64]) {
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "a gap between {} and {}", w[0], w[1]);
    }
}

/// The jobs the cron launched, each checked to carry its fire's scheduled time.
async fn launched_jobs(s: &Server, c: &pb::Cron) -> Vec<u64> {
    let mut ids = Vec::new();
    for f in c.history.iter().filter(|f| f.outcome == "launched") {
        let j = get(s, f.job_id).await;
        let env = &j.spec.as_ref().unwrap().env;
        assert_eq!(env["CATHEDRAL_SCHEDULED_MS"], f.scheduled_ms.to_string());
        assert_eq!(env["CATHEDRAL_CRON"], c.spec.as_ref().unwrap().name);
        ids.push(f.job_id);
    }
    ids
}

async fn list_cron_jobs(s: &Server, name: &str) -> usize {
    let r = s
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            name_prefix: name.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.jobs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_fires_each_time_once_across_a_leader_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &["--docker-host", "none"]).await;
    let l = leader_index(&nodes).await;
    let other = (l + 1) % 3;
    create(
        &nodes[other],
        every_second("tick", pb::CronOverlap::Allow, 60_000, &["true"]),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    nodes[l].kill9();
    let l2 = leader_index(&nodes).await;
    assert_ne!(l, l2);
    // Fires go on under the new leader.
    let before = show(&nodes[l2], "tick").await.launched;
    eventually(
        Duration::from_secs(30),
        "fires under the new leader",
        || async { (show(&nodes[l2], "tick").await.launched >= before + 3).then_some(()) },
    )
    .await;
    pause(&nodes[l2], "tick").await;
    let c = show(&nodes[l2], "tick").await;
    let times = covered(&c);
    contiguous(&times);
    assert!(
        c.history.iter().all(|f| f.outcome == "launched"),
        "{:?}",
        c.history
    );
    assert_eq!(
        c.skipped, 0,
        "the election took far less than the catch-up window"
    );
    let ids = launched_jobs(&nodes[l2], &c).await;
    assert_eq!(ids.len() as u64, c.launched);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    assert_eq!(
        list_cron_jobs(&nodes[l2], "tick").await,
        ids.len(),
        "no job but the fires'"
    );
    for n in nodes.iter_mut() {
        n.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_missed_beyond_the_catch_up_window_are_one_skipped_range() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("n"), &["--docker-host", "none"]);
    s.wait_ready();
    let catch_up = 3_000;
    create(
        &s,
        every_second("nightly", pb::CronOverlap::Allow, catch_up, &["true"]),
    )
    .await;
    eventually(Duration::from_secs(30), "two fires", || async {
        (show(&s, "nightly").await.launched >= 2).then_some(())
    })
    .await;
    s.kill9();
    tokio::time::sleep(Duration::from_secs(9)).await;
    s.restart();
    s.wait_ready();
    eventually(
        Duration::from_secs(30),
        "the late range and fires after it",
        || async {
            let c = show(&s, "nightly").await;
            let late = c.history.iter().position(|f| f.reason == "late")?;
            (c.history.len() > late + 2).then_some(())
        },
    )
    .await;
    pause(&s, "nightly").await;
    let c = show(&s, "nightly").await;
    let times = covered(&c);
    contiguous(&times);
    let late: Vec<&pb::CronFire> = c
        .history
        .iter()
        .filter(|f| f.outcome == "skipped")
        .collect();
    assert_eq!(late.len(), 1, "one range: {:?}", c.history);
    let range = late[0];
    assert_eq!(range.reason, "late");
    assert!(range.count >= 4, "9 s down, 3 s window: {range:?}");
    assert_eq!(c.skipped, range.count);
    assert!(
        range.decided_at_ms - range.through_ms > catch_up,
        "every skipped fire was older than the window: {range:?}"
    );
    for f in c.history.iter().filter(|f| f.outcome == "launched") {
        assert!(
            f.decided_at_ms - f.scheduled_ms <= catch_up,
            "a fire within the window runs: {f:?}"
        );
    }
    // Exact counts: every second from the first fire to the last is one job or one
    // skipped fire, and the jobs are exactly the launched fires.
    assert_eq!(c.launched + c.skipped, times.len() as u64);
    let ids = launched_jobs(&s, &c).await;
    assert_eq!(ids.len() as u64, c.launched);
    assert_eq!(list_cron_jobs(&s, "nightly").await, ids.len());
    s.stop();
}

/// (start, end) of the job's one attempt.
async fn span(s: &Server, id: u64) -> Option<(u64, u64)> {
    let j = get(s, id).await;
    let a = j.attempts.first()?;
    Some((a.started_at_ms?, a.finished_at_ms?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_skip_queue_and_allow() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &tmp.path().join("n"),
        &["--docker-host", "none", "--slots", "8"],
    );
    s.wait_ready();
    // Each run takes 2.5 s; fires come every second.
    let slow = ["sleep", "2.5"];
    create(
        &s,
        every_second("skip", pb::CronOverlap::Skip, 60_000, &slow),
    )
    .await;
    create(
        &s,
        every_second("queue", pb::CronOverlap::Queue, 60_000, &slow),
    )
    .await;
    create(
        &s,
        every_second("allow", pb::CronOverlap::Allow, 60_000, &slow),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    for name in ["skip", "queue", "allow"] {
        pause(&s, name).await;
    }
    // Let what is running (and queued) finish.
    eventually(Duration::from_secs(60), "the queue to drain", || async {
        let c = show(&s, "queue").await;
        c.queued_ms.is_empty().then_some(())
    })
    .await;
    let spans = |name: &'static str| {
        let s = &s;
        async move {
            let c = show(s, name).await;
            let mut v = Vec::new();
            for id in launched_jobs(s, &c).await {
                let sp =
                    eventually(Duration::from_secs(60), "the run to end", || span(s, id)).await;
                v.push(sp);
            }
            (c, v)
        }
    };
    let disjoint = |v: &[(u64, u64)]| v.windows(2).all(|w| w[0].1 <= w[1].0);

    let (c, v) = spans("skip").await;
    assert!(
        c.history.iter().any(|f| f.reason == "overlap"),
        "{:?}",
        c.history
    );
    assert!(disjoint(&v), "skip never runs two at once: {v:?}");
    covered(&c);

    let (c, v) = spans("queue").await;
    assert_eq!(c.skipped, 0, "nothing skipped: {:?}", c.history);
    assert!(c.history.iter().any(|f| f.outcome == "queued"));
    assert!(disjoint(&v), "queued fires run one after another: {v:?}");
    // Every queued fire ran later, once.
    let queued: Vec<u64> = c
        .history
        .iter()
        .filter(|f| f.outcome == "queued")
        .map(|f| f.scheduled_ms)
        .collect();
    let ran: Vec<u64> = c
        .history
        .iter()
        .filter(|f| f.outcome == "launched")
        .map(|f| f.scheduled_ms)
        .collect();
    for q in &queued {
        assert_eq!(
            ran.iter().filter(|r| *r == q).count(),
            1,
            "queued {q} ran once"
        );
    }

    let (c, v) = spans("allow").await;
    assert_eq!(c.skipped, 0);
    assert!(!disjoint(&v), "allow overlaps runs: {v:?}");
    s.stop();
}
