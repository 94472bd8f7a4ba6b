//! The Command vocabulary: every decision the cluster makes, as one log entry.
//!
//! A command is stored inside a log entry record (`raft::encode_entry`: a version byte,
//! then postcard of openraft's entry, whose payload is the command). Every command carries
//! the proposer's timestamp; apply never reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Invalid;

/// Identifier of a job, assigned by the state machine in log order.
pub type JobId = u64;
/// Identifier of a node, chosen when it first starts.
pub type NodeId = u64;
/// Identifier of a workflow, assigned by the state machine in log order.
pub type WorkflowId = u64;

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

/// A change to how apply works, turned on by an entry ([`Command::Enable`]) so that every
/// node — and every replay of a log written before it existed — switches at the same
/// index. New features are new variants, appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Feature {
    /// The state hash costs what changed since the last one, not the size of the state:
    /// each job's digest covers what the state keeps for it besides the job (its end time,
    /// own retention, step outputs, rerun base, submitter, idempotency key), and those maps
    /// leave the hash's full encoding. Without it (logs written before it existed) the
    /// maps are encoded whole at every checkpoint, as they were.
    JobDigestsCoverTheirRecords,
    /// A request's print (what a copy of it is recognised by) skips the timestamp of the
    /// command an `Authored` (or `WithJobOptions`) wraps too: a client's retry under
    /// access control, which carries a new timestamp, is answered with the first answer
    /// instead of refused as another request. Prints remembered before it stay as they
    /// were.
    RequestPrintsSkipEveryTimestamp,
    /// A submitted job's step-output references (`${{ jobs.KEY.outputs.NAME }}`) must be
    /// well formed and name a dependency of the job (`step_refs`): a typo is refused at
    /// submit. Before it, such a job was accepted and its attempt failed when it started.
    StepReferencesCheckedAtSubmit,
}

impl Feature {
    /// Every feature a leader of this build turns on.
    pub const ALL: [Feature; 3] = [
        Feature::JobDigestsCoverTheirRecords,
        Feature::RequestPrintsSkipEveryTimestamp,
        Feature::StepReferencesCheckedAtSubmit,
    ];
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

/// Default of [`Rules::lost_retries`].
pub const LOST_RETRIES_DEFAULT: u32 = 3;

/// Rules of apply that came after the log's first format, written to the log as one
/// [`Command::SetRules`] entry by the first leader that knows them. Entries applied before
/// it — a log written by an earlier build — replay under the rules they were written
/// under, so replays of old logs still match their checkpoints.
///
/// Under these rules an attempt lost with its node is not a failure of the job:
/// - lost before its start was committed, it never ran: the job is queued again at once
///   and the attempt counts against nothing;
/// - lost after it started, the job is queued again against a budget of its own,
///   `lost_retries`, apart from the job's own retries (which count only attempts that
///   ended by themselves: an exit, a signal, a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Times a job is queued again after losing a started attempt with its node; one
    /// more such loss fails it. At most `LOST_RETRIES_MAX`.
    pub lost_retries: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            lost_retries: LOST_RETRIES_DEFAULT,
        }
    }
}

impl Rules {
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        if self.lost_retries > limits::LOST_RETRIES_MAX {
            return Err(Invalid::new(
                "lost_retries",
                format!(
                    "{} > LOST_RETRIES_MAX {}",
                    self.lost_retries,
                    limits::LOST_RETRIES_MAX
                ),
            ));
        }
        Ok(())
    }
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

/// One placement decision of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub job: JobId,
    pub attempt: u32,
    pub node: NodeId,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The attempt exceeded the job's timeout.
    TimedOut,
    /// The node running it failed or restarted and the attempt is gone.
    Lost,
}

impl Exit {
    /// Names of the kinds of ending, in the order of [`kind`](Self::kind).
    pub const KINDS: [&'static str; 5] = ["succeeded", "failed", "killed", "timed_out", "lost"];

    /// Which of [`KINDS`](Self::KINDS) this is.
    pub fn kind(&self) -> usize {
        match self {
            Exit::Code(0) => 0,
            Exit::Code(_) => 1,
            Exit::Signal(_) => 2,
            Exit::TimedOut => 3,
            Exit::Lost => 4,
        }
    }
}

/// The replicated outcome of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit: Exit,
    pub duration_ms: u64,
    /// The last bytes of the attempt's output (at most OUTPUT_TAIL_BYTES_MAX).
    pub output_tail: Vec<u8>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit == Exit::Code(0)
    }
}

