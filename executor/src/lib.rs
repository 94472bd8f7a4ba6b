//! Runs one job attempt: a program in a sandbox, with limits, a timeout, cancellation and
//! its output captured to a file. Knows nothing of Raft: a spec goes in, an outcome comes out.
//!
//! ```text
//!  AttemptSpec ─▶ Executor::start ─▶ Backend::command (process | bwrap)
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
//! - `cgroup`: memory, CPU and pids limits through cgroup v2 or v1, where the host allows.
//! - `executor`: [`Executor`] (choosing a backend, starting attempts) and [`Attempt`].
//! - `error`: [`ExecError`].

mod backend;
mod cgroup;
mod error;
mod executor;
mod spec;

pub use backend::{Backend, BwrapBackend, ProcessBackend};
pub use cgroup::CgroupSupport;
pub use error::{ExecError, Result};
pub use executor::{output_path, Attempt, Executor, ExecutorConfig, SandboxChoice};
pub use spec::{AttemptResult, AttemptSpec, Exit, KillReason, OPEN_FILES_MAX};
