//! A client that is not ours: Python's grpcio, with stubs generated from our proto files,
//! submits, reads, lists, cancels and watches a job, sees our errors, and uses the standard
//! health and reflection services.
//!
//! Needs `CATHEDRAL_PYTHON`: a Python with grpcio, grpcio-tools, grpcio-health-checking
//! and grpcio-reflection. `scripts/test.sh` installs them into a virtual environment under
//! `target/` and sets it; without it the test says so and passes.

use std::path::PathBuf;
use std::process::Command;

use cathedral_tests::Server;

#[test]
fn python_grpcio_drives_the_api() {
    let Some(python) = std::env::var_os("CATHEDRAL_PYTHON") else {
        eprintln!("SKIPPED: CATHEDRAL_PYTHON is not set (scripts/test.sh sets it up)");
        return;
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(&tmp.path().join("node"), &[]);
    s.wait_ready();
    let out = Command::new(python)
        .arg(repo.join("tests/python/client.py"))
        .arg(&s.grpc)
        .arg(repo.join("api/proto"))
        .arg(tmp.path().join("stubs"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["errors"]["unknown_job"][0], "NOT_FOUND");
    assert!(seen["events"].as_u64().unwrap() >= 1);
    // What Python submitted is what our own CLI sees.
    let id = seen["job_id"].as_u64().unwrap().to_string();
    let job: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["status", &id, "--json"])).unwrap();
    assert_eq!(job["name"], "from-python");
    assert_eq!(job["state"], "cancelled");
    assert!(
        job["reason"].as_str().unwrap().contains("python says stop"),
        "{job}"
    );
}
