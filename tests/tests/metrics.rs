//! `/metrics`, black box: the series a node exposes after real work, in a format
//! `promtool check metrics` accepts, and a real Prometheus scraping a three-node cluster
//! and answering queries for job, Raft and fdatasync series. Prometheus and promtool come
//! from Debian's `prometheus` package (scripts/test.sh installs it); without them those
//! parts say so and pass.

use std::process::{Command, Stdio};
use std::time::Duration;

use cathedral_tests::{eventually, free_port, get, spec, submit, until_final, Server};

const WAIT: Duration = Duration::from_secs(60);

/// The value of the series `name` (exact, labels included) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_exposes_its_work_in_prometheus_format() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let id = submit(&s, spec("measured", &["true"])).await;
    until_final(&s, id).await;
    let _ = get(&s, id).await;
    let mut slow = spec("too slow", &["sleep", "30"]);
    slow.timeout_ms = Some(300);
    let slow = submit(&s, slow).await;
    until_final(&s, slow).await;
    s.cli(&["status", "987654"]);
    s.cli_ok(&["snapshot", "trigger"]);
    let (code, text) = s.http_get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "{text}");
    // Counted where they happen: the events as applied, the scheduler's passes, the
    // executor's starts and kills, snapshots written.
    for (series, want) in [
        ("cathedral_events_total{kind=\"job_finished\"}", 2.0),
        ("cathedral_events_total{kind=\"job_started\"}", 2.0),
        ("cathedral_job_queue_wait_seconds_count", 2.0),
        ("cathedral_attempt_run_seconds_count", 2.0),
        ("cathedral_executor_kills_total{reason=\"timeout\"}", 1.0),
        ("cathedral_attempts_total{outcome=\"timed_out\"}", 1.0),
        ("cathedral_snapshot_writes_total", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
    assert!(
        value(&text, "cathedral_snapshot_written_bytes_total").unwrap() > 0.0,
        "{text}"
    );
    assert!(
        value(&text, "cathedral_storage_segments").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cathedral_scheduler_pass_duration_seconds_count").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("cathedral_executor_attempts_started_total{sandbox=")),
        "{text}"
    );
    assert!(
        value(
            &text,
            "cathedral_scheduler_unplaceable_jobs{reason=\"no_free_slot\"}"
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "cathedral_jobs{state=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    // By namespace: the job is `default`'s, which has no quota.
    assert_eq!(
        value(
            &text,
            "cathedral_namespace_jobs{namespace=\"default\",state=\"succeeded\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cathedral_namespace_quota{namespace=\"default\",resource=\"running\"}"
        ),
        Some(-1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "cathedral_namespace_queue_wait_seconds_count{namespace=\"default\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(value(&text, "cathedral_raft_leader"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "cathedral_attempts_total{outcome=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "cathedral_raft_term").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cathedral_raft_applied_index").unwrap() >= 4.0,
        "{text}"
    );
    assert!(
        value(&text, "cathedral_storage_fdatasyncs_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "cathedral_storage_fdatasync_duration_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cathedral_api_requests_total{method=\"JobService/SubmitJob\",code=\"OK\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cathedral_api_requests_total{method=\"JobService/GetJob\",code=\"NOT_FOUND\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "cathedral_raft_proposals_total{outcome=\"committed\"}"
        )
        .unwrap()
            >= 3.0
    );
    if !have("promtool") {
        eprintln!("SKIPPED promtool check metrics: promtool is not installed (scripts/test.sh installs Debian's prometheus)");
        return;
    }
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prometheus's HTTP API: the value of `query`'s single series, summed over nodes.
fn prom_query(port: u16, query: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-G",
            &format!("http://127.0.0.1:{port}/api/v1/query"),
            "--data-urlencode",
        ])
        .arg(format!("query={query}"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let result = v["data"]["result"].as_array()?;
    let first = result.first()?;
    first["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_cluster() {
    if !have("prometheus") || !have("curl") {
        eprintln!("SKIPPED: prometheus or curl is not installed (scripts/test.sh installs Debian's prometheus)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cathedral_tests::cluster(tmp.path(), 3, &[]).await;
    let targets: Vec<String> = nodes.iter().map(|n| format!("'{}'", n.http)).collect();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cathedral\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ids = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        ids.push(submit(n, spec(&format!("scraped-{i}"), &["true"])).await);
    }
    for id in &ids {
        until_final(&nodes[0], *id).await;
    }
    eventually(WAIT, "Prometheus to see every node up", || async {
        (prom_query(port, "sum(up{job=\"cathedral\"})") == Some(3.0)).then_some(())
    })
    .await;
    eventually(WAIT, "three succeeded jobs on every node", || async {
        (prom_query(port, "min(cathedral_jobs{state=\"succeeded\"})") == Some(3.0)).then_some(())
    })
    .await;
    eventually(WAIT, "one leader", || async {
        (prom_query(port, "sum(cathedral_raft_leader)") == Some(1.0)).then_some(())
    })
    .await;
    eventually(WAIT, "fdatasyncs on every node", || async {
        prom_query(port, "min(cathedral_storage_fdatasyncs_total)")
            .filter(|v| *v >= 1.0)
            .map(|_| ())
    })
    .await;
    let p99 = prom_query(
        port,
        "histogram_quantile(0.99, sum by (le) (cathedral_storage_fdatasync_duration_seconds_bucket))",
    )
    .expect("an fdatasync latency quantile");
    assert!(p99 > 0.0 && p99 <= 10.0, "fdatasync p99 {p99} s");
    let term = prom_query(port, "max(cathedral_raft_term)").unwrap();
    assert!(term >= 1.0);
    // The leader replicates to two peers; every node sees the others' suspicion.
    eventually(WAIT, "AppendEntries counted on the leader", || async {
        prom_query(
            port,
            "sum(cathedral_raft_append_entries_sent_total{outcome=\"ok\"})",
        )
        .filter(|v| *v >= 2.0)
        .map(|_| ())
    })
    .await;
    eventually(WAIT, "phi of the peers", || async {
        prom_query(port, "count(cathedral_gossip_phi)")
            .filter(|v| *v >= 6.0)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_metrics_off_counts_nothing_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &["--metrics", "false"]);
    s.wait_ready();
    let id = submit(&s, spec("uncounted", &["true"])).await;
    until_final(&s, id).await;
    let (code, text) = s.http_get("/metrics").expect("GET /metrics");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("--metrics false"), "{text}");
}
