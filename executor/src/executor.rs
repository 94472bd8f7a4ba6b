//! The executor: picks a backend, starts attempts, captures their output, enforces
//! timeouts and cancellation, and reports how they ended.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backend::{Backend, BwrapBackend, ProcessBackend};
use crate::cgroup::{CgroupSupport, Cgroups, Ended, Group};
use crate::docker::{ContainerImage, DockerDriver, Limits};
use crate::error::{ExecError, Result};
use crate::spawn::{spawn, ChildProcess, Setup};
use crate::spec::{
    read_outputs, AttemptResult, AttemptSpec, Exit, KillReason, OPEN_FILES_MAX, OUTPUTS_ENV,
    OUTPUTS_SUBDIR,
};

/// Which sandbox an attempt asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxChoice {
    /// bubblewrap where it works on this host, else a plain process.
    Auto,
    Process,
    Bwrap,
    /// A container on the configured engine.
    Docker(ContainerImage),
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
    /// The container engine for the docker sandbox (`unix:///…`, `tcp://…`); `None`:
    /// no docker sandbox.
    pub docker_host: Option<String>,
    /// What this node's containers are labelled and named with (its node id).
    pub node_label: String,
    /// RLIMIT_NPROC of containers; `None`: the engine's default. For engines whose
    /// default exceeds what their host lets them set (rootful Podman in a container
    /// without CAP_SYS_RESOURCE): the container then cannot start. The pids cgroup limit
    /// bounds an attempt's processes either way.
    pub docker_nproc: Option<u64>,
}

impl ExecutorConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> ExecutorConfig {
        ExecutorConfig {
            data_dir: data_dir.into(),
            output_bytes_max: 64 << 20,
            grace_ms: 2_000,
            pids_max: 1024,
            cgroups: true,
            docker_host: None,
            node_label: "0".into(),
            docker_nproc: None,
        }
    }
}

/// Bytes of output kept in the outcome's tail.
pub const TAIL_BYTES: usize = 4096;

pub struct Executor {
    config: ExecutorConfig,
    work_dirs: Arc<WorkDirs>,
    process: ProcessBackend,
    bwrap: Option<BwrapBackend>,
    cgroups: Arc<Cgroups>,
    docker: Option<Arc<DockerDriver>>,
}

impl Executor {
    /// Detects bubblewrap and cgroups once.
    pub fn new(config: ExecutorConfig) -> Executor {
        let cgroups = Arc::new(Cgroups::new(if config.cgroups {
            CgroupSupport::detect()
        } else {
            CgroupSupport::None {
                why: "disabled by configuration".into(),
            }
        }));
        let bwrap = BwrapBackend::detect();
        tracing::info!(
            bwrap = bwrap.is_some(),
            limits = %cgroups.describe(),
            "executor ready"
        );
        let docker = config
            .docker_host
            .as_deref()
            .map(|h| Arc::new(DockerDriver::new(h, &config.node_label)));
        Executor {
            work_dirs: Arc::new(WorkDirs::new(config.data_dir.join(WORK_DIR))),
            config,
            process: ProcessBackend,
            bwrap,
            cgroups,
            docker,
        }
    }

    /// The container engine driver, when one is configured (whether or not it answers).
    pub fn docker(&self) -> Option<&Arc<DockerDriver>> {
        self.docker.as_ref()
    }

    /// Starts the attempt in the sandbox `choice` names: a container through the engine,
    /// anything else on a spawner thread (its start is file-system work and a clone; see
    /// [`crate::spawn::on_spawner`]).
    pub async fn launch(
        self: &Arc<Self>,
        spec: AttemptSpec,
        choice: SandboxChoice,
    ) -> Result<Attempt> {
        match choice {
            SandboxChoice::Docker(image) => {
                let driver = self
                    .docker
                    .clone()
                    .ok_or(ExecError::Unavailable("docker"))?;
                let sink = Sink::new(self.fresh_output(&spec)?, self.config.output_bytes_max);
                let pids_max = if spec.pids_max > 0 {
                    spec.pids_max
                } else {
                    self.config.pids_max
                };
                let limits = Limits {
                    pids_max,
                    grace: Duration::from_millis(self.config.grace_ms),
                    nproc: self
                        .config
                        .docker_nproc
                        .or_else(|| driver.engine_nproc_limit()),
                };
                driver.start(spec, image, sink, limits).await
            }
            other => {
                let me = self.clone();
                crate::spawn::on_spawner(move || me.start(spec, other))
                    .await
                    .map_err(|_| ExecError::Unavailable("the start panicked"))?
            }
        }
    }

