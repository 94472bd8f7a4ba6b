//! Derived indexes over the jobs: the pending queue, the attempts in flight per node,
//! and the jobs per state.

use super::*;

/// Indexes over the jobs, kept in step with them: [`ClusterState::touch`] takes a job out
/// before it changes, and the end of every applied command puts the jobs it touched back
/// under their new state. A test checks them against a full rebuild after every entry.
#[derive(Default, Clone)]
pub(super) struct JobIndex {
    /// Jobs in state pending, in scheduling order: higher priority first, then older.
    pub(super) pending: BTreeSet<(std::cmp::Reverse<i32>, JobId)>,
    /// Jobs with an attempt in flight (assigned or running), by the node running it.
    pub(super) active: BTreeMap<NodeId, BTreeSet<JobId>>,
    /// Jobs touched by the command being applied, to index again when it ends.
    pub(super) touched: BTreeSet<JobId>,
    /// Jobs by state (`JobState as usize`).
    pub(super) counts: [u64; 7],
    /// Per namespace (those holding a job): its pending queue, what its attempts in flight
    /// hold, and its jobs by state — for quotas, fair share and metrics.
    pub(super) by_ns: BTreeMap<String, NsIndex>,
}

/// One namespace's part of the indexes.
#[derive(Default, Clone, PartialEq, Eq, Debug)]
pub(super) struct NsIndex {
    /// Its pending jobs, in scheduling order.
    pub(super) pending: BTreeSet<(std::cmp::Reverse<i32>, JobId)>,
    /// Its attempts in flight and what they reserve; `pending` counts its queue.
    pub(super) usage: crate::namespace::Usage,
    /// Its jobs by state.
    pub(super) counts: [u64; 7],
}

impl JobIndex {
    pub(super) fn insert(&mut self, j: &Job, ns: &str) {
        self.counts[j.state as usize] += 1;
        let n = match self.by_ns.get_mut(ns) {
            Some(n) => n,
            None => self.by_ns.entry(ns.to_string()).or_default(),
        };
        n.counts[j.state as usize] += 1;
        if j.state == JobState::Pending {
            self.pending
                .insert((std::cmp::Reverse(j.spec.priority), j.id));
            n.pending.insert((std::cmp::Reverse(j.spec.priority), j.id));
            n.usage.pending += 1;
        }
        if let Some(a) = j.current_attempt() {
            self.active.entry(a.node).or_default().insert(j.id);
            n.usage.running += 1;
            n.usage.cpu_millis += u64::from(j.spec.resources.cpu_millis);
            n.usage.memory_bytes += j.spec.resources.memory_bytes;
        }
    }

    pub(super) fn remove(&mut self, j: &Job, ns: &str) {
        self.counts[j.state as usize] -= 1;
        let n = self.by_ns.get_mut(ns).expect("an indexed job's namespace");
        n.counts[j.state as usize] -= 1;
        if j.state == JobState::Pending {
            self.pending
                .remove(&(std::cmp::Reverse(j.spec.priority), j.id));
            n.pending
                .remove(&(std::cmp::Reverse(j.spec.priority), j.id));
            n.usage.pending -= 1;
        }
        if let Some(a) = j.current_attempt() {
            if let Some(set) = self.active.get_mut(&a.node) {
                set.remove(&j.id);
                if set.is_empty() {
                    self.active.remove(&a.node);
                }
            }
            n.usage.running -= 1;
            n.usage.cpu_millis -= u64::from(j.spec.resources.cpu_millis);
            n.usage.memory_bytes -= j.spec.resources.memory_bytes;
        }
        if n.counts.iter().all(|c| *c == 0) {
            self.by_ns.remove(ns);
        }
    }

    /// What namespace `ns` uses now.
    pub(super) fn usage(&self, ns: &str) -> crate::namespace::Usage {
        self.by_ns.get(ns).map(|n| n.usage).unwrap_or_default()
    }

    /// The jobs namespace `ns` holds.
    pub(super) fn jobs_in(&self, ns: &str) -> u64 {
        self.by_ns.get(ns).map_or(0, |n| n.counts.iter().sum())
    }

    /// From the jobs: an ended job is only counted (it is in no queue), so a rebuild
    /// decodes only the jobs that have not ended.
    /// The sets are built from sorted lists (a bulk build, not an insert per job): a
    /// restart rebuilds them for every job held.
    pub(super) fn rebuilt(jobs: &Jobs, namespaces: &crate::namespace::Namespaces) -> JobIndex {
        let mut index = JobIndex::default();
        let mut pending = Vec::new();
        let mut active: BTreeMap<NodeId, Vec<JobId>> = BTreeMap::new();
        // Jobs outside `default` are few or none in most states: counted by their own map.
        let mut default_counts = [0u64; 7];
        for (state, live) in jobs.cells() {
            index.counts[state as usize] += 1;
            default_counts[state as usize] += 1;
            if state.is_final() {
                continue;
            }
            let j = live.expect("a job that has not ended is held as a value");
            let ns = namespaces.of(j.id);
            let n = index.by_ns.entry(ns.to_string()).or_default();
            if j.state == JobState::Pending {
                pending.push((std::cmp::Reverse(j.spec.priority), j.id));
                n.pending.insert((std::cmp::Reverse(j.spec.priority), j.id));
                n.usage.pending += 1;
            }
            if let Some(a) = j.current_attempt() {
                active.entry(a.node).or_default().push(j.id);
                n.usage.running += 1;
                n.usage.cpu_millis += u64::from(j.spec.resources.cpu_millis);
                n.usage.memory_bytes += j.spec.resources.memory_bytes;
            }
        }
        // Every job's state by namespace: the ended ones outside `default` from their map.
        for (id, ns) in namespaces.of_job.iter() {
            let state = jobs.state(id).expect("a job's namespace goes with it");
            default_counts[state as usize] -= 1;
            index.by_ns.entry(ns.clone()).or_default().counts[state as usize] += 1;
        }
        if default_counts.iter().any(|c| *c > 0) {
            index
                .by_ns
                .entry(crate::namespace::DEFAULT_NAMESPACE.to_string())
                .or_default()
                .counts = default_counts;
        }
        index.by_ns.retain(|_, n| n.counts.iter().any(|c| *c > 0));
        pending.sort_unstable();
        index.pending = pending.into_iter().collect();
        index.active = active
            .into_iter()
            .map(|(node, ids)| (node, ids.into_iter().collect()))
            .collect();
        index
    }

    pub(super) fn same(&self, other: &JobIndex) -> bool {
        self.pending == other.pending
            && self.active == other.active
            && self.counts == other.counts
            && self.by_ns == other.by_ns
    }
}

impl PartialEq for JobIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JobIndex {}

impl std::fmt::Debug for JobIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JobIndex {{ pending: {}, active nodes: {} }}",
            self.pending.len(),
            self.active.len()
        )
    }
}

impl ClusterState {
    /// Whether the derived indexes equal a rebuild from the jobs (tests call it after every
    /// entry).
    pub fn indexes_consistent(&self) -> bool {
        let mut rebuilt = self.snapshot_copy();
        for (id, t) in self.ended_at.iter() {
            rebuilt.order(*id, *t, true);
        }
        self.index.touched.is_empty()
            && self
                .index
                .same(&JobIndex::rebuilt(&self.jobs, &self.namespaces))
            && self.ended_order == rebuilt.ended_order
            && self.own_due == rebuilt.own_due
    }
}
