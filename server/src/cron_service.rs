//! The public `CronService` (create, list, get with history, pause and resume, delete,
//! preview) and the leader's part: proposing each due fire as a log entry. What a fire
//! does is decided by the state machine (`cathedral_consensus::cron`); here the schedule
//! is evaluated — at the edge, so a bad pattern or zone never takes a log entry, and by
//! the leader, with its clock.

use std::collections::HashMap;

use cathedral_consensus::cron::{
    due, CronOp, CronSpec, CronTarget, FireOutcome, Launched, Overlap, Schedule,
    CATCH_UP_MS_DEFAULT,
};
use cathedral_consensus::namespace::Capability;
use cathedral_consensus::{ClusterState, Command};
use tonic::{Request, Response, Status};

use crate::api::v1 as pb;
use crate::api::v1::cron_service_server::CronService;
use crate::auth;
use crate::convert::{spec_from_pb, spec_to_pb, workflow_jobs_from_pb};
use crate::error::ServerError;
use crate::node::{Node, Proposal};
use crate::service::{in_namespace, under_request_id, Api, Scope};

/// Most fire times one preview returns.
pub const CRON_PREVIEW_MAX: u32 = 100;
/// Fire times a preview returns when the request names no count.
pub const CRON_PREVIEW_DEFAULT: u32 = 5;

fn tz_or_utc(tz: &str) -> String {
    if tz.is_empty() {
        "UTC".into()
    } else {
        tz.to_string()
    }
}

fn spec_from_pb_cron(s: Option<pb::CronSpec>) -> Result<CronSpec, ServerError> {
    let s = s.ok_or_else(|| ServerError::invalid("spec", "missing"))?;
    let overlap = match pb::CronOverlap::try_from(s.overlap) {
        Ok(pb::CronOverlap::Skip) => Overlap::Skip,
        Ok(pb::CronOverlap::Queue) => Overlap::Queue,
        Ok(pb::CronOverlap::Allow) => Overlap::Allow,
        Err(_) => {
            return Err(ServerError::invalid(
                "spec.overlap",
                format!("unknown value {}", s.overlap),
            ))
        }
    };
    let retains = match &s.target {
        Some(pb::cron_spec::Target::Job(j)) => j.retain_ms.is_some(),
        Some(pb::cron_spec::Target::Workflow(w)) => w
            .jobs
            .iter()
            .any(|j| j.spec.as_ref().is_some_and(|s| s.retain_ms.is_some())),
        None => false,
    };
    if retains {
        return Err(ServerError::invalid(
            "spec.retain_ms",
            "a cron's jobs take the cluster's retention (--job-retention); retain is for jobs submitted directly",
        ));
    }
    let target = match s.target {
        Some(pb::cron_spec::Target::Job(j)) => {
            CronTarget::Job(Box::new(spec_from_pb(Some(j), "spec.job")?))
        }
        Some(pb::cron_spec::Target::Workflow(w)) => CronTarget::Workflow {
            name: w.name,
            jobs: workflow_jobs_from_pb(w.jobs)?,
        },
        None => return Err(ServerError::invalid("spec", "needs a job or a workflow")),
    };
    let spec = CronSpec {
        name: s.name,
        tz: tz_or_utc(&s.tz),
        schedule: s.schedule,
        overlap,
        catch_up_ms: s.catch_up_ms.unwrap_or(CATCH_UP_MS_DEFAULT),
        target,
    };
    // The pattern and the zone are evaluated here, never in apply.
    Schedule::parse(&spec.schedule, &spec.tz).map_err(|e| ServerError::from(e.at("spec")))?;
    spec.validate()
        .map_err(|e| ServerError::from(e.at("spec")))?;
    Ok(spec)
}

