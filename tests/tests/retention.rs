//! Retention: finished jobs are collected by entries the leader writes (`Collect`), every
//! node applies them alike (equal state hashes) and archives what they removed, once, in
//! its data directory; a collected job is still answered — from the archive, marked
//! collected — by the API and the CLI on every node, across a leader's SIGKILL and the
//! killed node's restart. `cathedral-log archive` reads the archive offline.

use std::collections::BTreeSet;
use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{
    cluster, eventually, leader_index, log_tool, spec, submit, until_final, Server,
};

const WAIT: Duration = Duration::from_secs(60);

/// The job ids a node's archive holds, every record counted (a duplicate shows twice).
fn archived(s: &Server) -> Vec<u64> {
    let (code, out, err) = log_tool(&s.dir, &["archive", "ls", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut ids = Vec::new();
    for f in v["files"].as_array().unwrap() {
        assert!(f["problem"].is_null(), "{f}");
        for id in f["job_ids"].as_array().unwrap() {
            ids.push(id.as_str().unwrap().parse().unwrap());
        }
    }
    ids
}

async fn collected(s: &Server, id: u64) -> Option<u64> {
    s.jobs()
        .await
        .get_job(pb::GetJobRequest {
            job_id: id,
            ..Default::default()
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().collected_at_ms)
}

/// Waits until every job of `ids` is answered as collected by every node of `nodes`.
async fn all_collected<'a>(nodes: impl IntoIterator<Item = &'a Server>, ids: &[u64]) {
    for s in nodes {
        for id in ids {
            eventually(
                WAIT,
                &format!("job {id} collected on {}", s.grpc),
                || async { collected(s, *id).await },
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_are_collected_alike_everywhere_and_answered_from_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), 3, &["--job-retention", "2s"]).await;
    let l = leader_index(&nodes).await;
    let mut first = Vec::new();
    for i in 0..6 {
        first.push(
            submit(
                &nodes[(l + 1) % 3],
                spec(&format!("r{i}"), &["echo", "kept"]),
            )
            .await,
        );
    }
    for id in &first {
        until_final(&nodes[l], *id).await;
    }
    // Collected on every node, and still answered there, from its archive.
    all_collected(&nodes, &first).await;
    let text = nodes[(l + 2) % 3].cli_ok(&["status", &first[0].to_string()]);
    assert!(text.contains("collected:"), "{text}");
    // Its output outlives it (output retention is apart).
    assert_eq!(
        nodes[(l + 2) % 3].cli_ok(&["logs", &first[0].to_string()]),
        "kept\n"
    );
    let (code, body) = nodes[l]
        .http_get(&format!("/v1/jobs/{}", first[0]))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let rest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        rest["collected_at_ms"].is_string(),
        "REST marks it collected: {rest}"
    );
    assert_eq!(rest["state"], "JOB_STATE_SUCCEEDED", "{rest}");

    // The leader dies between collections; more jobs finish and are collected by the next.
    nodes[l].kill9();
    let l2 = leader_index(&nodes).await;
    let mut second = Vec::new();
    for i in 0..4 {
        second.push(submit(&nodes[l2], spec(&format!("s{i}"), &["true"])).await);
    }
    for id in &second {
        until_final(&nodes[l2], *id).await;
    }
    all_collected([&nodes[l2]], &second).await;
    // The killed node comes back, catches up, and archives what it missed — once.
    nodes[l].restart();
    nodes[l].wait_ready();
    let want: BTreeSet<u64> = first.iter().chain(&second).copied().collect();
    all_collected(&nodes, &want.iter().copied().collect::<Vec<_>>()).await;
    let hashes = eventually(WAIT, "equal state hashes", || async {
        let mut seen = BTreeSet::new();
        let mut applied = BTreeSet::new();
        for s in &nodes {
            let st = s.status().await;
            seen.insert(st.state_hash);
            applied.insert(st.applied_index);
        }
        (seen.len() == 1 && applied.len() == 1).then_some(seen)
    })
    .await;
    assert_eq!(hashes.len(), 1);
    for s in &nodes {
        let ids = archived(s);
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            unique, want,
            "{}: the archive holds every collected job",
            s.grpc
        );
        assert_eq!(ids.len(), unique.len(), "{}: no job archived twice", s.grpc);
    }
    // A restart replays entries past its snapshot: nothing archived twice.
    let (code, out, _) = log_tool(&nodes[l].dir, &["archive", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    // Listing the archive, from the CLI (a page at a time) and over REST.
    let listed: serde_json::Value =
        serde_json::from_str(&nodes[l2].cli_ok(&["list", "--archived", "--json"])).unwrap();
    let ids: BTreeSet<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            assert!(j["collected_at_ms"].is_number(), "{j}");
            j["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(ids, want);
    let (code, body) = nodes[l2]
        .http_get("/v1/jobs?archived=true&page_size=3")
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3, "{page}");
    assert!(
        !page["next_page_token"].as_str().unwrap().is_empty(),
        "{page}"
    );
}

/// A job may ask for a retention of its own (`--retain`, `retain:` in a workflow file):
/// with the cluster keeping everything (`--job-retention 0`), only such jobs are collected,
/// each by its own; `--retain 0` keeps a job; past its bound a retention is refused whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_a_retention_of_its_own_is_collected_by_it() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(tmp.path(), 1, &["--job-retention", "0"]).await;
    let s = &nodes[0];
    let id = |out: String| -> u64 { out.trim().parse().expect("a job id") };
    let short = id(s.cli_ok(&["submit", "--retain", "2s", "--", "true"]));
    let kept = id(s.cli_ok(&["submit", "--retain", "0", "--", "true"]));
    let plain = id(s.cli_ok(&["submit", "--", "true"]));
    let flow = tmp.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "jobs:\n  - key: a\n    command: [\"true\"]\n    retain: 1s\n  - key: b\n    command: [\"true\"]\n    after: [a]\n    retain: 3s\n",
    )
    .unwrap();
    let run: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["workflow", "submit", "--json", flow.to_str().unwrap()]))
            .unwrap();
    let steps: Vec<u64> = run["job_ids"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|v| v.as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(steps.len(), 2, "{run}");
    for j in [short, kept, plain].iter().chain(&steps) {
        until_final(s, *j).await;
    }
    // Shown with the job, by the CLI and REST, while it is held.
    let text = s.cli_ok(&["status", &kept.to_string()]);
    assert!(text.contains("retain:   kept"), "{text}");
    let (code, body) = s.http_get(&format!("/v1/jobs/{short}")).unwrap();
    assert_eq!(code, 200, "{body}");
    let rest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["spec"]["retain_ms"], "2000", "{rest}");
    all_collected([s], &[short]).await;
    all_collected([s], &steps).await;
    // The others stay: the cluster keeps everything, and `kept` asked to be kept.
    for j in [kept, plain] {
        assert_eq!(collected(s, j).await, None, "job {j} is held");
    }
    let archived: BTreeSet<u64> = archived(s).into_iter().collect();
    let want: BTreeSet<u64> = std::iter::once(short).chain(steps).collect();
    assert_eq!(archived, want);
    let text = s.cli_ok(&["status", &short.to_string()]);
    assert!(text.contains("retain:   2s after it ends"), "{text}");
    assert!(text.contains("collected:"), "{text}");
    // Past its bound: refused, nothing accepted (the next job takes the next id).
    let out = s.cli(&["submit", "--retain", "4000d", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("JOB_RETAIN_MS_MAX"), "{err}");
    let last = want.iter().chain([&kept, &plain]).max().unwrap();
    assert_eq!(id(s.cli_ok(&["submit", "--", "true"])), last + 1);
}
