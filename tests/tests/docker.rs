//! The docker sandbox against a real engine speaking the Docker Engine API (Podman's
//! service with runc; see `cathedral_tests::engine`). First the executor alone — hello
//! world, exit codes, timeout and cancel leaving no container, the memory limit, no
//! network, a read-only root, output streamed while running, a missing image, the sweep
//! of a previous run's containers — then whole servers: the `driver.docker` tag and
//! placement, and a node SIGKILLed and restarted while its container runs.
//!
//! Skips (saying why) where podman, runc or busybox-static cannot be had.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cathedral_executor::{
    AttemptResult, AttemptSpec, ContainerImage, ExecError, Executor, ExecutorConfig, Exit,
    KillReason, SandboxChoice,
};
use cathedral_server::api::v1 as pb;
use cathedral_tests::engine::{Engine, TEST_IMAGE};
use cathedral_tests::{eventually, get, submit, until_final, Server};

fn executor(engine: &Engine, dir: &Path, node: &str) -> Arc<Executor> {
    let mut c = ExecutorConfig::new(dir);
    c.docker_host = Some(engine.host.clone());
    c.node_label = node.to_string();
    c.grace_ms = 500;
    c.docker_nproc = Some(engine.nproc_limit());
    Arc::new(Executor::new(c))
}

/// An executor whose engine answered (and whose previous run's containers are swept).
async fn ready(engine: &Engine, dir: &Path, node: &str) -> Arc<Executor> {
    let ex = executor(engine, dir, node);
    ex.docker()
        .unwrap()
        .probe()
        .await
        .expect("the engine answers");
    ex
}

fn image() -> SandboxChoice {
    SandboxChoice::Docker(ContainerImage {
        image: TEST_IMAGE.into(),
        pull: false,
        user: String::new(),
    })
}

fn attempt(job: u64, argv: &[&str]) -> AttemptSpec {
    AttemptSpec::new(job, 1, argv)
}

async fn run(ex: &Arc<Executor>, spec: AttemptSpec) -> (AttemptResult, String) {
    let a = ex
        .launch(spec, image())
        .await
        .expect("the container starts");
    assert_eq!(a.sandbox, "docker");
    let output = a.output.clone();
    let r = a.wait().await;
    (r, std::fs::read_to_string(output).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_isolated_and_leave_nothing() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = format!("t{}", std::process::id());
    let ex = ready(&engine, tmp.path(), &node).await;

    // Hello world, with the job's environment, in the tmpfs work directory.
    let mut hello = attempt(1, &["sh", "-c", "echo hello $GREETING; pwd"]);
    hello.env = BTreeMap::from([("GREETING".into(), "world".into())]);
    let (r, out) = run(&ex, hello).await;
    assert_eq!(r.exit, Exit::Code(0), "{out}");
    assert_eq!(out, "hello world\n/work\n");
    assert_eq!(r.sandbox, "docker");

    // Exit codes, and a signal as a signal.
    let (r, _) = run(&ex, attempt(2, &["sh", "-c", "exit 3"])).await;
    assert_eq!(r.exit, Exit::Code(3));
    let (r, _) = run(
        &ex,
        attempt(3, &["sh", "-c", "sleep 30 & kill -TERM $!; wait $!"]),
    )
    .await;
    assert_eq!(r.exit, Exit::Signal(libc::SIGTERM));

    // No network but loopback; the root is read-only, /work and /tmp are writable; no
    // capabilities; the user the job names.
    let (r, out) = run(
        &ex,
        attempt(
            4,
            &[
                "sh",
                "-c",
                "ls /sys/class/net; touch /x 2>/dev/null && echo root-writable; \
                 touch /work/w /tmp/t && echo work-writable; grep CapEff /proc/self/status",
            ],
        ),
    )
    .await;
    assert_eq!(r.exit, Exit::Code(0), "{out}");
    assert_eq!(
        out, "lo\nwork-writable\nCapEff:\t0000000000000000\n",
        "network, root, capabilities"
    );
    let user = ex
        .launch(
            attempt(5, &["id", "-u"]),
            SandboxChoice::Docker(ContainerImage {
                image: TEST_IMAGE.into(),
                pull: false,
                user: "65534:65534".into(),
            }),
        )
        .await
        .unwrap();
    let path = user.output.clone();
    assert_eq!(user.wait().await.exit, Exit::Code(0));
    assert_eq!(std::fs::read_to_string(path).unwrap(), "65534\n");

    // A missing image is a clear failure, not a pull.
    let missing = ex
        .launch(
            attempt(6, &["true"]),
            SandboxChoice::Docker(ContainerImage {
                image: "localhost/cathedral-no-such-image:1".into(),
                pull: false,
                user: String::new(),
            }),
        )
        .await;
    match missing {
        Err(e @ ExecError::ImageMissing(_)) => {
            assert!(e.to_string().contains("does not ask to pull"), "{e}")
        }
        Err(e) => panic!("expected ImageMissing, got {e}"),
        Ok(_) => panic!("a missing image started"),
    }

    assert_eq!(
        engine.containers_of(&node),
        Vec::<String>::new(),
        "every container is removed once its attempt ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_cancel_and_memory_limit_kill_and_remove() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = format!("k{}", std::process::id());
    let ex = ready(&engine, tmp.path(), &node).await;

    let mut slow = attempt(1, &["sleep", "60"]);
    slow.timeout_ms = 1_000;
    let (r, _) = run(&ex, slow).await;
    assert_eq!(r.exit, Exit::TimedOut);
    assert_eq!(r.killed_because, Some(KillReason::Timeout));
    assert!(r.duration_ms < 30_000, "{r:?}");

    // Output is streamed into the file while the container runs; a cancel stops it.
    let mut a = ex
        .launch(
            attempt(2, &["sh", "-c", "echo first; sleep 60; echo second"]),
            image(),
        )
        .await
        .unwrap();
    let output = a.output.clone();
    eventually(
        Duration::from_secs(30),
        "the first line, while running",
        || {
            let text = std::fs::read_to_string(&output).unwrap_or_default();
            async move { (text == "first\n").then_some(()) }
        },
    )
    .await;
    assert!(engine.running(&format!("cathedral-{node}-2-1")));
    a.cancel();
    let r = a.wait().await;
    assert_eq!(r.killed_because, Some(KillReason::Cancelled));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "first\n");

    // The memory limit kills, and says so.
    let mut hog = attempt(
        3,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
    );
    hog.memory_bytes = 32 << 20;
    let (r, out) = run(&ex, hog).await;
    assert_eq!(
        r.killed_because,
        Some(KillReason::MemoryLimit),
        "{r:?} {out}"
    );
    assert_eq!(r.exit, Exit::Signal(libc::SIGKILL));

    assert_eq!(engine.containers_of(&node), Vec::<String>::new());
}

/// A node that restarts finds the containers its previous run left (by label) and
/// removes them before it starts any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_sweeps_its_previous_containers() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = format!("s{}", std::process::id());
    let first = ready(&engine, tmp.path(), &node).await;
    let left = first
        .launch(AttemptSpec::new(7, 2, &["sleep", "60"]), image())
        .await
        .unwrap();
    let name = format!("cathedral-{node}-7-2");
    assert!(engine.running(&name));
    // The "crash": the handle is forgotten, the container runs on.
    std::mem::forget(left);

    let second = executor(&engine, tmp.path(), &node);
    let driver = second.docker().unwrap();
    assert!(!driver.is_swept());
    let e = second
        .launch(attempt(8, &["true"]), image())
        .await
        .err()
        .expect("no container starts before the sweep");
    assert!(e.to_string().contains("has not answered"), "{e}");
    let (_, removed) = driver.probe().await.unwrap();
    assert_eq!(removed, vec![(7, 2)]);
    assert!(driver.swept_away(7, 2));
    assert_eq!(engine.containers_of(&node), Vec::<String>::new());
}

