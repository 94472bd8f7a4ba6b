//! Workflows: planning one whole (its jobs in dependency order), submitting it, rerunning
//! part of it, and the step outputs its jobs publish for their dependents.

use super::*;

impl ClusterState {
    /// The workflow `jobs` repeat: every job's idempotency key names the job of that
    /// workflow under the same workflow key, and the workflow has no other job.
    pub(super) fn repeated_workflow(&self, ns: &str, jobs: &[WorkflowJob]) -> Option<&Workflow> {
        let first = self.job_of_key(ns, &jobs.first()?.spec)?;
        let w = self.workflows.get(&self.jobs.get(&first)?.workflow?)?;
        let same = w.jobs.len() == jobs.len()
            && jobs.iter().all(|j| {
                self.job_of_key(ns, &j.spec)
                    .is_some_and(|id| w.jobs.get(&j.key) == Some(&id))
            });
        same.then_some(w)
    }

    /// Checks a workflow whole and returns its jobs in creation order (dependencies first;
    /// Kahn's algorithm in input order, so deterministic), or the first problem found.
    pub(super) fn plan_workflow(
        &self,
        ns: &str,
        name: &str,
        jobs: &[WorkflowJob],
    ) -> std::result::Result<Vec<usize>, Invalid> {
        let reject = |field: &str, reason: String| Err(Invalid::new(field, reason));
        if name.is_empty() || name.len() > limits::JOB_NAME_BYTES_MAX {
            return reject(
                "name",
                format!(
                    "must be 1..={} bytes (JOB_NAME_BYTES_MAX)",
                    limits::JOB_NAME_BYTES_MAX
                ),
            );
        }
        if jobs.is_empty() || jobs.len() > limits::WORKFLOW_JOBS_MAX {
            return reject(
                "jobs",
                format!(
                    "must hold 1..={} jobs (WORKFLOW_JOBS_MAX)",
                    limits::WORKFLOW_JOBS_MAX
                ),
            );
        }
        let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            if j.key.is_empty() || j.key.len() > limits::JOB_NAME_BYTES_MAX {
                return reject(&format!("jobs[{i}].key"), "must be 1..=256 bytes".into());
            }
            if keys.insert(&j.key, i).is_some() {
                return reject(
                    &format!("jobs[{i}].key"),
                    format!("duplicate key {:?}", j.key),
                );
            }
            self.check_spec_alone(ns, &j.spec)
                .map_err(|e| e.at(&format!("jobs[{i}]")))?;
        }
        unique_keys(jobs.iter().map(|j| &j.spec))?;
        // A workflow repeats a submitted one whole (answered with it, see `repeat`) or
        // names only new idempotency keys: a job of another submission cannot become part
        // of this one.
        for (i, j) in jobs.iter().enumerate() {
            if let Some(id) = self.job_of_key(ns, &j.spec) {
                return reject(
                    &format!("jobs[{i}].idempotency_key"),
                    format!(
                        "{:?} already names job {id}{}; a workflow may reuse idempotency keys only to repeat a whole submitted workflow",
                        j.spec.idempotency_key.as_deref().unwrap_or(""),
                        self.jobs.get(&id).expect("present")
                            .workflow
                            .map_or(String::new(), |w| format!(" of workflow {w}"))
                    ),
                );
            }
        }
        for (i, j) in jobs.iter().enumerate() {
            if let Some(a) = j.after.iter().find(|a| !keys.contains_key(a.as_str())) {
                return reject(
                    &format!("jobs[{i}].after"),
                    format!("unknown job key {a:?}"),
                );
            }
        }
        for (i, j) in jobs.iter().enumerate() {
            self.check_step_refs(&j.spec, &j.after)
                .map_err(|e| e.at(&format!("jobs[{i}]")))?;
        }
        let mut indegree: Vec<usize> = jobs.iter().map(|j| j.after.len()).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
        for (i, j) in jobs.iter().enumerate() {
            for a in &j.after {
                users[keys[a.as_str()]].push(i);
            }
        }
        let mut ready: VecDeque<usize> = (0..jobs.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(jobs.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.push_back(u);
                }
            }
        }
        if order.len() != jobs.len() {
            let stuck: Vec<&str> = (0..jobs.len())
                .filter(|&i| indegree[i] > 0)
                .map(|i| jobs[i].key.as_str())
                .collect();
            return reject(
                "jobs",
                format!("dependency cycle among: {}", stuck.join(", ")),
            );
        }
        Ok(order)
    }

    pub(super) fn submit_workflow(
        &mut self,
        at: u64,
        name: &str,
        jobs: &[WorkflowJob],
    ) -> Response {
        let ns = self.current_namespace().to_string();
        // A repeat (proposed twice before either applied) answers with the first.
        if let Some(w) = self.repeated_workflow(&ns, jobs) {
            return Response::WorkflowSubmitted {
                workflow: w.id,
                jobs: w.jobs.clone(),
            };
        }
        let order = match self.plan_workflow(&ns, name, jobs) {
            Ok(order) => order,
            Err(e) => return Response::Rejected(e),
        };
        if let Err(e) = self.take_quota(at, jobs.len() as u64) {
            return Response::Rejected(e);
        }
        let workflow = self.next_workflow;
        self.next_workflow += 1;
        let mut ids: BTreeMap<String, JobId> = BTreeMap::new();
        for i in order {
            let j = &jobs[i];
            let mut spec = j.spec.clone();
            spec.depends_on
                .extend(j.after.iter().map(|a| ids[a.as_str()]));
            let id = self.create_job(at, spec, Some(workflow));
            ids.insert(j.key.clone(), id);
        }
        self.workflows.insert(
            workflow,
            Workflow {
                id: workflow,
                name: name.to_string(),
                jobs: ids.clone(),
                submitted_at_ms: at,
            },
        );
        Response::WorkflowSubmitted {
            workflow,
            jobs: ids,
        }
    }

    /// The jobs a rerun of `workflow` from `from` puts back in the queue: `from` and every
    /// job of the workflow downstream of it, in id order. `from` must have ended without
    /// succeeding, and every one of them must have ended.
    pub(super) fn rerun_plan(
        &self,
        workflow: WorkflowId,
        from: JobId,
    ) -> std::result::Result<Vec<JobId>, Invalid> {
        let w = self
            .workflows
            .get(&workflow)
            .ok_or_else(|| Invalid::new("workflow", format!("no workflow {workflow}")))?;
        if !w.jobs.values().any(|id| *id == from) {
            return Err(Invalid::new(
                "from",
                format!("job {from} is not part of workflow {workflow}"),
            ));
        }
        let root = self.jobs.get(&from).ok_or_else(|| {
            Invalid::new(
                "from",
                format!("job {from} of workflow {workflow} was collected (retention)"),
            )
        })?;
        if !root.state.is_final() || root.state == JobState::Succeeded {
            return Err(Invalid::new(
                "from",
                format!(
                    "job {from} is {}; only a failed, timed-out or cancelled job is rerun",
                    root.state.name()
                ),
            ));
        }
        let mut plan = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(id) = queue.pop_front() {
            for d in &self.jobs.get(&id).expect("present").dependents {
                if self.jobs.get(d).expect("present").workflow == Some(workflow) && plan.insert(*d)
                {
                    queue.push_back(*d);
                }
            }
        }
        // A job whose dependency retention collected would wait for it forever.
        for id in &plan {
            if let Some(d) = self
                .jobs
                .get(id)
                .expect("present")
                .spec
                .depends_on
                .iter()
                .find(|d| !self.jobs.contains_key(d))
            {
                return Err(Invalid::new(
                    "from",
                    format!(
                        "job {id} depends on job {d}, which retention collected; submit the workflow again instead"
                    ),
                ));
            }
        }
        if let Some(busy) = plan
            .iter()
            .find(|id| !self.jobs.state(id).expect("present").is_final())
        {
            return Err(Invalid::new(
                "from",
                format!(
                    "job {busy} downstream is still {}; wait for it or cancel it",
                    self.jobs.state(busy).expect("present").name()
                ),
            ));
        }
        Ok(plan.into_iter().collect())
    }

    pub(super) fn rerun(&mut self, at: u64, workflow: WorkflowId, from: JobId) -> Response {
        let plan = match self.rerun_plan(workflow, from) {
            Ok(p) => p,
            Err(e) => {
                self.counters.rejected_commands += 1;
                return Response::Rejected(e);
            }
        };
        // The jobs go back to pending: they count against their namespace's quotas on
        // what is submitted (pending jobs, the submit rate) as a submission of them would.
        let ns = plan
            .first()
            .map(|id| self.namespaces.of(*id).to_string())
            .filter(|ns| ns != crate::namespace::DEFAULT_NAMESPACE);
        let outer = std::mem::replace(&mut self.in_namespace, ns);
        let quota = self.take_quota(at, plan.len() as u64);
        self.in_namespace = outer;
        if let Err(e) = quota {
            return Response::Rejected(e);
        }
        for &id in &plan {
            self.touch(id);
            let j = self.jobs.get_mut(&id).expect("planned");
            self.rerun_base.insert(id, j.attempts.len() as u32);
            self.outputs.remove(&id);
            j.state = JobState::Pending;
            j.reason = None;
            j.not_before_ms = at;
        }
        Response::Submitted { jobs: plan }
    }

    /// The step outputs job `id` published.
    pub fn step_outputs(&self, id: JobId) -> Option<&BTreeMap<String, String>> {
        self.outputs.get(&id)
    }

    /// Records the outputs the current attempt of `job` published (a stale attempt's are
    /// ignored: fencing, as for its end).
    pub(super) fn publish_outputs(
        &mut self,
        job: JobId,
        attempt: u32,
        node: NodeId,
        outputs: &BTreeMap<String, String>,
    ) -> Response {
        if let Err(e) = crate::command::check_outputs(outputs) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let current = self.jobs.get(&job).and_then(|j| {
            let a = j.current_attempt()?;
            (a.number == attempt && a.node == node).then_some(())
        });
        if current.is_none() {
            return Response::Ignored {
                reason: format!("attempt {attempt} of job {job} is not in flight on node {node}"),
            };
        }
        self.outputs.insert(job, outputs.clone());
        // Its digest covers its outputs (under `JobDigestsCoverTheirRecords`).
        self.digests.touch(job);
        Response::Done
    }
}
