//! Placement and the leader's duties. [`place`] and [`overdue`] are pure functions of the
//! applied state, the set of live nodes and the time; the leader loop in `leader.rs`
//! proposes what they decide.

use std::collections::{BTreeMap, BTreeSet};

use cathedral_consensus::{Assignment, ClusterState, JobId, JobState, Load, NodeId, NodeStatus};

/// Most assignments proposed in one entry.
pub const ASSIGNMENTS_PER_ENTRY_MAX: usize = 1000;

/// What is free on a node during one placement round.
#[derive(Debug, Clone, Copy)]
struct Free {
    slots: u64,
    total_slots: u64,
    cpu: Option<u64>,
    memory: Option<u64>,
}

/// Decides where runnable jobs go. Jobs in order of priority, then submission; only those
/// whose dependencies succeeded and whose backoff has passed; only live nodes whose tags
/// satisfy the job's constraints and that have a free slot and enough CPU and memory (a
/// node that declares 0 CPU or memory does not account for it); the least loaded node
/// (used slots over total, compared exactly) first, ties to the lower node id.
pub fn place(
    state: &ClusterState,
    alive: &BTreeSet<NodeId>,
    now_ms: u64,
    max: usize,
) -> Vec<Assignment> {
    // Load of every node in one pass over the jobs (ClusterState::load per node would
    // walk them once per node).
    let mut loads: BTreeMap<NodeId, Load> = BTreeMap::new();
    for j in state.jobs() {
        if let Some(a) = j.current_attempt() {
            let l = loads.entry(a.node).or_default();
            l.slots += 1;
            l.cpu_millis += j.spec.resources.cpu_millis as u64;
            l.memory_bytes += j.spec.resources.memory_bytes;
        }
    }
    let mut free: BTreeMap<NodeId, Free> = BTreeMap::new();
    for n in state.nodes() {
        if n.status != NodeStatus::Alive || !alive.contains(&n.info.id) {
            continue;
        }
        let cap = &n.info.capacity;
        let load = loads.get(&n.info.id).copied().unwrap_or_default();
        let slots = (cap.slots as u64).saturating_sub(load.slots as u64);
        free.insert(
            n.info.id,
            Free {
                slots,
                total_slots: cap.slots as u64,
                cpu: (cap.cpu_millis > 0)
                    .then(|| (cap.cpu_millis as u64).saturating_sub(load.cpu_millis)),
                memory: (cap.memory_bytes > 0)
                    .then(|| cap.memory_bytes.saturating_sub(load.memory_bytes)),
            },
        );
    }
    let mut out = Vec::new();
    if free.values().all(|f| f.slots == 0) {
        return out;
    }
    for job in state.runnable(now_ms) {
        if out.len() >= max {
            break;
        }
        let need_cpu = job.spec.resources.cpu_millis as u64;
        let need_mem = job.spec.resources.memory_bytes;
        let best = free
            .iter()
            .filter(|(_, f)| {
                f.slots > 0
                    && f.cpu.is_none_or(|c| c >= need_cpu)
                    && f.memory.is_none_or(|m| m >= need_mem)
            })
            .filter(|(id, _)| {
                let tags = &state.node(**id).expect("listed").info.tags;
                job.spec
                    .constraints
                    .iter()
                    .all(|(k, v)| tags.get(k) == Some(v))
            })
            // used/total as a fraction: a/b < c/d  <=>  a*d < c*b (exact, deterministic).
            .min_by(|(ia, a), (ib, b)| {
                let (ua, ub) = (a.total_slots - a.slots, b.total_slots - b.slots);
                (ua * b.total_slots)
                    .cmp(&(ub * a.total_slots))
                    .then(ia.cmp(ib))
            })
            .map(|(id, _)| *id);
        let Some(node) = best else { continue };
        let f = free.get_mut(&node).expect("chosen from the map");
        f.slots -= 1;
        if let Some(c) = f.cpu.as_mut() {
            *c -= need_cpu;
        }
        if let Some(m) = f.memory.as_mut() {
            *m -= need_mem;
        }
        out.push(Assignment {
            job: job.id,
            attempt: job.attempts.len() as u32 + 1,
            node,
        });
    }
    out
}