/// What a node is in the cluster: the one form of it, in the log, in the server's
/// `--role` and on the wire (by [`Role::name`]). The variants' order is part of the
/// entry format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A Raft voter (or a learner waiting for promotion).
    Coordinator,
    /// A Raft learner that runs jobs; never promoted.
    Worker,
    /// A one-voter cluster of its own, initialised on first start.
    Standalone,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Standalone, Role::Coordinator, Role::Worker];

    /// The role's name in flags, files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }

    /// The role named `s` (as [`Role::name`] writes it).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::parse(s)
            .ok_or_else(|| format!("{s:?} is not a role: standalone, coordinator or worker"))
    }
}

/// How much work a node takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub slots: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub address: String,
    pub role: Role,
    pub tags: BTreeMap<String, String>,
    pub capacity: Capacity,
}

/// Every decision the cluster records. `at_ms` is the proposer's clock, the only time
/// apply ever sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    SubmitJobs {
        at_ms: u64,
        jobs: Vec<JobSpec>,
    },
    SubmitWorkflow {
        at_ms: u64,
        name: String,
        jobs: Vec<WorkflowJob>,
    },
    AssignTasks {
        at_ms: u64,
        assignments: Vec<Assignment>,
    },
    TaskStarted {
        at_ms: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
    },
    TaskFinished {
        at_ms: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
        outcome: Outcome,
    },
    CancelJob {
        at_ms: u64,
        job: JobId,
        reason: String,
    },
    NodeRegistered {
        at_ms: u64,
        node: NodeInfo,
    },
    NodeFailed {
        at_ms: u64,
        node: NodeId,
    },
    NodeRetired {
        at_ms: u64,
        node: NodeId,
    },
    /// A failed node is back (gossip sees it alive again); it may be given work.
    NodeRecovered {
        at_ms: u64,
        node: NodeId,
    },
    /// Records the state hash at this entry's index on every node.
    Checkpoint {
        at_ms: u64,
    },
    /// The leader's hash at an earlier checkpoint index; every node compares its own.
    CheckpointHash {
        at_ms: u64,
        index: u64,
        hash: [u8; 32],
    },
    /// Several commands proposed together as one entry (the leader batches concurrent
    /// writes, so they share one append and one fdatasync). Applied in order, each on its
    /// own: one rejected command rejects only itself. Never nested, never holds a
    /// checkpoint.
    Batch {
        at_ms: u64,
        commands: Vec<Command>,
    },
    /// `command` applied at most once under request id `id` (see `requests`): a copy of an
    /// id already answered gets the first answer and changes nothing. Wraps a client or
    /// worker write; never a batch, a checkpoint or another request.
    Request {
        id: crate::requests::RequestId,
        command: Box<Command>,
    },
    /// Turns access control on, with its first (management) token; once only.
    AclBootstrap {
        at_ms: u64,
        token: crate::acl::Token,
    },
    /// Adds a token (only its secret's hash: see `acl`).
    TokenCreate {
        at_ms: u64,
        token: crate::acl::Token,
    },
    TokenRevoke {
        at_ms: u64,
        accessor: String,
    },
    /// `command` written under the token `accessor` (with access control on): the jobs it
    /// submits record their submitter. Wraps a submission or a cancel; inside a request.
    Authored {
        accessor: String,
        command: Box<Command>,
    },
    /// A change to the crons: created, paused, deleted, fired (see `cron`).
    Cron {
        at_ms: u64,
        op: crate::cron::CronOp,
    },
    /// The named outputs the current attempt of `job` published (files it wrote under
    /// `$CATHEDRAL_OUTPUTS`), reported by its node before its end; dependents read them.
    TaskOutputs {
        at_ms: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
        outputs: BTreeMap<String, String>,
    },
    /// Runs again job `from` of `workflow` (failed, timed out or cancelled) and every job
    /// of the workflow downstream of it; succeeded jobs upstream keep their results, and
    /// every job keeps its earlier attempts. A rerun job gets its retry budget anew.
    RerunWorkflow {
        at_ms: u64,
        workflow: WorkflowId,
        from: JobId,
    },
    /// The rules of apply from this entry on (see [`Rules`]); proposed by a leader whose
    /// settings differ from the state's.
    SetRules {
        at_ms: u64,
        rules: Rules,
    },
    /// Removes finished jobs from the state (retention, decided by the leader): each is
    /// collected only if it has ended, nothing unfinished depends on it, and — for a job
    /// of a workflow — every job of its workflow has ended; the others are kept. A
    /// workflow goes with its last job. At most `COLLECT_PER_ENTRY_MAX` ids.
    Collect {
        at_ms: u64,
        jobs: Vec<JobId>,
    },
    /// A `SubmitJobs` or `SubmitWorkflow` with options per job (`options[i]` for its i-th
    /// job; see [`JobOption`]). Options apply to the jobs the submission creates, not to
    /// those an idempotency key repeats.
    WithJobOptions {
        options: Vec<Vec<JobOption>>,
        command: Box<Command>,
    },
    /// Turns `feature` on from this entry on (a leader writes it on taking office while
    /// the state lacks it). Turning on one already on changes nothing.
    Enable {
        at_ms: u64,
        feature: Feature,
    },
}

