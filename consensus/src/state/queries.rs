//! Reads of the state for the server, the scheduler and the tools.

use super::*;

impl ClusterState {
    /// Job `id`: borrowed while it may still change, decoded once it ended (see
    /// `crate::jobs`).
    pub fn job(&self, id: JobId) -> Option<Cow<'_, Job>> {
        self.jobs.get(&id)
    }

    /// Whether apply has `feature` on (an `Enable` entry was applied).
    pub fn has_feature(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// Attempt `number` of job `id`.
    pub fn attempt(&self, id: JobId, number: u32) -> Option<Attempt> {
        self.jobs
            .get(&id)?
            .attempts
            .iter()
            .find(|a| a.number == number)
            .cloned()
    }

    /// Job `id`'s state, without decoding the job.
    pub fn job_state(&self, id: JobId) -> Option<JobState> {
        self.jobs.state(&id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = Cow<'_, Job>> {
        self.jobs.values()
    }

    /// Attempts ended by the entries this value applied since it was made or loaded, by
    /// `Exit::kind`.
    pub fn attempts_ended(&self) -> [u64; 5] {
        self.attempts_ended.0
    }

    /// How many jobs are in each state, `JobState as usize` (kept as jobs change).
    pub fn job_counts(&self) -> [u64; 7] {
        self.index.counts
    }

    /// Jobs in `state`, in id order; jobs in other states are passed over undecoded.
    pub fn jobs_in(&self, state: JobState) -> impl Iterator<Item = Cow<'_, Job>> {
        self.jobs
            .states()
            .filter(move |(_, s)| *s == state)
            .filter_map(|(id, _)| self.jobs.get(&id))
    }

    /// Jobs with ids from `from` on, in id order (a page of a listing).
    pub fn jobs_from(&self, from: JobId) -> impl Iterator<Item = Cow<'_, Job>> {
        self.jobs.range(from..)
    }

    /// Jobs from `from` (or, `newest_first`, up to it, counting down) that `keep` accepts
    /// by id, namespace and state — decided before a job is decoded (see
    /// `Jobs::range_where`).
    pub fn jobs_listed<'a>(
        &'a self,
        from: JobId,
        newest_first: bool,
        keep: impl Fn(JobId, &str, JobState) -> bool + 'a,
    ) -> Box<dyn Iterator<Item = Cow<'a, Job>> + 'a> {
        let keep = move |id, state| keep(id, self.namespaces.of(id), state);
        if newest_first {
            Box::new(self.jobs.range_where(..=from, keep).rev())
        } else {
            Box::new(self.jobs.range_where(from.., keep))
        }
    }

    /// Jobs with ids up to `to`, newest first (a page of a listing, counting down).
    pub fn jobs_down_from(&self, to: JobId) -> impl Iterator<Item = Cow<'_, Job>> {
        self.jobs.range(..=to).rev()
    }

    /// Workflows with ids up to `to`, newest first.
    pub fn workflows_down_from(&self, to: WorkflowId) -> impl Iterator<Item = &Workflow> {
        self.workflows.range(..=to).rev().map(|(_, w)| w)
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs with an attempt in flight (assigned or running), on any node.
    pub fn active_jobs(&self) -> impl Iterator<Item = &Job> {
        self.index
            .active
            .values()
            .flat_map(|ids| ids.iter().map(|id| self.jobs.live(id)))
    }

    pub fn workflow(&self, id: WorkflowId) -> Option<&Workflow> {
        self.workflows.get(&id)
    }

    pub fn workflows(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Jobs that may be assigned at `now_ms`: pending, past their backoff, every dependency
    /// succeeded; highest priority first, then submission order.
    pub fn runnable(&self, now_ms: u64) -> impl Iterator<Item = &Job> {
        self.index
            .pending
            .iter()
            .map(|(_, id)| self.jobs.live(id))
            .filter(move |j| j.not_before_ms <= now_ms && self.dependencies_succeeded(j))
    }

    /// The runnable jobs of namespace `ns` (see [`runnable`](Self::runnable)), in the
    /// same order.
    pub fn runnable_in<'a>(&'a self, ns: &str, now_ms: u64) -> impl Iterator<Item = &'a Job> {
        self.index
            .by_ns
            .get(ns)
            .into_iter()
            .flat_map(|n| n.pending.iter())
            .map(|(_, id)| self.jobs.live(id))
            .filter(move |j| j.not_before_ms <= now_ms && self.dependencies_succeeded(j))
    }

    /// The namespaces with pending jobs, by name.
    pub fn namespaces_pending(&self) -> impl Iterator<Item = &str> {
        self.index
            .by_ns
            .iter()
            .filter(|(_, n)| !n.pending.is_empty())
            .map(|(name, _)| name.as_str())
    }

    /// The namespace of job `id`.
    pub fn namespace_of(&self, id: JobId) -> &str {
        self.namespaces.of(id)
    }

    /// What namespace `ns` uses now: pending jobs, attempts in flight and what they
    /// reserve.
    pub fn namespace_usage(&self, ns: &str) -> crate::namespace::Usage {
        self.index.usage(ns)
    }

    /// The jobs namespace `ns` holds, by state (`JobState as usize`).
    pub fn namespace_counts(&self, ns: &str) -> [u64; 7] {
        self.index.by_ns.get(ns).map_or([0; 7], |n| n.counts)
    }

    /// `(job, attempt)` of every attempt in flight on `node`.
    pub fn running_on(&self, node: NodeId) -> Vec<(JobId, u32)> {
        self.index.active.get(&node).map_or(Vec::new(), |ids| {
            ids.iter()
                .filter_map(|id| {
                    let j = self.jobs.live(id);
                    j.current_attempt().map(|a| (j.id, a.number))
                })
                .collect()
        })
    }

    /// What the attempts in flight on `node` hold.
    pub fn load(&self, node: NodeId) -> Load {
        let mut l = Load::default();
        for id in self.index.active.get(&node).into_iter().flatten() {
            let j = self.jobs.live(id);
            l.slots += 1;
            l.cpu_millis += j.spec.resources.cpu_millis as u64;
            l.memory_bytes += j.spec.resources.memory_bytes;
        }
        l
    }

    /// The answered-request table (at-most-once writes).
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// The last `CHECKPOINTS_KEPT` checkpoints: log index → state hash there.
    pub fn checkpoints(&self) -> &BTreeMap<u64, [u8; 32]> {
        &self.checkpoints
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn last_applied(&self) -> Option<u64> {
        self.last_applied
    }

    /// Prepares a restored state to start a new log at index 0: drops what refers to the old
    /// log's indexes (its checkpoints and last applied index). Jobs, workflows, nodes and
    /// counters stay.
    pub fn rebase(&mut self) {
        self.checkpoints.clear();
        self.last_applied = None;
    }

    /// The index of the newest checkpoint kept, if any.
    pub fn latest_checkpoint(&self) -> Option<u64> {
        self.checkpoints.last_key_value().map(|(i, _)| *i)
    }

    /// The hash recorded at a checkpoint index, if still kept.
    pub fn checkpoint(&self, index: u64) -> Option<[u8; 32]> {
        self.checkpoints.get(&index).copied()
    }
}
