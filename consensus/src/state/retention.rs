//! Retention: which ended jobs the leader may collect, and collecting them.

use super::*;

impl ClusterState {
    /// Removes the jobs of `ids` that may go (see [`collectable`](Self::collectable)), in
    /// order, with what only they used: their idempotency key, submitter, step outputs,
    /// rerun base and end time; a workflow goes with its last job.
    pub(super) fn collect(&mut self, ids: &[JobId]) -> Response {
        let (mut jobs, mut kept) = (Vec::new(), 0);
        let mut workflows = BTreeMap::new();
        for &id in ids {
            if !self.collectable_by(id, None, &mut workflows) {
                kept += 1;
                continue;
            }
            self.touch(id);
            let job = self.jobs.remove(&id).expect("collectable jobs exist");
            // Its dependencies that stay no longer name it (every dependent named exists).
            for d in &job.spec.depends_on {
                if self.jobs.contains_key(d) {
                    self.touch(*d);
                    let dj = self.jobs.get_mut(d).expect("present");
                    dj.dependents.retain(|x| *x != id);
                }
            }
            let ns = self.namespaces.of_job.remove(&id);
            if let Some(k) = &job.spec.idempotency_key {
                match &ns {
                    Some(ns) => {
                        let key = (ns.clone(), k.clone());
                        if self.namespaces.keys.get(&key) == Some(&id) {
                            self.namespaces.keys.remove(&key);
                        }
                    }
                    None => {
                        if self.idempotency.get(k) == Some(&id) {
                            self.idempotency.remove(k);
                        }
                    }
                }
            }
            let submitted_by = self.acl.submitter(id).map(str::to_string);
            self.acl.forget_job(id);
            let outputs = self.outputs.remove(&id).unwrap_or_default();
            self.rerun_base.remove(&id);
            let ended_at_ms = self.ended_at.remove(&id);
            if let Some(t) = ended_at_ms {
                self.order(id, t, false);
            }
            let retain_ms = self.retain.remove(&id);
            if let Some(w) = job.workflow {
                let gone = self
                    .workflows
                    .get(&w)
                    .is_some_and(|wf| wf.jobs.values().all(|j| !self.jobs.contains_key(j)));
                if gone {
                    self.workflows.remove(&w);
                }
            }
            jobs.push(id);
            if self.keep_collected {
                self.collected.push(Collected {
                    job,
                    outputs,
                    submitted_by,
                    ended_at_ms,
                    retain_ms,
                    namespace: ns,
                });
            }
        }
        Response::Collected { jobs, kept }
    }

    /// Whether job `id` may be collected: it has ended, nothing unfinished depends on it,
    /// and every job of its workflow (if any) has ended.
    pub fn collectable(&self, id: JobId) -> bool {
        self.collectable_by(id, None, &mut BTreeMap::new())
    }

    /// [`collectable`](Self::collectable), and with `due` (now, the cluster's retention),
    /// every job of its workflow due by then too (see [`due_at`](Self::due_at)). A workflow's verdict is worked out once per pass and
    /// kept in `workflows` (a job removed counts as ended, so a pass that removes jobs
    /// never turns a verdict false): O(its jobs) once, not once per job of it.
    pub(super) fn collectable_by(
        &self,
        id: JobId,
        due: Option<(u64, u64)>,
        workflows: &mut BTreeMap<WorkflowId, bool>,
    ) -> bool {
        let ended = |j: &JobId| {
            self.jobs.state(j).is_none_or(|x| {
                x.is_final()
                    && due.is_none_or(|(now, retention)| {
                        self.due_at(*j, retention).is_some_and(|t| t <= now)
                    })
            })
        };
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        if !job.state.is_final()
            || !job
                .dependents
                .iter()
                .all(|d| self.jobs.state(d).is_none_or(|x| x.is_final()))
        {
            return false;
        }
        match job.workflow {
            None => true,
            Some(w) => *workflows.entry(w).or_insert_with(|| {
                self.workflows
                    .get(&w)
                    .is_none_or(|wf| wf.jobs.values().all(ended))
            }),
        }
    }

    /// When ended job `id` is due for collection under the cluster's `retention_ms` (0:
    /// never) or its own retention (0: never); `None` while it has not ended or never.
    pub fn due_at(&self, id: JobId, retention_ms: u64) -> Option<u64> {
        let keep = self.retain.get(&id).copied().unwrap_or(retention_ms);
        let ended = self.ended_at.get(&id)?;
        (keep > 0).then(|| ended.saturating_add(keep))
    }

    /// The retention job `id` asked for itself, if any.
    pub fn retain_of(&self, id: JobId) -> Option<u64> {
        self.retain.get(&id).copied()
    }

    /// Jobs the leader may collect at `now_ms`: due under the cluster's `retention_ms` (0:
    /// only jobs with a retention of their own) or their own (a workflow's jobs only once
    /// all of them are), collectable, earliest due first, at most `limit`.
    pub fn collection_due(&self, now_ms: u64, retention_ms: u64, limit: usize) -> Vec<JobId> {
        let mut workflows = BTreeMap::new();
        let by_cluster = (retention_ms > 0)
            .then(|| {
                self.ended_order
                    .range(..=(now_ms.saturating_sub(retention_ms), JobId::MAX))
                    .map(move |(t, id)| (t + retention_ms, *id))
            })
            .into_iter()
            .flatten();
        let by_own = self
            .own_due
            .range(..=(now_ms, JobId::MAX))
            .map(|(t, id)| (*t, *id));
        let mut due: Vec<(u64, JobId)> = by_cluster
            .filter(|(_, id)| {
                self.collectable_by(*id, Some((now_ms, retention_ms)), &mut workflows)
            })
            .take(limit)
            .collect();
        due.extend(
            by_own
                .filter(|(_, id)| {
                    self.collectable_by(*id, Some((now_ms, retention_ms)), &mut workflows)
                })
                .take(limit),
        );
        due.sort_unstable();
        due.truncate(limit);
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Puts ended job `id` (ended at `t`) in the order the leader collects by (`add`), or
    /// takes it out: by its end in `ended_order`, by its own due time in `own_due`, or in
    /// neither when it asked to be kept.
    pub(super) fn order(&mut self, id: JobId, t: u64, add: bool) {
        match self.retain.get(&id).copied() {
            None => {
                if add {
                    self.ended_order.insert((t, id));
                } else {
                    self.ended_order.remove(&(t, id));
                }
            }
            Some(0) => {}
            Some(keep) => {
                let due = t.saturating_add(keep);
                if add {
                    self.own_due.insert((due, id));
                } else {
                    self.own_due.remove(&(due, id));
                }
            }
        }
    }

    /// Keep the jobs collections remove, for [`take_collected`](Self::take_collected).
    pub fn keep_collected(&mut self, on: bool) {
        self.keep_collected = on;
    }

    /// The jobs collected since the last call, with what they carried, oldest first.
    pub fn take_collected(&mut self) -> Vec<Collected> {
        std::mem::take(&mut self.collected)
    }

    /// When job `id` ended, under rules.
    pub fn ended_at(&self, id: JobId) -> Option<u64> {
        self.ended_at.get(&id).copied()
    }
}