/// Running attempts past their job's timeout by more than `slack_ms` (the worker normally
/// reports a timeout itself; this catches the ones it does not).
pub fn overdue(state: &ClusterState, now_ms: u64, slack_ms: u64) -> Vec<(JobId, u32, NodeId)> {
    state
        .jobs_in(JobState::Running)
        .filter_map(|j| {
            let a = j.current_attempt()?;
            let started = a.started_at_ms?;
            (j.spec.timeout_ms > 0
                && now_ms
                    > started
                        .saturating_add(j.spec.timeout_ms)
                        .saturating_add(slack_ms))
            .then_some((j.id, a.number, a.node))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cathedral_consensus::{Capacity, Command, JobSpec, NodeInfo, Role};

    fn node(id: NodeId, slots: u32, tags: &[(&str, &str)]) -> Command {
        Command::NodeRegistered {
            at_ms: 0,
            node: NodeInfo {
                id,
                address: format!("n{id}"),
                role: Role::Worker,
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                capacity: Capacity {
                    slots,
                    cpu_millis: 2000,
                    memory_bytes: 1 << 30,
                },
            },
        }
    }

    fn submit(s: &mut ClusterState, i: &mut u64, spec: JobSpec) {
        *i += 1;
        s.apply(
            *i,
            &Command::SubmitJobs {
                at_ms: 0,
                jobs: vec![spec],
            },
        );
    }

    #[test]
    fn priority_constraints_capacity_and_least_loaded_first() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        for c in [
            node(1, 2, &[("zone", "a")]),
            node(2, 1, &[("zone", "b")]),
            node(3, 4, &[]),
        ] {
            i += 1;
            s.apply(i, &c);
        }
        let alive: BTreeSet<NodeId> = [1, 2, 3].into();
        let mut low = JobSpec::new("low", &["true"]);
        low.priority = -1;
        submit(&mut s, &mut i, low); // job 1
        let mut zoned = JobSpec::new("zoned", &["true"]);
        zoned.constraints.insert("zone".into(), "b".into());
        submit(&mut s, &mut i, zoned); // job 2
        let mut heavy = JobSpec::new("heavy", &["true"]);
        heavy.resources.cpu_millis = 3000;
        submit(&mut s, &mut i, heavy); // job 3: fits nowhere
        for _ in 0..6 {
            submit(&mut s, &mut i, JobSpec::new("plain", &["true"])); // jobs 4..=9
        }
        let a = place(&s, &alive, 0, 100);
        let by_job: BTreeMap<JobId, NodeId> = a.iter().map(|x| (x.job, x.node)).collect();
        assert_eq!(by_job[&2], 2, "the constraint picks zone b");
        assert!(!by_job.contains_key(&3), "no node has 3000 millicores");
        // 7 slots in all: 6 plain jobs and job 2 take them; the low-priority job waits.
        assert_eq!(a.len(), 7);
        assert!(!by_job.contains_key(&1), "lowest priority goes last: {a:?}");
        // Higher priority and older first: job 2 before the plain ones.
        assert_eq!(a[0].job, 2);
        let per_node = |n| a.iter().filter(|x| x.node == n).count();
        assert_eq!((per_node(1), per_node(2), per_node(3)), (2, 1, 4));
        assert!(a.iter().all(|x| x.attempt == 1));
        // Same input, same decision.
        assert_eq!(place(&s, &alive, 0, 100), a);
        // Dead nodes get nothing; the cap bounds the batch.
        assert!(place(&s, &BTreeSet::new(), 0, 100).is_empty());
        assert_eq!(place(&s, &alive, 0, 3).len(), 3);
    }

    #[test]
    fn overdue_attempts_are_found() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        i += 1;
        s.apply(i, &node(1, 2, &[]));
        let mut j = JobSpec::new("slow", &["sleep", "60"]);
        j.timeout_ms = 1000;
        submit(&mut s, &mut i, j);
        i += 1;
        s.apply(
            i,
            &Command::AssignTasks {
                at_ms: 10,
                assignments: vec![Assignment {
                    job: 1,
                    attempt: 1,
                    node: 1,
                }],
            },
        );
        i += 1;
        s.apply(
            i,
            &Command::TaskStarted {
                at_ms: 100,
                job: 1,
                attempt: 1,
                node: 1,
            },
        );
        assert!(overdue(&s, 1500, 1000).is_empty());
        assert_eq!(overdue(&s, 2200, 1000), vec![(1, 1, 1)]);
    }
}
