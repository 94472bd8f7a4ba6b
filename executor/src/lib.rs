//! Runs one job attempt: a program in a sandbox, with limits, a timeout, cancellation and
//! its output captured to a file. Knows nothing of Raft: a spec goes in, an outcome comes out.
//!
//! ```text
//!  AttemptSpec ─▶ Executor::launch ─┬▶ DockerDriver::start ─▶ engine API (create, start)
//!                                   └▶ Executor::start ─▶ Backend::launch (process | bwrap) ─▶ spawn
//!                      │               └─ setsid, rlimits, cgroup join before exec
//!                      ├─ stdout+stderr ─▶ <data>/outputs/<job>/<attempt>.log (capped)
//!                      └─ timeout / cancel ─▶ SIGTERM group, grace, SIGKILL (+ cgroup)
//!  Attempt::wait ─▶ AttemptResult { exit, duration, tail, sandbox, killed_because, limits }
//! ```
//!
//! # Layout
//!
//! - `spec`: [`AttemptSpec`], [`AttemptResult`], [`Exit`], [`KillReason`].
//! - `backend`: the [`Backend`] trait and its [`ProcessBackend`] and [`BwrapBackend`].
//! - `docker`: the docker sandbox, [`DockerDriver`]: containers over the Docker Engine API.
//! - `cgroup`: memory, CPU and pids limits through cgroup v2 or v1, where the host allows.
//! - `spawn`: starting a program with its setup (session, rlimits, cgroup) without copying
//!   the server's address space (clone with CLONE_VM | CLONE_VFORK), waited for by pidfd.
//! - `executor`: [`Executor`] (choosing a backend, starting attempts) and [`Attempt`].
//! - `error`: [`ExecError`].

mod backend;
mod cgroup;
mod docker;
mod error;
mod executor;
mod spawn;
mod spec;

pub use backend::{Backend, BwrapBackend, ProcessBackend};
pub use cgroup::CgroupSupport;
pub use docker::{
    default_docker_host, ContainerImage, DockerDriver, EngineInfo, CONTAINER_TMPFS_BYTES,
    CONTAINER_WORK_DIR, ENGINE_CALL_TIMEOUT, LABEL_ATTEMPT, LABEL_JOB, LABEL_NODE,
};
pub use error::{ExecError, Result};
pub use executor::{
    legacy_output_path, output_path, Attempt, AttemptStarter, Executor, ExecutorConfig,
    SandboxChoice, OUTPUTS_DIR, WORK_DIR,
};
pub use spawn::{Launch, DEFAULT_PATH};
pub use spec::{
    read_outputs, AttemptResult, AttemptSpec, Exit, KillReason, OPEN_FILES_MAX, OUTPUTS_ENV,
    OUTPUTS_READ_MAX, OUTPUTS_SUBDIR, OUTPUT_VALUE_READ_MAX,
};
