//! A job's life as apply moves it: placed, started, ended (retried, failed, cancelled with
//! its dependents), and nodes joining, failing, recovering.

use super::*;

impl ClusterState {
    pub(super) fn assign(&mut self, at: u64, assignments: &[Assignment]) -> Response {
        let (mut accepted, mut ignored) = (0, 0);
        for a in assignments {
            if self.assignable(at, a) {
                self.touch(a.job);
                let job = self.jobs.get_mut(&a.job).expect("checked");
                job.attempts.push(Attempt {
                    number: a.attempt,
                    node: a.node,
                    assigned_at_ms: at,
                    started_at_ms: None,
                    finished_at_ms: None,
                    outcome: None,
                });
                job.state = JobState::Assigned;
                accepted += 1;
            } else {
                ignored += 1;
            }
        }
        self.counters.ignored_assignments += ignored as u64;
        Response::Assigned { accepted, ignored }
    }

    pub(super) fn assignable(&self, at: u64, a: &Assignment) -> bool {
        let Some(job) = self.jobs.get(&a.job) else {
            return false;
        };
        let node_alive = self
            .nodes
            .get(&a.node)
            .is_some_and(|n| n.status == NodeStatus::Alive);
        job.state == JobState::Pending
            && a.attempt as usize == job.attempts.len() + 1
            && job.not_before_ms <= at
            && node_alive
            && self.dependencies_succeeded(&job)
    }

    pub(super) fn dependencies_succeeded(&self, job: &Job) -> bool {
        job.spec
            .depends_on
            .iter()
            .all(|d| self.jobs.state(d) == Some(JobState::Succeeded))
    }

    /// The job whose current attempt is `attempt` on `node`, or why a report about it is
    /// stale.
    pub(super) fn current(
        &mut self,
        job: JobId,
        attempt: u32,
        node: NodeId,
    ) -> std::result::Result<&mut Job, String> {
        self.touch(job);
        let j = self
            .jobs
            .get_mut(&job)
            .ok_or_else(|| format!("unknown job {job}"))?;
        match j.current_attempt() {
            Some(a) if a.number == attempt && a.node == node => Ok(j),
            Some(a) => Err(format!(
                "job {job}: attempt {attempt} on node {node} is not current (attempt {} on node {})",
                a.number, a.node
            )),
            None => Err(format!("job {job} is {}, no attempt in flight", j.state.name())),
        }
    }

    pub(super) fn started(&mut self, at: u64, job: JobId, attempt: u32, node: NodeId) -> Response {
        match self.current(job, attempt, node) {
            Ok(j) if j.state == JobState::Assigned => {
                j.state = JobState::Running;
                j.attempts.last_mut().expect("current").started_at_ms = Some(at);
                Response::Done
            }
            Ok(_) => Response::Ignored {
                reason: format!("job {job} attempt {attempt} already running"),
            },
            Err(reason) => Response::Ignored { reason },
        }
    }

    pub(super) fn finished(
        &mut self,
        at: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
        outcome: &Outcome,
    ) -> Response {
        if let Err(reason) = self.current(job, attempt, node) {
            return Response::Ignored { reason };
        }
        let mut outcome = outcome.clone();
        let tail = &mut outcome.output_tail;
        if tail.len() > limits::OUTPUT_TAIL_BYTES_MAX {
            tail.drain(..tail.len() - limits::OUTPUT_TAIL_BYTES_MAX);
        }
        self.end_attempt(at, job, outcome);
        Response::Done
    }

    /// Records the current attempt's outcome and moves the job on: succeeded, retried after
    /// backoff, or finally failed / timed out (cancelling its dependents). Under [`Rules`],
    /// an attempt lost with its node is not the job's failure (see `lost_attempt`).
    pub(super) fn end_attempt(&mut self, at: u64, job: JobId, outcome: Outcome) {
        self.touch(job);
        let rules = self.rules;
        let base = self.rerun_base.get(&job).copied().unwrap_or(0) as usize;
        let j = self.jobs.get_mut(&job).expect("caller checked");
        let a = j.attempts.last_mut().expect("attempt in flight");
        a.finished_at_ms = Some(at);
        let exit = outcome.exit;
        self.attempts_ended.0[exit.kind()] += 1;
        let success = outcome.succeeded();
        a.outcome = Some(outcome);
        if success {
            j.state = JobState::Succeeded;
            return;
        }
        if let (Exit::Lost, Some(rules)) = (exit, rules) {
            if Self::lost_attempt(at, j, base, rules) {
                self.cancel_dependents(job);
            }
            return;
        }
        // Attempts of this run (a rerun job's budget counts from its rerun); under rules,
        // those lost with their node are counted apart.
        let attempts = j.attempts[base.min(j.attempts.len())..]
            .iter()
            .filter(|a| rules.is_none() || !a.lost())
            .count() as u32;
        if attempts < j.spec.retry.max_attempts {
            j.state = JobState::Pending;
            j.not_before_ms = at.saturating_add(j.spec.retry.backoff_ms(attempts + 1));
            return;
        }
        j.state = if exit == Exit::TimedOut {
            JobState::TimedOut
        } else {
            JobState::Failed
        };
        j.reason = Some(match exit {
            Exit::Code(c) => format!("exited with status {c} after {attempts} attempt(s)"),
            Exit::Signal(s) => format!("killed by signal {s} after {attempts} attempt(s)"),
            Exit::TimedOut => format!("timed out after {attempts} attempt(s)"),
            Exit::Lost => format!("lost with its node after {attempts} attempt(s)"),
        });
        self.cancel_dependents(job);
    }