impl Command {
    /// The proposer's timestamp.
    pub fn at_ms(&self) -> u64 {
        match self {
            Command::SubmitJobs { at_ms, .. }
            | Command::SubmitWorkflow { at_ms, .. }
            | Command::AssignTasks { at_ms, .. }
            | Command::TaskStarted { at_ms, .. }
            | Command::TaskFinished { at_ms, .. }
            | Command::CancelJob { at_ms, .. }
            | Command::NodeRegistered { at_ms, .. }
            | Command::NodeFailed { at_ms, .. }
            | Command::NodeRetired { at_ms, .. }
            | Command::NodeRecovered { at_ms, .. }
            | Command::Checkpoint { at_ms }
            | Command::CheckpointHash { at_ms, .. }
            | Command::Batch { at_ms, .. }
            | Command::AclBootstrap { at_ms, .. }
            | Command::TokenCreate { at_ms, .. }
            | Command::TokenRevoke { at_ms, .. }
            | Command::Cron { at_ms, .. }
            | Command::RerunWorkflow { at_ms, .. }
            | Command::SetRules { at_ms, .. }
            | Command::Collect { at_ms, .. }
            | Command::Enable { at_ms, .. }
            | Command::TaskOutputs { at_ms, .. } => *at_ms,
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::WithJobOptions { command, .. } => command.at_ms(),
        }
    }

    /// Sets the proposer's timestamp (a batch's own, not its commands').
    pub fn set_at_ms(&mut self, t: u64) {
        match self {
            Command::SubmitJobs { at_ms, .. }
            | Command::SubmitWorkflow { at_ms, .. }
            | Command::AssignTasks { at_ms, .. }
            | Command::TaskStarted { at_ms, .. }
            | Command::TaskFinished { at_ms, .. }
            | Command::CancelJob { at_ms, .. }
            | Command::NodeRegistered { at_ms, .. }
            | Command::NodeFailed { at_ms, .. }
            | Command::NodeRetired { at_ms, .. }
            | Command::NodeRecovered { at_ms, .. }
            | Command::Checkpoint { at_ms }
            | Command::CheckpointHash { at_ms, .. }
            | Command::Batch { at_ms, .. }
            | Command::AclBootstrap { at_ms, .. }
            | Command::TokenCreate { at_ms, .. }
            | Command::TokenRevoke { at_ms, .. }
            | Command::Cron { at_ms, .. }
            | Command::RerunWorkflow { at_ms, .. }
            | Command::SetRules { at_ms, .. }
            | Command::Collect { at_ms, .. }
            | Command::Enable { at_ms, .. }
            | Command::TaskOutputs { at_ms, .. } => *at_ms = t,
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::WithJobOptions { command, .. } => command.set_at_ms(t),
        }
    }

    /// `self` as a request under `id`, applied at most once. A request stays as it is.
    pub fn once(self, id: crate::requests::RequestId) -> Command {
        match self {
            r @ Command::Request { .. } => r,
            c => Command::Request {
                id,
                command: Box::new(c),
            },
        }
    }

    /// The command a request (and its author, and its job options) wraps, or itself.
    pub fn inner(&self) -> &Command {
        match self {
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::WithJobOptions { command, .. } => command.inner(),
            other => other,
        }
    }

