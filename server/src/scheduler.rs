//! Placement and the leader's duties. [`place`] and [`overdue`] are functions of the applied
//! state, the candidate nodes (from gossip), the time and the strategy's memory; the leader
//! loop in `leader.rs` proposes what they decide.

use std::collections::BTreeMap;

use cathedral_consensus::namespace::{Limits, Usage};
use cathedral_consensus::words;
use cathedral_consensus::{Assignment, ClusterState, JobId, JobState, Load, NodeId, NodeStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the leader chooses among the nodes that fit a job (`--placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// The node with the smallest share of its slots in use (ties to the lower id).
    LeastLoaded,
    /// The next fitting node after the one chosen last.
    RoundRobin,
    /// A fitting node drawn from a generator seeded by --placement-seed.
    Random,
}

impl Placement {
    /// As `--placement` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Placement::LeastLoaded => "least-loaded",
            Placement::RoundRobin => "round-robin",
            Placement::Random => "random",
        }
    }
}

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

/// The nodes the leader may place work on — alive and `available=true` in gossip — each
/// with the tags it advertises.
pub type Candidates = BTreeMap<NodeId, BTreeMap<String, String>>;

/// How to choose among the nodes that fit a job, with what the choice remembers.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// Least used slots over total (compared exactly), ties to the lower node id.
    LeastLoaded,
    /// The first fitting node after the one chosen last, wrapping around.
    RoundRobin { last: Option<NodeId> },
    /// Uniformly among the fitting nodes, from a seeded generator.
    Random(Box<StdRng>),
}

impl Strategy {
    pub fn new(placement: Placement, seed: u64) -> Strategy {
        match placement {
            Placement::LeastLoaded => Strategy::LeastLoaded,
            Placement::RoundRobin => Strategy::RoundRobin { last: None },
            Placement::Random => Strategy::Random(Box::new(StdRng::seed_from_u64(seed))),
        }
    }

    fn choose(&mut self, fitting: &[(NodeId, Free)]) -> Option<NodeId> {
        match self {
            Strategy::LeastLoaded => fitting
                .iter()
                // used/total as a fraction: a/b < c/d  <=>  a*d < c*b (exact, deterministic).
                .min_by(|(ia, a), (ib, b)| {
                    let (ua, ub) = (a.total_slots - a.slots, b.total_slots - b.slots);
                    (ua * b.total_slots)
                        .cmp(&(ub * a.total_slots))
                        .then(ia.cmp(ib))
                })
                .map(|(id, _)| *id),
            Strategy::RoundRobin { last } => {
                let next = fitting
                    .iter()
                    .map(|(id, _)| *id)
                    .find(|id| last.is_none_or(|l| *id > l))
                    .or_else(|| fitting.first().map(|(id, _)| *id));
                if next.is_some() {
                    *last = next;
                }
                next
            }
            Strategy::Random(rng) => {
                (!fitting.is_empty()).then(|| fitting[rng.gen_range(0..fitting.len())].0)
            }
        }
    }
}

/// Decides where runnable jobs go: only those whose dependencies succeeded and whose
/// backoff has passed; only candidate nodes (alive in the job state and available in
/// gossip) whose advertised tags satisfy the job's constraints and that have a free slot and
/// enough CPU and memory (a node that declares 0 CPU or memory does not account for it);
/// among those, the one `strategy` picks.
///
/// The free room is shared across namespaces ([`fair_order`]): each next job comes from
/// the namespace with pending work whose attempts in flight, over its weight, are fewest —
/// within a namespace by priority, then submission — and a namespace at one of its
/// running quotas (attempts, CPU, memory) gets no more.
pub fn place(
    state: &ClusterState,
    candidates: &Candidates,
    now_ms: u64,
    max: usize,
    strategy: &mut Strategy,
) -> Vec<Assignment> {
    place_counting(state, candidates, now_ms, max, strategy, false).0
}

/// How often a pass that finds every slot taken counts the runnable jobs that wait (for
/// `cathedral_scheduler_unplaceable_jobs`): counting examines up to `max` of them, and a
/// pass runs at every applied batch — with a backlog and no free slot, ~1,000 job lookups
/// per write (a quarter of the server's CPU at one client).
pub const FULL_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One namespace's queue during a placement pass.
struct Queue<'a, I: Iterator<Item = &'a cathedral_consensus::Job>> {
    limits: Limits,
    /// What it holds in flight, with what this pass assigned it.
    used: Usage,
    jobs: I,
}

impl<'a, I: Iterator<Item = &'a cathedral_consensus::Job>> Queue<'a, I> {
    /// Whether `job` would take the namespace past a quota on what runs: the quota's name.
    fn over_quota(&self, job: &cathedral_consensus::Job) -> Option<&'static str> {
        let l = &self.limits;
        if l.running_max.is_some_and(|m| self.used.running >= m) {
            return Some("running_max");
        }
        if l.cpu_millis_max
            .is_some_and(|m| self.used.cpu_millis + u64::from(job.spec.resources.cpu_millis) > m)
        {
            return Some("cpu_millis_max");
        }
        if l.memory_bytes_max
            .is_some_and(|m| self.used.memory_bytes + job.spec.resources.memory_bytes > m)
        {
            return Some("memory_bytes_max");
        }
        None
    }
}

/// Which of `queues` goes next: the smallest share of attempts in flight over weight
/// (compared exactly: a/wa < b/wb ⟺ a·wb < b·wa), ties to the first (by name). This is
/// max-min fairness over one resource, the slot: jobs declare CPU and memory only
/// optionally (0 for most), so a dominant-resource share would mostly be a slot count
/// anyway, and slots are what every job takes.
fn fair_order<'a, I: Iterator<Item = &'a cathedral_consensus::Job>>(
    queues: &[Queue<'a, I>],
) -> Option<usize> {
    (0..queues.len()).min_by(|&a, &b| {
        let (qa, qb) = (&queues[a], &queues[b]);
        (qa.used.running * u64::from(qb.limits.weight))
            .cmp(&(qb.used.running * u64::from(qa.limits.weight)))
            .then(a.cmp(&b))
    })
}

/// [`place`], also counting the runnable jobs it examined (at most `max`) and could not
/// place, by the first reason that rules every node out, in the order of
/// `metrics::UNPLACEABLE_REASONS`: no free slot, constraints, CPU, memory — or their
/// namespace's quota. When no slot is free nothing is examined, and the jobs that wait
/// are counted only if `count_when_full` (else the counts are `None`: not known).
pub fn place_counting(
    state: &ClusterState,
    candidates: &Candidates,
    now_ms: u64,
    max: usize,
    strategy: &mut Strategy,
    count_when_full: bool,
) -> (Vec<Assignment>, Option<[u64; 5]>) {
    let mut stuck = [0u64; 5];
    let mut free = free_capacity(state, candidates);
    let mut out = Vec::new();
    if free.values().all(|f| f.slots == 0) {
        if !count_when_full {
            return (out, None);
        }
        stuck[0] = state.runnable(now_ms).take(max).count() as u64;
        return (out, Some(stuck));
    }
    let namespaces = state.namespaces();
    let mut queues: Vec<_> = state
        .namespaces_pending()
        .map(|ns| Queue {
            limits: namespaces.limits(ns),
            used: state.namespace_usage(ns),
            jobs: state.runnable_in(ns, now_ms),
        })
        .collect();
    let mut fitting: Vec<(NodeId, Free)> = Vec::with_capacity(free.len());
    while out.len() < max {
        let Some(qi) = fair_order(&queues) else { break };
        let q = &mut queues[qi];
        let Some(job) = q.jobs.next() else {
            queues.remove(qi);
            continue;
        };
        if let Some(quota) = q.over_quota(job) {
            stuck[4] += 1;
            if quota == "running_max" {
                // Nothing more of it runs this pass.
                stuck[4] += q.jobs.by_ref().take(max).count() as u64;
                queues.remove(qi);
            }
            continue;
        }
        let need_cpu = job.spec.resources.cpu_millis as u64;
        let need_mem = job.spec.resources.memory_bytes;
        fitting.clear();
        fitting.extend(
            free.iter()
                .filter(|(_, f)| {
                    f.slots > 0
                        && f.cpu.is_none_or(|c| c >= need_cpu)
                        && f.memory.is_none_or(|m| m >= need_mem)
                })
                .filter(|(id, _)| constraints_hold(&candidates[*id], job))
                .map(|(id, f)| (*id, *f)),
        );
        let Some(node) = strategy.choose(&fitting) else {
            stuck[unplaceable_reason(&free, candidates, job)] += 1;
            continue;
        };
        let f = free.get_mut(&node).expect("chosen from the map");
        f.slots -= 1;
        if let Some(c) = f.cpu.as_mut() {
            *c -= need_cpu;
        }
        if let Some(m) = f.memory.as_mut() {
            *m -= need_mem;
        }
        q.used.running += 1;
        q.used.cpu_millis += need_cpu;
        q.used.memory_bytes += need_mem;
        out.push(Assignment {
            job: job.id,
            attempt: job.attempts.len() as u32 + 1,
            node,
        });
        if free.values().all(|f| f.slots == 0) {
            // Every slot taken: the rest wait for a free one (counted, not examined one by
            // one against every node).
            let left = max.saturating_sub(out.len());
            stuck[0] += queues
                .iter_mut()
                .flat_map(|q| q.jobs.by_ref())
                .take(left)
                .count() as u64;
            break;
        }
    }
    (out, Some(stuck))
}

/// What is free on every candidate node (alive in the state, a candidate in gossip): its
/// capacity less what the attempts in flight on it hold, counted in one pass.
fn free_capacity(state: &ClusterState, candidates: &Candidates) -> BTreeMap<NodeId, Free> {
    let mut loads: BTreeMap<NodeId, Load> = BTreeMap::new();
    for j in state.active_jobs() {
        if let Some(a) = j.current_attempt() {
            let l = loads.entry(a.node).or_default();
            l.slots += 1;
            l.cpu_millis += j.spec.resources.cpu_millis as u64;
            l.memory_bytes += j.spec.resources.memory_bytes;
        }
    }
    let mut free: BTreeMap<NodeId, Free> = BTreeMap::new();
    for n in state.nodes() {
        if n.status != NodeStatus::Alive || !candidates.contains_key(&n.info.id) {
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
    free
}

/// Why a job is where it is: what `cathedral explain` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// One line.
    pub summary: String,
    pub details: Vec<String>,
    /// For a runnable job: every registered node, whether it could take the job now, and
    /// why not.
    pub nodes: Vec<NodeFit>,
    /// For a job backing off: when it becomes runnable.
    pub runnable_at_ms: Option<u64>,
    /// For a runnable job: the node the next placement pass picks (with a fresh strategy).
    pub would_place_on: Option<NodeId>,
}

/// One node's fit for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFit {
    pub node: NodeId,
    pub fits: bool,
    pub why: String,
}

/// Why job `id` is where it is, from the applied state, the candidate nodes and the time:
/// its dependencies, its backoff, and for a runnable job each node's verdict by the tests
/// placement makes ([`constraints_hold`], free slots, CPU and memory) and where the next
/// pass would place it ([`place`] run on the same state). `None`: no such job.
// Long on purpose: one verdict per test placement makes, in the order `place` makes
// them, so the explanation can be read beside it step by step.
pub fn explain(
    state: &ClusterState,
    candidates: &Candidates,
    now_ms: u64,
    id: JobId,
    placement: Placement,
) -> Option<Explanation> {
    let job = state.job(id)?;
    let mut e = Explanation {
        summary: String::new(),
        details: Vec::new(),
        nodes: Vec::new(),
        runnable_at_ms: None,
        would_place_on: None,
    };
    let attempts = job.attempts.len();
    if let Some(last) = words::attempts(&job).pop() {
        e.details.push(format!(
            "{last} (the job allows {} attempt(s) of its own)",
            job.spec.retry.max_attempts
        ));
    }
    match job.state {
        s if s.is_final() => {
            e.summary = format!(
                "{}{}",
                s.name(),
                job.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            return Some(e);
        }
        JobState::Assigned | JobState::Running => {
            let a = job.current_attempt().expect("an active job has an attempt");
            e.summary = if job.state == JobState::Running {
                format!("running on node {} (attempt {})", a.node, a.number)
            } else {
                format!(
                    "assigned to node {} (attempt {}); waiting for the node to start it",
                    a.node, a.number
                )
            };
            return Some(e);
        }
        _ => {}
    }
    let waiting: Vec<String> = job
        .spec
        .depends_on
        .iter()
        .filter_map(|d| {
            let dj = state.job(*d)?;
            (dj.state != JobState::Succeeded).then(|| format!("{d} ({})", dj.state.name()))
        })
        .collect();
    if !waiting.is_empty() {
        e.summary = format!("pending: waiting for dependencies {}", waiting.join(", "));
        return Some(e);
    }
    if job.not_before_ms > now_ms {
        e.runnable_at_ms = Some(job.not_before_ms);
        e.summary = format!(
            "pending: backing off after {attempts} failed attempt(s); runnable in {}",
            words::duration_ms(job.not_before_ms - now_ms)
        );
        return Some(e);
    }
    let free = free_capacity(state, candidates);
    let need_cpu = job.spec.resources.cpu_millis as u64;
    let need_mem = job.spec.resources.memory_bytes;
    for n in state.nodes() {
        let id = n.info.id;
        let why = if n.status != NodeStatus::Alive {
            Some(format!("node is {}", words::node_status(n.status)))
        } else if !candidates.contains_key(&id) {
            Some("not a candidate: not alive in gossip, or available=false".into())
        } else {
            let tags = &candidates[&id];
            let f = free[&id];
            let sandbox = job.spec.sandbox.required_tag().and_then(|(k, v)| {
                (tags.get(k).map(String::as_str) != Some(v)).then(|| {
                    if k == cathedral_consensus::DOCKER_DRIVER_TAG {
                        format!(
                            "its sandbox needs {k}={v}, which the node does not advertise: no \
                             container engine answers at its --docker-host (see its log)"
                        )
                    } else {
                        format!("its sandbox needs {k}={v}, which the node does not advertise")
                    }
                })
            });
            let constraint = job
                .spec
                .constraints
                .iter()
                .find_map(|(k, v)| match tags.get(k) {
                    Some(x) if x == v => None,
                    Some(x) => Some(format!("constraint {k}={v}: the node has {k}={x}")),
                    None => Some(format!("constraint {k}={v}: the node has no {k} tag")),
                });
            sandbox.or(constraint).or_else(|| {
                if f.slots == 0 {
                    Some(format!(
                        "no free slot ({} of {} in use)",
                        f.total_slots, f.total_slots
                    ))
                } else if f.cpu.is_some_and(|c| c < need_cpu) {
                    Some(format!(
                        "needs {need_cpu} millicores, {} free",
                        f.cpu.unwrap_or(0)
                    ))
                } else if f.memory.is_some_and(|m| m < need_mem) {
                    Some(format!(
                        "needs {} of memory, {} free",
                        words::bytes(need_mem),
                        words::bytes(f.memory.unwrap_or(0))
                    ))
                } else {
                    None
                }
            })
        };
        e.nodes.push(NodeFit {
            node: id,
            fits: why.is_none(),
            why: why.unwrap_or_else(|| {
                let f = free[&id];
                format!(
                    "fits ({} of {} slots in use)",
                    f.total_slots - f.slots,
                    f.total_slots
                )
            }),
        });
    }
    // A namespace at a quota on what runs: that is the wait, whatever the nodes offer.
    let ns = state.namespace_of(id);
    let used = state.namespace_usage(ns);
    let limits = state.namespaces().limits(ns);
    let queue = Queue {
        limits,
        used,
        jobs: std::iter::empty(),
    };
    if let Some(quota) = queue.over_quota(&job) {
        let (now, max) = match quota {
            "running_max" => (
                format!("{} attempts", used.running),
                limits.running_max.unwrap_or(0).to_string(),
            ),
            "cpu_millis_max" => (
                format!("{} millicores", used.cpu_millis),
                limits.cpu_millis_max.unwrap_or(0).to_string(),
            ),
            _ => (
                words::bytes(used.memory_bytes),
                words::bytes(limits.memory_bytes_max.unwrap_or(0)),
            ),
        };
        e.summary = if used.running == 0 {
            format!(
                "pending: its namespace {ns}'s {quota} quota ({max}) leaves no room for this job, with nothing of the namespace in flight: it runs only once the quota is raised"
            )
        } else {
            format!(
                "pending: its namespace {ns} is at its {quota} quota ({now} in flight, at most {max}); it waits for one of them to end"
            )
        };
        return Some(e);
    }
    let fitting = e.nodes.iter().filter(|n| n.fits).count();
    if fitting == 0 {
        e.summary = "pending: no node can run it now".into();
        if e.nodes.is_empty() {
            e.details.push("no node has registered yet".into());
        }
        return Some(e);
    }
    let mut strategy = Strategy::new(placement, 0);
    let placed = place(state, candidates, now_ms, usize::MAX, &mut strategy);
    let ahead = state
        .runnable_in(ns, now_ms)
        .take_while(|j| j.id != id)
        .count();
    match placed.iter().find(|a| a.job == id) {
        Some(a) => {
            e.would_place_on = Some(a.node);
            e.summary = format!(
                "pending: runnable; the next placement pass puts it on node {} ({} of {} nodes fit; placement {})",
                a.node,
                fitting,
                e.nodes.len(),
                placement.name()
            );
        }
        None => {
            e.summary = if ahead > 0 {
                format!(
                    "pending: runnable, but the {ahead} runnable job(s) of namespace {ns} ahead of it (higher priority or older) take the free room first"
                )
            } else {
                format!(
                    "pending: runnable; fair share gives the free room to other namespaces first (namespace {ns} has {} attempt(s) in flight at weight {})",
                    used.running, limits.weight
                )
            };
        }
    }
    Some(e)
}

/// Whether a node advertising `tags` satisfies every constraint of `job`, and carries the
/// tag its sandbox needs (`driver.docker=true` for a container).
fn constraints_hold(tags: &BTreeMap<String, String>, job: &cathedral_consensus::Job) -> bool {
    job.spec
        .sandbox
        .required_tag()
        .is_none_or(|(k, v)| tags.get(k).map(String::as_str) == Some(v))
        && job
            .spec
            .constraints
            .iter()
            .all(|(k, v)| tags.get(k) == Some(v))
}

/// Why no node fits `job`: the first test that rules every node out (0 slots, 1
/// constraints, 2 CPU, 3 memory).
fn unplaceable_reason(
    free: &BTreeMap<NodeId, Free>,
    candidates: &Candidates,
    job: &cathedral_consensus::Job,
) -> usize {
    let with_slot: Vec<(&NodeId, &Free)> = free.iter().filter(|(_, f)| f.slots > 0).collect();
    if with_slot.is_empty() {
        return 0;
    }
    let allowed: Vec<&Free> = with_slot
        .into_iter()
        .filter(|(id, _)| constraints_hold(&candidates[*id], job))
        .map(|(_, f)| f)
        .collect();
    if allowed.is_empty() {
        return 1;
    }
    let need_cpu = job.spec.resources.cpu_millis as u64;
    if !allowed.iter().any(|f| f.cpu.is_none_or(|c| c >= need_cpu)) {
        return 2;
    }
    3
}

/// Running attempts past their job's timeout by more than `slack_ms` (the worker normally
/// reports a timeout itself; this catches the ones it does not).
pub fn overdue(state: &ClusterState, now_ms: u64, slack_ms: u64) -> Vec<(JobId, u32, NodeId)> {
    state
        .active_jobs()
        .filter(|j| j.state == JobState::Running)
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
    use cathedral_consensus::namespace::{NamespaceOp, Setting};
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
        let alive = candidates(&s, &[1, 2, 3]);
        let ll = &mut Strategy::LeastLoaded;
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
        let a = place(&s, &alive, 0, 100, ll);
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
        assert_eq!(place(&s, &alive, 0, 100, ll), a);
        // Dead nodes get nothing; the cap bounds the batch.
        assert!(place(&s, &Candidates::new(), 0, 100, ll).is_empty());
        assert_eq!(place(&s, &alive, 0, 3, ll).len(), 3);
        // The advertised tags decide, not the registered ones: zone b moved to node 3.
        let mut moved = alive.clone();
        moved.get_mut(&2).unwrap().insert("zone".into(), "c".into());
        moved.get_mut(&3).unwrap().insert("zone".into(), "b".into());
        let a = place(&s, &moved, 0, 100, ll);
        assert_eq!(a.iter().find(|x| x.job == 2).unwrap().node, 3);
    }

    #[test]
    fn explain_names_dependencies_and_each_nodes_verdict() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        for c in [node(1, 1, &[("zone", "a")]), node(2, 1, &[("zone", "b")])] {
            i += 1;
            s.apply(i, &c);
        }
        let alive = candidates(&s, &[1, 2]);
        let ll = Placement::LeastLoaded;
        let mut zoned = JobSpec::new("zoned", &["true"]);
        zoned.constraints.insert("zone".into(), "c".into());
        submit(&mut s, &mut i, zoned); // job 1
        let e = explain(&s, &alive, 0, 1, ll).unwrap();
        assert_eq!(e.summary, "pending: no node can run it now");
        let why: Vec<&str> = e.nodes.iter().map(|n| n.why.as_str()).collect();
        assert_eq!(
            why,
            [
                "constraint zone=c: the node has zone=a",
                "constraint zone=c: the node has zone=b"
            ]
        );
        // Node 2 is not a candidate (gone from gossip, or available=false).
        let only_1: Candidates = alive
            .iter()
            .filter(|(id, _)| **id == 1)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        submit(&mut s, &mut i, JobSpec::new("plain", &["true"])); // job 2
        let e = explain(&s, &only_1, 0, 2, ll).unwrap();
        assert_eq!(e.would_place_on, Some(1), "{e:?}");
        assert!(e.nodes[1].why.starts_with("not a candidate"), "{e:?}");
        let mut heavy = JobSpec::new("heavy", &["true"]);
        heavy.resources.cpu_millis = 3000;
        submit(&mut s, &mut i, heavy); // job 3
        let e = explain(&s, &alive, 0, 3, ll).unwrap();
        assert_eq!(e.nodes[0].why, "needs 3000 millicores, 2000 free");
        let mut after = JobSpec::new("after", &["true"]);
        after.depends_on = vec![2];
        submit(&mut s, &mut i, after); // job 4
        let e = explain(&s, &alive, 0, 4, ll).unwrap();
        assert_eq!(e.summary, "pending: waiting for dependencies 2 (pending)");
        // Job 2 takes node 1's only slot: node 1 is full for the next plain job.
        i += 1;
        s.apply(
            i,
            &Command::AssignTasks {
                at_ms: 0,
                assignments: vec![Assignment {
                    job: 2,
                    attempt: 1,
                    node: 1,
                }],
            },
        );
        submit(&mut s, &mut i, JobSpec::new("next", &["true"])); // job 5
        let e = explain(&s, &alive, 0, 5, ll).unwrap();
        assert_eq!(e.nodes[0].why, "no free slot (1 of 1 in use)");
        assert_eq!(e.would_place_on, Some(2));
        let e = explain(&s, &alive, 0, 2, ll).unwrap();
        assert!(e.summary.starts_with("assigned to node 1"), "{e:?}");
        assert!(explain(&s, &alive, 0, 99, ll).is_none());
    }

    #[test]
    fn containers_go_only_where_the_engine_answers() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        for c in [node(1, 4, &[]), node(2, 4, &[("driver.docker", "true")])] {
            i += 1;
            s.apply(i, &c);
        }
        let mut alive = candidates(&s, &[1, 2]);
        let mut boxed = JobSpec::new("boxed", &["true"]);
        boxed.sandbox =
            cathedral_consensus::SandboxKind::Docker(cathedral_consensus::ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            });
        for _ in 0..3 {
            submit(&mut s, &mut i, boxed.clone());
        }
        submit(&mut s, &mut i, JobSpec::new("plain", &["true"]));
        let ll = &mut Strategy::LeastLoaded;
        let a = place(&s, &alive, 0, 100, ll);
        assert_eq!(a.len(), 4);
        assert!(
            a.iter().filter(|x| x.job <= 3).all(|x| x.node == 2),
            "{a:?}"
        );
        // The engine stopped answering: the tag is gone, the containers wait.
        alive.get_mut(&2).unwrap().remove("driver.docker");
        let (a, stuck) = place_counting(&s, &alive, 0, 100, ll, true);
        let stuck = stuck.unwrap();
        assert_eq!(a.iter().map(|x| x.job).collect::<Vec<_>>(), vec![4]);
        assert_eq!(
            stuck[1], 3,
            "counted as ruled out by constraints: {stuck:?}"
        );
    }

    /// Candidates with the tags each node registered.
    fn candidates(s: &ClusterState, ids: &[NodeId]) -> Candidates {
        ids.iter()
            .map(|id| (*id, s.node(*id).unwrap().info.tags.clone()))
            .collect()
    }

    #[test]
    fn round_robin_and_random_strategies() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        for id in 1..=3 {
            i += 1;
            s.apply(i, &node(id, 10, &[]));
        }
        for _ in 0..7 {
            submit(&mut s, &mut i, JobSpec::new("plain", &["true"]));
        }
        let alive = candidates(&s, &[1, 2, 3]);
        let mut rr = Strategy::new(Placement::RoundRobin, 0);
        let nodes: Vec<NodeId> = place(&s, &alive, 0, 100, &mut rr)
            .iter()
            .map(|a| a.node)
            .collect();
        assert_eq!(nodes, vec![1, 2, 3, 1, 2, 3, 1]);
        // The cursor carries over to the next round.
        let next: Vec<NodeId> = place(&s, &alive, 0, 2, &mut rr)
            .iter()
            .map(|a| a.node)
            .collect();
        assert_eq!(next, vec![2, 3]);
        // Random: the same seed, the same choices; every node used.
        let draw = |seed| -> Vec<NodeId> {
            let mut r = Strategy::new(Placement::Random, seed);
            place(&s, &alive, 0, 100, &mut r)
                .iter()
                .map(|a| a.node)
                .collect()
        };
        assert_eq!(draw(42), draw(42));
        let mut used = draw(42);
        used.sort();
        used.dedup();
        assert!(used.len() >= 2, "{used:?}");
        // Unavailable nodes (absent from the candidates) get nothing, whatever the strategy.
        let only3 = candidates(&s, &[3]);
        for p in [
            Placement::LeastLoaded,
            Placement::RoundRobin,
            Placement::Random,
        ] {
            let a = place(&s, &only3, 0, 100, &mut Strategy::new(p, 1));
            assert!(
                a.iter().all(|x| x.node == 3) && a.len() == 7,
                "{p:?}: {a:?}"
            );
        }
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

    fn in_namespace(s: &mut ClusterState, i: &mut u64, ns: &str, n: usize) {
        *i += 1;
        let r = s.apply(
            *i,
            &Command::InNamespace {
                namespace: ns.into(),
                command: Box::new(Command::SubmitJobs {
                    at_ms: 0,
                    jobs: (0..n).map(|_| JobSpec::new("j", &["true"])).collect(),
                }),
            },
        );
        assert!(
            matches!(r, cathedral_consensus::Response::Submitted { .. }),
            "{r:?}"
        );
    }

    fn make(s: &mut ClusterState, i: &mut u64, ns: &str, settings: Vec<Setting>) {
        *i += 1;
        s.apply(
            *i,
            &Command::Namespace {
                at_ms: 0,
                op: NamespaceOp::Create {
                    name: ns.into(),
                    settings,
                },
            },
        );
    }

    /// A burst in one namespace does not hold back another's first job: the next pass
    /// places it, though it was submitted after thousands.
    #[test]
    fn a_burst_in_one_namespace_does_not_delay_another_namespaces_first_job() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        i += 1;
        s.apply(i, &node(1, 4, &[]));
        let alive = candidates(&s, &[1]);
        make(&mut s, &mut i, "batch", vec![]);
        make(&mut s, &mut i, "web", vec![]);
        in_namespace(&mut s, &mut i, "batch", 5_000);
        in_namespace(&mut s, &mut i, "web", 1);
        let web_job = s.next_job_id() - 1;
        assert_eq!(s.namespace_of(web_job), "web");
        let a = place(&s, &alive, 0, 100, &mut Strategy::LeastLoaded);
        assert_eq!(a.len(), 4);
        assert!(a.iter().any(|x| x.job == web_job), "{a:?}");
        // Without namespaces (all in `default`), the same job waits behind the burst.
        let (mut d, mut k) = (ClusterState::new(), 0);
        k += 1;
        d.apply(k, &node(1, 4, &[]));
        for _ in 0..5_001 {
            submit(&mut d, &mut k, JobSpec::new("j", &["true"]));
        }
        let b = place(&d, &alive, 0, 100, &mut Strategy::LeastLoaded);
        assert!(b.iter().all(|x| x.job != d.next_job_id() - 1));
        // The passes counted the rest as waiting for a slot, not examined one by one.
        let (_, stuck) = place_counting(&s, &alive, 0, 100, &mut Strategy::LeastLoaded, true);
        let stuck = stuck.unwrap();
        assert_eq!(stuck[0], 96, "{stuck:?}");
        // With no slot free at all (a node of 0 slots), a pass examines nothing unless
        // asked to count: then the jobs that wait are counted, up to `max`.
        let (mut z, mut k) = (ClusterState::new(), 0);
        k += 1;
        z.apply(k, &node(1, 0, &[]));
        for _ in 0..500 {
            submit(&mut z, &mut k, JobSpec::new("j", &["true"]));
        }
        let alive = candidates(&z, &[1]);
        let (a, stuck) = place_counting(&z, &alive, 0, 100, &mut Strategy::LeastLoaded, false);
        assert!(a.is_empty());
        assert_eq!(stuck, None);
        let (a, stuck) = place_counting(&z, &alive, 0, 100, &mut Strategy::LeastLoaded, true);
        assert!(a.is_empty());
        assert_eq!(stuck, Some([100, 0, 0, 0, 0]));
    }

    #[test]
    fn weights_share_the_slots_and_a_running_quota_caps_a_namespace() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        i += 1;
        s.apply(i, &node(1, 13, &[]));
        let alive = candidates(&s, &[1]);
        make(&mut s, &mut i, "a", vec![Setting::Weight(3)]);
        make(&mut s, &mut i, "b", vec![]);
        make(&mut s, &mut i, "c", vec![Setting::RunningMax(2)]);
        for ns in ["a", "b", "c"] {
            in_namespace(&mut s, &mut i, ns, 20);
        }
        let (a, stuck) = place_counting(&s, &alive, 0, 100, &mut Strategy::LeastLoaded, true);
        let stuck = stuck.unwrap();
        let per = |ns: &str| a.iter().filter(|x| s.namespace_of(x.job) == ns).count();
        // c stops at its quota; a gets three times b's share (a: 8/3 ahead of b: 3/1 at
        // the last slot).
        assert_eq!((per("a"), per("b"), per("c")), (8, 3, 2), "{a:?}");
        assert_eq!(stuck[4], 18, "c's other jobs wait for its quota: {stuck:?}");
        assert_eq!(
            stuck[0],
            12 + 17,
            "a's and b's others wait for a slot: {stuck:?}"
        );
        // Its explanation says so.
        let waiting = s
            .runnable_in("c", 0)
            .nth(2)
            .map(|j| j.id)
            .expect("a third job of c");
        let mut t = s.clone();
        i += 1;
        t.apply(
            i,
            &Command::AssignTasks {
                at_ms: 0,
                assignments: a.clone(),
            },
        );
        let e = explain(&t, &alive, 0, waiting, Placement::LeastLoaded).unwrap();
        assert!(
            e.summary
                .contains("namespace c is at its running_max quota"),
            "{}",
            e.summary
        );
    }
}
