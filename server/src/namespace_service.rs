//! The public `NamespaceService`: namespaces and their settings (create, list, get,
//! update, delete). What a namespace means — its jobs, quotas and share of the slots — is
//! in `cathedral_consensus::namespace` and the scheduler.

use cathedral_consensus::namespace::{
    Capability, NamespaceOp, Setting, DEFAULT_NAMESPACE, SANDBOX_BITS, SETTING_NAMES,
};
use cathedral_consensus::{ClusterState, Command, JobState, Response as Applied};
use tonic::{Request, Response, Status};

use crate::api::v1 as pb;
use crate::api::v1::namespace_service_server::NamespaceService;
use crate::error::ServerError;
use crate::node::Proposal;
use crate::service::Api;

/// The settings a request names, as the log records them.
fn settings_from_pb(s: Option<pb::NamespaceSettings>) -> Result<Vec<Setting>, Status> {
    let Some(s) = s else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(w) = s.weight {
        out.push(Setting::Weight(w));
    }
    if let Some(n) = s.pending_jobs_max {
        out.push(Setting::PendingJobsMax(n));
    }
    if let Some(n) = s.running_max {
        out.push(Setting::RunningMax(n));
    }
    if let Some(n) = s.cpu_millis_max {
        out.push(Setting::CpuMillisMax(n));
    }
    if let Some(n) = s.memory_bytes_max {
        out.push(Setting::MemoryBytesMax(n));
    }
    match (s.submit_rate_per_sec, s.submit_rate_burst) {
        (Some(per_sec), Some(burst)) => out.push(Setting::SubmitRate { per_sec, burst }),
        (None, None) => {}
        _ => {
            return Err(ServerError::invalid(
                "submit_rate",
                "submit_rate_per_sec and submit_rate_burst go together",
            )
            .into())
        }
    }
    if !s.sandboxes.is_empty() {
        let mut bits = 0u8;
        for name in &s.sandboxes {
            let (_, bit) = SANDBOX_BITS
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| {
                    ServerError::invalid(
                        "sandboxes",
                        format!("{name:?}: default, process, bubblewrap or docker"),
                    )
                })?;
            bits |= bit;
        }
        out.push(Setting::Sandboxes(bits));
    }
    if let Some(v) = s.job_timeout_ms_max {
        out.push(Setting::JobTimeoutMsMax(v));
    }
    if let Some(v) = s.job_cpu_millis_max {
        out.push(Setting::JobCpuMillisMax(v));
    }
    if let Some(v) = s.job_memory_bytes_max {
        out.push(Setting::JobMemoryBytesMax(v));
    }
    if let Some(v) = s.job_timeout_ms_default {
        out.push(Setting::JobTimeoutMsDefault(v));
    }
    if let Some(v) = s.job_cpu_millis_default {
        out.push(Setting::JobCpuMillisDefault(v));
    }
    if let Some(v) = s.job_memory_bytes_default {
        out.push(Setting::JobMemoryBytesDefault(v));
    }
    if let Some(v) = s.job_retention_ms {
        out.push(Setting::JobRetentionMs(v));
    }
    if let Some(v) = s.crons_max {
        out.push(Setting::CronsMax(v));
    }
    cathedral_consensus::namespace::check_settings(&out)
        .map_err(|e| Status::from(ServerError::from(e)))?;
    Ok(out)
}

