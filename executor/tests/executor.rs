//! The executor on real processes: output, environment, exit codes, timeouts and
//! cancellation that leave no process behind, output caps, cgroup limits (where the host
//! allows) and the bubblewrap sandbox (where installed).

use std::time::Duration;

use cathedral_executor::{
    AttemptSpec, CgroupSupport, Executor, ExecutorConfig, Exit, KillReason, SandboxChoice,
};

fn executor(dir: &std::path::Path) -> Executor {
    let mut c = ExecutorConfig::new(dir);
    c.grace_ms = 300;
    Executor::new(c)
}

fn sh(job: u64, script: &str) -> AttemptSpec {
    AttemptSpec::new(job, 1, &["sh", "-c", script])
}

/// Whether a live (not zombie) process of process group `pgid` remains, given a second for
/// orphans to be reaped.
fn group_alive(pgid: u32) -> bool {
    let alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
    };
    for _ in 0..50 {
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[tokio::test]
async fn output_is_captured_and_the_environment_is_the_jobs_own() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let mut spec = sh(
        1,
        "echo hello; echo oops >&2; echo \"A=$A HOME=${HOME:-unset}\"; pwd; exit 3",
    );
    spec.env.insert("A".into(), "1".into());
    let a = ex.start(spec, SandboxChoice::Process).unwrap();
    let out = a.output.clone();
    let r = a.wait().await;
    assert_eq!(r.exit, Exit::Code(3));
    assert_eq!(r.sandbox, "process");
    let text = std::fs::read_to_string(out).unwrap();
    assert!(
        text.contains("hello\n") && text.contains("oops\n"),
        "{text}"
    );
    assert!(text.contains("A=1 HOME=unset"), "{text}");
    assert!(
        text.contains("/work/1-1"),
        "runs in its work directory: {text}"
    );
    assert_eq!(String::from_utf8_lossy(&r.output_tail), text);
    assert!(r.killed_because.is_none());
    // The work directory is gone; the output stays.
    assert!(!dir.path().join("work/1-1").exists());
}

#[tokio::test]
async fn a_program_that_does_not_exist_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let e = ex
        .start(
            AttemptSpec::new(2, 1, &["/no/such/program"]),
            SandboxChoice::Process,
        )
        .err()
        .expect("spawn fails");
    assert!(e.to_string().contains("/no/such/program"), "{e}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group_after_sigterm_and_grace() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    // The shell ignores SIGTERM, so SIGKILL after the grace period is needed; its
    // background child must die too.
    let mut spec = sh(3, "trap '' TERM; sleep 60 & sleep 60");
    spec.timeout_ms = 1000;
    let a = ex.start(spec, SandboxChoice::Process).unwrap();
    let pgid = a.pid;
    let r = a.wait().await;
    assert_eq!(r.exit, Exit::TimedOut);
    assert_eq!(r.killed_because, Some(KillReason::Timeout));
    assert!(
        r.duration_ms >= 1000 && r.duration_ms < 10_000,
        "{}",
        r.duration_ms
    );
    assert!(!group_alive(pgid), "a process of the attempt survived");
}

#[tokio::test]
async fn cancelling_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let mut a = ex
        .start(
            sh(4, "sleep 60 & sleep 60 & echo started; wait"),
            SandboxChoice::Process,
        )
        .unwrap();
    let out = a.output.clone();
    for _ in 0..100 {
        if std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("started")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pgid = a.pid;
    assert!(group_alive(pgid));
    a.cancel();
    let r = a.wait().await;
    assert_eq!(r.killed_because, Some(KillReason::Cancelled));
    assert!(matches!(r.exit, Exit::Signal(_)), "{:?}", r.exit);
    assert!(!group_alive(pgid), "a process of the attempt survived");
}

#[tokio::test]
async fn output_past_the_cap_is_dropped_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = ExecutorConfig::new(dir.path());
    c.output_bytes_max = 10_000;
    let ex = Executor::new(c);
    let a = ex
        .start(
            sh(5, "head -c 100000 /dev/zero | tr '\\0' x"),
            SandboxChoice::Process,
        )
        .unwrap();
    let out = a.output.clone();
    let r = a.wait().await;
    assert_eq!(r.exit, Exit::Code(0));
    assert!(r.output_truncated);
    assert_eq!(r.output_bytes, 10_000);
    let text = std::fs::read_to_string(out).unwrap();
    assert!(text.ends_with("[cathedral: output truncated at the per-attempt cap]\n"));
    assert_eq!(r.output_tail.len(), 4096);
}