fn spec_to_pb_cron(s: &CronSpec) -> pb::CronSpec {
    pb::CronSpec {
        name: s.name.clone(),
        schedule: s.schedule.clone(),
        tz: s.tz.clone(),
        overlap: match s.overlap {
            Overlap::Skip => pb::CronOverlap::Skip,
            Overlap::Queue => pb::CronOverlap::Queue,
            Overlap::Allow => pb::CronOverlap::Allow,
        } as i32,
        catch_up_ms: Some(s.catch_up_ms),
        target: Some(match &s.target {
            CronTarget::Job(j) => pb::cron_spec::Target::Job(spec_to_pb(j)),
            CronTarget::Workflow { name, jobs } => {
                pb::cron_spec::Target::Workflow(pb::CronWorkflow {
                    name: name.clone(),
                    jobs: jobs
                        .iter()
                        .map(|j| pb::WorkflowJob {
                            key: j.key.clone(),
                            spec: Some(spec_to_pb(&j.spec)),
                            after: j.after.clone(),
                        })
                        .collect(),
                })
            }
        }),
    }
}

/// Cron `c` of namespace `ns` as `caller` may see it: its jobs' environment only with
/// read-output there (as a job's own is shown).
fn cron_for(
    caller: &auth::Caller,
    ns: &str,
    c: &cathedral_consensus::cron::Cron,
    history: bool,
) -> pb::Cron {
    let mut pb = cron_to_pb(ns, c, history);
    if !caller.may(Capability::ReadOutput, ns) {
        match pb.spec.as_mut().and_then(|s| s.target.as_mut()) {
            Some(pb::cron_spec::Target::Job(j)) => j.env.clear(),
            Some(pb::cron_spec::Target::Workflow(w)) => w
                .jobs
                .iter_mut()
                .filter_map(|j| j.spec.as_mut())
                .for_each(|s| s.env.clear()),
            None => {}
        }
    }
    pb
}

fn cron_to_pb(ns: &str, c: &cathedral_consensus::cron::Cron, history: bool) -> pb::Cron {
    let next_ms = if c.paused {
        0
    } else {
        Schedule::parse(&c.spec.schedule, &c.spec.tz)
            .ok()
            .and_then(|s| s.next_after(c.last_scheduled_ms))
            .unwrap_or(0)
    };
    pb::Cron {
        spec: Some(spec_to_pb_cron(&c.spec)),
        created_at_ms: c.created_at_ms,
        paused: c.paused,
        last_scheduled_ms: c.last_scheduled_ms,
        queued_ms: c.queued.iter().copied().collect(),
        history: if history {
            c.history
                .iter()
                .map(|f| {
                    let (outcome, reason, job_id, workflow_id) = match &f.outcome {
                        FireOutcome::Launched(Launched::Job(j)) => {
                            ("launched", String::new(), *j, 0)
                        }
                        FireOutcome::Launched(Launched::Workflow(w)) => {
                            ("launched", String::new(), 0, *w)
                        }
                        FireOutcome::Queued => ("queued", String::new(), 0, 0),
                        FireOutcome::Skipped(r) => ("skipped", r.name().to_string(), 0, 0),
                        FireOutcome::Failed(r) => ("failed", r.clone(), 0, 0),
                    };
                    pb::CronFire {
                        scheduled_ms: f.scheduled_ms,
                        through_ms: f.through_ms,
                        count: f.count,
                        decided_at_ms: f.decided_at_ms,
                        outcome: outcome.into(),
                        reason,
                        job_id,
                        workflow_id,
                    }
                })
                .collect()
        } else {
            Vec::new()
        },
        launched: c.launched,
        skipped: c.skipped,
        next_ms,
        namespace: ns.to_string(),
    }
}

