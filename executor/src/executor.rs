//! The executor: picks a backend, starts attempts, captures their output, enforces
//! timeouts and cancellation, and reports how they ended.

use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backend::{Backend, BwrapBackend, ProcessBackend};
use crate::cgroup::{CgroupSupport, Group};
use crate::error::{ExecError, Result};
use crate::spec::{AttemptResult, AttemptSpec, Exit, KillReason, OPEN_FILES_MAX};

/// Which sandbox an attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxChoice {
    /// bubblewrap where it works on this host, else a plain process.
    Auto,
    Process,
    Bwrap,
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Work directories go to `<data_dir>/work`, output to `<data_dir>/outputs`.
    pub data_dir: PathBuf,
    /// Output bytes kept per attempt; the rest is dropped (and said so).
    pub output_bytes_max: u64,
    /// Between SIGTERM and SIGKILL on timeout or cancellation.
    pub grace_ms: u64,
    /// Processes an attempt may have at once, where cgroups allow.
    pub pids_max: u32,
    /// Use cgroups for memory, CPU and pids limits where the host allows.
    pub cgroups: bool,
}

impl ExecutorConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ExecutorConfig {
        ExecutorConfig {
            data_dir: data_dir.into(),
            output_bytes_max: 64 << 20,
            grace_ms: 2_000,
            pids_max: 1024,
            cgroups: true,
        }
    }
}

/// Bytes of output kept in the outcome's tail.
pub const TAIL_BYTES: usize = 4096;

pub struct Executor {
    config: ExecutorConfig,
    process: ProcessBackend,
    bwrap: Option<BwrapBackend>,
    cgroups: CgroupSupport,
}

impl Executor {
    /// Detects bubblewrap and cgroups once.
    pub fn new(config: ExecutorConfig) -> Executor {
        let cgroups = if config.cgroups {
            CgroupSupport::detect()
        } else {
            CgroupSupport::None {
                why: "disabled by configuration".into(),
            }
        };
        let bwrap = BwrapBackend::detect();
        tracing::info!(
            bwrap = bwrap.is_some(),
            limits = %cgroups.describe(),
            "executor ready"
        );
        Executor {
            config,
            process: ProcessBackend,
            bwrap,
            cgroups,
        }
    }

    pub fn cgroups(&self) -> &CgroupSupport {
        &self.cgroups
    }

    pub fn has_bwrap(&self) -> bool {
        self.bwrap.is_some()
    }

    fn backend(&self, choice: SandboxChoice) -> Result<&dyn Backend> {
        match (choice, &self.bwrap) {
            (SandboxChoice::Process, _) | (SandboxChoice::Auto, None) => Ok(&self.process),
            (SandboxChoice::Bwrap | SandboxChoice::Auto, Some(b)) => Ok(b),
            (SandboxChoice::Bwrap, None) => Err(ExecError::Unavailable("bwrap")),
        }
    }

    /// Where the output of `attempt` of `job` goes.
    pub fn output_path(&self, job: u64, attempt: u32) -> PathBuf {
        output_path(&self.config.data_dir, job, attempt)
    }

    /// Starts the attempt. Its output is readable in [`Attempt::output`] while it runs.
    pub fn start(&self, spec: AttemptSpec, choice: SandboxChoice) -> Result<Attempt> {
        let backend = self.backend(choice)?;
        let work = self
            .config
            .data_dir
            .join("work")
            .join(format!("{}-{}", spec.job, spec.attempt));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| ExecError::io("create", &work, e))?;
        let output = self.output_path(spec.job, spec.attempt);
        if let Some(dir) = output.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ExecError::io("create", dir, e))?;
        }
        let out_file =
            std::fs::File::create(&output).map_err(|e| ExecError::io("create", &output, e))?;
        let mut cmd = backend.command(&spec, &work)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let pids_max = if spec.pids_max > 0 {
            spec.pids_max
        } else {
            self.config.pids_max
        };
        let (group, limits) = match self.cgroups.create(&spec, pids_max) {
            Ok(g) => (Some(g), self.cgroups.describe()),
            Err(why) => (None, format!("not applied: {why}")),
        };
        let procs = group.as_ref().map(|g| g.procs_files()).unwrap_or_default();
        // SAFETY: only async-signal-safe calls between fork and exec: setsid, setrlimit,
        // open/write/close on paths prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                let files = libc::rlimit {
                    rlim_cur: OPEN_FILES_MAX,
                    rlim_max: OPEN_FILES_MAX,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &core) != 0
                    || libc::setrlimit(libc::RLIMIT_NOFILE, &files) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            if let Some(g) = &group {
                g.remove();
            }
            ExecError::Spawn {
                program: spec.command[0].clone(),
                source: e,
            }
        })?;
        let pid = child.id().unwrap_or(0);
        let sink = Arc::new(Mutex::new(Sink {
            file: out_file,
            written: 0,
            cap: self.config.output_bytes_max,
            truncated: false,
            tail: VecDeque::with_capacity(TAIL_BYTES),
        }));
        let readers: Vec<JoinHandle<()>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|mut r| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().write(&buf[..n]);
                }
            })
        })
        .collect();
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let run = Run {
            sandbox: backend.name(),
            timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
            grace: Duration::from_millis(self.config.grace_ms),
            group,
            limits,
            work,
        };
        let task = tokio::spawn(run.supervise(child, pid, readers, sink, cancel_rx));
        Ok(Attempt {
            cancel: Some(cancel_tx),
            task,
            pid,
            output,
            sandbox: backend.name(),
        })
    }
}

