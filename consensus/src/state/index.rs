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
}

impl JobIndex {
    pub(super) fn insert(&mut self, j: &Job) {
        self.counts[j.state as usize] += 1;
        if j.state == JobState::Pending {
            self.pending
                .insert((std::cmp::Reverse(j.spec.priority), j.id));
        }
        if let Some(a) = j.current_attempt() {
            self.active.entry(a.node).or_default().insert(j.id);
        }
    }

    pub(super) fn remove(&mut self, j: &Job) {
        self.counts[j.state as usize] -= 1;
        if j.state == JobState::Pending {
            self.pending
                .remove(&(std::cmp::Reverse(j.spec.priority), j.id));
        }
        if let Some(a) = j.current_attempt() {
            if let Some(set) = self.active.get_mut(&a.node) {
                set.remove(&j.id);
                if set.is_empty() {
                    self.active.remove(&a.node);
                }
            }
        }
    }

    /// From the jobs: an ended job is only counted (it is in no queue), so a rebuild
    /// decodes only the jobs that have not ended.
    /// The sets are built from sorted lists (a bulk build, not an insert per job): a
    /// restart rebuilds them for every job held.
    pub(super) fn rebuilt(jobs: &Jobs) -> JobIndex {
        let mut index = JobIndex::default();
        let mut pending = Vec::new();
        let mut active: BTreeMap<NodeId, Vec<JobId>> = BTreeMap::new();
        for (state, live) in jobs.cells() {
            index.counts[state as usize] += 1;
            if state.is_final() {
                continue;
            }
            let j = live.expect("a job that has not ended is held as a value");
            if j.state == JobState::Pending {
                pending.push((std::cmp::Reverse(j.spec.priority), j.id));
            }
            if let Some(a) = j.current_attempt() {
                active.entry(a.node).or_default().push(j.id);
            }
        }
        pending.sort_unstable();
        index.pending = pending.into_iter().collect();
        index.active = active
            .into_iter()
            .map(|(node, ids)| (node, ids.into_iter().collect()))
            .collect();
        index
    }

    pub(super) fn same(&self, other: &JobIndex) -> bool {
        self.pending == other.pending && self.active == other.active && self.counts == other.counts
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
            && self.index.same(&JobIndex::rebuilt(&self.jobs))
            && self.ended_order == rebuilt.ended_order
            && self.own_due == rebuilt.own_due
    }
}
