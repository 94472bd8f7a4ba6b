//! A server whose disk fills: its log's write fails, the process exits with code 3 and says
//! why, and once there is room again a restart recovers every job it acknowledged. The disk
//! is a small tmpfs mounted for the test (root only; skipped with a message otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cathedral_tests::{get, spec, Server};

/// The mounted file system's size: room for the server to start and take some jobs.
const DISK_BYTES: u64 = 4 << 20;
/// Argument bytes per job, so that a few hundred jobs fill the disk.
const ARG_BYTES: usize = 32 << 10;
/// The exit code of a server whose log stopped (README: "A write or fsync that fails stops
/// the server").
const STOPPED_EXIT: i32 = 3;

/// A tmpfs of `DISK_BYTES` at a directory, unmounted on drop (after the server that uses
/// it, declared later, is dropped).
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }

    fn grow(&self, bytes: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(st.success(), "remount {} failed", self.0.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_with_code_3_and_a_restart_keeps_what_it_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("disk");
    let Some(mount) = Mount::new(&data) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root and mount(8))");
        return;
    };
    let mut s = Server::start(&data, &["--slots", "0", "--log-segment-bytes", "262144"]);
    s.wait_ready();
    let mut jobs = s.jobs().await;
    // Incompressible (the log compresses what it can): a hex stream from a fixed LCG.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = || {
        (0..ARG_BYTES / 16)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let refusal = loop {
        assert!(
            Instant::now() < deadline,
            "the disk never filled ({} jobs acknowledged)",
            acked.len()
        );
        let arg = noise();
        let sp = spec(&format!("fill-{}", acked.len()), &["true", &arg]);
        match jobs
            .submit_job(cathedral_server::api::v1::SubmitJobRequest {
                spec: Some(sp),
                request_id: format!("fill-{}", acked.len()),
                ..Default::default()
            })
            .await
        {
            Ok(r) => acked.push(r.into_inner().job_id),
            Err(e) => break e,
        }
    };
    eprintln!("{} jobs acknowledged, then: {refusal}", acked.len());
    assert!(!acked.is_empty(), "refused from the start: {refusal}");

    // The server stops itself with code 3 and says why.
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = s.exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "still running after its disk filled\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = s.log_text();
    assert_eq!(code, Some(STOPPED_EXIT), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.starts_with("cathedral-server: stopped:"))
        .unwrap_or_else(|| panic!("no stop line: {log}"));
    eprintln!("{stopped}");
    assert!(
        stopped.contains("No space left on device"),
        "the cause is not named: {log}"
    );
    s.child = None;

    // Room again: the restart recovers, and every acknowledged job is there.
    mount.grow(64 << 20);
    s.restart();
    s.wait_ready();
    for id in &acked {
        assert_eq!(get(&s, *id).await.id, *id, "job {id} was acknowledged");
    }
    let after = cathedral_tests::submit(&s, spec("after", &["true"])).await;
    assert!(after > *acked.last().unwrap());
    drop(s);
    drop(mount);
}