/// Where the output of `attempt` of `job` lives under `data_dir`.
pub fn output_path(data_dir: &Path, job: u64, attempt: u32) -> PathBuf {
    data_dir
        .join("outputs")
        .join(job.to_string())
        .join(format!("{attempt}.log"))
}

/// Output capture: the file up to its cap, and the last bytes for the outcome.
struct Sink {
    file: std::fs::File,
    written: u64,
    cap: u64,
    truncated: bool,
    tail: VecDeque<u8>,
}

impl Sink {
    fn write(&mut self, data: &[u8]) {
        use std::io::Write;
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = data.len().min(room);
        if keep > 0 && self.file.write_all(&data[..keep]).is_ok() {
            self.written += keep as u64;
        }
        if keep < data.len() && !self.truncated {
            self.truncated = true;
            let _ = self
                .file
                .write_all(b"\n[cathedral: output truncated at the per-attempt cap]\n");
        }
        for &b in data {
            if self.tail.len() == TAIL_BYTES {
                self.tail.pop_front();
            }
            self.tail.push_back(b);
        }
    }
}

struct Run {
    sandbox: &'static str,
    timeout: Option<Duration>,
    grace: Duration,
    group: Option<Group>,
    limits: String,
    work: PathBuf,
}

impl Run {
    async fn supervise(
        self,
        mut child: tokio::process::Child,
        pid: u32,
        readers: Vec<JoinHandle<()>>,
        sink: Arc<Mutex<Sink>>,
        mut cancel: oneshot::Receiver<()>,
    ) -> AttemptResult {
        let started = Instant::now();
        let deadline = async {
            match self.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        // A handle dropped without cancelling lets the attempt run to its end.
        let cancelled = async {
            if (&mut cancel).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let mut killed = None;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = deadline => { killed = Some(KillReason::Timeout); self.terminate(&mut child, pid).await }
            _ = cancelled => { killed = Some(KillReason::Cancelled); self.terminate(&mut child, pid).await }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        // Nothing of the attempt outlives it: stray children of a finished program too.
        kill_group(pid, libc::SIGKILL);
        if let Some(g) = &self.group {
            g.kill_all();
        }
        for r in readers {
            let _ = r.await;
        }
        let oom = self.group.as_ref().is_some_and(|g| g.oom_killed());
        if oom && killed.is_none() {
            killed = Some(KillReason::MemoryLimit);
        }
        let pids_note = self
            .group
            .as_ref()
            .is_some_and(|g| g.pids_limited())
            .then_some("; fork refused at pids.max");
        let memory_peak_bytes = self.group.as_ref().and_then(|g| g.memory_peak());
        if let Some(g) = &self.group {
            g.remove();
        }
        let _ = std::fs::remove_dir_all(&self.work);
        let exit = match (killed, status) {
            (Some(KillReason::Timeout), _) => Exit::TimedOut,
            (_, Ok(s)) => match (s.code(), s.signal()) {
                // bwrap, the parent inside the sandbox, exits 128+N when its program dies
                // of signal N; report the signal, as for a plain process.
                (Some(c), _) if self.sandbox == "bwrap" && (129..=192).contains(&c) => {
                    Exit::Signal(c - 128)
                }
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            },
            (_, Err(_)) => Exit::Signal(libc::SIGKILL),
        };
        let s = sink.lock().unwrap();
        AttemptResult {
            exit,
            duration_ms,
            output_tail: s.tail.iter().copied().collect(),
            output_bytes: s.written,
            output_truncated: s.truncated,
            sandbox: self.sandbox,
            killed_because: killed,
            limits: format!("{}{}", self.limits, pids_note.unwrap_or("")),
            cpu_ms: None,
            memory_peak_bytes,
        }
    }

    /// SIGTERM to the process group, the grace period, then SIGKILL to the group and the
    /// cgroup; returns the program's status.
    async fn terminate(
        &self,
        child: &mut tokio::process::Child,
        pid: u32,
    ) -> std::io::Result<std::process::ExitStatus> {
        kill_group(pid, libc::SIGTERM);
        if let Ok(s) = tokio::time::timeout(self.grace, child.wait()).await {
            return s;
        }
        kill_group(pid, libc::SIGKILL);
        if let Some(g) = &self.group {
            g.kill_all();
        }
        child.wait().await
    }
}

fn kill_group(pid: u32, sig: i32) {
    if pid > 0 {
        // The program called setsid before exec: its process group id is its pid.
        unsafe {
            libc::killpg(pid as i32, sig);
        }
    }
}

/// A running attempt.
pub struct Attempt {
    cancel: Option<oneshot::Sender<()>>,
    task: JoinHandle<AttemptResult>,
    /// The program's pid (and process group id).
    pub pid: u32,
    /// The output file, readable while the attempt runs.
    pub output: PathBuf,
    pub sandbox: &'static str,
}

impl Attempt {
    /// Asks the attempt to stop: SIGTERM, the grace period, SIGKILL.
    pub fn cancel(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the end and returns the outcome.
    pub async fn wait(self) -> AttemptResult {
        // Keep the sender alive while waiting, so a dropped handle does not read as a cancel.
        let _cancel = self.cancel;
        self.task.await.expect("the supervisor does not panic")
    }

    /// A handle that can cancel the attempt while another task waits for it.
    pub fn canceller(&mut self) -> Option<oneshot::Sender<()>> {
        self.cancel.take()
    }
}
