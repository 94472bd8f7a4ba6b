//! Events: what each applied entry changed, in words a watcher wants — a job submitted,
//! assigned, started, finished, retried or cancelled, a node joined, failed, recovered or
//! left, a new leader's term, a checkpoint.
//!
//! They are derived while applying, from the state before and after each command (every
//! change to a job passes through `ClusterState::touch`, which records the job's state
//! before it), so they are a pure function of the log: every node and every replay
//! derives the same events at the same indexes. Nothing here is stored; the log is.

use serde::{Deserialize, Serialize};

use crate::command::{Exit, JobId, NodeId, WorkflowId};
use crate::state::{Job, JobState};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    JobSubmitted,
    JobAssigned,
    JobStarted,
    /// Ended for good: succeeded, failed or timed out (`detail` says which).
    JobFinished,
    /// An attempt ended without finishing the job; it waits for another.
    JobRetried,
    JobCancelled,
    NodeJoined,
    NodeFailed,
    NodeRecovered,
    NodeLeft,
    /// A leader's first entry of its term (`node` is the leader, `detail` the term).
    LeaderChanged,
    Checkpoint,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::JobSubmitted,
        EventKind::JobAssigned,
        EventKind::JobStarted,
        EventKind::JobFinished,
        EventKind::JobRetried,
        EventKind::JobCancelled,
        EventKind::NodeJoined,
        EventKind::NodeFailed,
        EventKind::NodeRecovered,
        EventKind::NodeLeft,
        EventKind::LeaderChanged,
        EventKind::Checkpoint,
    ];

    /// The name used on every surface (gRPC, SSE, the CLI's filters).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::JobSubmitted => "job_submitted",
            EventKind::JobAssigned => "job_assigned",
            EventKind::JobStarted => "job_started",
            EventKind::JobFinished => "job_finished",
            EventKind::JobRetried => "job_retried",
            EventKind::JobCancelled => "job_cancelled",
            EventKind::NodeJoined => "node_joined",
            EventKind::NodeFailed => "node_failed",
            EventKind::NodeRecovered => "node_recovered",
            EventKind::NodeLeft => "node_left",
            EventKind::LeaderChanged => "leader_changed",
            EventKind::Checkpoint => "checkpoint",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One event: where in the log it comes from, and what it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The log index of the entry that caused it.
    pub index: u64,
    /// Its place among the events of the same entry, from 0: `(index, seq)` orders all
    /// events and is where a watcher resumes.
    pub seq: u32,
    pub kind: EventKind,
    /// The proposer's clock of the command (0 where an entry has none).
    pub at_ms: u64,
    pub job: Option<JobId>,
    pub workflow: Option<WorkflowId>,
    pub node: Option<NodeId>,
    pub attempt: Option<u32>,
    /// The state reached, the reason or the outcome, in words.
    pub detail: String,
    /// The namespace of the job it concerns, when that is not `default` (derived while
    /// applying, like the rest of the event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Event {
    pub fn new(kind: EventKind) -> Event {
        Event {
            index: 0,
            seq: 0,
            kind,
            at_ms: 0,
            job: None,
            workflow: None,
            node: None,
            attempt: None,
            detail: String::new(),
            namespace: None,
        }
    }

    /// The position to resume after this event.
    pub fn next_position(&self) -> (u64, u32) {
        (self.index, self.seq + 1)
    }
}

/// What a job looked like before the command that touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Before {
    state: JobState,
    attempts: usize,
}

impl Before {
    pub(crate) fn of(j: &Job) -> Before {
        Before {
            state: j.state,
            attempts: j.attempts.len(),
        }
    }
}

/// How an attempt ended, in words.
pub fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::TimedOut => "timed out".into(),
        Exit::Lost => "lost".into(),
    }
}

/// The event a job's change makes, if any: `before` is `None` for a job the command
/// created.
pub(crate) fn job_event(before: Option<Before>, job: &Job) -> Option<Event> {
    let with = |kind: EventKind| {
        let mut e = Event::new(kind);
        e.job = Some(job.id);
        e.workflow = job.workflow;
        e
    };
    let last = job.attempts.last();
    let Some(b) = before else {
        let mut e = with(EventKind::JobSubmitted);
        e.detail = job.state.name().to_string();
        return Some(e);
    };
    if b.state == job.state && b.attempts == job.attempts.len() {
        return None;
    }
    let mut e = match job.state {
        JobState::Assigned => with(EventKind::JobAssigned),
        JobState::Running => with(EventKind::JobStarted),
        JobState::Pending if b.state.is_final() => {
            // Back in the queue after it had ended: a workflow rerun.
            let mut e = with(EventKind::JobRetried);
            e.detail = "rerun".into();
            e
        }
        JobState::Pending => {
            // Back in the queue: the attempt that was in flight ended.
            let mut e = with(EventKind::JobRetried);
            if let Some(a) = last {
                e.detail = a
                    .outcome
                    .as_ref()
                    .map_or("attempt ended".into(), |o| describe_exit(&o.exit));
            }
            e
        }
        JobState::Succeeded | JobState::Failed | JobState::TimedOut => {
            let mut e = with(EventKind::JobFinished);
            e.detail = match &job.reason {
                Some(r) => format!("{}: {r}", job.state.name()),
                None => job.state.name().to_string(),
            };
            e
        }
        JobState::Cancelled => {
            let mut e = with(EventKind::JobCancelled);
            e.detail = job.reason.clone().unwrap_or_default();
            e
        }
    };
    // The attempt concerned: the one in flight now, or the one that was.
    let in_flight = |s: JobState| matches!(s, JobState::Assigned | JobState::Running);
    if let Some(a) = last.filter(|_| in_flight(job.state) || in_flight(b.state)) {
        e.node = Some(a.node);
        e.attempt = Some(a.number);
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_named_once_and_parses_back() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert_eq!(EventKind::parse("job"), None);
    }
}
