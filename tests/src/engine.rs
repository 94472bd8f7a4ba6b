//! A real container engine for the docker sandbox's tests: Podman's Docker-compatible API
//! service (`podman system service`) on a socket of the test's own, with the `runc`
//! runtime (crun refuses hosts with hybrid cgroups), and a busybox image made offline
//! from Debian's busybox-static (`podman import` of a directory holding the binary and
//! its applet links). `scripts/test.sh` installs podman, runc and busybox-static; where
//! any is missing or the service cannot start, [`Engine::start`] says why and the test
//! skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The image the tests run: busybox with every applet on `/bin`.
pub const TEST_IMAGE: &str = "localhost/cathedral-busybox:test";

/// How long the service may take to answer.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Podman API service; stopped (SIGKILL) on drop.
pub struct Engine {
    /// `unix:///…/podman.sock`: what `--docker-host` takes.
    pub host: String,
    pub socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The image is made once per test process (tests run on parallel threads).
static IMAGE: Mutex<Option<Result<(), String>>> = Mutex::new(None);

impl Engine {
    /// The service with [`TEST_IMAGE`] present, or `None` after printing why it cannot
    /// be had here.
    pub fn start() -> Option<Engine> {
        match Engine::try_start() {
            Ok(e) => Some(e),
            Err(why) => {
                eprintln!("SKIPPED: no container engine for the docker sandbox tests: {why}");
                None
            }
        }
    }

    fn try_start() -> Result<Engine, String> {
        for tool in ["podman", "runc", "busybox"] {
            if which(tool).is_none() {
                return Err(format!(
                    "{tool} is not installed (scripts/test.sh installs podman, runc, busybox-static)"
                ));
            }
        }
        {
            let mut image = IMAGE.lock().unwrap();
            if image.is_none() {
                *image = Some(make_image());
            }
            image.as_ref().unwrap().clone()?;
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join("podman.sock");
        let log =
            std::fs::File::create(dir.path().join("podman.log")).map_err(|e| e.to_string())?;
        let host = format!("unix://{}", socket.display());
        // conmon writes an `oom` marker into its working directory: the service's.
        let child = podman()
            .current_dir(dir.path())
            .args(["system", "service", "--time=0", &host])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("podman system service: {e}"))?;
        let mut engine = Engine {
            host,
            socket,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + ENGINE_START_TIMEOUT;
        while !engine.answers() {
            if let Ok(Some(status)) = engine.child.try_wait() {
                return Err(format!(
                    "podman system service exited ({status}): {}",
                    engine.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "podman system service did not answer within {ENGINE_START_TIMEOUT:?}: {}",
                    engine.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(engine)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.socket.with_file_name("podman.log")).unwrap_or_default()
    }

    /// Whether `GET /_ping` answers OK.
    pub fn answers(&self) -> bool {
        self.get("/_ping").is_some_and(|b| b.trim() == "OK")
    }

    /// GET `path` of the Engine API (through curl): the body, on a 2xx answer.
    pub fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--unix-socket"])
            .arg(&self.socket)
            .arg(format!("http://d{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The names of the containers (any state) labelled `io.cathedral.node=NODE`.
    pub fn containers_of(&self, node: &str) -> Vec<String> {
        let filters = format!(r#"{{"label":["io.cathedral.node={node}"]}}"#);
        let body = self
            .get(&format!(
                "/v1.41/containers/json?all=true&filters={}",
                percent(&filters)
            ))
            .expect("the engine lists containers");
        let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        list.as_array()
            .expect("an array")
            .iter()
            .flat_map(|c| c["Names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_str().map(|n| n.trim_start_matches('/').to_string()))
            .collect()
    }

    /// The engine's own hard RLIMIT_NPROC (from /proc): what containers must be given
    /// where the engine's default exceeds it (see the server's `--docker-nproc-limit`).
    /// Podman lowers its own limit as it starts, so this is read off the running service.
    pub fn nproc_limit(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("the engine's limits");
        limits
            .lines()
            .find(|l| l.starts_with("Max processes"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|hard| hard.parse().ok())
            .unwrap_or(1024)
    }

    /// Whether the container named `name` is running.
    pub fn running(&self, name: &str) -> bool {
        self.get(&format!("/v1.41/containers/{name}/json"))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .is_some_and(|c| c["State"]["Running"] == serde_json::Value::Bool(true))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Imports [`TEST_IMAGE`] unless the engine's storage has it.
fn make_image() -> Result<(), String> {
    let exists = podman()
        .args(["image", "exists", TEST_IMAGE])
        .status()
        .map_err(|e| format!("podman: {e}"))?;
    if exists.success() {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(root.join("tmp")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(root.join("work")).map_err(|e| e.to_string())?;
    let busybox = which("busybox").expect("checked");
    // The image has no C library: the binary must be static (Debian's busybox-static).
    let head: Vec<u8> = std::fs::read(&busybox)
        .map_err(|e| e.to_string())?
        .into_iter()
        .take(4096)
        .collect();
    if head.windows(7).any(|w| w == b"ld-linu") {
        return Err(format!(
            "{} is dynamically linked; the test image needs busybox-static",
            busybox.display()
        ));
    }
    std::fs::copy(&busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    let tar = dir.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    run(podman()
        .arg("import")
        .args(["--change", "ENV PATH=/bin"])
        .arg(&tar)
        .arg(TEST_IMAGE))
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Percent-encodes a query value.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
