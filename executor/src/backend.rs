//! Sandbox backends: each turns an attempt into the command that runs it. The executor
//! adds what every backend shares (process group, rlimits, cgroup, output, kill).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ExecError, Result};
use crate::spawn::{Launch, DEFAULT_PATH};
use crate::spec::AttemptSpec;

/// How an attempt is isolated.
pub trait Backend: Send + Sync {
    /// "process" or "bwrap": reported in every outcome.
    fn name(&self) -> &'static str;
    /// What runs `spec` with `work_dir` as its working (and only writable) directory. Its
    /// environment is exactly the spec's (plus a default `PATH`).
    fn launch(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Launch>;
}

fn environment(spec: &AttemptSpec) -> BTreeMap<String, String> {
    let mut env = spec.env.clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env
}

/// A plain process in its own session and process group.
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Launch> {
        let (program, args) = spec.command.split_first().ok_or(ExecError::EmptyCommand)?;
        Ok(Launch {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: environment(spec),
            cwd: work_dir.to_path_buf(),
        })
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

    fn launch(&self, spec: &AttemptSpec, work_dir: &Path) -> Result<Launch> {
        if spec.command.is_empty() {
            return Err(ExecError::EmptyCommand);
        }
        let work = work_dir.as_os_str();
        let mut args: Vec<OsString> = [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--bind",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.extend([work.into(), work.into(), "--chdir".into(), work.into()]);
        args.extend(
            [
                "--unshare-net",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--die-with-parent",
                "--",
            ]
            .iter()
            .map(OsString::from),
        );
        args.extend(spec.command.iter().map(OsString::from));
        // bwrap hands its own environment to the program.
        Ok(Launch {
            program: self.bwrap.clone().into_os_string(),
            args,
            env: environment(spec),
            cwd: work_dir.to_path_buf(),
        })
    }
}