    /// The attempt's output file, ready to be created by its first byte: its directory
    /// made, a file left by an earlier start of the same attempt removed.
    fn fresh_output(&self, spec: &AttemptSpec) -> Result<PathBuf> {
        let output = self.output_path(spec.job, spec.attempt);
        if let Some(dir) = output.parent() {
            if !dir.is_dir() {
                std::fs::create_dir_all(dir).map_err(|e| ExecError::io("create", dir, e))?;
            }
        }
        if output.exists() {
            std::fs::remove_file(&output).map_err(|e| ExecError::io("remove", &output, e))?;
        }
        Ok(output)
    }

    pub fn cgroups(&self) -> &CgroupSupport {
        &self.cgroups.support
    }

    pub fn has_bwrap(&self) -> bool {
        self.bwrap.is_some()
    }

    fn backend(&self, choice: &SandboxChoice) -> Result<&dyn Backend> {
        match (choice, &self.bwrap) {
            (SandboxChoice::Process, _) | (SandboxChoice::Auto, None) => Ok(&self.process),
            (SandboxChoice::Bwrap | SandboxChoice::Auto, Some(b)) => Ok(b),
            (SandboxChoice::Bwrap, None) => Err(ExecError::Unavailable("bwrap")),
            // Containers start through `launch`.
            (SandboxChoice::Docker(_), _) => Err(ExecError::Unavailable("docker")),
        }
    }

    /// Where the output of `attempt` of `job` goes.
    pub fn output_path(&self, job: u64, attempt: u32) -> PathBuf {
        output_path(&self.config.data_dir, job, attempt)
    }