    /// A job whose current attempt was just lost with its node, under `rules`: lost before
    /// its start was committed, the attempt never ran and the job is queued again at once,
    /// counting against nothing; lost after it started, the job is queued again while its
    /// lost-retry budget lasts, and fails once it is spent. Returns whether it failed.
    pub(super) fn lost_attempt(at: u64, j: &mut Job, base: usize, rules: Rules) -> bool {
        let run = &j.attempts[base.min(j.attempts.len())..];
        let unstarted = run
            .iter()
            .filter(|a| a.lost() && a.started_at_ms.is_none())
            .count() as u32;
        let current = j.attempts.last().expect("attempt in flight");
        if current.started_at_ms.is_none() && unstarted <= limits::LOST_BEFORE_START_FREE {
            j.state = JobState::Pending;
            j.not_before_ms = at;
            return false;
        }
        let lost = run
            .iter()
            .filter(|a| a.lost() && a.started_at_ms.is_some())
            .count() as u32
            + unstarted.saturating_sub(limits::LOST_BEFORE_START_FREE);
        if lost <= rules.lost_retries {
            j.state = JobState::Pending;
            j.not_before_ms = at;
            return false;
        }
        j.state = JobState::Failed;
        j.reason = Some(format!(
            "lost with its node {lost} time(s) (lost retries: {})",
            rules.lost_retries
        ));
        true
    }

    /// Cancels every job that (transitively) depends on `root`, which ended unsuccessfully.
    pub(super) fn cancel_dependents(&mut self, root: JobId) {
        let mut queue: VecDeque<(JobId, JobId)> = self
            .jobs
            .get(&root)
            .expect("present")
            .dependents
            .iter()
            .map(|&d| (d, root))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((id, because)) = queue.pop_front() {
            if !seen.insert(id) {
                continue;
            }
            let state = self.jobs.state(&because).expect("present");
            self.touch(id);
            let j = self.jobs.get_mut(&id).expect("dependents exist");
            if j.state.is_final() {
                continue;
            }
            j.state = JobState::Cancelled;
            j.reason = Some(format!("dependency {because} {}", state.name()));
            queue.extend(j.dependents.iter().map(|&d| (d, id)));
        }
    }

    pub(super) fn cancel(&mut self, at: u64, job: JobId, reason: &str) -> Response {
        self.touch(job);
        let Some(j) = self.jobs.get_mut(&job) else {
            return Response::Ignored {
                reason: format!("unknown job {job}"),
            };
        };
        if j.state.is_final() {
            return Response::Ignored {
                reason: format!("job {job} is already {}", j.state.name()),
            };
        }
        if matches!(j.state, JobState::Assigned | JobState::Running) {
            if let Some(a) = j.attempts.last_mut() {
                a.finished_at_ms = Some(at);
            }
        }
        j.state = JobState::Cancelled;
        j.reason = Some(if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        });
        self.cancel_dependents(job);
        Response::Done
    }

    pub(super) fn register(&mut self, at: u64, info: &NodeInfo) -> Response {
        let registered_at_ms = self.nodes.get(&info.id).map_or(at, |n| n.registered_at_ms);
        self.nodes.insert(
            info.id,
            Node {
                info: info.clone(),
                status: NodeStatus::Alive,
                registered_at_ms,
                updated_at_ms: at,
            },
        );
        Response::Done
    }

    /// A failed node alive again; a retired one stays retired.
    pub(super) fn node_recovered(&mut self, at: u64, node: NodeId) -> Response {
        match self.nodes.get_mut(&node) {
            None => Response::Ignored {
                reason: format!("unknown node {node}"),
            },
            Some(n) if n.status != NodeStatus::Failed => Response::Ignored {
                reason: format!("node {node} is {:?}, not failed", n.status),
            },
            Some(n) => {
                n.status = NodeStatus::Alive;
                n.updated_at_ms = at;
                Response::Done
            }
        }
    }

    /// Marks a node failed or retired; its attempts in flight are lost and retried (or fail).
    pub(super) fn node_down(&mut self, at: u64, node: NodeId, status: NodeStatus) -> Response {
        let Some(n) = self.nodes.get_mut(&node) else {
            return Response::Ignored {
                reason: format!("unknown node {node}"),
            };
        };
        n.status = status;
        n.updated_at_ms = at;
        let lost: Vec<JobId> = self
            .index
            .active
            .get(&node)
            .map_or(Vec::new(), |ids| ids.iter().copied().collect());
        for job in lost {
            self.end_attempt(
                at,
                job,
                Outcome {
                    exit: Exit::Lost,
                    duration_ms: 0,
                    output_tail: Vec::new(),
                },
            );
        }
        Response::Done
    }
}
