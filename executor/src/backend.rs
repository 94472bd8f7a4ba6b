//! Sandbox backends: each turns an attempt into the command that runs it. The executor
//! adds what every backend shares (process group, rlimits, cgroup, output, kill).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ExecError, Result};
use crate::spec::AttemptSpec;

/// `PATH` for a program whose environment names none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How an attempt is isolated.
pub trait Backend: Send + Sync {
    /// "process" or "bwrap": reported in every outcome.
    fn name(&self) -> &'static str;
    /// The command that runs `spec` with `work_dir` as its working (and only writable)
    /// directory. Its environment must be exactly the spec's (plus a default `PATH`).
    fn command(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Command>;
}

fn environment(cmd: &mut Command, spec: &AttemptSpec) {
    cmd.env_clear().envs(&spec.env);
    if !spec.env.contains_key("PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
}

/// A plain process in its own session and process group.
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn command(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Command> {
        let (program, args) = spec.command.split_first().ok_or(ExecError::EmptyCommand)?;
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(work_dir);
        environment(&mut cmd, spec);
        Ok(cmd)
    }
}

/// bubblewrap: the host's root read-only, no network, private `/tmp`, `/proc` and pid
/// namespace, only the work directory writable.
pub struct BwrapBackend {
    pub bwrap: PathBuf,
}

impl BwrapBackend {
    /// bubblewrap from `PATH`, if it is installed and can create its namespaces here.
    pub fn detect() -> Option<BwrapBackend> {
        let path = std::env::var_os("PATH")?;
        let bwrap = std::env::split_paths(&path)
            .map(|d| d.join("bwrap"))
            .find(|p| p.is_file())?;
        let works = Command::new(&bwrap)
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-net",
                "--unshare-pid",
                "--",
                "true",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then_some(BwrapBackend { bwrap })
    }
}

impl Backend for BwrapBackend {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn command(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Command> {
        if spec.command.is_empty() {
            return Err(ExecError::EmptyCommand);
        }
        let work = work_dir.as_os_str();
        let mut cmd = Command::new(&self.bwrap);
        cmd.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
            .args(["--tmpfs", "/tmp"])
            .arg("--bind")
            .arg(work)
            .arg(work)
            .arg("--chdir")
            .arg(work)
            .args([
                "--unshare-net",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--",
            ])
            .args(&spec.command)
            .current_dir(work_dir);
        // bwrap hands its own environment to the program.
        environment(&mut cmd, spec);
        Ok(cmd)
    }
}
