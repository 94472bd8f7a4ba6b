//! The docker sandbox: an attempt as a container on a container engine, driven over the
//! Docker Engine API (`bollard`), never by parsing a CLI's output. Docker and Podman's
//! Docker-compatible service both speak it.
//!
//! ```text
//!  start ─▶ image present? (pull only if asked) ─▶ create (no network, read-only root,
//!           tmpfs /work and /tmp, env, memory/CPU/pids limits, ulimits, no capabilities,
//!           no new privileges, user, labels) ─▶ start
//!  supervise ─┬─ logs (follow) ─▶ the attempt's output file, while it runs
//!             ├─ wait ─▶ exit code ─▶ inspect (OOMKilled) ─▶ remove
//!             └─ timeout / cancel ─▶ stop (SIGTERM, grace, SIGKILL) ─▶ remove
//!  sweep (node start) ─▶ containers labelled with this node ─▶ removed, reported
//! ```
//!
//! Every container carries the labels [`LABEL_NODE`], [`LABEL_JOB`] and [`LABEL_ATTEMPT`]
//! and the name `cathedral-<node>-<job>-<attempt>`: a node that restarts finds the
//! containers of its previous run by label, removes them, and its worker reports those
//! attempts lost (the cluster retries them), so no container outlives the attempt that
//! the cluster knows of.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::error::{ExecError, Result};
use crate::executor::{stop_requested, Attempt, Sink};
use crate::spec::{AttemptResult, AttemptSpec, Exit, KillReason, OPEN_FILES_MAX};

/// Label: the node that made the container.
pub const LABEL_NODE: &str = "io.cathedral.node";
/// Label: the job the container runs an attempt of.
pub const LABEL_JOB: &str = "io.cathedral.job";
/// Label: the attempt's number.
pub const LABEL_ATTEMPT: &str = "io.cathedral.attempt";

/// The container's writable work directory (a tmpfs), also its working directory.
pub const CONTAINER_WORK_DIR: &str = "/work";
/// Size of the tmpfs at [`CONTAINER_WORK_DIR`] and of the one at `/tmp`, each.
pub const CONTAINER_TMPFS_BYTES: u64 = 64 << 20;
/// Calls that answer at once (create, start, inspect, stop, remove) give up after this.
pub const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for a container and following its logs last as long as the attempt.
const ENGINE_STREAM_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// After a container ended, how long its log stream may take to drain.
const LOGS_DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The image and user of a container attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub image: String,
    /// Pull the image when the engine lacks it.
    pub pull: bool,
    /// `uid[:gid]` or a user of the image; empty: the image's.
    pub user: String,
}

/// The engine address `--docker-host` defaults to: `DOCKER_HOST`, else the engine's
/// usual socket.
pub fn default_docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// A container engine and the containers this node runs on it.
pub struct DockerDriver {
    host: String,
    node: String,
    /// (calls, streams): two clients differing only in their request timeout. Made on
    /// first use, and again after a failure (a unix socket must exist to connect).
    clients: Mutex<Option<(bollard::Docker, bollard::Docker)>>,
    up: AtomicBool,
    /// The containers of the previous run are gone: containers may start.
    swept: AtomicBool,
    /// The attempts whose containers the sweep removed.
    removed: Mutex<Vec<(u64, u32)>>,
}

/// What the engine said when asked whether it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// "Docker Engine 27.1.1", "Podman Engine 4.3.1".
    pub version: String,
    pub api_version: String,
}

