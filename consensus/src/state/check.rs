//! What a proposer asks before it proposes: whether a command would be accepted, and
//! whether it repeats one already accepted (answered without a log entry).

use super::*;

impl ClusterState {
    /// The answer to `command` when it repeats a request this state already accepted, so
    /// a proposer answers it without a log entry: a submission whose every job carries an
    /// idempotency key this state holds (the jobs those keys name), or a workflow whose
    /// jobs are exactly the jobs of one workflow by their keys (that workflow). `None`: not
    /// a repeat. [`apply`](Self::apply) gives the same answer for a repeat that was
    /// proposed anyway (two copies in flight), so the result does not depend on timing.
    pub fn repeat(&self, command: &Command) -> Option<Response> {
        self.repeat_in(crate::namespace::DEFAULT_NAMESPACE, command)
    }

    fn repeat_in(&self, ns: &str, command: &Command) -> Option<Response> {
        match command {
            Command::Request { id, command } => match self.requests.lookup(id, command) {
                Lookup::Answered(a) => Some(a.response.clone()),
                Lookup::Conflict(_) => None,
                Lookup::New => self.repeat_in(ns, command),
            },
            Command::Authored { command, .. } | Command::WithJobOptions { command, .. } => {
                self.repeat_in(ns, command)
            }
            Command::InNamespace { namespace, command } => self.repeat_in(namespace, command),
            Command::SubmitJobs { jobs, .. } => {
                let ids: Option<Vec<JobId>> = jobs.iter().map(|s| self.job_of_key(ns, s)).collect();
                ids.filter(|ids| !ids.is_empty())
                    .map(|jobs| Response::Submitted { jobs })
            }
            Command::SubmitWorkflow { jobs, .. } => {
                self.repeated_workflow(ns, jobs)
                    .map(|w| Response::WorkflowSubmitted {
                        workflow: w.id,
                        jobs: w.jobs.clone(),
                    })
            }
            _ => None,
        }
    }

    /// The job `spec`'s idempotency key names in namespace `ns`, if any.
    pub(super) fn job_of_key(&self, ns: &str, spec: &JobSpec) -> Option<JobId> {
        let k = spec.idempotency_key.as_ref()?;
        if ns == crate::namespace::DEFAULT_NAMESPACE {
            self.idempotency.get(k).copied()
        } else {
            self.namespaces
                .keys
                .get(&(ns.to_string(), k.clone()))
                .copied()
        }
    }

    /// Why a submission cannot be made in namespace `namespace`: the namespace does not
    /// exist, or what it wraps is not a submission.
    pub(super) fn check_in_namespace(
        &self,
        namespace: &str,
        command: &Command,
    ) -> std::result::Result<(), Invalid> {
        crate::namespace::check_name(namespace)?;
        if !self.namespaces.exists(namespace) {
            return Err(Invalid::new(
                "namespace",
                format!("no namespace {namespace}"),
            ));
        }
        match command {
            Command::SubmitJobs { .. }
            | Command::SubmitWorkflow { .. }
            | Command::WithJobOptions { .. }
            | Command::Cron { .. } => Ok(()),
            other => Err(Invalid::new(
                "namespace",
                format!("a {} is not made in a namespace", other.kind()),
            )),
        }
    }

    /// Whether `command` would be accepted by [`apply`](Self::apply) on this state: a
    /// proposer checks it first so that bad input never takes a log entry. Apply checks
    /// again: a job named here may have been collected (retention) in between.
    pub fn check(&self, command: &Command) -> std::result::Result<(), Invalid> {
        self.check_in(crate::namespace::DEFAULT_NAMESPACE, command)
    }

