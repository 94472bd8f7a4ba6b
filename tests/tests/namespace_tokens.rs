//! Tokens scoped to namespaces, black-box: with access control on, two namespaces and a
//! token for each; each token sees, cancels and reads the output of only its own
//! namespace's jobs, a read-only grant sees a job without its environment, and a token
//! made without grants (as every token was before namespaces) keeps its policy in every
//! namespace.

use cathedral_server::api::v1 as pb;
use cathedral_tests::{stdout_ok, Server};
use serde_json::Value;

/// Creates a token with `args` (after `acl token create`); its secret.
fn token(s: &Server, root: &str, args: &[&str]) -> String {
    let mut all = vec!["--token", root, "acl", "token", "create", "--json"];
    all.extend_from_slice(args);
    let v: Value = serde_json::from_str(&s.cli_ok(&all)).unwrap();
    v["secret"].as_str().expect("a secret").to_string()
}

/// The CLI as `secret`, in `ns`.
fn as_token(s: &Server, secret: &str, ns: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--token", secret, "--namespace", ns];
    all.extend_from_slice(args);
    s.cli(&all)
}

#[test]
fn each_token_sees_cancels_and_reads_only_its_own_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dir.path().join("n"), &["--slots", "2"]);
    s.wait_ready();
    let boot: Value = serde_json::from_str(&s.cli_ok(&["acl", "bootstrap", "--json"])).unwrap();
    let root = boot["secret"].as_str().unwrap().to_string();
    for ns in ["ml", "web"] {
        s.cli_ok(&["--token", &root, "namespace", "create", ns]);
    }
    // A token made without grants, as before namespaces: read everywhere.
    let reader = token(&s, &root, &["--policy", "read", "--name", "reader"]);
    let ml = token(
        &s,
        &root,
        &[
            "--policy",
            "read",
            "--name",
            "ml",
            "--grant",
            "ml=read,read-output,submit,cancel",
        ],
    );
    let web = token(
        &s,
        &root,
        &[
            "--policy",
            "read",
            "--name",
            "web",
            "--grant",
            "web=read,read-output,submit,cancel",
        ],
    );
    let peek = token(
        &s,
        &root,
        &["--policy", "read", "--name", "peek", "--grant", "ml=read"],
    );

    let submit = |secret: &str, ns: &str, argv: &[&str]| -> u64 {
        let mut args = vec!["submit", "--env", "SECRET_THING=hunter2", "--"];
        args.extend_from_slice(argv);
        stdout_ok(as_token(&s, secret, ns, &args))
            .trim()
            .parse()
            .unwrap()
    };
    let ml_job = submit(&ml, "ml", &["echo", "ml-output"]);
    let ml_long = submit(&ml, "ml", &["sleep", "60"]);
    let web_job = submit(&web, "web", &["echo", "web-output"]);
    // Submitting in the other's namespace is refused (exit code 5), as is default.
    for (secret, ns) in [(&ml, "web"), (&web, "ml"), (&ml, "default")] {
        let out = as_token(&s, secret, ns, &["submit", "--", "true"]);
        assert_eq!(out.status.code(), Some(5), "{out:?}");
    }
    for (secret, ns, id) in [(&ml, "ml", ml_job), (&web, "web", web_job)] {
        stdout_ok(as_token(
            &s,
            secret,
            ns,
            &["wait", &id.to_string(), "--timeout", "60s"],
        ));
    }
    let (m, w) = (ml_job.to_string(), web_job.to_string());
    // Each reads its own job and its output; the other's is refused or not found.
    assert!(stdout_ok(as_token(&s, &ml, "ml", &["status", &m])).contains("succeeded"));
    assert!(stdout_ok(as_token(&s, &ml, "ml", &["logs", &m])).contains("ml-output"));
    assert_eq!(
        as_token(&s, &ml, "web", &["status", &w]).status.code(),
        Some(5)
    );
    assert_eq!(
        as_token(&s, &web, "web", &["logs", &m]).status.code(),
        Some(3)
    );
    assert_eq!(
        as_token(&s, &web, "ml", &["logs", &m]).status.code(),
        Some(5)
    );
    // Listing every namespace shows each only its own.
    let listed: Value =
        serde_json::from_str(&stdout_ok(as_token(&s, &web, "*", &["list", "--json"]))).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![w.as_str()], "{listed}");
    // Read without read-output: the job, without its environment and output; no logs.
    let seen: Value = serde_json::from_str(&stdout_ok(as_token(
        &s,
        &peek,
        "ml",
        &["status", &m, "--json"],
    )))
    .unwrap();
    let tail = |j: &Value| j["attempts"][0]["outcome"]["output_tail"].clone();
    assert_eq!(tail(&seen), "", "{seen}");
    assert_eq!(
        as_token(&s, &peek, "ml", &["logs", &m]).status.code(),
        Some(5)
    );
    let full: Value = serde_json::from_str(&stdout_ok(as_token(
        &s,
        &ml,
        "ml",
        &["status", &m, "--json"],
    )))
    .unwrap();
    assert_eq!(tail(&full), "ml-output\n", "{full}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env_seen_by = |secret: &str| {
        let (addr, auth) = (s.grpc.clone(), format!("Bearer {secret}"));
        rt.block_on(async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c = pb::job_service_client::JobServiceClient::with_interceptor(
                ch,
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert("authorization", auth.parse().unwrap());
                    Ok(r)
                },
            );
            c.get_job(pb::GetJobRequest {
                job_id: ml_job,
                namespace: "ml".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .spec
            .unwrap()
            .env
        })
    };
    assert!(env_seen_by(&peek).is_empty());
    assert_eq!(
        env_seen_by(&ml).get("SECRET_THING").map(String::as_str),
        Some("hunter2")
    );
    // Cancel: not the other's, and not with read alone; its own, yes.
    assert_eq!(
        as_token(&s, &web, "ml", &["cancel", &ml_long.to_string()])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        as_token(&s, &peek, "ml", &["cancel", &ml_long.to_string()])
            .status
            .code(),
        Some(5)
    );
    stdout_ok(as_token(&s, &ml, "ml", &["cancel", &ml_long.to_string()]));
    // Any job with the cancel capability alone.
    let canceller = token(
        &s,
        &root,
        &["--policy", "read", "--name", "c", "--grant", "ml=cancel"],
    );
    let another = submit(&ml, "ml", &["sleep", "60"]);
    stdout_ok(as_token(
        &s,
        &canceller,
        "ml",
        &["cancel", &another.to_string()],
    ));
    // Crons are their namespace's: a token scoped to ml makes one there, not in default
    // (even with the submit policy), and another namespace's token neither sees nor
    // deletes it.
    let scoped_submitter = token(
        &s,
        &root,
        &[
            "--policy",
            "submit",
            "--name",
            "sub",
            "--grant",
            "ml=submit,read",
        ],
    );
    let make_cron = |ns: &str| {
        as_token(
            &s,
            &scoped_submitter,
            ns,
            &[
                "cron",
                "create",
                "c1",
                "--schedule",
                "@hourly",
                "--env",
                "CRON_SECRET=hunter3",
                "--",
                "true",
            ],
        )
    };
    let out = make_cron("default");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // A token without grants makes one in default (a cron write records no author).
    stdout_ok(as_token(
        &s,
        &root,
        "default",
        &[
            "cron",
            "create",
            "c0",
            "--schedule",
            "@hourly",
            "--",
            "true",
        ],
    ));
    stdout_ok(make_cron("ml"));
    let listed = stdout_ok(as_token(&s, &ml, "ml", &["cron", "list"]));
    assert!(listed.contains("c1"), "{listed}");
    let everywhere = stdout_ok(as_token(&s, &web, "*", &["cron", "list"]));
    assert!(
        !everywhere.contains("c1"),
        "web sees ml's cron: {everywhere}"
    );
    assert_eq!(
        as_token(&s, &web, "ml", &["cron", "list"]).status.code(),
        Some(5)
    );
    assert_eq!(
        as_token(&s, &web, "ml", &["cron", "delete", "c1"])
            .status
            .code(),
        Some(5)
    );
    // The same name in default is another cron; ml's still holds c1.
    assert_eq!(
        as_token(&s, &root, "default", &["cron", "show", "c1"])
            .status
            .code(),
        Some(3),
        "not found in default"
    );
    // A job's environment shows with read-output only, in a cron's spec as in a job.
    let full = stdout_ok(as_token(&s, &ml, "ml", &["cron", "show", "c1", "--json"]));
    assert!(full.contains("hunter3"), "{full}");
    for args in [
        &["cron", "show", "c1", "--json"][..],
        &["cron", "list", "--json"][..],
    ] {
        let seen = stdout_ok(as_token(&s, &peek, "ml", args));
        assert!(seen.contains("c1"), "{seen}");
        assert!(!seen.contains("hunter3"), "read-only sees the env: {seen}");
    }
    // A name never reaches another namespace's cron through its key (`ml/c1`): not
    // found, and nothing deleted.
    let root_cli = |args: &[&str]| as_token(&s, &root, "default", args);
    assert_eq!(root_cli(&["cron", "show", "ml/c1"]).status.code(), Some(3));
    let out = root_cli(&["cron", "delete", "ml/c1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    stdout_ok(as_token(&s, &ml, "ml", &["cron", "show", "c1"]));
    // The event stream: a scoped token gets the job events of its own namespaces only.
    let events = stdout_ok(as_token(&s, &ml, "", &["events", "--json"]));
    let jobs_seen: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["job_id"].as_str().map(String::from))
        .collect();
    assert!(jobs_seen.contains(&m), "{events}");
    assert!(
        !jobs_seen.contains(&w),
        "web's job {w} in ml's stream: {events}"
    );
    let out = as_token(&s, &ml, "web", &["events"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // The token made without grants reads everything, as before.
    for (ns, id) in [("ml", &m), ("web", &w)] {
        assert!(stdout_ok(as_token(&s, &reader, ns, &["status", id])).contains("succeeded"));
        assert!(stdout_ok(as_token(&s, &reader, ns, &["logs", id])).contains("output"));
    }
    assert_eq!(
        as_token(&s, &reader, "ml", &["submit", "--", "true"])
            .status
            .code(),
        Some(5)
    );
    // Listed with its grants.
    let tokens = s.cli_ok(&["--token", &root, "acl", "token", "list", "--json"]);
    assert!(
        tokens.contains("read-output") && tokens.contains("\"ml\""),
        "{tokens}"
    );
}
