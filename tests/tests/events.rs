//! The event stream, black box: `cathedral events --follow` reads a three-node cluster's
//! events while its leader is SIGKILLed and nodes restart, resuming by index at the next
//! node each time; what it printed must be exactly what a node derives from its log
//! afterwards — no gap, no repeat. Writes go in over REST to followers (forwarded to the
//! leader as gRPC writes are).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cathedral_tests::{bin, cluster, eventually, leader_index, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// (index, seq, kind, job) of a JSON event line (the JSON mapping leaves zeros out and
/// writes 64-bit integers as strings).
fn position(v: &Value) -> (u64, u32, String, Option<u64>) {
    let num = |x: &Value| -> Option<u64> {
        x.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| x.as_u64())
    };
    (
        num(&v["index"]).expect("an index"),
        num(&v["seq"]).unwrap_or(0) as u32,
        v["kind"].as_str().expect("a kind").to_string(),
        num(&v["job_id"]),
    )
}

/// Submits `n` jobs running `true` over REST to `s`; returns their ids.
fn submit_rest(s: &Server, n: usize, name: &str) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let v = s.post_json(
                "/v1/jobs",
                &serde_json::json!({"spec": {"name": format!("{name}-{i}"), "command": ["true"]}}),
            );
            v["job_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no job id: {v}"))
                .parse()
                .unwrap()
        })
        .collect()
}

/// The follower CLI and the lines it printed so far.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Follower {
    fn start(servers: &str) -> Follower {
        let mut child = Command::new(bin("cathedral"))
            .args([
                "--server",
                servers,
                "--write-retry",
                "60s",
                "events",
                "--follow",
                "--json",
                "--from",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cathedral events");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                sink.lock().unwrap().push(v);
            }
        });
        Follower { child, lines }
    }

    /// Waits until every job in `jobs` has a job_finished event in the stream.
    async fn until_finished(&self, jobs: &[u64]) {
        eventually(WAIT, "the stream to show the jobs finished", || async {
            let lines = self.lines.lock().unwrap();
            let done = jobs.iter().all(|j| {
                lines.iter().any(|v| {
                    let (_, _, kind, job) = position(v);
                    kind == "job_finished" && job == Some(*j)
                })
            });
            done.then_some(())
        })
        .await
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_resumes_across_a_leader_change_and_restarts_with_no_gap_and_no_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &[]).await;
    let l = leader_index(&nodes).await;
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    // The follower reads the leader first, then the others in turn.
    let servers = format!("{},{},{}", nodes[l].grpc, nodes[a].grpc, nodes[b].grpc);
    let follower = Follower::start(&servers);

    let first = submit_rest(&nodes[a], 4, "before");
    follower.until_finished(&first).await;

    // The leader dies: a new one is elected, the stream moves to the next node.
    nodes[l].kill9();
    let l2 = leader_index(&nodes).await;
    assert_ne!(l2, l);
    let second = submit_rest(&nodes[l2], 4, "after-kill");
    follower.until_finished(&second).await;

    // The old leader comes back; the node the stream is on now stops gracefully and
    // restarts.
    nodes[l].restart();
    nodes[l].wait_ready();
    nodes[a].stop();
    let third = submit_rest(&nodes[b], 4, "after-stop");
    follower.until_finished(&third).await;
    nodes[a].restart();
    nodes[a].wait_ready();
    let fourth = submit_rest(&nodes[l], 2, "after-restart");
    follower.until_finished(&fourth).await;

    // What a node derives from its log, from the start, now.
    let all_jobs: Vec<u64> = [first, second, third, fourth].concat();
    let reference: Vec<Value> = eventually(
        WAIT,
        "the restarted node to have applied everything",
        || async {
            let out = Command::new(bin("cathedral"))
                .args([
                    "--server",
                    &nodes[a].grpc,
                    "events",
                    "--json",
                    "--from",
                    "0",
                ])
                .output()
                .expect("run cathedral events");
            if !out.status.success() {
                return None;
            }
            let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let finished = all_jobs.iter().all(|j| {
                lines.iter().any(|v| {
                    let (_, _, kind, job) = position(v);
                    kind == "job_finished" && job == Some(*j)
                })
            });
            finished.then_some(lines)
        },
    )
    .await;

    let followed: Vec<Value> = follower.lines.lock().unwrap().clone();
    let all: Vec<_> = followed.iter().map(position).collect();
    for w in all.windows(2) {
        assert!(
            (w[0].0, w[0].1) < (w[1].0, w[1].1),
            "out of order or repeated: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // Compare where both hold events (a node that got its start by snapshot holds less).
    let start = (reference[0].clone(), position(&reference[0]));
    let first_submit = all
        .iter()
        .find(|g| g.2 == "job_submitted")
        .map(|g| (g.0, g.1))
        .expect("a job_submitted event");
    assert!(
        (start.1 .0, start.1 .1) <= first_submit,
        "the reference starts after the jobs: {:?}",
        start.1
    );
    let followed: Vec<Value> = followed
        .into_iter()
        .filter(|v| {
            let p = position(v);
            (p.0, p.1) >= (start.1 .0, start.1 .1)
        })
        .collect();
    let got: Vec<_> = followed.iter().map(position).collect();
    let want: Vec<_> = reference.iter().map(position).collect();
    let n = got.len().min(want.len());
    assert!(
        n > 30,
        "{} events followed, {} in the log",
        got.len(),
        want.len()
    );
    assert_eq!(
        &got[..n],
        &want[..n],
        "the followed stream differs from the log's events"
    );
    for kind in [
        "leader_changed",
        "node_joined",
        "job_submitted",
        "job_assigned",
        "job_started",
        "job_finished",
    ] {
        assert!(got.iter().any(|g| g.2 == kind), "no {kind} event followed");
    }
    // Two leaders at least: the first, and the one after the SIGKILL.
    assert!(
        got.iter().filter(|g| g.2 == "leader_changed").count() >= 2,
        "{got:?}"
    );
    // The whole stream is equal to the log's as far as both go, and every value of an
    // event (not only its position) agrees.
    assert_eq!(followed[..n].to_vec(), reference[..n].to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_position_no_longer_held_is_refused_with_the_earliest_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    submit_rest(&s, 2, "early");
    // A snapshot, then a restart: the node holds only what its log has past the snapshot.
    s.cli_ok(&["snapshot", "trigger"]);
    s.stop();
    s.restart();
    s.wait_ready();
    submit_rest(&s, 1, "late");
    let out = s.cli(&["events", "--from", "1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not held") && err.contains("earliest held is index"),
        "{err}"
    );
    // From the earliest held: the late job is there, the early ones are not.
    let text = s.cli_ok(&["events", "--from", "0", "--kind", "job_submitted"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("job 3"), "{text}");
}