    fn check_in(&self, ns: &str, command: &Command) -> std::result::Result<(), Invalid> {
        match command {
            Command::InNamespace { namespace, command } => {
                self.check_in_namespace(namespace, command)?;
                self.check_in(namespace, command)
            }
            Command::Namespace { op, .. } => self.namespaces.check(op, |n| self.namespace_holds(n)),
            Command::Request { id, command } => {
                id.check()?;
                if !command.batchable() || matches!(**command, Command::Request { .. }) {
                    return Err(Invalid::new(
                        "request",
                        format!("a {} cannot be a request", command.kind()),
                    ));
                }
                if let Lookup::Conflict(e) = self.requests.lookup(id, command) {
                    return Err(e);
                }
                self.check_in(ns, command)
            }
            Command::Authored { command, .. } => {
                authored_allowed(command)?;
                self.check_in(ns, command)
            }
            Command::WithJobOptions { options, command } => {
                crate::command::check_job_options(options, command)?;
                self.check_in(ns, command)
            }
            Command::SubmitJobs { jobs, .. } => self.check_submit(ns, jobs),
            Command::SubmitWorkflow { name, jobs, .. } => {
                self.plan_workflow(ns, name, jobs).map(|_| ())
            }
            Command::AclBootstrap { token, .. } => self.acl.check_add(token, true),
            Command::TokenCreate { token, .. } => self.acl.check_add(token, false),
            Command::TokenCreateScoped { token, grants, .. } => {
                crate::namespace::check_grants(grants)?;
                self.acl.check_add(token, false)
            }
            Command::Cron { op, .. } => self.check_cron(ns, op),
            Command::RerunWorkflow { workflow, from, .. } => {
                self.rerun_plan(*workflow, *from).map(|_| ())
            }
            Command::TaskOutputs { outputs, .. } => crate::command::check_outputs(outputs),
            Command::SetRules { rules, .. } => rules.validate(),
            Command::Enable { .. } => Ok(()),
            Command::Collect { jobs, .. } if jobs.len() > limits::COLLECT_PER_ENTRY_MAX => {
                Err(Invalid::new(
                    "jobs",
                    format!(
                        "{} ids > COLLECT_PER_ENTRY_MAX {}",
                        jobs.len(),
                        limits::COLLECT_PER_ENTRY_MAX
                    ),
                ))
            }
            Command::TokenRevoke { accessor, .. } => match self.acl.token(accessor) {
                Some(_) => Ok(()),
                None => Err(Invalid::new("accessor", format!("no token {accessor}"))),
            },
            _ => Ok(()),
        }
    }

    pub(super) fn check_submit(
        &self,
        ns: &str,
        specs: &[JobSpec],
    ) -> std::result::Result<(), Invalid> {
        if specs.is_empty() || specs.len() > limits::SUBMIT_BATCH_MAX {
            return Err(Invalid::new(
                "jobs",
                format!(
                    "must hold 1..={} jobs (SUBMIT_BATCH_MAX)",
                    limits::SUBMIT_BATCH_MAX
                ),
            ));
        }
        for (i, spec) in specs.iter().enumerate() {
            self.check_spec(ns, spec)
                .map_err(|e| e.at(&format!("jobs[{i}]")))?;
        }
        unique_keys(specs.iter())
    }

    /// Spec validity plus references: every dependency must exist, and every step-output
    /// reference names one (see [`check_step_refs`](Self::check_step_refs)).
    pub(super) fn check_spec(&self, ns: &str, spec: &JobSpec) -> std::result::Result<(), Invalid> {
        self.check_spec_alone(ns, spec)?;
        self.check_step_refs(spec, &[])
    }

    /// Spec validity and its dependencies (jobs of namespace `ns`), without its
    /// step-output references.
    pub(super) fn check_spec_alone(
        &self,
        ns: &str,
        spec: &JobSpec,
    ) -> std::result::Result<(), Invalid> {
        spec.validate()?;
        // What the namespace allows its jobs (sandboxes, limits past its maxima).
        self.namespaces.limits(ns).check_job(ns, spec)?;
        if let Some(d) = spec
            .depends_on
            .iter()
            .find(|d| !self.jobs.contains_key(d) || self.namespaces.of(**d) != ns)
        {
            return Err(Invalid::new("depends_on", format!("unknown job {d}")));
        }
        Ok(())
    }

    /// The step-output references of a job that runs after its dependencies' ids and the
    /// jobs of its workflow keyed `after`: each must name one of those (checked once
    /// `Feature::StepReferencesCheckedAtSubmit` is on; before, a bad reference failed the
    /// attempt when it started).
    pub(super) fn check_step_refs(
        &self,
        spec: &JobSpec,
        after: &[String],
    ) -> std::result::Result<(), Invalid> {
        if !self.has_feature(Feature::StepReferencesCheckedAtSubmit) {
            return Ok(());
        }
        let is_dependency = |key: &str| {
            after.iter().any(|a| a == key) || spec.depends_on.iter().any(|d| d.to_string() == key)
        };
        let dependencies = || {
            after
                .iter()
                .cloned()
                .chain(spec.depends_on.iter().map(|d| d.to_string()))
                .collect()
        };
        crate::step_refs::check_spec(spec, is_dependency, dependencies)
    }
}