impl DockerDriver {
    /// A driver for the engine at `host` (`unix:///path`, `tcp://host:port`), labelling
    /// its containers with `node`. Nothing is contacted yet.
    pub fn new(host: &str, node: &str) -> DockerDriver {
        DockerDriver {
            host: host.to_string(),
            node: node.to_string(),
            clients: Mutex::new(None),
            up: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            removed: Mutex::new(Vec::new()),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The engine's own hard RLIMIT_NPROC, when it is a local process behind a unix
    /// socket: its pid from the socket's peer credentials, its limit from
    /// `/proc/PID/limits`. Containers get it where no limit is configured: an engine
    /// asks the kernel for its image's default (often higher), which a rootful Podman
    /// without `CAP_SYS_RESOURCE` may not grant ("error setting rlimit type 6"), and its
    /// own limit it can always grant. `None`: not local, not readable, or unlimited.
    pub fn engine_nproc_limit(&self) -> Option<u64> {
        let path = self.host.strip_prefix("unix://")?;
        // Pid 1 holds a socket-activated engine's socket (docker.socket, podman.socket):
        // its limits are not the engine's.
        let pid = peer_pid(std::path::Path::new(path)).filter(|p| *p != 1)?;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        nproc_hard_limit(&limits)
    }

    /// Whether the engine answered the last [`ping`](Self::ping).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn clients(&self) -> Result<(bollard::Docker, bollard::Docker)> {
        let mut c = self.clients.lock().unwrap();
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let api = bollard::Docker::connect_with_host(&self.host)
            .map_err(|e| ExecError::Engine(format!("{}: {e}", self.host)))?;
        let made = (
            api.clone().with_timeout(ENGINE_CALL_TIMEOUT),
            api.with_timeout(ENGINE_STREAM_TIMEOUT),
        );
        *c = Some(made.clone());
        Ok(made)
    }

    fn api(&self) -> Result<bollard::Docker> {
        self.clients().map(|c| c.0)
    }

    /// Asks the engine for its version; records whether it answered.
    pub async fn ping(&self) -> Result<EngineInfo> {
        let answer = async {
            let api = self.api()?;
            let v = api.version().await.map_err(engine)?;
            let name = v
                .components
                .as_ref()
                .and_then(|c| c.first())
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "Docker Engine".into());
            let version = v
                .components
                .as_ref()
                .and_then(|c| c.first())
                .map(|c| c.version.clone())
                .or(v.version)
                .unwrap_or_default();
            Ok(EngineInfo {
                version: format!("{name} {version}"),
                api_version: v.api_version.unwrap_or_default(),
            })
        }
        .await;
        if answer.is_err() {
            // A new connection next time: the socket may have been replaced.
            *self.clients.lock().unwrap() = None;
        }
        self.up.store(answer.is_ok(), Ordering::Relaxed);
        answer
    }

    /// Pings the engine; the first time it answers, also removes the containers this
    /// node's previous run left ([`sweep`](Self::sweep)) and returns their attempts.
    /// Until then no container starts, so the sweep never meets one of this run's.
    pub async fn probe(&self) -> Result<(EngineInfo, Vec<(u64, u32)>)> {
        let info = self.ping().await?;
        if self.swept.load(Ordering::Acquire) {
            return Ok((info, Vec::new()));
        }
        let removed = self.sweep().await?;
        self.removed.lock().unwrap().extend(removed.iter().copied());
        self.swept.store(true, Ordering::Release);
        Ok((info, removed))
    }

    /// Whether the containers of this node's previous run are known to be gone (the
    /// engine answered once since the start, and the sweep ran).
    pub fn is_swept(&self) -> bool {
        self.swept.load(Ordering::Acquire)
    }

    /// Whether the sweep removed the container of this attempt.
    pub fn swept_away(&self, job: u64, attempt: u32) -> bool {
        self.removed.lock().unwrap().contains(&(job, attempt))
    }

