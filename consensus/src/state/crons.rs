//! Periodic jobs as the state applies them: a cron's decisions and the jobs it launches.

use super::*;

impl ClusterState {
    /// The crons.
    pub fn crons(&self) -> &crate::cron::Crons {
        &self.crons
    }

    /// Whether what a cron launched last (a job, or any job of a workflow) has not ended.
    pub fn cron_active(&self, current: Option<crate::cron::Launched>) -> bool {
        use crate::cron::Launched;
        match current {
            None => false,
            Some(Launched::Job(id)) => self.jobs.state(&id).is_some_and(|s| !s.is_final()),
            Some(Launched::Workflow(w)) => self.workflows.get(&w).is_some_and(|w| {
                w.jobs
                    .values()
                    .any(|id| self.jobs.state(id).is_some_and(|s| !s.is_final()))
            }),
        }
    }

    /// Applies a cron operation. Long on purpose: one arm per operation, the fires'
    /// arm deciding each fire's outcome in place.
    pub(super) fn apply_cron(&mut self, at: u64, op: &crate::cron::CronOp) -> Response {
        use crate::cron::{CronOp, Fire, FireOutcome, SkipReason, CRON_FIRES_PER_ENTRY_MAX};
        // A cron of another namespace than `default` is made, changed and fired in it
        // (`InNamespace`), and kept under its qualified key.
        let ns = self.current_namespace().to_string();
        if let Err(e) = self.check_cron(&ns, op) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let key = crate::cron::cron_key(&ns, op.name());
        let name = &key;
        let ignored = |reason: &str| Response::Ignored {
            reason: reason.to_string(),
        };
        match op {
            CronOp::Create(spec) => {
                self.crons.create(at, key.clone(), (**spec).clone());
                Response::Done
            }
            CronOp::SetPaused { paused, .. } => {
                let c = self.crons.get_mut(name).expect("checked");
                c.paused = *paused;
                // Fires a pause covered are not owed: the schedule resumes from now.
                if !*paused {
                    c.last_scheduled_ms = c.last_scheduled_ms.max(at);
                }
                Response::Done
            }
            CronOp::Delete { .. } => {
                self.crons.remove(name);
                Response::Done
            }
            CronOp::Fire {
                late, scheduled, ..
            } => {
                let Some(c) = self.crons.get_key(name) else {
                    return ignored("no such cron");
                };
                if c.paused {
                    return ignored("the cron is paused");
                }
                // Each scheduled time is decided once: a fire at or before the last one
                // decided (a second leader's copy, a clock that went back) changes nothing.
                let mut after = c.last_scheduled_ms;
                if let Some(l) = late {
                    if l.first_ms <= after || l.last_ms < l.first_ms || l.count == 0 {
                        return ignored("fire already decided");
                    }
                    after = l.last_ms;
                }
                for t in scheduled {
                    if *t <= after {
                        return ignored("fire already decided");
                    }
                    after = *t;
                }
                if scheduled.len() > CRON_FIRES_PER_ENTRY_MAX {
                    return ignored("too many fires in one entry");
                }
                if let Some(l) = *late {
                    let c = self.crons.get_mut(name).expect("present");
                    c.record(Fire {
                        scheduled_ms: l.first_ms,
                        through_ms: l.last_ms,
                        count: l.count,
                        decided_at_ms: at,
                        outcome: FireOutcome::Skipped(SkipReason::Late),
                    });
                    c.last_scheduled_ms = l.last_ms;
                }
                for &t in scheduled {
                    let c = &self.crons.map[name];
                    let active = self.cron_active(c.current);
                    let outcome = match (c.spec.overlap, active) {
                        (crate::cron::Overlap::Skip, true) => {
                            FireOutcome::Skipped(SkipReason::Overlap)
                        }
                        (crate::cron::Overlap::Queue, true) => {
                            if c.queued.len() >= crate::cron::CRON_QUEUE_MAX {
                                FireOutcome::Skipped(SkipReason::QueueFull)
                            } else {
                                FireOutcome::Queued
                            }
                        }
                        _ => self.launch_cron(name, at, t),
                    };
                    let c = self.crons.get_mut(name).expect("present");
                    if outcome == FireOutcome::Queued {
                        c.queued.push_back(t);
                    }
                    c.record(Fire {
                        scheduled_ms: t,
                        through_ms: t,
                        count: 1,
                        decided_at_ms: at,
                        outcome,
                    });
                    c.last_scheduled_ms = t;
                }
                Response::Done
            }
            CronOp::RunQueued { scheduled_ms, .. } => {
                let Some(c) = self.crons.get_key(name) else {
                    return ignored("no such cron");
                };
                if c.queued.front() != Some(scheduled_ms) || self.cron_active(c.current) {
                    return ignored("not the next queued fire, or the current run is active");
                }
                let outcome = self.launch_cron(name, at, *scheduled_ms);
                let c = self.crons.get_mut(name).expect("present");
                c.queued.pop_front();
                c.record(Fire {
                    scheduled_ms: *scheduled_ms,
                    through_ms: *scheduled_ms,
                    count: 1,
                    decided_at_ms: at,
                    outcome,
                });
                Response::Done
            }
        }
    }

    /// Whether `op`, made in namespace `ns`, would take effect: the crons' own check, and
    /// a new cron within the namespace's `crons_max` quota.
    pub(super) fn check_cron(
        &self,
        ns: &str,
        op: &crate::cron::CronOp,
    ) -> std::result::Result<(), Invalid> {
        self.crons.check(ns, op)?;
        if let (crate::cron::CronOp::Create(_), Some(max)) =
            (op, self.namespaces.limits(ns).crons_max)
        {
            let held = self.crons.count_in(ns);
            if held >= max {
                return Err(Invalid::new(
                    "quota.crons_max",
                    format!("namespace {ns} holds {held} crons; its crons_max quota is {max}"),
                ));
            }
        }
        Ok(())
    }

    /// Submits what the cron under `key` launches for its fire at `scheduled_ms`, in the
    /// cron's namespace (the current one: a fire is applied in it): its jobs are the
    /// namespace's and count against its quotas — a fire over one fails, naming it.
    pub(super) fn launch_cron(
        &mut self,
        key: &str,
        at: u64,
        scheduled_ms: u64,
    ) -> crate::cron::FireOutcome {
        use crate::cron::{CronTarget, FireOutcome, Launched};
        let ns = self.current_namespace().to_string();
        match self.crons.map[key].stamped(scheduled_ms) {
            CronTarget::Job(spec) => match self
                .check_spec(&ns, &spec)
                .and_then(|()| self.take_quota(at, 1))
            {
                Ok(()) => FireOutcome::Launched(Launched::Job(self.create_job(at, *spec, None))),
                Err(e) => FireOutcome::Failed(e.to_string()),
            },
            CronTarget::Workflow { name, jobs } => match self.submit_workflow(at, &name, &jobs) {
                Response::WorkflowSubmitted { workflow, .. } => {
                    FireOutcome::Launched(Launched::Workflow(workflow))
                }
                Response::Rejected(e) => FireOutcome::Failed(e.to_string()),
                other => FireOutcome::Failed(format!("{other:?}")),
            },
        }
    }

    // Queries for the server and the scheduler.
}
