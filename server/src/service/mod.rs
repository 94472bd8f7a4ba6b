//! The public gRPC API: `JobService` here, `ClusterService` in `cluster`.

use std::sync::Arc;
use std::time::Duration;

use cathedral_consensus::requests::RequestId;
use cathedral_consensus::{hex, Command, JobId, Response as Applied};
use openraft::ServerState;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::v1 as pb;
use crate::api::v1::cluster_service_server::ClusterService;
use crate::api::v1::job_service_server::JobService;
use crate::auth::{self, Caller};
use crate::convert::{
    job_to_pb, options_from_pb, outcome_to_pb, spec_from_pb, state_from_pb, state_to_pb,
    with_job_options, workflow_jobs_from_pb,
};
use crate::error::ServerError;
use crate::gossip::TAGS_MAX;
use crate::node::{Node, Proposal};
use cathedral_consensus::namespace::Capability;

mod cluster;

pub use crate::api::{LIST_PAGE_SIZE_DEFAULT, LIST_PAGE_SIZE_MAX};
/// Largest cancellation reason.
pub const CANCEL_REASON_BYTES_MAX: usize = 1024;
/// Log entries ReadLog returns when the request names no limit.
pub const LOG_READ_LIMIT_DEFAULT: u32 = 50;
/// Most log entries one ReadLog returns; a larger limit is `INVALID_ARGUMENT`.
pub const LOG_READ_LIMIT_MAX: u32 = 1000;
/// How long TriggerSnapshot waits for the snapshot to be written.
pub const SNAPSHOT_WAIT_MS: u64 = 60_000;

/// How often a snapshot request triggers again while it waits (a trigger that came
/// during another build was ignored).
pub const SNAPSHOT_RETRIGGER_MS: u64 = 250;

#[derive(Clone)]
pub struct Api {
    pub node: Arc<Node>,
}

impl Api {
    /// Job `id` as this node applied it; "not found" only once a read barrier confirmed
    /// this node is not behind the cluster (see [`Api::confirm_absent`]).
    /// Job `id`, from the state, or — collected by retention — from the archive (marked
    /// with when it was collected).
    /// A job of another namespace than `scope` names is "not found", as an id never
    /// submitted is.
    async fn job(&self, id: JobId, scope: &Scope, caller: &Caller) -> Result<pb::Job, Status> {
        self.job_for(id, scope, caller, &[Capability::Read]).await
    }