#[tokio::test]
async fn memory_and_pids_limits_where_cgroups_allow() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    if let CgroupSupport::None { why } = ex.cgroups() {
        eprintln!("SKIPPED: cgroups cannot be used on this host: {why}");
        return;
    }
    // A memory hog over its limit is killed, and the outcome says why.
    let mut hog = AttemptSpec::new(
        6,
        1,
        &[
            "python3",
            "-c",
            "b = bytearray(400 * 1024 * 1024); print(len(b))",
        ],
    );
    hog.memory_bytes = 64 << 20;
    let r = ex.start(hog, SandboxChoice::Process).unwrap().wait().await;
    assert_eq!(r.killed_because, Some(KillReason::MemoryLimit), "{r:?}");
    assert_eq!(r.exit, Exit::Signal(libc::SIGKILL), "{r:?}");
    assert!(r.limits.starts_with("cgroup"), "{}", r.limits);

    // A fork bomb is contained by the pids limit and cleaned up.
    let mut bomb = sh(
        7,
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo still-here",
    );
    bomb.pids_max = 64;
    bomb.timeout_ms = 10_000;
    let a = ex.start(bomb, SandboxChoice::Process).unwrap();
    let pgid = a.pid;
    let r = a.wait().await;
    assert!(r.limits.contains("pids.max"), "{r:?}");
    assert!(!group_alive(pgid));

    // Groups are reused: the next attempts in them start with no limit they did not ask
    // for and no event of an earlier attempt.
    for job in 8..12 {
        let r = ex
            .start(
                AttemptSpec::new(
                    job,
                    1,
                    &[
                        "python3",
                        "-c",
                        "import os\npids = []\nfor _ in range(80):\n    p = os.fork()\n    if p == 0:\n        os._exit(0)\n    pids.append(p)\nfor p in pids:\n    os.waitpid(p, 0)\nb = bytearray(100 * 1024 * 1024)\nprint('ok')",
                    ],
                ),
                SandboxChoice::Process,
            )
            .unwrap()
            .wait()
            .await;
        assert_eq!(r.exit, Exit::Code(0), "job {job}: {r:?}");
        assert_eq!(r.killed_because, None, "job {job}: {r:?}");
        assert!(!r.limits.contains("pids.max"), "job {job}: {r:?}");
    }
    // And a limit asked for again holds again in a reused group.
    let mut hog = AttemptSpec::new(
        12,
        1,
        &[
            "python3",
            "-c",
            "b = bytearray(400 * 1024 * 1024); print(len(b))",
        ],
    );
    hog.memory_bytes = 64 << 20;
    let r = ex.start(hog, SandboxChoice::Process).unwrap().wait().await;
    assert_eq!(r.killed_because, Some(KillReason::MemoryLimit), "{r:?}");
}

/// A program that leaves a process of its own session behind, holding its output pipe:
/// the group's cleanup kills it before the output is waited for, so the attempt ends (it
/// once waited for that process for ever: the cleanup ran only after the output's end).
#[tokio::test(flavor = "multi_thread")]
async fn a_stray_in_another_session_holding_the_output_is_killed_and_the_attempt_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    if let CgroupSupport::None { why } = ex.cgroups() {
        eprintln!("SKIPPED: cgroups cannot be used on this host: {why}");
        return;
    }
    let marker = format!("stray-{}", std::process::id());
    let spec = sh(
        13,
        &format!("setsid sh -c 'sleep 300; : {marker}' & sleep 0.2; echo left; exit 0"),
    );
    let a = ex.start(spec, SandboxChoice::Process).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), a.wait())
        .await
        .expect("the attempt did not end: a stray held its output");
    assert_eq!(r.exit, Exit::Code(0), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.output_tail), "left\n");
    let stray_alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmd).contains(&marker)
        })
    };
    for _ in 0..100 {
        if !stray_alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the stray ({marker}) survived its attempt");
}

#[tokio::test]
async fn inside_bwrap_no_network_and_no_writes_outside_the_work_directory() {
    // Not under /tmp: the sandbox has a private /tmp, so a path there says nothing.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ex = executor(dir.path());
    if !ex.has_bwrap() {
        eprintln!(
            "SKIPPED: bubblewrap is not installed or cannot run here (scripts/test.sh installs it)"
        );
        return;
    }
    let outside = dir.path().join("escape");
    let script = format!(
        "echo ok > inside && cat inside; \
         (echo x > {out}) 2>/dev/null && echo WROTE-OUTSIDE; \
         (echo x > /etc/cathedral-test) 2>/dev/null && echo WROTE-ETC; \
         python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), timeout=2)' 2>/dev/null && echo NETWORK; \
         cat /proc/net/dev; echo pid=$$",
        out = outside.display()
    );
    let a = ex.start(sh(8, &script), SandboxChoice::Auto).unwrap();
    assert_eq!(a.sandbox, "bwrap", "bwrap is the default where it works");
    let out = a.output.clone();
    let r = a.wait().await;
    let text = std::fs::read_to_string(out).unwrap();
    assert_eq!(r.exit, Exit::Code(0), "{text}");
    assert!(text.contains("ok\n"), "{text}");
    assert!(
        !text.contains("WROTE-OUTSIDE") && !outside.exists(),
        "{text}"
    );
    assert!(!text.contains("WROTE-ETC"), "{text}");
    assert!(!text.contains("NETWORK"), "{text}");
    assert!(
        text.contains("lo:") && !text.contains("eth"),
        "only loopback: {text}"
    );
    assert!(
        text.contains("pid=2") || text.contains("pid=1"),
        "own pid namespace: {text}"
    );
}

/// An attempt outlives the thread that started it. `Executor::start` may be called on a
/// thread that then exits (a test's, a pool's); bubblewrap's `--die-with-parent` signal
/// follows the thread that cloned it, so the clone must happen on a thread that lives as
/// long as the process (it once did not: every sandboxed attempt died 10 s after it
/// started).
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_outlives_the_thread_that_started_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ex = std::sync::Arc::new(executor(dir.path()));
    if !ex.has_bwrap() {
        eprintln!(
            "SKIPPED: bubblewrap is not installed or cannot run here (scripts/test.sh installs it)"
        );
        return;
    }
    let starter = ex.clone();
    let handle = tokio::runtime::Handle::current();
    // A thread that starts the attempt and ends while it runs (after bubblewrap has set
    // its parent-death signal), as an idle pool thread does.
    let a = std::thread::spawn(move || {
        let _in_runtime = handle.enter();
        let a = starter.start(sh(9, "sleep 2; echo survived"), SandboxChoice::Bwrap);
        std::thread::sleep(Duration::from_millis(700));
        a
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(a.sandbox, "bwrap");
    let out = a.output.clone();
    let r = a.wait().await;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    assert_eq!(r.exit, Exit::Code(0), "{text}");
    assert!(text.contains("survived"), "{text}");
}
