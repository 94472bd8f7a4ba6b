//! What a user submits: a job's spec (command, sandbox, retries, resources, step outputs),
//! a workflow's jobs, the options carried beside a submission, and the bounds of all of
//! it (`limits`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Command, JobId};
use crate::error::Invalid;

/// Bounds of a job spec; input past one is rejected with the bound's name.
pub mod limits {
    pub const JOB_NAME_BYTES_MAX: usize = 256;
    pub const COMMAND_ARGS_MAX: usize = 1024;
    pub const COMMAND_BYTES_MAX: usize = 64 * 1024;
    pub const ENV_VARS_MAX: usize = 256;
    pub const ENV_BYTES_MAX: usize = 64 * 1024;
    pub const CONSTRAINTS_MAX: usize = 64;
    pub const DEPENDENCIES_MAX: usize = 1024;
    pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
    pub const TIMEOUT_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
    pub const ATTEMPTS_MAX: u32 = 100;
    pub const BACKOFF_MS_MAX: u64 = 24 * 3600 * 1000;
    pub const MEMORY_BYTES_MAX: u64 = 1 << 40;
    pub const CPU_MILLIS_MAX: u32 = 1024 * 1000;
    pub const WORKFLOW_JOBS_MAX: usize = 10_000;
    pub const OUTPUT_TAIL_BYTES_MAX: usize = 4096;
    pub const SUBMIT_BATCH_MAX: usize = 10_000;
    /// Named outputs one job may publish (step outputs).
    pub const STEP_OUTPUTS_MAX: usize = 16;
    /// Bytes of one step output's value.
    pub const STEP_OUTPUT_BYTES_MAX: usize = 64 * 1024;
    /// Bytes of a step output's name (letters, digits, `_`, `-`).
    pub const STEP_OUTPUT_NAME_BYTES_MAX: usize = 64;
    /// A container image reference (`registry/name:tag` or `name@sha256:…`).
    pub const IMAGE_BYTES_MAX: usize = 512;
    /// A container user (`uid[:gid]` or a name in the image).
    pub const CONTAINER_USER_BYTES_MAX: usize = 64;
    /// Times one job may be placed again after losing a started attempt with its node
    /// (`Rules::lost_retries`).
    pub const LOST_RETRIES_MAX: u32 = 100;
    /// Attempts of one job lost with their node before they started that count against
    /// nothing; past them, such losses spend the lost-retry budget too (a job that takes
    /// its nodes down before its start is committed does not cycle through them forever).
    pub const LOST_BEFORE_START_FREE: u32 = 5;
    /// Jobs one `Collect` entry names.
    pub const COLLECT_PER_ENTRY_MAX: usize = 1000;
    /// A job's own retention (`JobOption::RetainMs`): ten years.
    pub const JOB_RETAIN_MS_MAX: u64 = 3650 * 24 * 3600 * 1000;
    /// Options of one job (`WithJobOptions`).
    pub const JOB_OPTIONS_MAX: usize = 8;
}

/// A per-job setting that is not part of [`JobSpec`] (whose encoding is fixed by the logs
/// already written): carried beside the submission by [`Command::WithJobOptions`]. New
/// options are new variants, appended, so every log written stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOption {
    /// How long the job is kept after it ended before it is collected, instead of the
    /// cluster's `--job-retention`; 0 keeps it until something else removes it.
    RetainMs(u64),
}

impl JobOption {
    fn validate(&self) -> std::result::Result<(), Invalid> {
        match self {
            JobOption::RetainMs(ms) if *ms > limits::JOB_RETAIN_MS_MAX => Err(Invalid::new(
                "retain",
                format!("{ms} ms > JOB_RETAIN_MS_MAX {}", limits::JOB_RETAIN_MS_MAX),
            )),
            JobOption::RetainMs(_) => Ok(()),
        }
    }

    /// The job's own retention among `options`, if it asked for one.
    // A find, not a map: more variants will come.
    #[allow(clippy::unnecessary_find_map)]
    pub fn retain_ms(options: &[JobOption]) -> Option<u64> {
        options.iter().find_map(|o| match o {
            JobOption::RetainMs(ms) => Some(*ms),
        })
    }
}

/// Checks `options` against the submission `command` they go with: one list per job, in
/// the order of its jobs, each within its bounds, no option twice.
pub fn check_job_options(
    options: &[Vec<JobOption>],
    command: &Command,
) -> std::result::Result<(), Invalid> {
    let jobs = match command {
        Command::SubmitJobs { jobs, .. } => jobs.len(),
        Command::SubmitWorkflow { jobs, .. } => jobs.len(),
        other => {
            return Err(Invalid::new(
                "options",
                format!("a {} takes no job options", other.kind()),
            ))
        }
    };
    if options.len() != jobs {
        return Err(Invalid::new(
            "options",
            format!("{} option lists for {jobs} jobs", options.len()),
        ));
    }
    for list in options {
        if list.len() > limits::JOB_OPTIONS_MAX {
            return Err(Invalid::new(
                "options",
                format!(
                    "{} > JOB_OPTIONS_MAX {}",
                    list.len(),
                    limits::JOB_OPTIONS_MAX
                ),
            ));
        }
        for (k, o) in list.iter().enumerate() {
            o.validate()?;
            if list[..k]
                .iter()
                .any(|x| std::mem::discriminant(x) == std::mem::discriminant(o))
            {
                return Err(Invalid::new("options", format!("{o:?} given twice")));
            }
        }
    }
    Ok(())
}

