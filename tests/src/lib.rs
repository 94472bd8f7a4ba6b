//! The harness of Cathedral's black-box tests: starts real `cathedral-server` processes on
//! free loopback ports with temporary data directories, runs the `cathedral` CLI, and talks
//! gRPC to the nodes.
//!
//! The binaries must be built first; `cargo test --workspace` does that.

pub mod engine;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cathedral_server::api::v1 as pb;
use cathedral_server::api::v1::cluster_service_client::ClusterServiceClient;
use cathedral_server::api::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

/// How long a node may take to become ready, or a cluster to elect a leader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of one of the workspace's binaries, next to the test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (or `cargo build --bins` first)",
        path.display()
    );
    path
}

pub mod ports;

/// A loopback TCP port nobody listens on right now, outside the ephemeral range
/// (see [`ports`]).
pub fn free_port() -> u16 {
    ports::free_port()
}

/// A loopback UDP port nobody listens on right now (gossip), outside the ephemeral range.
pub fn free_udp_port() -> u16 {
    ports::free_port()
}

/// One `cathedral-server` process.
pub struct Server {
    pub dir: PathBuf,
    pub grpc: String,
    pub http: String,
    pub args: Vec<String>,
    /// Gossip (UDP) address.
    pub gossip: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Server {
    /// Starts a server on `dir` with fresh ports and `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            dir.display().to_string(),
            "--bind".into(),
            grpc.clone(),
            "--http".into(),
            http.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // Every server on this host needs its own gossip port.
        let gossip = match extra.iter().position(|a| *a == "--gossip-bind") {
            Some(i) => extra[i + 1].to_string(),
            None => {
                let g = format!("127.0.0.1:{}", free_udp_port());
                args.extend(["--gossip-bind".to_string(), g.clone()]);
                g
            }
        };
        let mut s = Server {
            dir: dir.to_path_buf(),
            grpc,
            http,
            args,
            gossip,
            child: None,
            log: dir.with_extension("log"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let child = Command::new(bin("cathedral-server"))
            .args(&self.args)
            .env_remove("CATHEDRAL_CONFIG")
            .env_remove("CATHEDRAL_LOG")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start cathedral-server");
        self.child = Some(child);
    }

    /// Starts the process again with the same flags (same ports, same data).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stops where it is (sockets open, nothing answered).
    pub fn freeze(&self) {
        let c = self.child.as_ref().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        let c = self.child.as_ref().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGCONT);
        }
    }

    /// SIGTERM, then waits for a clean exit; returns its status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "server did not stop within 20 s of SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a server on `dir` with `extra` flags expecting it to refuse; returns what it
    /// printed. Panics when it becomes ready instead, or neither within 30 s.
    pub fn start_refused(dir: &Path, extra: &[&str]) -> String {
        let mut s = Server::start(dir, extra);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(code) = s.exited() {
                assert_ne!(code, Some(0), "{}", s.log_text());
                return s.log_text();
            }
            if let Some((200, _)) = s.http_get("/readyz") {
                panic!(
                    "the server started on a directory it must refuse:\n{}",
                    s.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server neither started nor refused:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process has exited (and its status code).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let c = self.child.as_mut()?;
        c.try_wait().expect("wait").map(|s| s.code())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the HTTP port: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(&self.http).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((code, body))
    }

    /// POST `body` as JSON to `path` on the HTTP port (through curl); the JSON answer.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-X", "POST"])
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(body.to_string())
            .args(["-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.http))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        // A refusal is the test's failure, said as the server said it (not a wait for an
        // effect that will never come).
        assert!(
            code.starts_with('2'),
            "POST {path}: HTTP {code}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(answer)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {answer}"))
    }

    /// Waits until /readyz says ready.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some((200, _)) = self.http_get("/readyz") {
                return;
            }
            if let Some(code) = self.exited() {
                panic!("server exited with {code:?}\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!(
                    "server not ready within {READY_TIMEOUT:?}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.grpc, args)
    }

    /// Runs the CLI and returns stdout; panics with stderr unless it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "cathedral {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    pub async fn cluster(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel().await)
    }

    pub async fn status(&self) -> pb::StatusResponse {
        self.cluster()
            .await
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }
}

/// How many lines of a server's log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

impl Drop for Server {
    /// Stops the process; when the test is failing, prints the tail of its log (the
    /// temporary directory holding it is removed next, and a failure seen once in CI may
    /// not be seen again).
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- last {} lines of the log of the server at {} ({}) ---\n{}",
                tail.len(),
                self.grpc,
                self.dir.display(),
                tail.join("\n")
            );
        }
    }
}