    /// Starts the attempt as a process (plain or in bubblewrap); containers start through
    /// [`launch`](Self::launch). Its output is readable in [`Attempt::output`] while it runs.
    pub fn start(&self, spec: AttemptSpec, choice: SandboxChoice) -> Result<Attempt> {
        let backend = self.backend(&choice)?;
        let work = self
            .config
            .data_dir
            .join(WORK_DIR)
            .join(format!("{}-{}", spec.job, spec.attempt));
        self.work_dirs.take(&work)?;
        // The file is created by the first byte of output (a program that writes nothing
        // costs no file).
        let output = self.fresh_output(&spec)?;
        // Step outputs: one file per output in a directory of the work directory.
        let outputs_dir = work.join(OUTPUTS_SUBDIR);
        std::fs::create_dir_all(&outputs_dir)
            .map_err(|e| ExecError::io("create", &outputs_dir, e))?;
        let mut spec = spec;
        spec.env.insert(
            OUTPUTS_ENV.to_string(),
            outputs_dir.to_string_lossy().into_owned(),
        );
        let launch = backend.launch(&spec, &work)?;
        let pids_max = if spec.pids_max > 0 {
            spec.pids_max
        } else {
            self.config.pids_max
        };
        let (group, limits) = match self.cgroups.take(&spec, pids_max) {
            Ok(g) => (Some(g), self.cgroups.describe()),
            Err(why) => (None, format!("not applied: {why}")),
        };
        // In the child, before exec: its own session and process group (so a kill reaches
        // everything it starts), no core dumps, a bounded number of open files, its cgroup.
        let setup = Setup {
            setsid: true,
            rlimits: vec![
                (libc::RLIMIT_CORE as libc::c_int, 0),
                (libc::RLIMIT_NOFILE as libc::c_int, OPEN_FILES_MAX),
            ],
            cgroup_procs: group.as_ref().map(|g| g.procs_files()).unwrap_or_default(),
        };
        let spawned = match spawn(&launch, &setup) {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = group {
                    self.cgroups.give_back(g, true);
                }
                // Nothing ran in it.
                self.work_dirs.give_back(&work, true);
                return Err(ExecError::Spawn {
                    program: spec.command[0].clone(),
                    source: e,
                });
            }
        };
        let child = spawned.child;
        let pid = child.id();
        let sink = Arc::new(Mutex::new(Sink::new(
            output.clone(),
            self.config.output_bytes_max,
        )));
        // stdout and stderr share one pipe, so the file holds them in the order written.
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(spawned.output)
            .map_err(|e| ExecError::io("read the output pipe of", &output, e))?;
        let readers: Vec<JoinHandle<()>> = vec![{
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().write(&buf[..n]);
                }
            })
        }];
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let run = Run {
            work_dirs: self.work_dirs.clone(),
            cgroups: self.cgroups.clone(),
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

/// The directory under the data directory that holds attempts' output files.
pub const OUTPUTS_DIR: &str = "outputs";
/// The directory under the data directory that holds attempts' work directories.
pub const WORK_DIR: &str = "work";

/// Where the output of `attempt` of `job` lives under `data_dir`: one flat directory,
/// `outputs/<job>-<attempt>.log` (a directory per job cost an inode allocation per job).
pub fn output_path(data_dir: &Path, job: u64, attempt: u32) -> PathBuf {
    data_dir
        .join(OUTPUTS_DIR)
        .join(format!("{job}-{attempt}.log"))
}

/// Where earlier versions kept it (`outputs/<job>/<attempt>.log`); still read.
pub fn legacy_output_path(data_dir: &Path, job: u64, attempt: u32) -> PathBuf {
    data_dir
        .join(OUTPUTS_DIR)
        .join(job.to_string())
        .join(format!("{attempt}.log"))
}

/// Empty work directories kept for the next attempts: an attempt's directory is an empty
/// one renamed to its name, and renamed back once emptied, so a trivial job costs no
/// directory creation or removal (ext4 spends most of a mkdir looking for an inode that
/// was not deleted recently). A kept directory keeps its (emptied) step-outputs
/// directory too, for the same reason. Pool members live in `work/.pool/`.
struct WorkDirs {
    pool: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next: std::sync::atomic::AtomicU64,
    /// The pool directory's mode (made with the umask of the run that made it): a kept
    /// directory whose mode an attempt changed gets it back, so attempts find their
    /// directories alike.
    dir_mode: u32,
}

/// How long an attempt's output readers are waited for before its cleanup kills what is
/// left of it (a stray holding the output pipe keeps them from ending).
const READERS_FIRST_WAIT: Duration = Duration::from_millis(20);

/// Empty directories kept at most.
const WORK_DIRS_KEPT_MAX: usize = 256;
/// Most entries a work directory (and its step-outputs directory) may hold to be given
/// back on a spawner thread; a larger one is emptied on the blocking pool.
const SMALL_ENTRIES_MAX: usize = 64;

impl WorkDirs {
    fn new(root: PathBuf) -> WorkDirs {
        use std::os::unix::fs::PermissionsExt;
        let pool = root.join(".pool");
        // Members left by the last run were empty when given back (but for an empty
        // step-outputs directory).
        let free: Vec<PathBuf> = std::fs::read_dir(&pool)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let _ = std::fs::create_dir_all(&pool);
        let dir_mode = std::fs::metadata(&pool).map_or(0o755, |m| m.permissions().mode() & 0o7777);
        WorkDirs {
            pool,
            free: Mutex::new(free),
            next: std::sync::atomic::AtomicU64::new(0),
            dir_mode,
        }
    }

    /// Makes `work` an empty directory.
    fn take(&self, work: &Path) -> Result<()> {
        // A directory of the same attempt left by a crash is not reused.
        if work.exists() {
            let _ = std::fs::remove_dir_all(work);
        }
        while let Some(dir) = self.free.lock().unwrap().pop() {
            if std::fs::rename(&dir, work).is_ok() {
                return Ok(());
            }
        }
        std::fs::create_dir_all(work).map_err(|e| ExecError::io("create", work, e))
    }

    /// Empties `work` and keeps it for a later attempt, its step-outputs directory (when
    /// still a directory) emptied and kept too; or removes it. Kept only when `reuse`:
    /// nothing of the attempt that used it is left (a stray process could otherwise write
    /// into the next attempt's directory, or swap a directory for a link while it is
    /// emptied); removed with std's `remove_dir_all`, which follows no link, otherwise.
    fn give_back(&self, work: &Path, reuse: bool) {
        if !reuse {
            let _ = std::fs::remove_dir_all(work);
            return;
        }
        let emptied = self.empty(work, Some(OUTPUTS_SUBDIR));
        let kept = emptied && self.free.lock().unwrap().len() < WORK_DIRS_KEPT_MAX && {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let to = self.pool.join(format!("{}-{n}", std::process::id()));
            (self.pool.is_dir() || std::fs::create_dir_all(&self.pool).is_ok())
                && std::fs::rename(work, &to).is_ok()
                && {
                    self.free.lock().unwrap().push(to);
                    true
                }
        };
        if !kept {
            let _ = std::fs::remove_dir_all(work);
        }
    }

    /// Whether `dir` holds little: at most `SMALL_ENTRIES_MAX` entries and no directory
    /// but, where `outputs_inside`, the step-outputs one, itself small and without one.
    /// (From the directory entries' own types: no file is looked at.)
    fn small(dir: &Path, outputs_inside: bool) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut n = 0;
        for e in entries {
            let Ok(e) = e else { return false };
            n += 1;
            let Ok(t) = e.file_type() else { return false };
            let allowed = |e: &std::fs::DirEntry| {
                outputs_inside && e.file_name() == OUTPUTS_SUBDIR && Self::small(&e.path(), false)
            };
            if n > SMALL_ENTRIES_MAX || (t.is_dir() && !allowed(&e)) {
                return false;
            }
        }
        true
    }

    /// Removes everything in `dir` but the directory `keep` (emptied in turn), and gives
    /// both back their mode. False when something could not be removed.
    fn empty(&self, dir: &Path, keep: Option<&str>) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        // `file_type` is the entry's own (a symbolic link is not followed).
        let emptied = entries.flatten().all(|e| {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() && keep.is_some_and(|k| e.file_name() == k) => {
                    self.empty(&p, None)
                }
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p).is_ok(),
                _ => std::fs::remove_file(&p).is_ok(),
            }
        });
        emptied
            && std::fs::symlink_metadata(dir).is_ok_and(|m| {
                m.permissions().mode() & 0o7777 == self.dir_mode
                    || std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.dir_mode))
                        .is_ok()
            })
    }
}