    /// Removes every container this node made (by its label), running or not; returns
    /// the (job, attempt) of each.
    async fn sweep(&self) -> Result<Vec<(u64, u32)>> {
        let api = self.api()?;
        let found = api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("{LABEL_NODE}={}", self.node)],
                )])),
                ..Default::default()
            }))
            .await
            .map_err(engine)?;
        let mut removed = Vec::new();
        for c in found {
            let Some(id) = c.id else { continue };
            let labels = c.labels.unwrap_or_default();
            let key = labels
                .get(LABEL_JOB)
                .and_then(|j| j.parse().ok())
                .zip(labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()));
            remove(&api, &id).await?;
            tracing::warn!(
                container = %id,
                job = ?key.map(|k: (u64, u32)| k.0),
                attempt = ?key.map(|k| k.1),
                state = ?c.state,
                "removed a container left by this node's previous run"
            );
            if let Some(k) = key {
                removed.push(k);
            }
        }
        Ok(removed)
    }

    /// The container name of an attempt.
    pub fn container_name(&self, job: u64, attempt: u32) -> String {
        format!("cathedral-{}-{job}-{attempt}", self.node)
    }

    /// Makes the image present (pulling only if asked), then creates and starts the
    /// attempt's container. Nothing is left behind when this fails.
    pub(crate) async fn start(
        self: &Arc<Self>,
        spec: AttemptSpec,
        image: ContainerImage,
        sink: Sink,
        limits: Limits,
    ) -> Result<Attempt> {
        if !self.swept.load(Ordering::Acquire) {
            return Err(ExecError::Engine(format!(
                "{} has not answered since this node started",
                self.host
            )));
        }
        let (api, streams) = self.clients()?;
        ensure_image(&api, &image).await?;
        let name = self.container_name(spec.job, spec.attempt);
        // A container of the same attempt left by a crash that the sweep did not see.
        remove(&api, &name).await?;
        let body = self.create_body(&spec, &image, &limits);
        api.create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| ExecError::Engine(format!("create container {name}: {}", message(&e))))?;
        if let Err(e) = api.start_container(&name, None).await {
            let _ = remove(&api, &name).await;
            return Err(ExecError::Engine(format!(
                "start container {name}: {}",
                message(&e)
            )));
        }
        let output = sink.path.clone();
        let sink = Arc::new(Mutex::new(sink));
        let logs = {
            let (streams, name, sink) = (streams.clone(), name.clone(), sink.clone());
            tokio::spawn(async move {
                let mut s = streams.logs(
                    &name,
                    Some(LogsOptions {
                        follow: true,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    }),
                );
                while let Some(Ok(chunk)) = s.next().await {
                    sink.lock().unwrap().write(&chunk.into_bytes());
                }
            })
        };
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let run = ContainerRun {
            api,
            streams,
            name,
            timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
            grace: limits.grace,
            memory_limited: spec.memory_bytes > 0,
            engine: self.host.clone(),
        };
        let task = tokio::spawn(run.supervise(logs, sink, cancel_rx));
        Ok(Attempt {
            cancel: Some(cancel_tx),
            task,
            pid: 0,
            output,
            sandbox: "docker",
        })
    }

    fn create_body(
        &self,
        spec: &AttemptSpec,
        image: &ContainerImage,
        limits: &Limits,
    ) -> ContainerCreateBody {
        let ulimit = |name: &str, n: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(n),
            hard: Some(n),
        };
        let tmpfs = format!("rw,nosuid,nodev,size={CONTAINER_TMPFS_BYTES},mode=1777");
        let positive = |n: u64| (n > 0).then_some(n as i64);
        ContainerCreateBody {
            image: Some(image.image.clone()),
            cmd: Some(spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: Some(image.user.clone()).filter(|u| !u.is_empty()),
            working_dir: Some(CONTAINER_WORK_DIR.into()),
            network_disabled: Some(true),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            labels: Some(HashMap::from([
                (LABEL_NODE.to_string(), self.node.clone()),
                (LABEL_JOB.to_string(), spec.job.to_string()),
                (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([
                    (CONTAINER_WORK_DIR.to_string(), tmpfs.clone()),
                    ("/tmp".to_string(), tmpfs),
                ])),
                memory: positive(spec.memory_bytes),
                // No swap beyond the memory limit.
                memory_swap: positive(spec.memory_bytes),
                nano_cpus: positive(spec.cpu_millis as u64 * 1_000_000),
                pids_limit: Some(limits.pids_max as i64),
                ulimits: Some(
                    [
                        Some(ulimit("nofile", OPEN_FILES_MAX as i64)),
                        Some(ulimit("core", 0)),
                        limits.nproc.map(|n| ulimit("nproc", n as i64)),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                ),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pid of the process listening on the unix socket at `path` (`SO_PEERCRED` of a
/// connection to it). Written here: std's `peer_cred` is not stable.
fn peer_pid(path: &std::path::Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of a ucred, as SO_PEERCRED fills.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}

/// The hard "Max processes" limit of a `/proc/PID/limits` text; `None` when unlimited
/// or absent.
fn nproc_hard_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|hard| hard.parse().ok())
}

/// What the executor sets on every container beyond the spec.
pub(crate) struct Limits {
    pub pids_max: u32,
    pub grace: Duration,
    /// RLIMIT_NPROC, when configured (else the engine's own limit where it can be read,
    /// else the engine's default).
    pub nproc: Option<u64>,
}

fn engine(e: ApiError) -> ExecError {
    ExecError::Engine(message(&e))
}

/// The engine's own message where it gave one.
fn message(e: &ApiError) -> String {
    match e {
        ApiError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

fn not_found(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Removes a container, running or not; one that is not there is fine.
async fn remove(api: &bollard::Docker, name: &str) -> Result<()> {
    match api
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(ExecError::Engine(format!(
            "remove container {name}: {}",
            message(&e)
        ))),
    }
}

/// The image is there, or pulled when the job asks; otherwise a clear failure.
async fn ensure_image(api: &bollard::Docker, image: &ContainerImage) -> Result<()> {
    match api.inspect_image(&image.image).await {
        Ok(_) => return Ok(()),
        Err(e) if not_found(&e) => {}
        Err(e) => {
            return Err(ExecError::Engine(format!(
                "inspect image {}: {}",
                image.image,
                message(&e)
            )))
        }
    }
    if !image.pull {
        return Err(ExecError::ImageMissing(image.image.clone()));
    }
    let mut pull = api.create_image(
        Some(CreateImageOptions {
            from_image: Some(image.image.clone()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(step) = pull.next().await {
        if let Err(e) = step {
            return Err(ExecError::Engine(format!(
                "pull {}: {}",
                image.image,
                message(&e)
            )));
        }
    }
    Ok(())
}

struct ContainerRun {
    api: bollard::Docker,
    streams: bollard::Docker,
    name: String,
    timeout: Option<Duration>,
    grace: Duration,
    memory_limited: bool,
    engine: String,
}

impl ContainerRun {
    async fn supervise(
        self,
        logs: tokio::task::JoinHandle<()>,
        sink: Arc<Mutex<Sink>>,
        mut cancel: oneshot::Receiver<()>,
    ) -> AttemptResult {
        let started = Instant::now();
        let mut killed = None;
        let code = tokio::select! {
            c = self.wait() => c,
            why = stop_requested(self.timeout, &mut cancel) => {
                killed = Some(why);
                self.stop().await
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let state = self
            .api
            .inspect_container(&self.name, None)
            .await
            .ok()
            .and_then(|c| c.state);
        let code = code.or_else(|| state.as_ref().and_then(|s| s.exit_code));
        let mut limits = format!("container engine at {}", self.engine);
        if killed.is_none() && self.memory_limited {
            if state.as_ref().and_then(|s| s.oom_killed) == Some(true) {
                killed = Some(KillReason::MemoryLimit);
            } else if code == Some(128 + libc::SIGKILL as i64) {
                // Some engines (Podman on cgroup v1) never set OOMKilled: a SIGKILL that
                // the executor did not send, under a memory limit, is the OOM killer's.
                killed = Some(KillReason::MemoryLimit);
                limits.push_str("; memory-limit kill inferred (the engine reports no OOMKilled)");
            }
        }
        // The log stream ends with the container; a stuck one is cut off.
        let _ = tokio::time::timeout(LOGS_DRAIN_WAIT, logs).await;
        if let Err(e) = remove(&self.api, &self.name).await {
            tracing::warn!(container = %self.name, "cannot remove the container: {e}");
        }
        let exit = match (killed, code) {
            (Some(KillReason::Timeout), _) => Exit::TimedOut,
            // A main process killed by signal N ends the container with 128+N.
            (_, Some(c)) if (129..=192).contains(&c) => Exit::Signal(c as i32 - 128),
            (_, Some(c)) => Exit::Code(c as i32),
            (_, None) => Exit::Code(-1),
        };
        let s = sink.lock().unwrap();
        AttemptResult {
            exit,
            duration_ms,
            output_tail: s.tail.iter().copied().collect(),
            output_bytes: s.written,
            output_truncated: s.truncated,
            sandbox: "docker",
            killed_because: killed,
            limits,
            cpu_ms: None,
            memory_peak_bytes: None,
            // The work directory is the container's tmpfs, gone with it: containers do
            // not publish step outputs.
            outputs: Default::default(),
            outputs_refused: Vec::new(),
        }
    }

    /// The container's exit code once it stops; `None` when the engine cannot say.
    async fn wait(&self) -> Option<i64> {
        loop {
            let mut w = self.streams.wait_container(&self.name, None);
            match w.next().await {
                Some(Ok(r)) => return Some(r.status_code),
                // bollard turns a non-zero exit into an error carrying the code.
                Some(Err(ApiError::DockerContainerWaitError { code, .. })) => return Some(code),
                Some(Err(e)) if not_found(&e) => return None,
                other => {
                    // The connection broke (engine restart): ask again, unless it is gone.
                    tracing::debug!(container = %self.name, ?other, "wait interrupted");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match self.api.inspect_container(&self.name, None).await {
                        Ok(c) if c.state.as_ref().and_then(|s| s.running) == Some(false) => {
                            return c.state.and_then(|s| s.exit_code)
                        }
                        Ok(_) => continue,
                        Err(e) if not_found(&e) => return None,
                        Err(_) => continue,
                    }
                }
            }
        }
    }

    /// SIGTERM, the grace period, SIGKILL (the engine's stop), then the exit code.
    async fn stop(&self) -> Option<i64> {
        let t = self.grace.as_secs_f64().ceil() as i32;
        if let Err(e) = self
            .api
            .clone()
            .with_timeout(ENGINE_CALL_TIMEOUT + self.grace)
            .stop_container(
                &self.name,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
        {
            tracing::warn!(container = %self.name, "stop: {}", message(&e));
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hard_process_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max processes             4096                 31503                processes \n";
        assert_eq!(nproc_hard_limit(text), Some(31503));
        let unlimited =
            "Max processes             unlimited            unlimited            processes \n";
        assert_eq!(nproc_hard_limit(unlimited), None);
        // This process's own limits parse (a real /proc file).
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert!(own.contains("Max processes"));
    }

    #[test]
    fn the_listening_process_is_found_through_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(peer_pid(&path), Some(std::process::id() as i32));
        let driver = DockerDriver::new(&format!("unix://{}", path.display()), "n");
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert_eq!(driver.engine_nproc_limit(), nproc_hard_limit(&own));
        assert_eq!(
            DockerDriver::new("tcp://127.0.0.1:2375", "n").engine_nproc_limit(),
            None
        );
    }
}