/// Namespace `name` as the API shows it, from the applied state.
fn view(state: &ClusterState, name: &str) -> Option<pb::NamespaceView> {
    let ns = state.namespaces().get(name)?;
    let l = ns.limits();
    let usage = state.namespace_usage(name);
    let counts = state.namespace_counts(name);
    Some(pb::NamespaceView {
        name: name.to_string(),
        settings: Some(pb::NamespaceSettings {
            weight: Some(l.weight),
            pending_jobs_max: l.pending_jobs_max,
            running_max: l.running_max,
            cpu_millis_max: l.cpu_millis_max,
            memory_bytes_max: l.memory_bytes_max,
            submit_rate_per_sec: l.submit_rate.map(|(r, _)| r),
            submit_rate_burst: l.submit_rate.map(|(_, b)| b),
            sandboxes: l.sandboxes.map_or_else(Vec::new, |bits| {
                SANDBOX_BITS
                    .iter()
                    .filter(|(_, b)| bits & b != 0)
                    .map(|(n, _)| n.to_string())
                    .collect()
            }),
            job_timeout_ms_max: l.job_timeout_ms_max,
            job_cpu_millis_max: l.job_cpu_millis_max,
            job_memory_bytes_max: l.job_memory_bytes_max,
            job_timeout_ms_default: l.job_timeout_ms_default,
            job_cpu_millis_default: l.job_cpu_millis_default,
            job_memory_bytes_default: l.job_memory_bytes_default,
            job_retention_ms: l.job_retention_ms,
            crons_max: l.crons_max,
        }),
        usage: Some(pb::NamespaceUsage {
            pending: usage.pending,
            running: usage.running,
            cpu_millis: usage.cpu_millis,
            memory_bytes: usage.memory_bytes,
            jobs_by_state: JobState::ALL
                .iter()
                .filter(|s| counts[**s as usize] > 0)
                .map(|s| (s.name().replace(' ', "_"), counts[*s as usize]))
                .collect(),
        }),
        created_at_ms: ns.created_at_ms,
    })
}

impl Api {
    /// Proposes `op`, then answers with the namespace as applied (none after a delete).
    /// A retry under the same `request_id` gets the first answer.
    async fn namespace_op(
        &self,
        op: NamespaceOp,
        request_id: String,
    ) -> Result<Option<pb::NamespaceView>, Status> {
        let name = op.name().to_string();
        let cmd = crate::service::under_request_id(
            Command::Namespace {
                at_ms: self.node.now_ms(),
                op,
            },
            request_id,
        )?;
        match self.node.propose(Proposal::Write(cmd)).await? {
            (_, Applied::Done) => {}
            (_, Applied::Rejected(e)) => return Err(ServerError::from(e).into()),
            (_, other) => return Err(Status::internal(format!("unexpected response {other:?}"))),
        }
        Ok(view(&self.node.state().read().state, &name))
    }
}

#[tonic::async_trait]
impl NamespaceService for Api {
    async fn create_namespace(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceView>, Status> {
        let req = req.into_inner();
        let settings = settings_from_pb(req.settings)?;
        self.node.refuse_if_partitioned()?;
        let v = self
            .namespace_op(
                NamespaceOp::Create {
                    name: req.name,
                    settings,
                },
                req.request_id,
            )
            .await?;
        v.map(Response::new)
            .ok_or_else(|| Status::internal("created namespace not applied"))
    }

    async fn list_namespaces(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        // The namespaces the caller may read (every one, for a token without grants).
        let caller = crate::auth::caller(&req);
        let a = self.node.state().read();
        let namespaces = a
            .state
            .namespaces()
            .all()
            .keys()
            .filter(|name| caller.may(Capability::Read, name))
            .filter_map(|name| view(&a.state, name))
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse { namespaces }))
    }

    async fn get_namespace(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceView>, Status> {
        let caller = crate::auth::caller(&req);
        let name = req.into_inner().name;
        let name = if name.is_empty() {
            DEFAULT_NAMESPACE.to_string()
        } else {
            name
        };
        caller.require(Capability::Read, &name)?;
        let a = self.node.state().read();
        view(&a.state, &name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no namespace {name}")))
    }

    async fn update_namespace(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceView>, Status> {
        let req = req.into_inner();
        let settings = settings_from_pb(req.settings)?;
        if let Some(c) = req
            .clear
            .iter()
            .find(|c| !SETTING_NAMES.contains(&c.as_str()))
        {
            return Err(ServerError::invalid(
                "clear",
                format!(
                    "no setting {c:?}; settings are {}",
                    SETTING_NAMES.join(", ")
                ),
            )
            .into());
        }
        self.node.refuse_if_partitioned()?;
        let v = self
            .namespace_op(
                NamespaceOp::Update {
                    name: req.name,
                    settings,
                    clear: req.clear,
                },
                req.request_id,
            )
            .await?;
        v.map(Response::new)
            .ok_or_else(|| Status::internal("updated namespace not applied"))
    }

    async fn delete_namespace(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<pb::DeleteNamespaceResponse>, Status> {
        let req = req.into_inner();
        self.node.refuse_if_partitioned()?;
        self.namespace_op(NamespaceOp::Delete { name: req.name }, req.request_id)
            .await?;
        Ok(Response::new(pb::DeleteNamespaceResponse {}))
    }
}
