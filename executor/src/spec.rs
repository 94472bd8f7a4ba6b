//! What an attempt is asked to do, and how it ended.

use std::collections::BTreeMap;

/// Open files an attempt may hold (RLIMIT_NOFILE).
pub const OPEN_FILES_MAX: u64 = 4096;

/// One attempt of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSpec {
    pub job: u64,
    pub attempt: u32,
    /// argv; not run through a shell.
    pub command: Vec<String>,
    /// The whole environment of the program (nothing is inherited but a default `PATH`
    /// when this has none).
    pub env: BTreeMap<String, String>,
    /// 0: none.
    pub timeout_ms: u64,
    /// CPU share in millicores (0: no limit).
    pub cpu_millis: u32,
    /// Memory limit in bytes (0: no limit).
    pub memory_bytes: u64,
    /// Processes and threads the attempt may have at once (0: the executor's default).
    pub pids_max: u32,
}

impl AttemptSpec {
    pub fn new(job: u64, attempt: u32, command: &[&str]) -> AttemptSpec {
        AttemptSpec {
            job,
            attempt,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            timeout_ms: 0,
            cpu_millis: 0,
            memory_bytes: 0,
            pids_max: 0,
        }
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

/// Why the executor (or the kernel) killed an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Timeout,
    Cancelled,
    /// The memory limit was hit (the kernel's OOM killer acted in the attempt's cgroup).
    MemoryLimit,
}

impl KillReason {
    pub fn name(self) -> &'static str {
        match self {
            KillReason::Timeout => "timeout",
            KillReason::Cancelled => "cancelled",
            KillReason::MemoryLimit => "memory limit",
        }
    }
}

/// The outcome of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub exit: Exit,
    pub duration_ms: u64,
    /// The last bytes of the output.
    pub output_tail: Vec<u8>,
    pub output_bytes: u64,
    /// Output past the cap was dropped.
    pub output_truncated: bool,
    /// Which sandbox ran it: "process" or "bwrap".
    pub sandbox: &'static str,
    pub killed_because: Option<KillReason>,
    /// How the memory, CPU and pids limits were applied ("cgroup v1", "cgroup v2"), or why
    /// they could not be.
    pub limits: String,
    /// CPU time of the attempt's processes, where measured.
    pub cpu_ms: Option<u64>,
    /// Highest memory use in bytes, where measured (cgroup).
    pub memory_peak_bytes: Option<u64>,
}
