//! The values the state is made of: jobs and their attempts, nodes, workflows, counters,
//! and what applying a command answers.

use super::*;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed out",
        }
    }
}

/// One try at running a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub node: NodeId,
    pub assigned_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// A job and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why the job is in a final state other than succeeded.
    pub reason: Option<String>,
    pub submitted_at_ms: u64,
    /// A retry waits until then.
    pub not_before_ms: u64,
    pub attempts: Vec<Attempt>,
    pub workflow: Option<WorkflowId>,
    /// Jobs that depend on this one.
    pub dependents: Vec<JobId>,
}

impl Attempt {
    /// Whether it ended lost with its node.
    pub fn lost(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.exit == Exit::Lost)
    }
}

impl Job {
    /// The attempt in flight (assigned or running), if any.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        matches!(self.state, JobState::Assigned | JobState::Running)
            .then(|| self.attempts.last())
            .flatten()
    }
}

/// Whether a node takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Alive,
    Failed,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub info: NodeInfo,
    pub status: NodeStatus,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: WorkflowId,
    pub name: String,
    /// Workflow key → job.
    pub jobs: BTreeMap<String, JobId>,
    pub submitted_at_ms: u64,
}

/// Counts of what apply refused or found, replicated like the rest of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reports about an attempt that is no longer current (fencing).
    pub fenced_reports: u64,
    /// Assignments that no longer fit the state when applied.
    pub ignored_assignments: u64,
    /// Commands rejected as a whole.
    pub rejected_commands: u64,
    /// Checkpoint hashes that differed from the leader's.
    pub divergences: u64,
}

/// What applying one command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// New (or, for a repeated idempotency key, existing) job ids, in order.
    Submitted {
        jobs: Vec<JobId>,
    },
    WorkflowSubmitted {
        workflow: WorkflowId,
        jobs: BTreeMap<String, JobId>,
    },
    Assigned {
        accepted: u32,
        ignored: u32,
    },
    Rejected(Invalid),
    /// Not applicable to the current state (a stale report, an unknown id); counted.
    Ignored {
        reason: String,
    },
    Done,
    CheckpointRecorded {
        hash: [u8; 32],
    },
    CheckpointCompared {
        matched: bool,
    },
    /// A batch's responses, one per command, in order.
    Batch(Vec<Response>),
    /// The jobs a `Collect` removed, and how many of those it named it kept.
    Collected {
        jobs: Vec<JobId>,
        kept: u32,
    },
}

/// A job a `Collect` removed, with what the state kept of it beside the job itself: its
/// final record, for the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub job: Job,
    pub outputs: BTreeMap<String, String>,
    pub submitted_by: Option<String>,
    pub ended_at_ms: Option<u64>,
    /// The job's own retention, if it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
    /// Its namespace, when not `default` (records written before namespaces have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Collected {
    /// The namespace the job was in.
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(crate::namespace::DEFAULT_NAMESPACE)
    }
}

/// Resources an attempt in flight holds on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub slots: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}
