//! The README's recipes, run as written. Every ```sh block of README.md is a recipe, and
//! the line before it says how it runs (a block without one fails this test):
//!
//! - `<!-- recipe: standalone -->`: a `cathedral-server` with every default (data in
//!   `./cathedral-data`, ports 50051 and 8081) runs in a clean directory holding a copy of
//!   `examples/`; the block runs there as one `sh -e` script.
//! - `<!-- recipe: offline -->`: the same server runs three jobs and stops; then the block.
//! - `<!-- recipe: script -->`: the block alone in a clean directory (it starts what it
//!   needs); whatever it left running is killed after it.
//! - `<!-- recipe: repository -->`: the block in the repository's root (reads only).
//! - `<!-- recipe: three-node -->`: three servers, each in its own terminal
//!   (`the_three_node_recipe_works_as_written`).
//! - `<!-- recipe: not run here: WHY -->`: the README says why, next to the recipe.
//!
//! The workspace's binaries come first on PATH. The recipes use the documented ports, so
//! this file is its own test binary (cargo runs test binaries one at a time) and its tests
//! take turns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cathedral_tests::{bin, copy_dir};

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

/// One ```sh block of the README: the line it starts on, how it runs, its text.
#[derive(Debug)]
struct Block {
    line: usize,
    how: String,
    text: String,
}

/// Every ```sh block, with its `<!-- recipe: … -->` marker (empty when it has none).
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "```sh" {
            let how = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- recipe:"))
                .and_then(|l| l.strip_suffix("-->"))
                .map_or(String::new(), |m| m.trim().to_string());
            let end = (i + 1..lines.len())
                .find(|&k| lines[k].trim_start().starts_with("```"))
                .expect("the block ends");
            out.push(Block {
                line: i + 1,
                how,
                text: lines[i + 1..end].join("\n") + "\n",
            });
            i = end;
        }
        i += 1;
    }
    out
}

/// The blocks that run as `how`.
fn blocks_of(how: &str) -> Vec<Block> {
    blocks(&readme())
        .into_iter()
        .filter(|b| b.how == how)
        .collect()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// How long one recipe may run.
const RECIPE_TIME_MAX: Duration = Duration::from_secs(180);

/// Runs `block` as one `sh -e` script in `cwd`, in a process group of its own (killed
/// after, with whatever it started in the background); panics with its output unless it
/// exits 0 within `RECIPE_TIME_MAX`.
fn run_block(cwd: &Path, block: &Block) {
    use std::os::unix::process::CommandExt;
    // The output goes to an unnamed temporary file, never into `cwd` (the repository,
    // for recipes that read its files).
    let out = tempfile::tempfile().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-ec")
        .arg(&block.text)
        .current_dir(cwd)
        .env("PATH", path_env())
        .env_remove("CATHEDRAL_ADDR")
        .env_remove("CATHEDRAL_CONFIG")
        .env_remove("CATHEDRAL_DATA_DIR")
        .env_remove("CATHEDRAL_LOG")
        .env_remove("CATHEDRAL_TOKEN")
        .env_remove("CATHEDRAL_TLS_CA")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .process_group(0);
    let out_read = out;
    let mut child = cmd.spawn().expect("run sh");
    let group = child.id() as i32;
    let deadline = Instant::now() + RECIPE_TIME_MAX;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: a plain kill(2) of the group the script leads.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.wait();
    let text = {
        use std::io::{Read, Seek};
        let mut out = out_read;
        let mut text = String::new();
        let _ = out.rewind().and_then(|()| out.read_to_string(&mut text));
        text
    };
    match status {
        Some(s) if s.success() => eprintln!("README line {}: ran\n{text}", block.line),
        Some(s) => panic!(
            "the README's recipe at line {} failed ({s}):\n{}\n--- its output:\n{text}",
            block.line, block.text
        ),
        None => panic!(
            "the README's recipe at line {} ran past {RECIPE_TIME_MAX:?}:\n{}\n--- its output:\n{text}",
            block.line, block.text
        ),
    }
}

/// Waits for the documented ports, or says which one another process holds (then the
/// recipe cannot run here, and the test says so).
fn take_ports(ports: &[u16], test: &str) -> bool {
    match ports_free(ports) {
        Ok(()) => true,
        Err(p) => {
            eprintln!(
                "SKIPPED {test}: port {p}, which the README's recipes use, stayed in use by another process for 30 s"
            );
            false
        }
    }
}

/// A clean directory holding a copy of `examples/`, with a default standalone server
/// running in it, ready.
fn standalone(tmp: &Path) -> Servers {
    copy_dir(&repository().join("examples"), &tmp.join("examples"));
    let mut running = Servers(vec![Servers::start(tmp, "cathedral-server")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        running.check_running();
        let ok = sh(tmp, "curl -fs 127.0.0.1:8081/readyz")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "the standalone server never got ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_recipe_says_how_it_runs() {
    let known = [
        "standalone",
        "offline",
        "script",
        "repository",
        "three-node",
    ];
    let all = blocks(&readme());
    assert!(all.len() >= 10, "{all:?}");
    for b in &all {
        assert!(
            known.contains(&b.how.as_str())
                || b.how.strip_prefix("not run here:").is_some_and(|why| !why.trim().is_empty()),
            "README line {}: a ```sh block needs `<!-- recipe: standalone|offline|script|repository|three-node -->` or `<!-- recipe: not run here: WHY -->` on the line before it (found {:?})",
            b.line,
            b.how
        );
    }
    // Every kind but three-node is run by a test below, block by block.
    assert_eq!(blocks_of("three-node").len(), 1);
}

#[test]
fn the_standalone_recipes_work_as_written() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for block in blocks_of("standalone") {
        if !take_ports(&[50051, 8081], "the_standalone_recipes_work_as_written") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut running = standalone(tmp.path());
        run_block(tmp.path(), &block);
        running.check_running();
    }
}

#[test]
fn the_offline_recipes_work_as_written() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for block in blocks_of("offline") {
        if !take_ports(&[50051, 8081], "the_offline_recipes_work_as_written") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut running = standalone(tmp.path());
        let out = sh(
            tmp.path(),
            "for i in 1 2 3; do id=$(cathedral submit -- echo $i); cathedral wait $id; done",
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        // A clean stop (SIGTERM), as an operator stops a node before working on its data.
        for (c, _) in &mut running.0 {
            // SAFETY: a plain kill(2) of the server this test started.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
        running.0.clear();
        run_block(tmp.path(), &block);
    }
}

#[test]
fn the_script_recipes_work_as_written() {
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for block in blocks_of("script") {
        if !take_ports(
            &[7001, 7002, 7003, 8001, 8002, 8003],
            "the_script_recipes_work_as_written",
        ) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        run_block(tmp.path(), &block);
    }
}

#[test]
fn the_repository_recipes_work_as_written() {
    for block in blocks_of("repository") {
        let needs: Vec<&str> = block
            .text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| ["promtool", "kubectl"].contains(w))
            .collect();
        if let Some(missing) = needs.iter().find(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .map_or(true, |o| !o.status.success())
        }) {
            eprintln!(
                "SKIPPED the README's recipe at line {}: {missing} is not installed (scripts/test.sh installs it where it can)",
                block.line
            );
            continue;
        }
        run_block(&repository(), &block);
    }
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