/// Output capture: the file up to its cap (created at the first byte), and the last bytes
/// for the outcome.
pub(crate) struct Sink {
    pub(crate) path: PathBuf,
    file: Option<std::fs::File>,
    pub(crate) written: u64,
    cap: u64,
    pub(crate) truncated: bool,
    pub(crate) tail: VecDeque<u8>,
}

impl Sink {
    pub(crate) fn new(path: PathBuf, cap: u64) -> Sink {
        Sink {
            path,
            file: None,
            written: 0,
            cap,
            truncated: false,
            tail: VecDeque::with_capacity(TAIL_BYTES),
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        use std::io::Write;
        if self.file.is_none() {
            match std::fs::File::create(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) => tracing::warn!(path = %self.path.display(), "cannot keep output: {e}"),
            }
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let keep = data.len().min(room);
        if let Some(file) = self.file.as_mut() {
            if keep > 0 && file.write_all(&data[..keep]).is_ok() {
                self.written += keep as u64;
            }
            if keep < data.len() && !self.truncated {
                self.truncated = true;
                let _ = file.write_all(b"\n[cathedral: output truncated at the per-attempt cap]\n");
            }
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
    work_dirs: Arc<WorkDirs>,
    cgroups: Arc<Cgroups>,
    sandbox: &'static str,
    timeout: Option<Duration>,
    grace: Duration,
    group: Option<Group>,
    limits: String,
    work: PathBuf,
}

/// Step outputs as read: the published ones by name, and why each other was refused.
type Outputs = (std::collections::BTreeMap<String, Vec<u8>>, Vec<String>);

/// What is left of an attempt once its program exited: its cgroup and work directory.
struct Cleanup {
    group: Option<Group>,
    cgroups: Arc<Cgroups>,
    work: PathBuf,
    work_dirs: Arc<WorkDirs>,
}

impl Cleanup {
    /// On a spawner thread: kills what is left of the group once, and finishes here when
    /// nothing is left and the work directory is small; handed back otherwise.
    fn quick(self) -> Result<(Option<Ended>, Outputs), Box<Cleanup>> {
        let empty = self.group.as_ref().map(Group::kill_once);
        if empty == Some(false) || !WorkDirs::small(&self.work, true) {
            return Err(Box::new(self));
        }
        Ok(self.run(empty == Some(true)))
    }

    /// Empties the group, unless it is known `empty` (waiting up to 2 s), and gives it
    /// back with what it recorded; reads the step outputs, then gives the work directory
    /// back: kept for another attempt only when the group is proven empty (no process of
    /// this attempt can still reach it), removed otherwise.
    fn run(self, empty: bool) -> (Option<Ended>, Outputs) {
        let Cleanup {
            group,
            cgroups,
            work,
            work_dirs,
        } = self;
        let (ended, proven_empty) = match group {
            Some(mut g) => {
                let empty = empty || g.kill_all();
                let e = g.finish();
                cgroups.give_back(g, empty);
                (Some(e), empty)
            }
            None => (None, false),
        };
        // Read before the work directory is emptied.
        let outputs = read_outputs(&work.join(OUTPUTS_SUBDIR));
        work_dirs.give_back(&work, proven_empty);
        (ended, outputs)
    }
}

impl Run {
    async fn supervise(
        mut self,
        mut child: ChildProcess,
        pid: u32,
        readers: Vec<JoinHandle<()>>,
        sink: Arc<Mutex<Sink>>,
        mut cancel: oneshot::Receiver<()>,
    ) -> AttemptResult {
        let started = Instant::now();
        let mut killed = None;
        let status = tokio::select! {
            s = child.wait() => s,
            why = stop_requested(self.timeout, &mut cancel) => {
                killed = Some(why);
                self.terminate(&mut child, pid).await
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        // Nothing of the attempt outlives it: stray children of a finished program too. The
        // cgroup and directory work after the exit is file-system work, off the async
        // threads: queued now for a spawner thread (a hand-over much cheaper than the
        // blocking pool's), the strays killed there before the output readers are awaited
        // (they end once no stray holds the pipe). What may take long — a group not empty
        // at once (up to 2 s), a large work directory to remove — goes to the blocking
        // pool instead, so starts on the spawner threads never queue behind it.
        kill_group(pid, libc::SIGKILL);
        let cleanup = Cleanup {
            group: self.group.take(),
            cgroups: self.cgroups.clone(),
            work: std::mem::take(&mut self.work),
            work_dirs: self.work_dirs.clone(),
        };
        // The output's readers end at once unless a stray holds the pipe: waited for a
        // moment first (queued at once, the cleanup's thread competed with this attempt's
        // last steps: ~10 % of a trivial job's server CPU), then the strays are killed.
        let mut readers = std::pin::pin!(futures_util::future::join_all(readers));
        let read = tokio::time::timeout(READERS_FIRST_WAIT, &mut readers)
            .await
            .is_ok();
        let cleaned = crate::spawn::on_spawner(move || cleanup.quick());
        if !read {
            readers.await;
        }
        let (ended, (outputs, outputs_refused)) = match cleaned.await {
            Ok(Ok(done)) => done,
            Ok(Err(slow)) => tokio::task::spawn_blocking(move || slow.run(false))
                .await
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        let oom = ended.is_some_and(|e| e.oom_killed);
        let pids_limited = ended.is_some_and(|e| e.pids_limited);
        let memory_peak_bytes = ended.and_then(|e| e.memory_peak);
        if oom && killed.is_none() {
            killed = Some(KillReason::MemoryLimit);
        }
        let pids_note = pids_limited.then_some("; fork refused at pids.max");
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
            outputs,
            outputs_refused,
        }
    }

    /// SIGTERM to the process group, the grace period, then SIGKILL to the group and the
    /// cgroup; returns the program's status.
    async fn terminate(
        &self,
        child: &mut ChildProcess,
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

/// Resolves when the attempt must be stopped, and why: its timeout passed, or it was
/// cancelled. A handle dropped without cancelling lets the attempt run to its end.
pub(crate) async fn stop_requested(
    timeout: Option<Duration>,
    cancel: &mut oneshot::Receiver<()>,
) -> KillReason {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = deadline => KillReason::Timeout,
        r = cancel => match r {
            Ok(()) => KillReason::Cancelled,
            Err(_) => std::future::pending().await,
        },
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
    pub(crate) cancel: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<AttemptResult>,
    /// The program's pid (and process group id); 0 for a container.
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

    /// An attempt run by something other than this crate (a simulation's stand-in): `task`
    /// yields its outcome, `cancel` is what a cancellation sends it.
    pub fn from_task(
        task: JoinHandle<AttemptResult>,
        cancel: oneshot::Sender<()>,
        output: PathBuf,
        sandbox: &'static str,
    ) -> Attempt {
        Attempt {
            cancel: Some(cancel),
            task,
            pid: 0,
            output,
            sandbox,
        }
    }
}

/// What starts a node's attempts: the [`Executor`] (processes, bubblewrap, containers) in
/// production; a simulation gives a stand-in whose attempts take simulated time and end
/// as their spec says.
pub trait AttemptStarter: Send + Sync + 'static {
    /// Starts `spec` in the sandbox `choice` names.
    fn start_attempt(
        &self,
        spec: AttemptSpec,
        choice: SandboxChoice,
    ) -> futures_util::future::BoxFuture<'static, Result<Attempt>>;
}

impl AttemptStarter for Arc<Executor> {
    fn start_attempt(
        &self,
        spec: AttemptSpec,
        choice: SandboxChoice,
    ) -> futures_util::future::BoxFuture<'static, Result<Attempt>> {
        let me = self.clone();
        Box::pin(async move { me.launch(spec, choice).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn inode(p: &Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().ino()
    }

    fn names(p: &Path) -> Vec<std::ffi::OsString> {
        let mut n: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_kept_work_directory_comes_back_empty_but_for_its_outputs_directory_with_their_modes() {
        let root = tempfile::tempdir().unwrap();
        let dirs = WorkDirs::new(root.path().join("work"));
        let work = root.path().join("work/1-1");
        dirs.take(&work).unwrap();
        let outputs = work.join(OUTPUTS_SUBDIR);
        std::fs::create_dir_all(outputs.join("deep/er")).unwrap();
        std::fs::write(outputs.join("version"), "1").unwrap();
        std::fs::write(work.join("file"), "x").unwrap();
        std::fs::create_dir_all(work.join("sub/dir")).unwrap();
        std::fs::set_permissions(&outputs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (work_ino, outputs_ino) = (inode(&work), inode(&outputs));
        dirs.give_back(&work, true);
        assert!(!work.exists());

        let next = root.path().join("work/2-1");
        dirs.take(&next).unwrap();
        assert_eq!(
            inode(&next),
            work_ino,
            "the directory was kept, not made anew"
        );
        assert_eq!(names(&next), vec![std::ffi::OsString::from(OUTPUTS_SUBDIR)]);
        let outputs = next.join(OUTPUTS_SUBDIR);
        assert_eq!(inode(&outputs), outputs_ino, "its outputs directory too");
        assert!(names(&outputs).is_empty());
        assert_eq!(mode(&next), dirs.dir_mode);
        assert_eq!(mode(&outputs), dirs.dir_mode);
    }

    #[test]
    fn a_directory_not_proven_free_of_the_attempt_is_removed_not_kept() {
        let root = tempfile::tempdir().unwrap();
        let dirs = WorkDirs::new(root.path().join("work"));
        let work = root.path().join("work/1-1");
        dirs.take(&work).unwrap();
        std::fs::create_dir_all(work.join(OUTPUTS_SUBDIR)).unwrap();
        std::fs::write(work.join("file"), "x").unwrap();
        dirs.give_back(&work, false);
        assert!(!work.exists());
        assert!(dirs.free.lock().unwrap().is_empty(), "nothing kept");
    }

    #[test]
    fn small_is_a_few_files_and_the_outputs_directory_of_a_few_files() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("w");
        let outputs = work.join(OUTPUTS_SUBDIR);
        std::fs::create_dir_all(&outputs).unwrap();
        std::fs::write(work.join("a"), "x").unwrap();
        std::fs::write(outputs.join("version"), "1").unwrap();
        assert!(WorkDirs::small(&work, true));
        std::fs::create_dir(outputs.join("deep")).unwrap();
        assert!(!WorkDirs::small(&work, true), "a directory in the outputs");
        std::fs::remove_dir(outputs.join("deep")).unwrap();
        std::fs::create_dir(work.join("build")).unwrap();
        assert!(
            !WorkDirs::small(&work, true),
            "a directory of the attempt's own"
        );
        std::fs::remove_dir(work.join("build")).unwrap();
        for i in 0..SMALL_ENTRIES_MAX {
            std::fs::write(work.join(format!("f{i}")), "x").unwrap();
        }
        assert!(
            !WorkDirs::small(&work, true),
            "more than SMALL_ENTRIES_MAX entries"
        );
        assert!(!WorkDirs::small(&root.path().join("gone"), true));
    }

    #[test]
    fn an_outputs_directory_replaced_by_a_link_is_removed_and_what_it_points_at_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();
        let dirs = WorkDirs::new(root.path().join("work"));
        let work = root.path().join("work/1-1");
        dirs.take(&work).unwrap();
        std::os::unix::fs::symlink(&outside, work.join(OUTPUTS_SUBDIR)).unwrap();
        dirs.give_back(&work, true);

        let next = root.path().join("work/2-1");
        dirs.take(&next).unwrap();
        assert!(names(&next).is_empty(), "{:?}", names(&next));
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
    }
}