    /// The command's kind, for filters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SubmitJobs { .. } => "submit_jobs",
            Command::SubmitWorkflow { .. } => "submit_workflow",
            Command::AssignTasks { .. } => "assign_tasks",
            Command::TaskStarted { .. } => "task_started",
            Command::TaskFinished { .. } => "task_finished",
            Command::CancelJob { .. } => "cancel_job",
            Command::NodeRegistered { .. } => "node_registered",
            Command::NodeFailed { .. } => "node_failed",
            Command::NodeRetired { .. } => "node_retired",
            Command::NodeRecovered { .. } => "node_recovered",
            Command::Checkpoint { .. } => "checkpoint",
            Command::CheckpointHash { .. } => "checkpoint_hash",
            Command::Batch { .. } => "batch",
            Command::AclBootstrap { .. } => "acl_bootstrap",
            Command::TokenCreate { .. } => "token_create",
            Command::TokenRevoke { .. } => "token_revoke",
            Command::Cron { .. } => "cron",
            Command::RerunWorkflow { .. } => "rerun_workflow",
            Command::TaskOutputs { .. } => "task_outputs",
            Command::SetRules { .. } => "set_rules",
            Command::Collect { .. } => "collect",
            Command::Enable { .. } => "enable",
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::WithJobOptions { command, .. } => command.kind(),
        }
    }

    /// Whether the leader may put this command in a [`Batch`](Command::Batch): not a batch
    /// itself, not a checkpoint (whose hash names its entry's index alone).
    pub fn batchable(&self) -> bool {
        !matches!(
            self.inner(),
            Command::Batch { .. } | Command::Checkpoint { .. } | Command::CheckpointHash { .. }
        )
    }

    /// The commands this one stands for: a batch's, or itself.
    pub fn commands(&self) -> &[Command] {
        match self {
            Command::Batch { commands, .. } => commands,
            other => std::slice::from_ref(other),
        }
    }

    /// Bytes of the command's postcard encoding (what a log entry carries of it), measured
    /// without building it.
    pub fn encoded_len(&self) -> usize {
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default())
            .expect("commands always encode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field_and_bound() {
        let ok = JobSpec::new("j", &["true"]);
        ok.validate().unwrap();
        let cases: Vec<(JobSpec, &str)> = vec![
            (
                JobSpec {
                    command: vec![],
                    ..ok.clone()
                },
                "command",
            ),
            (
                JobSpec {
                    name: String::new(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                JobSpec {
                    name: "x".repeat(300),
                    ..ok.clone()
                },
                "JOB_NAME_BYTES_MAX",
            ),
            (
                JobSpec {
                    timeout_ms: limits::TIMEOUT_MS_MAX + 1,
                    ..ok.clone()
                },
                "TIMEOUT_MS_MAX",
            ),
            (
                JobSpec {
                    retry: RetryPolicy {
                        max_attempts: 0,
                        ..Default::default()
                    },
                    ..ok.clone()
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    command: vec!["a".repeat(70_000)],
                    ..ok.clone()
                },
                "COMMAND_BYTES_MAX",
            ),
            (
                JobSpec {
                    env: [("A".to_string(), "x\0y".to_string())].into(),
                    ..ok.clone()
                },
                "must not contain NUL",
            ),
            (
                JobSpec {
                    constraints: [("zone name".to_string(), "x".to_string())].into(),
                    ..ok.clone()
                },
                "letters, digits",
            ),
            (
                JobSpec {
                    constraints: [("k".repeat(65), "x".to_string())].into(),
                    ..ok.clone()
                },
                "TAG_KEY_BYTES_MAX",
            ),
            (
                JobSpec {
                    sandbox: SandboxKind::Docker(ContainerSpec::default()),
                    ..ok.clone()
                },
                "IMAGE_BYTES_MAX",
            ),
            (
                JobSpec {
                    sandbox: SandboxKind::Docker(ContainerSpec {
                        image: "busybox".into(),
                        user: "root; rm".into(),
                        pull: false,
                    }),
                    ..ok.clone()
                },
                "docker.user",
            ),
        ];
        for (spec, want) in cases {
            let e = spec.validate().unwrap_err();
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
    }

    /// Log entries hold a sandbox as its variant's position: the positions of the older
    /// variants never change, so entries written before `Docker` existed decode as before.
    #[test]
    fn sandbox_encodings_are_stable() {
        let enc = |s: &SandboxKind| postcard::to_allocvec(s).unwrap();
        assert_eq!(enc(&SandboxKind::Default), [0]);
        assert_eq!(enc(&SandboxKind::Process), [1]);
        assert_eq!(enc(&SandboxKind::Bubblewrap), [2]);
        let docker = SandboxKind::Docker(ContainerSpec {
            image: "busybox".into(),
            pull: true,
            user: "65534".into(),
        });
        let bytes = enc(&docker);
        assert_eq!(bytes[0], 3);
        assert_eq!(postcard::from_bytes::<SandboxKind>(&bytes).unwrap(), docker);
        assert_eq!(
            postcard::from_bytes::<SandboxKind>(&[2]).unwrap(),
            SandboxKind::Bubblewrap
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            multiplier_milli: 2000,
        };
        let d: Vec<u64> = (2..=7).map(|n| r.backoff_ms(n)).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
