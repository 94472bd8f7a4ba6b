//! The README's recipes, run as written: the commands are read out of README.md and run
//! verbatim through `sh` in a fresh directory, with the workspace's binaries first on PATH.
//! They use the documented default ports (50051.., 8081..), so this file is its own test
//! binary (cargo runs test binaries one at a time) and its tests take turns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cathedral_tests::bin;

/// The recipes share the documented ports: one at a time.
static PORTS: Mutex<()> = Mutex::new(());

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of the first ```sh block after the heading `heading`.
fn recipe(text: &str, heading: &str) -> Vec<String> {
    let at = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"));
    let rest = &text[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = rest[start..].find("```").expect("the block ends");
    rest[start..start + end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// PATH with the workspace's binaries first.
fn path_env() -> String {
    let dir = bin("cathedral-server").parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn sh(cwd: &Path, line: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path_env())
        .env_remove("CATHEDRAL_ADDR")
        .env_remove("CATHEDRAL_CONFIG")
        .env_remove("CATHEDRAL_DATA_DIR")
        .env_remove("CATHEDRAL_LOG");
    c
}

/// Servers started from the recipe, killed on drop (the process group, since `sh` runs them).
struct Servers(Vec<(Child, PathBuf)>);

impl Servers {
    fn start(cwd: &Path, line: &str) -> (Child, PathBuf) {
        let log = cwd.join(format!("server-{}.log", line.len()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = sh(cwd, &format!("exec {line}"));
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        (cmd.spawn().expect("start a server"), log)
    }

    fn check_running(&mut self) {
        for (c, log) in &mut self.0 {
            if let Some(status) = c.try_wait().unwrap() {
                panic!(
                    "a server of the recipe exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until nothing holds the documented ports (a previous test's servers gone). The
/// recipe needs those exact ports; another process on this machine may hold one (they lie
/// in Linux's ephemeral range, so any outgoing connection can take one for a while): then
/// the port is named and the test cannot run.
fn ports_free(ports: &[u16]) -> Result<(), u16> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in ports {
        while std::net::TcpListener::bind(("127.0.0.1", *p)).is_err()
            || std::net::UdpSocket::bind(("127.0.0.1", *p)).is_err()
        {
            if Instant::now() >= deadline {
                return Err(*p);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

#[test]
fn the_three_node_recipe_works_as_written() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let lines = recipe(&readme(), "## A three-node cluster");
    let (servers, rest): (Vec<_>, Vec<_>) = lines
        .iter()
        .partition(|l| l.starts_with("cathedral-server "));
    assert_eq!(servers.len(), 3, "{lines:?}");
    assert_eq!(rest.len(), 1, "{lines:?}");
    if let Err(p) = ports_free(&[50051, 50052, 50053, 8081, 8082, 8083]) {
        let holders = std::process::Command::new("ss")
            .args(["-tanup", &format!("( sport = :{p} )")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!(
            "SKIPPED the_three_node_recipe_works_as_written: port {p}, which the README's recipe uses, stayed in use by another process for 30 s:\n{holders}"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut running = Servers(Vec::new());
    for line in &servers {
        running.0.push(Servers::start(tmp.path(), line));
        // The first one initialises the cluster the others join.
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recipe's last line: three voters and one leader, within the time a join takes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        running.check_running();
        let out = sh(tmp.path(), rest[0]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let voters = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("voter"))
            .count();
        let leader = text
            .lines()
            .any(|l| l.starts_with("leader ") && !l.starts_with("leader none"));
        if out.status.success() && voters == 3 && leader {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no three-voter cluster from the README's recipe:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every node serves: a job submitted through the third runs.
    let out = sh(
        tmp.path(),
        "id=$(cathedral --server 127.0.0.1:50053 submit -- true) && cathedral --server 127.0.0.1:50053 wait \"$id\"",
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    running.check_running();
}
