//! The REST API, black box: every route with good and bad input through curl, the
//! error shape (gRPC code name and HTTP status), tokens once access control is on, and
//! the OpenAPI document checked by a validator that is not ours (Python's
//! openapi-spec-validator, set up by scripts/test.sh; skipped with a message without it).

use std::process::Command;
use std::time::Duration;

use cathedral_tests::{eventually, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// One request with curl: (HTTP status, body).
fn curl(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        "--max-time",
        "30",
    ]);
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    if let Some(t) = token {
        c.args(["-H", &format!("authorization: Bearer {t}")]);
    }
    c.arg(format!("http://{}{path}", s.http));
    let out = c.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    (code.trim().parse().expect("a status"), body.to_string())
}

/// A JSON answer with status `want`.
fn call(s: &Server, method: &str, path: &str, body: Option<&str>, want: u16) -> Value {
    let (code, text) = curl(s, method, path, body, None);
    assert_eq!(code, want, "{method} {path}: {text}");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
}

/// A refusal: its gRPC code name and HTTP status, in the body as well as the status line.
fn refused(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    code: &str,
    status: u16,
) -> String {
    let (got, text) = curl(s, method, path, body, token);
    assert_eq!(got, status, "{method} {path}: {text}");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    assert_eq!(v["error"]["code"], code, "{method} {path}: {text}");
    assert_eq!(v["error"]["status"], status, "{method} {path}: {text}");
    v["error"]["message"].as_str().unwrap().to_string()
}