    /// Job `id` for a caller holding one of `any_of` in its namespace (see [`job`]).
    ///
    /// [`job`]: Api::job
    async fn job_for(
        &self,
        id: JobId,
        scope: &Scope,
        caller: &Caller,
        any_of: &[Capability],
    ) -> Result<pb::Job, Status> {
        let may = |ns: &str| any_of.iter().any(|c| caller.may(*c, ns));
        if let Scope::One(ns) = scope {
            if !may(ns) {
                return Err(caller.denied(any_of[0], ns));
            }
        }
        if !self.has_job(id) {
            self.confirm_absent().await?;
        }
        {
            let a = self.node.state().read();
            if let Some(j) = a.state.job(id) {
                let ns = a.state.namespace_of(id);
                if !scope.holds(ns) || !may(ns) {
                    return Err(ServerError::not_found("job", id).into());
                }
                let mut pb = job_to_pb(
                    &j,
                    a.state.acl().submitter(j.id),
                    a.state.step_outputs(j.id),
                    a.state.retain_of(j.id),
                );
                pb.namespace = ns.to_string();
                hide_output(&mut pb, caller);
                return Ok(pb);
            }
            // Never submitted: no need to read the archive.
            if id == 0 || id >= a.state.next_job_id() {
                return Err(ServerError::not_found("job", id).into());
            }
        }
        let archive = self.node.archive.clone();
        let found = cathedral_consensus::blocking::run(move || archive.find(id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // The archive records each job's namespace (a record written before namespaces
        // existed is `default`'s).
        match found {
            Some(r) if scope.holds(r.collected.namespace()) && may(r.collected.namespace()) => {
                let mut pb = crate::convert::archived_to_pb(&r);
                hide_output(&mut pb, caller);
                Ok(pb)
            }
            _ => Err(ServerError::not_found("job", id).into()),
        }
    }

    /// Answers "not found" for job `id` unless it is held and in `scope` (or is not held:
    /// the caller's own lookup then says so).
    fn in_scope(&self, id: JobId, scope: &Scope, caller: &Caller) -> Result<(), Status> {
        scope.require(caller, Capability::Read)?;
        let a = self.node.state().read();
        match a.state.job(id) {
            Some(_)
                if !scope.holds(a.state.namespace_of(id))
                    || !caller.may(Capability::Read, a.state.namespace_of(id)) =>
            {
                Err(ServerError::not_found("job", id).into())
            }
            _ => Ok(()),
        }
    }

    /// A page of the archive (`ListJobs` with `archived`), filtered as asked.
    async fn list_archived(
        &self,
        req: pb::ListJobsRequest,
        scope: &Scope,
        caller: &Caller,
        state: Option<cathedral_consensus::JobState>,
        size: usize,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let dir = self.node.archive.dir().to_path_buf();
        let token = (!req.page_token.is_empty()).then(|| req.page_token.clone());
        let (records, next) = cathedral_consensus::blocking::run(move || {
            cathedral_consensus::archive::page(&dir, token.as_deref(), size)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::from(ServerError::invalid("page_token", e)))?;
        let jobs = records
            .iter()
            .filter(|r| {
                let j = &r.collected.job;
                state.is_none_or(|s| j.state == s)
                    && j.spec.name.starts_with(&req.name_prefix)
                    && (req.node_id == 0
                        || j.attempts.last().is_some_and(|a| a.node == req.node_id))
                    && (req.workflow_id == 0 || j.workflow == Some(req.workflow_id))
                    && scope.holds(r.collected.namespace())
                    && caller.may(Capability::Read, r.collected.namespace())
            })
            .map(|r| {
                let mut pb = crate::convert::archived_to_pb(r);
                hide_output(&mut pb, caller);
                pb
            })
            .collect();
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    /// Answers "not found" for workflow `id` unless it is held and in `scope` (or is not
    /// held: the caller's own lookup then says so).
    fn workflow_in_scope(&self, id: u64, scope: &Scope, caller: &Caller) -> Result<(), Status> {
        scope.require(caller, Capability::Read)?;
        let a = self.node.state().read();
        match a.state.workflow(id) {
            Some(w)
                if !scope.holds(workflow_namespace(&a.state, w))
                    || !caller.may(Capability::Read, workflow_namespace(&a.state, w)) =>
            {
                Err(Status::not_found(format!("no workflow {id}")))
            }
            _ => Ok(()),
        }
    }

    fn has_job(&self, id: JobId) -> bool {
        self.node.state().read().state.job(id).is_some()
    }

    /// Before a read answers "not found": a read barrier (the leader's read index, applied
    /// here). Reads are served from this node's applied state; a node restarted while its
    /// peers are down may hold acknowledged entries it has not applied yet (it cannot
    /// commit alone), and must not deny what the cluster acknowledged: it answers
    /// UNAVAILABLE instead.
    async fn confirm_absent(&self) -> Result<(), Status> {
        self.node.read_barrier().await.map_err(Status::from)
    }

    /// The event describing job `id` now, and whether it has ended.
    /// The event describing job `id` now, and whether it has ended; its output tail left
    /// out unless `with_output`.
    fn event_for(&self, id: JobId, with_output: bool) -> Option<(pb::JobEvent, bool)> {
        let (mut ev, ended) = self.event(id)?;
        if !with_output {
            if let Some(o) = ev.outcome.as_mut() {
                o.output_tail.clear();
            }
        }
        Some((ev, ended))
    }

    fn event(&self, id: JobId) -> Option<(pb::JobEvent, bool)> {
        let a = self.node.state().read();
        let j = a.state.job(id)?;
        let cur = j.attempts.last();
        Some((
            pb::JobEvent {
                job_id: id,
                state: state_to_pb(j.state) as i32,
                attempt: cur.map_or(0, |c| c.number),
                node_id: cur.map_or(0, |c| c.node),
                reason: j.reason.clone().unwrap_or_default(),
                index: a.last_applied.map_or(0, |l| l.index),
                outcome: cur.and_then(|c| c.outcome.as_ref()).map(outcome_to_pb),
            },
            j.state.is_final(),
        ))
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// The namespace(s) a request's `namespace` field names: empty is `default`, `*` any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    One(String),
    Any,
}

impl Scope {
    pub(crate) fn parse(ns: &str) -> Result<Scope, Status> {
        match ns {
            "" => Ok(Scope::One(
                cathedral_consensus::namespace::DEFAULT_NAMESPACE.into(),
            )),
            "*" => Ok(Scope::Any),
            ns => {
                cathedral_consensus::namespace::check_name(ns)
                    .map_err(|e| Status::from(ServerError::from(e)))?;
                Ok(Scope::One(ns.into()))
            }
        }
    }

    /// The one namespace a write (or a lookup by name) acts in; `*` is refused.
    pub(crate) fn one(ns: &str) -> Result<String, Status> {
        match Scope::parse(ns)? {
            Scope::One(ns) => Ok(ns),
            Scope::Any => Err(ServerError::invalid(
                "namespace",
                "this request acts in one namespace; \"*\" is for listings and watches",
            )
            .into()),
        }
    }

    /// PERMISSION_DENIED when `caller` may not do `cap` in the one namespace this names
    /// (across all, each namespace is filtered instead).
    pub(crate) fn require(&self, caller: &Caller, cap: Capability) -> Result<(), Status> {
        match self {
            Scope::One(ns) => caller.require(cap, ns),
            Scope::Any => Ok(()),
        }
    }

    pub(crate) fn holds(&self, ns: &str) -> bool {
        match self {
            Scope::One(one) => one == ns,
            Scope::Any => true,
        }
    }
}

/// `cmd` (a submission) made in namespace `ns`: as it is in `default`, else wrapped in
/// `InNamespace` (so a log written by a cluster that uses no namespace reads as before).
pub(crate) fn in_namespace(ns: String, cmd: Command) -> Command {
    if ns == cathedral_consensus::namespace::DEFAULT_NAMESPACE {
        cmd
    } else {
        Command::InNamespace {
            namespace: ns,
            command: Box::new(cmd),
        }
    }
}

/// `cmd` written by `caller` (under its token, with access control on) and under the
/// client's request id, if it gave one (see the proto's "Retrying writes"); without one,
/// the node assigns an id when it proposes.
pub(crate) fn with_request_id(
    caller: &Caller,
    cmd: Command,
    request_id: String,
) -> Result<Command, Status> {
    let cmd = match &caller.accessor {
        Some(a) => Command::Authored {
            accessor: a.clone(),
            command: Box::new(cmd),
        },
        None => cmd,
    };
    under_request_id(cmd, request_id)
}

/// `cmd` under the client's request id, if it gave one (a write that records no author:
/// crons, namespaces); without one, the node assigns an id when it proposes.
pub(crate) fn under_request_id(cmd: Command, request_id: String) -> Result<Command, Status> {
    if request_id.is_empty() {
        return Ok(cmd);
    }
    let id = RequestId::Client(request_id);
    id.check().map_err(|e| Status::from(ServerError::from(e)))?;
    Ok(cmd.once(id))
}

#[tonic::async_trait]
impl JobService for Api {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let ns = Scope::one(&req.namespace)?;
        caller.require(Capability::Submit, &ns)?;
        let options = options_from_pb(req.spec.as_ref());
        let spec = spec_from_pb(req.spec, "spec")?;
        self.node.refuse_if_partitioned()?;
        let submit = Command::SubmitJobs {
            at_ms: self.node.now_ms(),
            jobs: vec![spec],
        };
        let cmd = with_request_id(
            &caller,
            in_namespace(ns, with_job_options(submit, vec![options])?),
            req.request_id,
        )?;
        match self.node.propose_submit(Proposal::Write(cmd)).await? {
            (index, Applied::Submitted { jobs }) if jobs.len() == 1 => {
                Ok(Response::new(pb::SubmitJobResponse {
                    job_id: jobs[0],
                    index,
                }))
            }
            (_, other) => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn submit_workflow(
        &self,
        req: Request<pb::SubmitWorkflowRequest>,
    ) -> Result<Response<pb::SubmitWorkflowResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let ns = Scope::one(&req.namespace)?;
        caller.require(Capability::Submit, &ns)?;
        self.node.refuse_if_partitioned()?;
        let options = req
            .jobs
            .iter()
            .map(|j| options_from_pb(j.spec.as_ref()))
            .collect();
        let submit = Command::SubmitWorkflow {
            at_ms: self.node.now_ms(),
            name: req.name,
            jobs: workflow_jobs_from_pb(req.jobs)?,
        };
        let cmd = with_request_id(
            &caller,
            in_namespace(ns, with_job_options(submit, options)?),
            req.request_id,
        )?;
        match self.node.propose_submit(Proposal::Write(cmd)).await? {
            (index, Applied::WorkflowSubmitted { workflow, jobs }) => {
                Ok(Response::new(pb::SubmitWorkflowResponse {
                    workflow_id: workflow,
                    job_ids: jobs.into_iter().collect(),
                    index,
                }))
            }
            (_, other) => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn rerun_workflow(
        &self,
        req: Request<pb::RerunWorkflowRequest>,
    ) -> Result<Response<pb::RerunWorkflowResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let scope = Scope::parse(&req.namespace)?;
        if self
            .node
            .state()
            .read()
            .state
            .workflow(req.workflow_id)
            .is_none()
        {
            self.confirm_absent().await?;
        }
        self.workflow_in_scope(req.workflow_id, &scope, &caller)?;
        let wf_ns = {
            let a = self.node.state().read();
            a.state
                .workflow(req.workflow_id)
                .map(|w| workflow_namespace(&a.state, w).to_string())
        };
        match wf_ns {
            Some(ns) => caller.require(Capability::Submit, &ns)?,
            None => {
                return Err(Status::not_found(format!(
                    "no workflow {}",
                    req.workflow_id
                )))
            }
        }
        let from = if req.from_job_id > 0 {
            req.from_job_id
        } else {
            let a = self.node.state().read();
            let w = a
                .state
                .workflow(req.workflow_id)
                .ok_or_else(|| Status::not_found(format!("no workflow {}", req.workflow_id)))?;
            *w.jobs.get(&req.from_key).ok_or_else(|| {
                ServerError::invalid(
                    "from_key",
                    format!("workflow {} has no job {:?}", req.workflow_id, req.from_key),
                )
            })?
        };
        self.node.refuse_if_partitioned()?;
        let cmd = with_request_id(
            &caller,
            Command::RerunWorkflow {
                at_ms: self.node.now_ms(),
                workflow: req.workflow_id,
                from,
            },
            req.request_id,
        )?;
        match self.node.propose(Proposal::Write(cmd)).await? {
            (index, Applied::Submitted { jobs }) => Ok(Response::new(pb::RerunWorkflowResponse {
                job_ids: jobs,
                index,
            })),
            (_, other) => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn explain_job(
        &self,
        req: Request<pb::ExplainJobRequest>,
    ) -> Result<Response<pb::ExplainJobResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let id = req.job_id;
        if !self.has_job(id) {
            self.confirm_absent().await?;
        }
        self.in_scope(id, &Scope::parse(&req.namespace)?, &caller)?;
        let view = self.node.gossip.view();
        let a = self.node.state().read();
        // The candidates as the leader sees them: registered, alive and available in
        // gossip, with the tags gossip carries.
        let candidates: crate::scheduler::Candidates = a
            .state
            .nodes()
            .filter_map(|n| {
                let m = view.member(n.info.id)?;
                (m.liveness == crate::gossip::Liveness::Alive && m.available())
                    .then(|| (n.info.id, m.tags.clone()))
            })
            .collect();
        let e = crate::scheduler::explain(
            &a.state,
            &candidates,
            self.node.now_ms(),
            id,
            self.node.config.leader.placement,
        )
        .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        let state = a.state.job(id).map(|j| j.state).expect("explained");
        Ok(Response::new(pb::ExplainJobResponse {
            job_id: id,
            state: crate::convert::state_to_pb(state) as i32,
            summary: e.summary,
            details: e.details,
            nodes: e
                .nodes
                .into_iter()
                .map(|n| pb::NodeFit {
                    node_id: n.node,
                    fits: n.fits,
                    why: n.why,
                })
                .collect(),
            runnable_at_ms: e.runnable_at_ms.unwrap_or(0),
            would_place_on: e.would_place_on.unwrap_or(0),
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let scope = Scope::parse(&req.namespace)?;
        Ok(Response::new(self.job(req.job_id, &scope, &caller).await?))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let state = state_from_pb(req.state)?;
        let size = page_size(req.page_size)?;
        let scope = Scope::parse(&req.namespace)?;
        scope.require(&caller, Capability::Read)?;
        if req.archived {
            return self.list_archived(req, &scope, &caller, state, size).await;
        }
        let from = page_token(&req.page_token)?;
        let a = self.node.state().read();
        let start = from.unwrap_or(if req.newest_first { JobId::MAX } else { 0 });
        // The state and the namespace are known without decoding a job: filtered first.
        let mut matching = a
            .state
            .jobs_listed(start, req.newest_first, |_, ns, st| {
                state.is_none_or(|s| st == s) && scope.holds(ns) && caller.may(Capability::Read, ns)
            })
            .filter(|j| j.spec.name.starts_with(&req.name_prefix))
            .filter(|j| {
                req.node_id == 0 || j.attempts.last().is_some_and(|x| x.node == req.node_id)
            })
            .filter(|j| req.workflow_id == 0 || j.workflow == Some(req.workflow_id));
        let jobs: Vec<pb::Job> = matching
            .by_ref()
            .take(size)
            .map(|j| {
                let mut pb = job_to_pb(
                    &j,
                    a.state.acl().submitter(j.id),
                    a.state.step_outputs(j.id),
                    a.state.retain_of(j.id),
                );
                pb.namespace = a.state.namespace_of(j.id).to_string();
                hide_output(&mut pb, &caller);
                pb
            })
            .collect();
        let next_page_token = matching.next().map_or(String::new(), |j| j.id.to_string());
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn list_workflows(
        &self,
        req: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let size = page_size(req.page_size)?;
        let from = page_token(&req.page_token)?;
        let scope = Scope::parse(&req.namespace)?;
        scope.require(&caller, Capability::Read)?;
        let a = self.node.state().read();
        let mut matching = a
            .state
            .workflows_down_from(from.unwrap_or(u64::MAX))
            .filter(|w| w.name.starts_with(&req.name_prefix))
            .filter(|w| {
                let ns = workflow_namespace(&a.state, w);
                scope.holds(ns) && caller.may(Capability::Read, ns)
            });
        let workflows: Vec<pb::WorkflowView> = matching
            .by_ref()
            .take(size)
            .map(|w| workflow_view(&a.state, w))
            .collect();
        let next_page_token = matching.next().map_or(String::new(), |w| w.id.to_string());
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows,
            next_page_token,
        }))
    }

    async fn get_workflow(
        &self,
        req: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowView>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let id = req.workflow_id;
        let scope = Scope::parse(&req.namespace)?;
        scope.require(&caller, Capability::Read)?;
        let a = self.node.state().read();
        match a.state.workflow(id) {
            Some(w)
                if scope.holds(workflow_namespace(&a.state, w))
                    && caller.may(Capability::Read, workflow_namespace(&a.state, w)) =>
            {
                Ok(Response::new(workflow_view(&a.state, w)))
            }
            _ => Err(Status::not_found(format!("no workflow {id}"))),
        }
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        if req.reason.len() > CANCEL_REASON_BYTES_MAX {
            return Err(ServerError::invalid(
                "reason",
                format!("longer than CANCEL_REASON_BYTES_MAX ({CANCEL_REASON_BYTES_MAX} bytes)"),
            )
            .into());
        }
        let scope = Scope::parse(&req.namespace)?;
        let job = self
            .job_for(
                req.job_id,
                &scope,
                &caller,
                &[Capability::Cancel, Capability::Submit, Capability::Read],
            )
            .await?;
        let submitter = (!job.submitted_by.is_empty()).then_some(job.submitted_by.as_str());
        if !caller.may_cancel(submitter, &job.namespace) {
            return Err(Status::permission_denied(format!(
                "job {} was not submitted by this token; cancelling it needs {}",
                req.job_id,
                if caller.grants.is_some() {
                    format!("the cancel capability in namespace {}", job.namespace)
                } else {
                    "the operator policy".to_string()
                }
            )));
        }
        if state_from_pb(job.state)?.is_some_and(|s| s.is_final()) {
            return Ok(Response::new(pb::CancelJobResponse { job: Some(job) }));
        }
        let reason = if req.reason.is_empty() {
            "cancelled by request".to_string()
        } else {
            req.reason
        };
        let cmd = with_request_id(
            &caller,
            Command::CancelJob {
                at_ms: self.node.now_ms(),
                job: req.job_id,
                reason,
            },
            req.request_id,
        )?;
        self.node.propose(Proposal::Write(cmd)).await?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(
                self.job_for(
                    req.job_id,
                    &scope,
                    &caller,
                    &[Capability::Cancel, Capability::Submit, Capability::Read],
                )
                .await?,
            ),
        }))
    }

    type WatchJobStream = Stream<pb::JobEvent>;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let id = req.job_id;
        if !self.has_job(id) {
            self.confirm_absent().await?;
        }
        self.in_scope(id, &Scope::parse(&req.namespace)?, &caller)?;
        let with_output = {
            let a = self.node.state().read();
            caller.may(Capability::ReadOutput, a.state.namespace_of(id))
        };
        // Watched before the first look, so nothing applied after it goes unseen; woken by
        // the batches with an event of this job only (by every batch, each client waiting
        // for its job cost every write a wake-up).
        let applied = self.node.events.watch_job(id);
        // Ends only when Raft stopped: the node is shutting down (or failed).
        let mut role = self.node.raft.server_metrics();
        let (first, ended) = self
            .event_for(id, with_output)
            .ok_or(ServerError::not_found("job", id))?;
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        self.node.spawn_until_stop(async move {
            let mut last = (first.state, first.attempt);
            if tx.send(Ok(first)).await.is_err() || ended {
                return;
            }
            // Compare the job after every applied batch with an event of it.
            loop {
                tokio::select! {
                    () = applied.changed() => {},
                    r = role.changed() => if r.is_err() { break },
                    _ = tx.closed() => return,
                }
                let Some((ev, ended)) = api.event_for(id, with_output) else {
                    return;
                };
                if (ev.state, ev.attempt) != last {
                    last = (ev.state, ev.attempt);
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if ended {
                    return;
                }
            }
            let _ = tx
                .send(Err(Status::unavailable("the node is shutting down")))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchEventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ClusterEvent, Status>> + Send>,
    >;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        use tokio_stream::StreamExt;
        let caller = auth::caller(&req);
        let req = req.into_inner();
        let namespace = match req.namespace.as_str() {
            "" | "*" => None,
            ns => match Scope::parse(ns)? {
                Scope::One(ns) => {
                    caller.require(Capability::Read, &ns)?;
                    Some(ns)
                }
                Scope::Any => None,
            },
        };
        let filter = crate::events::Filter {
            job: req.job_id,
            workflow: req.workflow_id,
            node: req.node_id,
            namespace,
            // A token scoped to namespaces sees the job events of those it may read.
            readable: caller.grants.clone(),
            ..Default::default()
        }
        .with_kinds(&req.kinds)?;
        let rx = crate::events::watch(
            &self.node,
            crate::events::Watch {
                from: req.from_index.map(|i| (i, req.from_seq)),
                filter,
                stop_at_applied: req.stop_at_applied,
            },
        )?;
        let stream =
            ReceiverStream::new(rx).map(|r| r.map(crate::events::to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    type GetJobOutputStream = Stream<pb::OutputChunk>;

    async fn get_job_output(
        &self,
        req: Request<pb::GetJobOutputRequest>,
    ) -> Result<Response<Self::GetJobOutputStream>, Status> {
        let caller = auth::caller(&req);
        let req = req.into_inner();
        // From the state, or the archive for a collected job (its output may outlive it).
        let job = self
            .job(req.job_id, &Scope::parse(&req.namespace)?, &caller)
            .await?;
        caller.require(Capability::ReadOutput, &job.namespace)?;
        let (attempt, node, ended) = {
            let at = if req.attempt == 0 {
                job.attempts.last()
            } else {
                job.attempts.iter().find(|x| x.number == req.attempt)
            };
            let at = at.ok_or_else(|| {
                Status::failed_precondition(format!(
                    "job {} has no attempt {}",
                    req.job_id,
                    if req.attempt == 0 {
                        "yet".to_string()
                    } else {
                        req.attempt.to_string()
                    }
                ))
            })?;
            (at.number, at.node_id, at.finished_at_ms.is_some())
        };
        let (tx, rx) = mpsc::channel(8);
        let (inner_tx, mut inner_rx) = mpsc::channel(8);
        let source = crate::output::Attempt {
            job: req.job_id,
            attempt,
            ran_on: node,
            ended,
        };
        self.node.spawn_until_stop(crate::output::stream_attempt(
            self.node.clone(),
            source,
            req.follow,
            inner_tx,
        ));
        self.node.spawn_until_stop(async move {
            while let Some(item) = inner_rx.recv().await {
                let out = item.map(|b| pb::OutputChunk {
                    offset: b.offset,
                    data: b.data,
                });
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A listing's page size: the default for 0, refused past `LIST_PAGE_SIZE_MAX`.
fn page_size(n: u32) -> Result<usize, Status> {
    match n {
        0 => Ok(LIST_PAGE_SIZE_DEFAULT as usize),
        n if n > LIST_PAGE_SIZE_MAX => Err(ServerError::invalid(
            "page_size",
            format!("{n} exceeds LIST_PAGE_SIZE_MAX {LIST_PAGE_SIZE_MAX}"),
        )
        .into()),
        n => Ok(n as usize),
    }
}

/// A listing's page token: `None` for the first page. Exactly what `next_page_token`
/// holds (an id in canonical decimal), so a token is never taken for one it is not.
fn page_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == token)
        .map(Some)
        .ok_or_else(|| ServerError::invalid("page_token", "not a token this API returned").into())
}

/// A workflow as the API shows it: its jobs by key and their states counted.
fn workflow_view(
    state: &cathedral_consensus::ClusterState,
    w: &cathedral_consensus::Workflow,
) -> pb::WorkflowView {
    let mut by_state: std::collections::HashMap<String, u32> = Default::default();
    let (mut open, mut all_ok) = (false, true);
    for id in w.jobs.values() {
        if let Some(j) = state.job(*id) {
            *by_state
                .entry(j.state.name().replace(' ', "_"))
                .or_default() += 1;
            open |= !j.state.is_final();
            all_ok &= j.state == cathedral_consensus::JobState::Succeeded;
        }
    }
    pb::WorkflowView {
        namespace: workflow_namespace(state, w).to_string(),
        id: w.id,
        name: w.name.clone(),
        submitted_at_ms: w.submitted_at_ms,
        job_ids: w.jobs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        jobs_by_state: by_state,
        state: if open {
            "running"
        } else if all_ok {
            "succeeded"
        } else {
            "failed"
        }
        .into(),
    }
}

/// The namespace of workflow `w`: its jobs' (`default` once all of them were collected).
fn workflow_namespace<'a>(
    state: &'a cathedral_consensus::ClusterState,
    w: &cathedral_consensus::Workflow,
) -> &'a str {
    w.jobs
        .values()
        .find(|id| state.job(**id).is_some())
        .map_or(cathedral_consensus::namespace::DEFAULT_NAMESPACE, |id| {
            state.namespace_of(*id)
        })
}

/// Leaves a job's environment, step outputs and output tails out for a caller without the
/// read-output capability in its namespace.
fn hide_output(j: &mut pb::Job, caller: &Caller) {
    if !caller.may(Capability::ReadOutput, &j.namespace) {
        if let Some(spec) = j.spec.as_mut() {
            spec.env.clear();
        }
        j.outputs.clear();
        for a in &mut j.attempts {
            if let Some(o) = a.outcome.as_mut() {
                o.output_tail.clear();
            }
        }
    }
}