impl Api {
    /// Proposes `op` in namespace `namespace` (a request's field: empty is `default`).
    async fn cron_write(
        &self,
        caller: &auth::Caller,
        namespace: &str,
        op: CronOp,
        request_id: String,
    ) -> Result<u64, Status> {
        // A cron and the jobs it launches are its namespace's: the token needs submit
        // there (a token without grants, the submit policy the method table asks).
        let ns = Scope::one(namespace)?;
        caller.require(Capability::Submit, &ns)?;
        self.node.refuse_if_partitioned()?;
        // Not `Authored`: a cron records no author (and apply takes no cron under one).
        let cmd = under_request_id(
            in_namespace(
                ns,
                Command::Cron {
                    at_ms: self.node.now_ms(),
                    op,
                },
            ),
            request_id,
        )?;
        match self.node.propose(Proposal::Write(cmd)).await? {
            (index, cathedral_consensus::Response::Done) => Ok(index),
            (_, other) => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Cron `name` of the one namespace `namespace` names, for a caller that may read
    /// there.
    fn cron(
        &self,
        caller: &auth::Caller,
        namespace: &str,
        name: &str,
    ) -> Result<(String, cathedral_consensus::cron::Cron), Status> {
        let ns = Scope::one(namespace)?;
        caller.require(Capability::Read, &ns)?;
        let a = self.node.state().read();
        let c = a
            .state
            .crons()
            .get(&ns, name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no cron {name:?} in namespace {ns}")))?;
        Ok((ns, c))
    }
}

#[tonic::async_trait]
impl CronService for Api {
    async fn create_cron(
        &self,
        req: Request<pb::CreateCronRequest>,
    ) -> Result<Response<pb::CreateCronResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let spec = spec_from_pb_cron(req.spec)?;
        let schedule = Schedule::parse(&spec.schedule, &spec.tz).map_err(ServerError::from)?;
        let index = self
            .cron_write(
                &caller,
                &req.namespace,
                CronOp::Create(Box::new(spec)),
                req.request_id,
            )
            .await?;
        Ok(Response::new(pb::CreateCronResponse {
            index,
            next_ms: schedule.preview(self.node.now_ms(), CRON_PREVIEW_DEFAULT as usize),
        }))
    }

    async fn list_crons(
        &self,
        req: Request<pb::ListCronsRequest>,
    ) -> Result<Response<pb::ListCronsResponse>, Status> {
        let caller = auth::caller(&req);
        let scope = Scope::parse(&req.get_ref().namespace)?;
        scope.require(&caller, Capability::Read)?;
        let a = self.node.state().read();
        Ok(Response::new(pb::ListCronsResponse {
            crons: a
                .state
                .crons()
                .iter()
                .filter(|(ns, _)| scope.holds(ns) && caller.may(Capability::Read, ns))
                .map(|(ns, c)| cron_for(&caller, ns, c, false))
                .collect(),
        }))
    }

    async fn get_cron(
        &self,
        req: Request<pb::GetCronRequest>,
    ) -> Result<Response<pb::Cron>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let (ns, c) = self.cron(&caller, &req.namespace, &req.name)?;
        Ok(Response::new(cron_for(&caller, &ns, &c, true)))
    }

    async fn set_cron_paused(
        &self,
        req: Request<pb::SetCronPausedRequest>,
    ) -> Result<Response<pb::SetCronPausedResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let op = CronOp::SetPaused {
            name: req.name,
            paused: req.paused,
        };
        let index = self
            .cron_write(&caller, &req.namespace, op, req.request_id)
            .await?;
        Ok(Response::new(pb::SetCronPausedResponse { index }))
    }