fn job_state(s: &Server, id: &str) -> String {
    call(s, "GET", &format!("/v1/jobs/{id}"), None, 200)["state"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn until_state(s: &Server, id: &str, state: &str) {
    eventually(WAIT, &format!("job {id} {state}"), || async {
        (job_state(s, id) == state).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_json_with_the_grpc_apis_bounds_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();

    // Every route of the method table is served (an unknown id or name is fine; an
    // unknown route or verb is not).
    for (m, r) in cathedral_server::methods::rest_routes() {
        let mut path = r.path.replace("{id}", "999999").replace("{name}", "nope");
        if r.path == "/v1/events" {
            path += "?stop_at_applied=true";
        }
        let verb = r.verb.to_uppercase();
        let body = (verb == "POST").then_some("{}");
        let (code, text) = curl(&s, &verb, &path, body, None);
        assert!(
            code != 405 && !(code == 404 && text.contains("no such route")),
            "{verb} {path} ({}): {code} {text}",
            m.path
        );
    }

    // Submit, get, output.
    let r = call(
        &s,
        "POST",
        "/v1/jobs",
        Some(r#"{"spec":{"name":"hello","command":["echo","hello"]}}"#),
        200,
    );
    let hello = r["job_id"]
        .as_str()
        .expect("ids are strings in the JSON mapping")
        .to_string();
    until_state(&s, &hello, "JOB_STATE_SUCCEEDED").await;
    let job = call(&s, "GET", &format!("/v1/jobs/{hello}"), None, 200);
    assert_eq!(job["spec"]["name"], "hello");
    assert_eq!(job["attempts"][0]["number"], 1);
    let (code, out) = curl(&s, "GET", &format!("/v1/jobs/{hello}/output"), None, None);
    assert_eq!((code, out.as_str()), (200, "hello\n"));
    let (code, out) = curl(
        &s,
        "GET",
        &format!("/v1/jobs/{hello}/output?attempt=1&follow=true"),
        None,
        None,
    );
    assert_eq!((code, out.as_str()), (200, "hello\n"));
    refused(
        &s,
        "GET",
        &format!("/v1/jobs/{hello}/output?attempt=x"),
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    refused(
        &s,
        "GET",
        &format!("/v1/jobs/{hello}/output?attempt=9"),
        None,
        None,
        "FAILED_PRECONDITION",
        400,
    );

    // Bad input: not JSON, an unknown field, a bound of the gRPC API, a body past
    // REQUEST_BYTES_MAX, a bad id, an unknown job, an unknown route.
    let m = refused(
        &s,
        "POST",
        "/v1/jobs",
        Some("{not json"),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    assert!(m.contains("body"), "{m}");
    let m = refused(
        &s,
        "POST",
        "/v1/jobs",
        Some(r#"{"spec":{"nam":"x"}}"#),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    assert!(m.contains("nam"), "{m}");
    let m = refused(
        &s,
        "POST",
        "/v1/jobs",
        Some(r#"{"spec":{"name":"empty","command":[]}}"#),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    assert!(m.contains("command"), "{m}");
    let huge = format!(
        r#"{{"spec":{{"name":"{}","command":["true"]}}}}"#,
        "x".repeat(5 << 20)
    );
    let path = tmp.path().join("huge.json");
    std::fs::write(&path, huge).unwrap();
    let m = refused(
        &s,
        "POST",
        "/v1/jobs",
        Some(&format!("@{}", path.display())),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    assert!(m.contains("REQUEST_BYTES_MAX"), "{m}");
    refused(
        &s,
        "GET",
        "/v1/jobs/abc",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    refused(&s, "GET", "/v1/jobs/987654", None, None, "NOT_FOUND", 404);
    refused(&s, "GET", "/v1/nothing/here", None, None, "NOT_FOUND", 404);

    // List: filters and paging, bounds.
    for i in 0..3 {
        call(
            &s,
            "POST",
            "/v1/jobs",
            Some(&format!(
                r#"{{"spec":{{"name":"page-{i}","command":["true"]}}}}"#
            )),
            200,
        );
    }
    let first = call(
        &s,
        "GET",
        "/v1/jobs?name_prefix=page-&page_size=2",
        None,
        200,
    );
    assert_eq!(first["jobs"].as_array().unwrap().len(), 2);
    let token = first["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = call(
        &s,
        "GET",
        &format!("/v1/jobs?name_prefix=page-&page_size=2&page_token={token}"),
        None,
        200,
    );
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(second["jobs"][0]["spec"]["name"], "page-2");
    let done = call(
        &s,
        "GET",
        "/v1/jobs?state=JOB_STATE_SUCCEEDED&name_prefix=hello",
        None,
        200,
    );
    assert_eq!(done["jobs"].as_array().unwrap().len(), 1);
    let m = refused(
        &s,
        "GET",
        "/v1/jobs?page_size=5000",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    assert!(m.contains("1000"), "{m}");
    refused(
        &s,
        "GET",
        "/v1/jobs?colour=red",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    refused(
        &s,
        "GET",
        "/v1/jobs?state=SLEEPY",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );

    // Cancel.
    let r = call(
        &s,
        "POST",
        "/v1/jobs",
        Some(r#"{"spec":{"name":"sleeper","command":["sleep","60"]}}"#),
        200,
    );
    let sleeper = r["job_id"].as_str().unwrap().to_string();
    refused(
        &s,
        "POST",
        &format!("/v1/jobs/{sleeper}/cancel"),
        Some(r#"{"job_id":"1"}"#),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    let r = call(
        &s,
        "POST",
        &format!("/v1/jobs/{sleeper}/cancel"),
        Some(r#"{"reason":"enough"}"#),
        200,
    );
    assert_eq!(r["job"]["state"], "JOB_STATE_CANCELLED", "{r}");

    // Workflows.
    let wf = r#"{"name":"wf","jobs":[{"key":"a","spec":{"name":"a","command":["true"]}},{"key":"b","spec":{"name":"b","command":["true"]},"after":["a"]}]}"#;
    let r = call(&s, "POST", "/v1/workflows", Some(wf), 200);
    let b = r["job_ids"]["b"].as_str().unwrap().to_string();
    until_state(&s, &b, "JOB_STATE_SUCCEEDED").await;
    let wf_id = r["workflow_id"].as_str().unwrap();
    let of_wf = call(
        &s,
        "GET",
        &format!("/v1/jobs?workflow_id={wf_id}"),
        None,
        200,
    );
    let names: Vec<&str> = of_wf["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{of_wf}");
    // Workflows listed newest first, by name and with their jobs' states counted.
    let listed = call(&s, "GET", "/v1/workflows", None, 200);
    let first = &listed["workflows"][0];
    assert_eq!(first["id"], wf_id, "{listed}");
    assert_eq!(first["name"], "wf");
    assert_eq!(first["state"], "succeeded", "{listed}");
    assert_eq!(first["jobs_by_state"]["succeeded"], 2, "{listed}");
    let one = call(&s, "GET", &format!("/v1/workflows/{wf_id}"), None, 200);
    assert_eq!(one["job_ids"]["b"], b.as_str(), "{one}");
    refused(&s, "GET", "/v1/workflows/999", None, None, "NOT_FOUND", 404);
    // Jobs newest first: the page counts down.
    let newest = call(
        &s,
        "GET",
        "/v1/jobs?newest_first=true&page_size=2",
        None,
        200,
    );
    let ids: Vec<u64> = newest["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.len() == 2 && ids[0] > ids[1], "{newest}");
    assert_eq!(ids[0].to_string(), b, "the newest job is b");
    refused(
        &s,
        "GET",
        "/v1/jobs?newest_first=yes",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    // Explain over REST; a rerun of a workflow whose jobs all succeeded is refused.
    let why = call(&s, "GET", &format!("/v1/jobs/{b}/explain"), None, 200);
    assert_eq!(why["summary"], "succeeded", "{why}");
    refused(
        &s,
        "POST",
        &format!("/v1/workflows/{wf_id}/rerun"),
        Some(r#"{"from_key":"b"}"#),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    // Crons: created, listed, paused and resumed over REST.
    let cron = r#"{"spec":{"name":"tick","schedule":"0 3 * * *","tz":"UTC","job":{"name":"tick","command":["true"]}}}"#;
    call(&s, "POST", "/v1/crons", Some(cron), 200);
    let crons = call(&s, "GET", "/v1/crons", None, 200);
    assert_eq!(crons["crons"][0]["spec"]["name"], "tick", "{crons}");
    call(&s, "POST", "/v1/crons/tick/pause", None, 200);
    assert_eq!(call(&s, "GET", "/v1/crons/tick", None, 200)["paused"], true);
    call(&s, "POST", "/v1/crons/tick/resume", None, 200);
    assert_ne!(call(&s, "GET", "/v1/crons/tick", None, 200)["paused"], true);
    call(&s, "DELETE", "/v1/crons/tick", None, 200);
    refused(&s, "GET", "/v1/crons/tick", None, None, "NOT_FOUND", 404);
    // The dashboard's charts: samples of the node's own measurements (the first a second in).
    let history = eventually(Duration::from_secs(30), "a history sample", || async {
        let h = call(&s, "GET", "/v1/dashboard/history", None, 200);
        (!h["samples"].as_array().unwrap().is_empty()).then_some(h)
    })
    .await;
    let sample = &history["samples"][0];
    assert!(sample["committed_per_s"].is_number(), "{history}");
    let node_id = call(&s, "GET", "/v1/cluster", None, 200)["node_id"].clone();
    assert_eq!(sample["nodes"][0]["id"], node_id, "{history}");
    let cyclic = r#"{"name":"loop","jobs":[{"key":"a","spec":{"name":"a","command":["true"]},"after":["b"]},{"key":"b","spec":{"name":"b","command":["true"]},"after":["a"]}]}"#;
    refused(
        &s,
        "POST",
        "/v1/workflows",
        Some(cyclic),
        None,
        "INVALID_ARGUMENT",
        400,
    );

    // The cluster, nodes, tags, snapshots.
    let st = call(&s, "GET", "/v1/cluster", None, 200);
    assert_eq!(st["server_state"], "leader", "{st}");
    let me = st["node_id"].as_str().unwrap().to_string();
    let nodes = call(&s, "GET", "/v1/nodes", None, 200);
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
    let r = call(
        &s,
        "POST",
        &format!("/v1/nodes/{me}/tags"),
        Some(r#"{"set":{"zone":"blue"}}"#),
        200,
    );
    assert_eq!(r["tags"]["zone"], "blue", "{r}");
    refused(
        &s,
        "POST",
        &format!("/v1/nodes/{me}/tags"),
        Some(r#"{"set":{"":"x"}}"#),
        None,
        "INVALID_ARGUMENT",
        400,
    );
    let (code, text) = curl(&s, "DELETE", "/v1/nodes/12345", None, None);
    assert!(
        (400..500).contains(&code),
        "removing an unknown node: {code} {text}"
    );
    let log = call(&s, "GET", "/v1/log?limit=3", None, 200);
    assert_eq!(log["entries"].as_array().unwrap().len(), 3, "{log}");
    let last = log["last_index"].as_str().unwrap();
    assert_eq!(log["entries"][2]["index"].as_str().unwrap(), last, "{log}");
    let one = call(&s, "GET", "/v1/log?from_index=1&limit=1", None, 200);
    assert_eq!(one["entries"][0]["kind"], "blank", "{one}");
    refused(
        &s,
        "GET",
        "/v1/log?limit=5000",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    let snap = call(&s, "POST", "/v1/snapshots", None, 200);
    assert!(
        snap["snapshot_index"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{snap}"
    );

    // Events over SSE: every held event up to now, filtered.
    let (code, sse) = curl(
        &s,
        "GET",
        "/v1/events?from_index=0&stop_at_applied=true&kinds=job_submitted,job_cancelled",
        None,
        None,
    );
    assert_eq!(code, 200, "{sse}");
    let kinds: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "job_submitted").count(),
        7,
        "{sse}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "job_cancelled").count(),
        1,
        "{sse}"
    );
    assert_eq!(kinds.len(), 8, "{sse}");
    refused(
        &s,
        "GET",
        "/v1/events?kinds=job_exploded",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );
    refused(
        &s,
        "GET",
        "/v1/events?from_index=1&from_seq=x",
        None,
        None,
        "INVALID_ARGUMENT",
        400,
    );

    // The OpenAPI document, checked by a validator that is not ours.
    let doc = call(&s, "GET", "/v1/openapi.json", None, 200);
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    validate_openapi(&doc, tmp.path());

    // An attempt whose output file is gone (as retention or a failed start leaves it): a
    // 404 saying so, not a 200 whose body breaks off.
    let second = call(
        &s,
        "POST",
        "/v1/jobs",
        Some(r#"{"spec":{"name":"gone","command":["echo","gone"]}}"#),
        200,
    )["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    until_state(&s, &second, "JOB_STATE_SUCCEEDED").await;
    let file = cathedral_executor::output_path(&s.dir, second.parse().unwrap(), 1);
    std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    refused(
        &s,
        "GET",
        &format!("/v1/jobs/{second}/output"),
        None,
        None,
        "NOT_FOUND",
        404,
    );

    // Tokens, once access control is on: none, too weak, enough.
    let boot: Value = serde_json::from_str(&s.cli_ok(&["acl", "bootstrap", "--json"])).unwrap();
    let admin = boot["secret"].as_str().unwrap().to_string();
    let make = |policy: &str| -> String {
        let out = Command::new(cathedral_tests::bin("cathedral"))
            .args([
                "--server", &s.grpc, "--token", &admin, "acl", "token", "create", "--policy",
                policy, "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["secret"].as_str().unwrap().to_string()
    };
    let reader = make("read");
    let submitter = make("submit");
    let body = r#"{"spec":{"name":"tokened","command":["true"]}}"#;
    refused(
        &s,
        "POST",
        "/v1/jobs",
        Some(body),
        None,
        "UNAUTHENTICATED",
        401,
    );
    refused(
        &s,
        "GET",
        "/v1/jobs",
        None,
        Some("not-a-token"),
        "UNAUTHENTICATED",
        401,
    );
    refused(
        &s,
        "POST",
        "/v1/jobs",
        Some(body),
        Some(&reader),
        "PERMISSION_DENIED",
        403,
    );
    refused(
        &s,
        "GET",
        "/v1/events?stop_at_applied=true",
        None,
        None,
        "UNAUTHENTICATED",
        401,
    );
    let (code, text) = curl(&s, "POST", "/v1/jobs", Some(body), Some(&submitter));
    assert_eq!(code, 200, "{text}");
    let (code, text) = curl(&s, "GET", &format!("/v1/jobs/{hello}"), None, Some(&reader));
    assert_eq!(code, 200, "{text}");
    refused(
        &s,
        "POST",
        "/v1/snapshots",
        None,
        Some(&submitter),
        "PERMISSION_DENIED",
        403,
    );

    // The API's calls are counted like gRPC's.
    let (_, metrics) = s.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("cathedral_api_requests_total{method=\"JobService/SubmitJob\",code=\"PERMISSION_DENIED\"} 1"),
        "{metrics}"
    );
}

/// Runs openapi-spec-validator on `doc`, and on a broken copy (which it must refuse, so
/// the check can fail).
fn validate_openapi(doc: &Value, dir: &std::path::Path) {
    let Some(python) = std::env::var_os("CATHEDRAL_PYTHON") else {
        eprintln!(
            "SKIPPED OpenAPI validation: CATHEDRAL_PYTHON is not set (scripts/test.sh sets it up)"
        );
        return;
    };
    let check = |v: &Value, name: &str| -> (bool, String) {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        let out = Command::new(&python)
            .args([
                "-c",
                "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
            ])
            .arg(&path)
            .output()
            .expect("python runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let probe = Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED OpenAPI validation: openapi-spec-validator is not installed in CATHEDRAL_PYTHON");
        return;
    }
    let (ok, err) = check(doc, "openapi.json");
    assert!(ok, "the OpenAPI document does not validate:\n{err}");
    let mut broken = doc.clone();
    broken["paths"]["/v1/jobs"]["post"]["responses"] = Value::String("none".into());
    let (ok, _) = check(&broken, "broken.json");
    assert!(!ok, "the validator accepted a broken document");
}