fn docker_spec(name: &str, argv: &[&str]) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        sandbox: pb::Sandbox::Docker as i32,
        docker: Some(pb::DockerSpec {
            image: TEST_IMAGE.into(),
            ..Default::default()
        }),
        timeout_ms: Some(120_000),
        ..Default::default()
    }
}

fn tags_of(s: &Server) -> String {
    s.cli_ok(&["cluster", "nodes", "--json"])
}

/// A server advertises `driver.docker=true` only while its engine answers, and the
/// scheduler places containers only there; a container job runs to its end with its
/// output; a node SIGKILLed with a container running removes it when it restarts, and
/// the attempt is reported lost and retried — never two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_place_run_and_recover_containers() {
    let Some(engine) = Engine::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // No engine: no tag, and a container job waits.
    let mut without = Server::start(
        &tmp.path().join("none"),
        &["--docker-host", "unix:///nonexistent/docker.sock"],
    );
    without.wait_ready();
    let waiting = submit(&without, docker_spec("waits", &["true"])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get(&without, waiting).await.state,
        pb::JobState::Pending as i32
    );
    assert!(!tags_of(&without).contains("driver.docker"));
    without.stop();

    // No --docker-nproc-limit: the node reads the engine's own limit through its socket
    // (a rootful Podman refuses a container a higher one).
    let mut s = Server::start(
        &tmp.path().join("node"),
        &["--docker-host", &engine.host, "--slots", "2"],
    );
    s.wait_ready();
    eventually(Duration::from_secs(30), "the driver.docker tag", || {
        let tags = tags_of(&s);
        async move { tags.contains("driver.docker").then_some(()) }
    })
    .await;
    // The CLI's --image.
    let out = s.cli_ok(&[
        "submit",
        "--image",
        TEST_IMAGE,
        "--",
        "echo",
        "from a container",
    ]);
    let id: u64 = out.trim().parse().expect("the job id");
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(s.cli_ok(&["logs", &id.to_string()]), "from a container\n");

    // A container running when the node is SIGKILLed.
    let mut sp = docker_spec(
        "survivor",
        &[
            "sh",
            "-c",
            "if [ \"$CATHEDRAL_ATTEMPT\" = 1 ]; then echo first; sleep 120; else echo retried; fi",
        ],
    );
    sp.retry = Some(pb::RetryPolicy {
        max_attempts: 2,
        initial_backoff_ms: 100,
        max_backoff_ms: 100,
        multiplier_milli: 1000,
    });
    let id = submit(&s, sp).await;
    eventually(
        Duration::from_secs(60),
        "the first attempt to run",
        || async { (get(&s, id).await.state == pb::JobState::Running as i32).then_some(()) },
    )
    .await;
    let node_id = s.status().await.node_id;
    let first = format!("cathedral-{node_id}-{id}-1");
    assert!(engine.running(&first), "the container runs");
    s.kill9();
    assert!(engine.running(&first), "the container outlives the node");
    s.restart();
    s.wait_ready();
    let j = until_final(&s, id).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts.len(), 2);
    let lost = j.attempts[0].outcome.as_ref().unwrap();
    assert_eq!(lost.exit, Some(pb::outcome::Exit::Lost(true)));
    assert!(
        String::from_utf8_lossy(&lost.output_tail).contains("its container was removed"),
        "{lost:?}"
    );
    assert!(!engine.running(&first));
    assert_eq!(
        engine.containers_of(&node_id.to_string()),
        Vec::<String>::new(),
        "nothing left on the engine"
    );
    assert_eq!(s.cli_ok(&["logs", &id.to_string()]), "retried\n");
    s.stop();
}
