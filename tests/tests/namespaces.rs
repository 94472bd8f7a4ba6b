//! Namespaces, black-box: one server, two namespaces made with the CLI. Each sees and
//! cancels only its own jobs (ids and idempotency keys are scoped), a namespace at its
//! running quota leaves the other's jobs unaffected, a submission past a pending quota is
//! refused whole with RESOURCE_EXHAUSTED (CLI exit code 6), and only an empty namespace
//! can be deleted.

use std::time::Duration;

use cathedral_server::api::v1 as pb;
use cathedral_tests::{eventually, spec, Server};

fn submit_req(ns: &str, s: pb::JobSpec) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(s),
        namespace: ns.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_namespaces_see_only_their_own_and_quotas_hold_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("n"), &["--slots", "3"]);
    s.wait_ready();
    s.cli_ok(&[
        "namespace",
        "create",
        "ml",
        "--max-running",
        "1",
        "--weight",
        "2",
    ]);
    s.cli_ok(&["namespace", "create", "web"]);
    let listed = s.cli_ok(&["namespace", "list"]);
    for ns in ["default", "ml", "web"] {
        assert!(listed.contains(ns), "{listed}");
    }
    // A bad name is refused with the bound's name.
    let bad = s.cli(&["namespace", "create", "Not_Valid"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAMESPACE_NAME_BYTES_MAX"));

    let mut jobs = s.jobs().await;
    // ml: three jobs that run a while, at most one at a time (its running quota).
    let mut ml = Vec::new();
    for k in 0..3 {
        let mut sp = spec(&format!("ml-{k}"), &["sleep", "2"]);
        sp.idempotency_key = format!("shared-key-{k}");
        let id = jobs
            .submit_job(submit_req("ml", sp))
            .await
            .unwrap()
            .into_inner()
            .job_id;
        ml.push(id);
    }
    // web: the same idempotency key names a job of its own.
    let mut sp = spec("web-0", &["sleep", "1"]);
    sp.idempotency_key = "shared-key-0".into();
    let web = jobs
        .submit_job(submit_req("web", sp))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert!(!ml.contains(&web), "a key is scoped by its namespace");

    // Each sees only its own: another namespace's job is "not found" (CLI exit code 3).
    let get = |ns: &str, id: u64| pb::GetJobRequest {
        job_id: id,
        namespace: ns.into(),
    };
    let j = jobs.get_job(get("ml", ml[0])).await.unwrap().into_inner();
    assert_eq!(j.namespace, "ml");
    let e = jobs.get_job(get("web", ml[0])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = jobs.get_job(get("", ml[0])).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::NotFound,
        "default does not see ml's jobs: {e}"
    );
    let out = s.cli(&["--namespace", "web", "status", &ml[0].to_string()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let listed = s.cli_ok(&["--namespace", "web", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let everything = s.cli_ok(&["--namespace", "*", "list", "--json"]);
    let everything: serde_json::Value = serde_json::from_str(&everything).unwrap();
    assert_eq!(everything.as_array().unwrap().len(), 4, "{everything}");
    // Nor cancel another's.
    let out = s.cli(&["--namespace", "web", "cancel", &ml[2].to_string()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // The web job runs while ml waits on its quota; ml never has two running.
    let mut ml_running_max = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut running = 0;
        for id in &ml {
            let j = jobs.get_job(get("ml", *id)).await.unwrap().into_inner();
            if j.state == pb::JobState::Running as i32 || j.state == pb::JobState::Assigned as i32 {
                running += 1;
            }
        }
        ml_running_max = ml_running_max.max(running);
        let w = jobs.get_job(get("web", web)).await.unwrap().into_inner();
        if w.state == pb::JobState::Succeeded as i32 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "web's job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ml_running_max, 1, "ml ran past its running quota");
    // ml's waiting jobs say why.
    let waiting = s.cli_ok(&["--namespace", "ml", "explain", &ml[2].to_string()]);
    assert!(
        waiting.contains("running_max quota")
            || waiting.contains("succeeded")
            || waiting.contains("running on"),
        "{waiting}"
    );

    // A pending quota: a submission past it is refused whole, RESOURCE_EXHAUSTED.
    s.cli_ok(&[
        "namespace",
        "update",
        "web",
        "--max-pending",
        "1",
        "--max-running",
        "0",
    ]);
    let first = jobs
        .submit_job(submit_req("web", spec("web-1", &["true"])))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let e = jobs
        .submit_job(submit_req("web", spec("web-2", &["true"])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("pending_jobs_max"), "{e}");
    let out = s.cli(&["--namespace", "web", "submit", "--", "true"]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    // Nothing of the refused ones was made: the next id in web's listing is the first's.
    let shown = s.cli_ok(&["namespace", "show", "web", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["usage"]["pending"], serde_json::json!("1"), "{shown}");
    // A namespace that holds jobs cannot be deleted; an empty one can.
    let out = s.cli(&["namespace", "delete", "web"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    s.cli_ok(&["namespace", "create", "scratch"]);
    s.cli_ok(&["namespace", "delete", "scratch"]);
    let _ = first;

    // Per-namespace job limits: allowed sandboxes, a maximum timeout, a default memory.
    s.cli_ok(&[
        "namespace",
        "create",
        "strict",
        "--sandboxes",
        "process",
        "--job-max-timeout",
        "10s",
        "--job-default-memory",
        "64M",
    ]);
    let refused = s.cli(&[
        "--namespace",
        "strict",
        "submit",
        "--sandbox",
        "bubblewrap",
        "--",
        "true",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("allows the sandboxes process"),
        "{refused:?}"
    );
    let refused = s.cli(&[
        "--namespace",
        "strict",
        "submit",
        "--sandbox",
        "process",
        "--timeout",
        "1m",
        "--",
        "true",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let id = s.cli_ok(&[
        "--namespace",
        "strict",
        "submit",
        "--sandbox",
        "process",
        "--timeout",
        "5s",
        "--",
        "true",
    ]);
    let j = jobs
        .get_job(get("strict", id.trim().parse().unwrap()))
        .await
        .unwrap()
        .into_inner();
    let sp = j.spec.unwrap();
    assert_eq!(sp.memory_bytes, 64 << 20, "the namespace's default memory");
    let shown = s.cli_ok(&["namespace", "show", "strict"]);
    assert!(shown.contains("sandboxes         process"), "{shown}");

    // A restart keeps every namespace and every job's namespace.
    s.stop();
    s.restart();
    s.wait_ready();
    let mut jobs = s.jobs().await;
    let j = eventually(
        Duration::from_secs(30),
        "job readable after restart",
        || {
            let mut jobs = jobs.clone();
            let req = get("ml", ml[1]);
            async move { jobs.get_job(req).await.ok().map(|r| r.into_inner()) }
        },
    )
    .await;
    assert_eq!(j.namespace, "ml");
    let e = jobs.get_job(get("web", ml[1])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let listed = s.cli_ok(&["namespace", "list"]);
    assert!(listed.contains("ml") && listed.contains("web"), "{listed}");
}

/// A cron made in a namespace launches its jobs there (not in `default`), and the
/// namespace's job retention collects them while `default`'s jobs stay; the archive
/// answers a collected job in its namespace only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaces_cron_launches_into_it_and_its_retention_collects_what_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("n"), &["--slots", "2"]);
    s.wait_ready();
    s.cli_ok(&["namespace", "create", "ops", "--job-retention", "2s"]);
    let shown = s.cli_ok(&["namespace", "show", "ops"]);
    assert!(shown.contains("2000 ms after a job ends"), "{shown}");
    s.cli_ok(&[
        "--namespace",
        "ops",
        "cron",
        "create",
        "tick",
        "--schedule",
        "* * * * * *",
        "--",
        "true",
    ]);
    // The same name in default is another cron (none there yet).
    let out = s.cli(&["cron", "show", "tick"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let mut jobs = s.jobs().await;
    let list = |ns: &str| pb::ListJobsRequest {
        namespace: ns.into(),
        ..Default::default()
    };
    let launched = eventually(
        Duration::from_secs(60),
        "a fire's job succeeded in ops",
        || {
            let mut jobs = jobs.clone();
            async move {
                let l = jobs.list_jobs(list("ops")).await.ok()?.into_inner();
                l.jobs
                    .iter()
                    .find(|j| j.state == pb::JobState::Succeeded as i32)
                    .map(|j| (j.id, j.namespace.clone()))
            }
        },
    )
    .await;
    assert_eq!(launched.1, "ops");
    s.cli_ok(&["--namespace", "ops", "cron", "pause", "tick"]);
    let listed = s.cli_ok(&["--namespace", "ops", "cron", "list"]);
    assert!(listed.contains("paused"), "{listed}");
    // Default holds none of the cron's jobs; its own job is kept by the cluster's retention.
    let default_jobs = jobs.list_jobs(list("")).await.unwrap().into_inner().jobs;
    assert!(default_jobs.is_empty(), "{default_jobs:?}");
    let plain = jobs
        .submit_job(submit_req("", spec("plain", &["true"])))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let get = |ns: &str, id: u64| pb::GetJobRequest {
        job_id: id,
        namespace: ns.into(),
    };
    // ops keeps its jobs 2 s after they end: the one seen is collected, answered from
    // the archive in ops only.
    let collected = eventually(Duration::from_secs(60), "ops's job collected", || {
        let mut jobs = jobs.clone();
        async move {
            let j = jobs
                .get_job(get("ops", launched.0))
                .await
                .ok()?
                .into_inner();
            j.collected_at_ms.map(|_| j)
        }
    })
    .await;
    assert_eq!(collected.namespace, "ops");
    let e = jobs.get_job(get("", launched.0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let archived = s.cli_ok(&["--namespace", "ops", "list", "--archived", "--json"]);
    assert!(archived.contains(&launched.0.to_string()), "{archived}");
    let archived = s.cli_ok(&["list", "--archived", "--json"]);
    assert!(!archived.contains("\"ops\""), "{archived}");
    let p = jobs.get_job(get("", plain)).await.unwrap().into_inner();
    assert!(p.collected_at_ms.is_none(), "{p:?}");
    // A namespace holding a cron is not deleted.
    let out = s.cli(&["namespace", "delete", "ops"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("crons"),
        "{out:?}"
    );
}