/// How long cluster helpers wait for a cluster to form or elect.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// Starts `n` coordinators: the first initialises the cluster, the rest join it.
pub async fn cluster(root: &std::path::Path, n: usize, extra: &[&str]) -> Vec<Server> {
    let mut first_args = vec!["--role", "coordinator"];
    first_args.extend_from_slice(extra);
    let mut first = Server::start(&root.join("n0"), &first_args);
    first.wait_ready();
    let join = first.grpc.clone();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut args = vec!["--role", "coordinator", "--join", join.as_str()];
        args.extend_from_slice(extra);
        let s = Server::start(&root.join(format!("n{i}")), &args);
        nodes.push(s);
    }
    for s in nodes.iter_mut() {
        s.wait_ready();
    }
    let want = n.min(3);
    let probe = &nodes[0];
    eventually(
        CLUSTER_WAIT,
        "every coordinator to become a voter",
        || async {
            let st = probe.status().await;
            let voters = st.members.iter().filter(|m| m.role == "voter").count();
            (voters == want && st.members.len() == n).then_some(())
        },
    )
    .await;
    nodes
}

pub async fn leader_index(nodes: &[Server]) -> usize {
    eventually(CLUSTER_WAIT, "a leader", || async {
        for (i, s) in nodes.iter().enumerate() {
            if s.child.is_none() {
                continue;
            }
            let Ok(mut c) = tokio::time::timeout(Duration::from_secs(2), s.cluster()).await else {
                continue;
            };
            if let Ok(st) = c.status(pb::StatusRequest {}).await {
                if st.get_ref().server_state == "leader" {
                    return Some(i);
                }
            }
        }
        None
    })
    .await
}

/// Runs `cathedral-log --data-dir DIR ARGS…`: (exit code, stdout, stderr).
pub fn log_tool(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("cathedral-log"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run cathedral-log");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `cathedral` CLI against `addr`.
pub fn cli(addr: &str, args: &[&str]) -> Output {
    Command::new(bin("cathedral"))
        .arg("--server")
        .arg(addr)
        .args(args)
        .env_remove("CATHEDRAL_ADDR")
        .stdin(Stdio::null())
        .output()
        .expect("run cathedral")
}

/// A job spec running `argv`.
pub fn spec(name: &str, argv: &[&str]) -> pb::JobSpec {
    pb::JobSpec {
        name: name.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long `until_final` waits for a job to end.
pub const JOB_WAIT: Duration = Duration::from_secs(90);

pub async fn get(s: &Server, id: u64) -> pb::Job {
    s.jobs()
        .await
        .get_job(pb::GetJobRequest {
            job_id: id,
            ..Default::default()
        })
        .await
        .expect("get job")
        .into_inner()
}

/// Submits `sp`; its job id.
pub async fn submit(s: &Server, sp: pb::JobSpec) -> u64 {
    s.jobs()
        .await
        .submit_job(pb::SubmitJobRequest {
            spec: Some(sp),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id
}

/// Waits (up to [`JOB_WAIT`]) until job `id` has ended.
pub async fn until_final(s: &Server, id: u64) -> pb::Job {
    eventually(JOB_WAIT, &format!("job {id} to end"), || async {
        let j = get(s, id).await;
        (j.state >= pb::JobState::Succeeded as i32).then_some(j)
    })
    .await
}

/// The attempts of `j` that exited 0.
pub fn succeeded_attempts(j: &pb::Job) -> Vec<&pb::Attempt> {
    j.attempts
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_some_and(|o| o.exit == Some(pb::outcome::Exit::Code(0)))
        })
        .collect()
}

/// Copies directory `from` into `to` (created), recursively: a fixture's data directory
/// into a test's own.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The stdout of a CLI run that must succeed; panics with its exit code and stderr.
pub fn stdout_ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
