//! The Command vocabulary: every decision the cluster makes, as one log entry.
//!
//! A command is stored inside a log entry record (`raft::encode_entry`: a version byte,
//! then postcard of openraft's entry, whose payload is the command). Every command carries
//! the proposer's timestamp; apply never reads a clock.
//!
//! Its parts: `job` what a user submits (a job's spec, its sandbox, retries, resources,
//! options and bounds), `node` what a node registers as; this file the ids, the features
//! and rules that change apply, attempts' outcomes and the commands themselves.

mod job;
mod node;

pub use job::*;
pub use node::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Invalid;

/// Identifier of a job, assigned by the state machine in log order.
pub type JobId = u64;
/// Identifier of a node, chosen when it first starts.
pub type NodeId = u64;
/// Identifier of a workflow, assigned by the state machine in log order.
pub type WorkflowId = u64;

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
    /// The answered-request table keeps every answer at least a minute whatever its count
    /// bound, and forgets an id a node assigned a minute after it was answered (a client's
    /// keeps the full retention): see `requests`.
    NodeRequestIdsKeptAMinute,
    /// The state hash covers the answered-request table by the sum of its answers'
    /// digests (kept as answers come and go) instead of its whole encoding: a checkpoint
    /// no longer costs O(the table) — up to a minute of writes' answers, 60–70 ms of
    /// apply at 64 clients on one node. Before it, the table is encoded whole. It changes
    /// the by-job hash only (with `JobDigestsCoverTheirRecords`, which a leader turns on
    /// first), and leaves out the order answers leave in: that follows from the entries
    /// applied, which the rest of the state reflects.
    RequestTableSummed,
}

impl Feature {
    /// Every feature a leader of this build turns on.
    pub const ALL: [Feature; 5] = [
        Feature::JobDigestsCoverTheirRecords,
        Feature::RequestPrintsSkipEveryTimestamp,
        Feature::StepReferencesCheckedAtSubmit,
        Feature::NodeRequestIdsKeptAMinute,
        Feature::RequestTableSummed,
    ];
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
    /// A namespace created, updated or deleted (see `namespace`).
    Namespace {
        at_ms: u64,
        op: crate::namespace::NamespaceOp,
    },
    /// A submission (`SubmitJobs`, `SubmitWorkflow`, or one `WithJobOptions` wraps) made
    /// in namespace `namespace`: its jobs belong to it, its idempotency keys are its own,
    /// and its quotas apply. Inside a request and an `Authored`.
    InNamespace {
        namespace: String,
        command: Box<Command>,
    },
    /// Adds a token scoped to namespaces: it may do there what `grants` allow (see
    /// `namespace::Grant`), and its policy counts only for what spans the cluster.
    TokenCreateScoped {
        at_ms: u64,
        token: crate::acl::Token,
        grants: Vec<crate::namespace::Grant>,
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
            | Command::Namespace { at_ms, .. }
            | Command::TokenCreateScoped { at_ms, .. }
            | Command::TaskOutputs { at_ms, .. } => *at_ms,
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::InNamespace { command, .. }
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
            | Command::Namespace { at_ms, .. }
            | Command::TokenCreateScoped { at_ms, .. }
            | Command::TaskOutputs { at_ms, .. } => *at_ms = t,
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::InNamespace { command, .. }
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

    /// The namespace a submission was made in (`InNamespace`, under a request and an
    /// author), if it names one.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Command::InNamespace { namespace, .. } => Some(namespace),
            Command::Request { command, .. } | Command::Authored { command, .. } => {
                command.namespace()
            }
            _ => None,
        }
    }

    /// The command a request (and its author, namespace and job options) wraps, or itself.
    pub fn inner(&self) -> &Command {
        match self {
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::InNamespace { command, .. }
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
            Command::Namespace { .. } => "namespace",
            Command::TokenCreateScoped { .. } => "token_create",
            Command::Request { command, .. }
            | Command::Authored { command, .. }
            | Command::InNamespace { command, .. }
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