    async fn delete_cron(
        &self,
        req: Request<pb::DeleteCronRequest>,
    ) -> Result<Response<pb::DeleteCronResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let index = self
            .cron_write(
                &caller,
                &req.namespace,
                CronOp::Delete { name: req.name },
                req.request_id,
            )
            .await?;
        Ok(Response::new(pb::DeleteCronResponse { index }))
    }

    async fn preview_cron(
        &self,
        req: Request<pb::PreviewCronRequest>,
    ) -> Result<Response<pb::PreviewCronResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let count = match req.count {
            0 => CRON_PREVIEW_DEFAULT,
            n if n > CRON_PREVIEW_MAX => {
                return Err(ServerError::invalid(
                    "count",
                    format!("at most {CRON_PREVIEW_MAX} (CRON_PREVIEW_MAX)"),
                )
                .into())
            }
            n => n,
        };
        let (schedule, tz, from) = if req.name.is_empty() {
            (req.schedule, tz_or_utc(&req.tz), self.node.now_ms())
        } else {
            let (_, c) = self.cron(&caller, &req.namespace, &req.name)?;
            let from = c.last_scheduled_ms.max(self.node.now_ms());
            (c.spec.schedule, c.spec.tz, from)
        };
        let after = if req.after_ms > 0 { req.after_ms } else { from };
        let s = Schedule::parse(&schedule, &tz).map_err(ServerError::from)?;
        let next = s.preview(after, count as usize);
        Ok(Response::new(pb::PreviewCronResponse {
            local: next.iter().map(|t| s.local(*t)).collect(),
            next_ms: next,
        }))
    }
}

/// The leader's cron work for one tick: every due fire of every cron not paused, and the
/// first queued fire of each cron whose run has ended, as entries. Parsed schedules are
/// kept in `cache` (by pattern and zone).
pub async fn fire_due(node: &Node, cache: &mut HashMap<(String, String), Option<Schedule>>) {
    let now = node.now_ms();
    let ops = {
        let a = node.state().read();
        due_ops(&a.state, now, cache)
    };
    for (ns, op) in ops {
        let name = op.name().to_string();
        let cmd = in_namespace(ns, Command::Cron { at_ms: now, op });
        if let Err(e) = node.propose(Proposal::Write(cmd)).await {
            // The next tick proposes it again (or a new leader does): each scheduled
            // time is decided once whichever entry lands first.
            tracing::debug!(cron = %name, "fire not committed: {e}");
        }
    }
}

/// What [`fire_due`] proposes at `now` on `state`, each with the namespace it is made
/// in. Pure but for the cache.
pub fn due_ops(
    state: &ClusterState,
    now: u64,
    cache: &mut HashMap<(String, String), Option<Schedule>>,
) -> Vec<(String, CronOp)> {
    let mut ops = Vec::new();
    for (ns, c) in state.crons().iter() {
        // Fires already decided as queued still run once the current run ends; a pause
        // stops new fires only.
        if let Some(&t) = c.queued.front() {
            if !state.cron_active(c.current) {
                ops.push((
                    ns.to_string(),
                    CronOp::RunQueued {
                        name: c.spec.name.clone(),
                        scheduled_ms: t,
                    },
                ));
            }
        }
        if c.paused {
            continue;
        }
        let key = (c.spec.schedule.clone(), c.spec.tz.clone());
        let schedule = cache.entry(key).or_insert_with(|| {
            Schedule::parse(&c.spec.schedule, &c.spec.tz)
                .inspect_err(|e| tracing::warn!(cron = %c.spec.name, "cannot evaluate: {e}"))
                .ok()
        });
        if let Some(s) = schedule {
            let d = due(s, c.last_scheduled_ms, now, c.spec.catch_up_ms);
            if !d.is_empty() {
                ops.push((
                    ns.to_string(),
                    CronOp::Fire {
                        name: c.spec.name.clone(),
                        late: d.late,
                        scheduled: d.scheduled,
                    },
                ));
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crons_job_with_a_retention_of_its_own_is_refused() {
        let spec = |retain_ms| pb::CronSpec {
            name: "c".into(),
            schedule: "@hourly".into(),
            target: Some(pb::cron_spec::Target::Job(pb::JobSpec {
                name: "j".into(),
                command: vec!["true".into()],
                retain_ms,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(spec_from_pb_cron(Some(spec(None))).is_ok());
        let e = spec_from_pb_cron(Some(spec(Some(1000)))).unwrap_err();
        assert!(e.to_string().contains("retain"), "{e}");
    }
}