/// How an attempt is isolated.
///
/// Variants are only ever appended: log entries hold a variant's position (postcard), so
/// entries written before a variant existed decode unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SandboxKind {
    /// Let the executor choose the strongest available.
    #[default]
    Default,
    Process,
    Bubblewrap,
    /// A container on the node's container engine (Docker Engine API); placed only on
    /// nodes that advertise `driver.docker=true`.
    Docker(ContainerSpec),
}

/// What a container job runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerSpec {
    pub image: String,
    /// Pull the image when the engine does not have it; otherwise a missing image fails
    /// the attempt.
    pub pull: bool,
    /// `uid[:gid]` or a user of the image; empty: the image's own user.
    pub user: String,
}

impl SandboxKind {
    /// The node tag a node needs to run this sandbox, if any.
    pub fn required_tag(&self) -> Option<(&'static str, &'static str)> {
        match self {
            SandboxKind::Docker(_) => Some((DOCKER_DRIVER_TAG, "true")),
            _ => None,
        }
    }
}

/// The tag a node advertises (`driver.docker=true`) while its container engine answers.
pub const DOCKER_DRIVER_TAG: &str = "driver.docker";

/// Retries: attempts and exponential backoff between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Growth per retry in thousandths (2000 doubles). Integer, so every node computes
    /// the same delay.
    pub multiplier_milli: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 1000,
            max_backoff_ms: 60_000,
            multiplier_milli: 2000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next` (2 for the first retry).
    pub fn backoff_ms(&self, next: u32) -> u64 {
        let mut d = self.initial_backoff_ms;
        for _ in 2..next {
            d = d.saturating_mul(self.multiplier_milli as u64) / 1000;
            if d >= self.max_backoff_ms {
                break;
            }
        }
        d.min(self.max_backoff_ms)
    }
}

/// What a job asks of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

/// A job as a user submits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// Program and arguments (argv); not run through a shell.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    /// Tags a node must carry, `key = value`.
    pub constraints: BTreeMap<String, String>,
    /// 0: no timeout.
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    /// Higher runs first.
    pub priority: i32,
    pub depends_on: Vec<JobId>,
    pub idempotency_key: Option<String>,
    pub sandbox: SandboxKind,
}

impl JobSpec {
    /// A spec running `command` with every other field at its default.
    pub fn new(name: &str, command: &[&str]) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            resources: Resources::default(),
            constraints: BTreeMap::new(),
            timeout_ms: 0,
            retry: RetryPolicy::default(),
            priority: 0,
            depends_on: Vec::new(),
            idempotency_key: None,
            sandbox: SandboxKind::Default,
        }
    }

    /// Checks every field against its bound. The error names the field and the bound.
    ///
    /// Long on purpose: one check per field, in the field order of `JobSpec`, so every
    /// bound a spec has is read in one place (split up, a new field's check is easy to miss).
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        use limits::*;
        let bad = |field: &str, reason: String| Err(Invalid::new(field, reason));
        if self.name.is_empty() || self.name.len() > JOB_NAME_BYTES_MAX {
            return bad(
                "name",
                format!("must be 1..={JOB_NAME_BYTES_MAX} bytes (JOB_NAME_BYTES_MAX)"),
            );
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return bad("command", "must name a program".into());
        }
        if self.command.len() > COMMAND_ARGS_MAX {
            return bad(
                "command",
                format!(
                    "{} arguments > COMMAND_ARGS_MAX {COMMAND_ARGS_MAX}",
                    self.command.len()
                ),
            );
        }
        let cmd_bytes: usize = self.command.iter().map(|a| a.len()).sum();
        if cmd_bytes > COMMAND_BYTES_MAX {
            return bad(
                "command",
                format!("{cmd_bytes} bytes > COMMAND_BYTES_MAX {COMMAND_BYTES_MAX}"),
            );
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return bad("command", "arguments must not contain NUL".into());
        }
        if self.env.len() > ENV_VARS_MAX {
            return bad(
                "env",
                format!("{} variables > ENV_VARS_MAX {ENV_VARS_MAX}", self.env.len()),
            );
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_bytes > ENV_BYTES_MAX {
            return bad(
                "env",
                format!("{env_bytes} bytes > ENV_BYTES_MAX {ENV_BYTES_MAX}"),
            );
        }
        if let Some(k) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return bad("env", format!("invalid variable name {k:?}"));
        }
        // A value is handed to execve as `NAME=value\0`: a NUL inside would cut it short.
        if let Some(k) = self
            .env
            .iter()
            .find(|(_, v)| v.contains('\0'))
            .map(|(k, _)| k)
        {
            return bad("env", format!("the value of {k:?} must not contain NUL"));
        }
        if self.resources.cpu_millis > CPU_MILLIS_MAX {
            return bad(
                "resources.cpu_millis",
                format!("> CPU_MILLIS_MAX {CPU_MILLIS_MAX}"),
            );
        }
        if self.resources.memory_bytes > MEMORY_BYTES_MAX {
            return bad(
                "resources.memory_bytes",
                format!("> MEMORY_BYTES_MAX {MEMORY_BYTES_MAX}"),
            );
        }
        if self.constraints.len() > CONSTRAINTS_MAX {
            return bad(
                "constraints",
                format!(
                    "{} > CONSTRAINTS_MAX {CONSTRAINTS_MAX}",
                    self.constraints.len()
                ),
            );
        }
        // The rule node tags follow: a constraint no node could ever carry is refused here
        // rather than left pending forever.
        for (k, v) in &self.constraints {
            if let Err(reason) =
                crate::tags::check_key(k).and_then(|()| crate::tags::check_value(k, v))
            {
                return bad("constraints", reason);
            }
        }
        if self.timeout_ms > TIMEOUT_MS_MAX {
            return bad(
                "timeout_ms",
                format!("{} > TIMEOUT_MS_MAX {TIMEOUT_MS_MAX}", self.timeout_ms),
            );
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > ATTEMPTS_MAX {
            return bad(
                "retry.max_attempts",
                format!("must be 1..={ATTEMPTS_MAX} (ATTEMPTS_MAX)"),
            );
        }
        if r.initial_backoff_ms > r.max_backoff_ms || r.max_backoff_ms > BACKOFF_MS_MAX {
            return bad(
                "retry",
                format!(
                    "need initial_backoff_ms <= max_backoff_ms <= BACKOFF_MS_MAX {BACKOFF_MS_MAX}"
                ),
            );
        }
        if r.multiplier_milli < 1000 || r.multiplier_milli > 100_000 {
            return bad(
                "retry.multiplier_milli",
                "must be 1000..=100000 (1x..100x)".into(),
            );
        }
        if self.depends_on.len() > DEPENDENCIES_MAX {
            return bad(
                "depends_on",
                format!(
                    "{} > DEPENDENCIES_MAX {DEPENDENCIES_MAX}",
                    self.depends_on.len()
                ),
            );
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > IDEMPOTENCY_KEY_BYTES_MAX {
                return bad(
                    "idempotency_key",
                    format!(
                        "must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} bytes (IDEMPOTENCY_KEY_BYTES_MAX)"
                    ),
                );
            }
        }
        if let SandboxKind::Docker(c) = &self.sandbox {
            if c.image.is_empty() || c.image.len() > IMAGE_BYTES_MAX {
                return bad(
                    "docker.image",
                    format!("must be 1..={IMAGE_BYTES_MAX} bytes (IMAGE_BYTES_MAX)"),
                );
            }
            if c.image
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return bad(
                    "docker.image",
                    "must not contain spaces or control characters".into(),
                );
            }
            if c.user.len() > CONTAINER_USER_BYTES_MAX
                || c.user
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return bad(
                    "docker.user",
                    format!(
                        "must be at most {CONTAINER_USER_BYTES_MAX} bytes (CONTAINER_USER_BYTES_MAX) without spaces"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Checks a job's published outputs against their bounds: at most `STEP_OUTPUTS_MAX`,
/// names of letters, digits, `_` and `-` up to `STEP_OUTPUT_NAME_BYTES_MAX`, values up
/// to `STEP_OUTPUT_BYTES_MAX`.
pub fn check_outputs(outputs: &BTreeMap<String, String>) -> Result<(), Invalid> {
    use limits::*;
    if outputs.len() > STEP_OUTPUTS_MAX {
        return Err(Invalid::new(
            "outputs",
            format!("{} > STEP_OUTPUTS_MAX {STEP_OUTPUTS_MAX}", outputs.len()),
        ));
    }
    for (k, v) in outputs {
        if !valid_output_name(k) {
            return Err(Invalid::new(
                "outputs",
                format!("name {k:?}: 1..={STEP_OUTPUT_NAME_BYTES_MAX} bytes of letters, digits, _ and - (STEP_OUTPUT_NAME_BYTES_MAX)"),
            ));
        }
        if v.len() > STEP_OUTPUT_BYTES_MAX {
            return Err(Invalid::new(
                "outputs",
                format!(
                    "{k}: {} bytes > STEP_OUTPUT_BYTES_MAX {STEP_OUTPUT_BYTES_MAX}",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `name` may name a step output.
pub fn valid_output_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::STEP_OUTPUT_NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One job of a workflow; `after` names other jobs of the same workflow by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowJob {
    pub key: String,
    pub spec: JobSpec,
    pub after: Vec<String>,
}
