//! `ClusterState`: the deterministic model of jobs, workflows and nodes that every node
//! applies, entry by entry, in log order.
//!
//! `apply(index, command)` is a pure function of the state and the entry: no clock (time is
//! the proposer's `at_ms`), no randomness, no I/O, and only ordered maps, so every node and
//! every offline replay reaches the same state and the same [`ClusterState::hash`].
//!
//! ```text
//!            assign           started          exit 0
//!  Pending ─────────▶ Assigned ──────▶ Running ───────▶ Succeeded
//!     ▲                  │                │  failure, timeout or node lost:
//!     └──── retry ◀──────┴────────────────┘  retries left → Pending (after backoff),
//!                                            none left → Failed / TimedOut
//!  any non-final state ── cancel ──▶ Cancelled; a dependency that ends unsuccessfully
//!  cancels its dependents, saying why.
//! ```
//!
//! What the state holds, and what bounds it (a cluster runs for a year):
//!
//! | part | bound |
//! |---|---|
//! | jobs, their end times, submitters, step outputs, rerun bases | retention: `Collect` entries the leader writes remove finished jobs `--job-retention` after they ended (a workflow as a unit, never a job something unfinished depends on), with everything kept for them; the node archives them (`archive`) |
//! | workflows | go with their last job |
//! | jobs' own retentions (`JobOption::RetainMs`) | go with their job |
//! | idempotency keys | go with their job: a key reused after its job was collected makes a new job |
//! | checkpoint hashes | the last `CHECKPOINTS_KEPT` (64) |
//! | answered request ids | `REQUESTS_REMEMBERED_MAX` (100,000) for `REQUEST_RETENTION_MS` (10 min); under `Feature::NodeRequestIdsKeptAMinute` none younger than `REQUEST_KEPT_MIN_MS` (1 min) is forgotten below `REQUESTS_HELD_MAX` (1,000,000), and a node's ids leave after it |
//! | tokens | `TOKENS_MAX` (10,000) |
//! | crons (and their decision history) | `CRONS_MAX` (1,000), `CRON_HISTORY_MAX` each |
//! | nodes | one per node that ever registered: grows with node churn only (not yet collected) |
//! | counters, rules, next ids | fixed size |
//!
//! Derived indexes (the queue, attempts per node, job digests) follow the jobs; the event
//! feed keeps what the log holds past its snapshot.
//!
//! What it costs: a job that ended is held as its encoding (`crate::jobs`: ~370 bytes per
//! held job with its digest, end time and indexes, against ~1.4 KB as a value); the map is
//! persistent, so a snapshot's copy is O(1) under the lock; and under
//! `Feature::JobDigestsCoverTheirRecords` (which a leader turns on) a checkpoint's hash
//! costs the jobs changed since the last one plus the parts that are not per job
//! (workflows, nodes, up to `REQUESTS_REMEMBERED_MAX` answered requests, tokens, crons) —
//! without it, as a log written before it replays, the per-job maps are encoded whole at
//! every checkpoint (~33 ms with 1 M jobs held).
//!
//! Where things are: this file holds the state's fields and apply (one entry: requests,
//! authors, job options, then the command); `types` the values it is made of; `check`
//! what a proposer asks first (accepted? a repeat?); `lifecycle` a job's placement, start
//! and end and the nodes' comings and goings; `workflows` workflows and step outputs;
//! `crons` periodic jobs; `retention` collection; `hash` the digests and the state hash;
//! `index` the derived queues; `snapshot` the bytes of a snapshot, every version;
//! `queries` the reads the server and the tools make; `tests` the unit tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::acl::Acl;
use crate::command::{
    limits, Assignment, Command, Exit, Feature, JobId, JobOption, JobSpec, NodeId, NodeInfo,
    Outcome, Rules, WorkflowId, WorkflowJob,
};
use crate::error::{ConsensusError, Invalid, Result};
use crate::events::{self, Before, Event, EventKind};
use crate::requests::{Lookup, RequestId, Requests};

use std::borrow::Cow;

use crate::jobs::Jobs;

mod check;
mod crons;
mod hash;
pub(crate) use hash::wide_add;
mod index;
mod lifecycle;
mod queries;
mod retention;
mod snapshot;
#[cfg(test)]
mod tests;
mod types;
mod workflows;

use hash::JobDigests;
use index::JobIndex;
pub use types::*;

/// Checkpoint hashes kept for comparison with the leader's.
pub const CHECKPOINTS_KEPT: usize = 64;
/// The replicated state. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Persistent (structurally shared): a copy is O(1), so the state machine takes a
    /// snapshot's copy under its lock without stopping apply for the size of the state;
    /// an ended job is held as its encoding (see `jobs`). Encoded by the snapshot code
    /// ahead of the other fields (where a derived encoding of the struct had it).
    #[serde(skip)]
    jobs: Jobs,
    workflows: imbl::OrdMap<WorkflowId, Workflow>,
    nodes: BTreeMap<NodeId, Node>,
    idempotency: imbl::OrdMap<String, JobId>,
    next_job: JobId,
    next_workflow: WorkflowId,
    checkpoints: BTreeMap<u64, [u8; 32]>,
    counters: Counters,
    last_applied: Option<u64>,
    /// Derived: per-job digests behind [`hash`](Self::hash). Not encoded, not compared.
    #[serde(skip)]
    digests: JobDigests,
    /// Derived: the pending queue and the attempts in flight per node, so the scheduler
    /// and the worker read what concerns them instead of walking every job. Not encoded,
    /// not compared; rebuilt after a snapshot load.
    #[serde(skip)]
    index: JobIndex,
    /// Answered request ids (at-most-once writes). Replicated, hashed and snapshotted, but
    /// encoded after the rest (snapshot version 2), so version 1 snapshots still load.
    #[serde(skip)]
    requests: Requests,
    /// Tokens and who submitted what (snapshot version 3); hashed only once not empty, so
    /// a state that never used access control hashes as before it existed.
    #[serde(skip)]
    acl: Acl,
    /// Periodic jobs (snapshot version 4); hashed only once not empty.
    #[serde(skip)]
    crons: crate::cron::Crons,
    /// Attempts a job had when it was last rerun (`RerunWorkflow`): its retry budget
    /// counts from there. Snapshot version 4; hashed only once not empty.
    #[serde(skip)]
    rerun_base: imbl::OrdMap<JobId, u32>,
    /// Step outputs each job's successful attempt published (`TaskOutputs`). Snapshot
    /// version 4; hashed only once not empty.
    #[serde(skip)]
    outputs: imbl::OrdMap<JobId, BTreeMap<String, String>>,
    /// The rules of apply once a `SetRules` entry was applied; `None` before (a log of an
    /// earlier build replays as it was written). Snapshot version 5; hashed only once set.
    #[serde(skip)]
    rules: Option<Rules>,
    /// When each ended job ended (the proposer's time of the entry that ended it), kept
    /// under rules: what retention counts from. A job leaves it when it runs again or is
    /// collected. Snapshot version 6; hashed only once not empty.
    #[serde(skip)]
    ended_at: imbl::OrdMap<JobId, u64>,
    /// Derived: `ended_at` ordered by time, so the leader finds the jobs due for
    /// collection without walking every ended one. Not encoded; rebuilt after a snapshot
    /// load.
    #[serde(skip)]
    ended_order: imbl::OrdSet<(u64, JobId)>,
    /// The retention jobs asked for themselves (`JobOption::RetainMs`), instead of the
    /// cluster's; goes with the job. Snapshot version 7; hashed only once not empty.
    #[serde(skip)]
    retain: imbl::OrdMap<JobId, u64>,
    /// Derived: ended jobs with a retention of their own (not 0), by when they are due
    /// (their end plus it); `ended_order` holds only the others. Not encoded; rebuilt
    /// after a snapshot load.
    #[serde(skip)]
    own_due: imbl::OrdSet<(u64, JobId)>,
    /// The jobs the entries applied since the last [`take_collected`] removed, for the
    /// caller to archive. Not encoded, not compared.
    ///
    /// [`take_collected`]: ClusterState::take_collected
    #[serde(skip)]
    collected: Vec<Collected>,
    /// Whether `collected` is filled (a node with an archive); off, collected jobs are
    /// only dropped. Not encoded, not compared.
    #[serde(skip)]
    keep_collected: bool,
    /// Features of apply turned on by `Enable` entries (snapshot version 8); hashed only
    /// once not empty.
    #[serde(skip)]
    features: BTreeSet<Feature>,
    /// Namespaces made, and the namespace of every job outside `default` (snapshot
    /// version 9); hashed only once not empty.
    #[serde(skip)]
    namespaces: crate::namespace::Namespaces,
    /// The namespace the submission being applied was made in (`InNamespace`); `None`
    /// outside one (`default`). Not encoded.
    #[serde(skip)]
    in_namespace: Option<String>,
    /// Derived: attempts ended by the entries this value applied (not those it loaded
    /// from a snapshot), by `Exit::kind`: a counter for metrics that costs nothing to
    /// read. Not encoded, not compared.
    #[serde(skip)]
    attempts_ended: Tally,
    /// What the entry being applied changed, when the caller asked for events
    /// ([`apply_recording`](Self::apply_recording)). Not encoded, not compared.
    #[serde(skip)]
    recorder: Recorder,
}

/// Counts that are not part of the state's value (equal whatever they hold).
#[derive(Debug, Clone, Default)]
struct Tally([u64; 5]);

impl PartialEq for Tally {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Tally {}

/// Collects the events of one entry: each touched job's state before the command, and the
/// events made from it when the command ends.
#[derive(Default)]
struct Recorder {
    on: bool,
    before: BTreeMap<JobId, Option<Before>>,
    out: Vec<Event>,
}

impl Clone for Recorder {
    fn clone(&self) -> Self {
        Recorder::default()
    }
}

impl PartialEq for Recorder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Recorder {}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder {{ on: {} }}", self.on)
    }
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            jobs: Jobs::default(),
            workflows: imbl::OrdMap::new(),
            nodes: BTreeMap::new(),
            idempotency: imbl::OrdMap::new(),
            next_job: 1,
            next_workflow: 1,
            checkpoints: BTreeMap::new(),
            counters: Counters::default(),
            last_applied: None,
            digests: JobDigests::empty(),
            index: JobIndex::default(),
            requests: Requests::default(),
            acl: Acl::default(),
            crons: Default::default(),
            rerun_base: imbl::OrdMap::new(),
            outputs: imbl::OrdMap::new(),
            rules: None,
            ended_at: imbl::OrdMap::new(),
            ended_order: imbl::OrdSet::new(),
            retain: imbl::OrdMap::new(),
            own_due: imbl::OrdSet::new(),
            collected: Vec::new(),
            keep_collected: false,
            features: BTreeSet::new(),
            namespaces: Default::default(),
            in_namespace: None,
            attempts_ended: Tally::default(),
            recorder: Recorder::default(),
        }
    }
}

impl ClusterState {
    pub fn new() -> ClusterState {
        ClusterState::default()
    }

    /// Applies the entry at `index`. Pure: the same state and entry give the same result.
    /// A batch is its commands applied one after another at the same index (so replaying
    /// them one by one gives the same state).
    pub fn apply(&mut self, index: u64, command: &Command) -> Response {
        let response = self.apply_entry(index, command);
        self.fold_digests_when_due();
        response
    }

    fn apply_entry(&mut self, index: u64, command: &Command) -> Response {
        match command {
            Command::Batch { commands, .. } => Response::Batch(
                commands
                    .iter()
                    .map(|c| {
                        if c.batchable() {
                            self.apply_one(index, c)
                        } else {
                            self.last_applied = Some(index);
                            self.counters.rejected_commands += 1;
                            Response::Rejected(Invalid::new(
                                "batch",
                                format!("a {} cannot be part of a batch", c.kind()),
                            ))
                        }
                    })
                    .collect(),
            ),
            other => self.apply_one(index, other),
        }
    }

    /// [`apply`](Self::apply), also returning the events the entry makes (see
    /// [`crate::events`]), numbered `seq` 0, 1, … at `index`.
    pub fn apply_recording(&mut self, index: u64, command: &Command) -> (Response, Vec<Event>) {
        self.recorder.on = true;
        let response = self.apply(index, command);
        self.recorder.on = false;
        let mut events = std::mem::take(&mut self.recorder.out);
        for (seq, e) in events.iter_mut().enumerate() {
            e.index = index;
            e.seq = seq as u32;
        }
        (response, events)
    }

    fn apply_one(&mut self, index: u64, command: &Command) -> Response {
        let response = self.apply_command(index, command);
        let under_rules = self.rules.is_some();
        let touched = std::mem::take(&mut self.index.touched);
        for id in &touched {
            let id = *id;
            if let Some(j) = self.jobs.get(&id) {
                self.index.insert(&j, self.namespaces.of(id));
                let ended = j.state.is_final();
                drop(j);
                if under_rules {
                    if ended {
                        if !self.ended_at.contains_key(&id) {
                            self.ended(id, command.at_ms());
                        }
                    } else if let Some(t) = self.ended_at.remove(&id) {
                        self.order(id, t, false);
                    }
                }
            }
        }
        if self.recorder.on {
            for (id, before) in std::mem::take(&mut self.recorder.before) {
                let Some(j) = self.jobs.get(&id) else {
                    continue;
                };
                if let Some(mut e) = events::job_event(before, &j) {
                    e.at_ms = command.at_ms();
                    e.namespace = self.namespaces.of_job.get(&id).cloned();
                    self.recorder.out.push(e);
                }
            }
        }
        // Ended jobs go back to being held as their encoding.
        for id in &touched {
            self.jobs.settle(id);
        }
        response
    }

    /// The event of a node or checkpoint command that took effect.
    fn record_command(&mut self, command: &Command, response: &Response) {
        let node = |kind: EventKind, id: NodeId| {
            let mut e = Event::new(kind);
            e.node = Some(id);
            e
        };
        let mut e = match (command, response) {
            (Command::NodeRegistered { node: n, .. }, Response::Done) => {
                let mut e = node(EventKind::NodeJoined, n.id);
                e.detail = n.address.clone();
                e
            }
            (Command::NodeFailed { node: id, .. }, Response::Done) => {
                node(EventKind::NodeFailed, *id)
            }
            (Command::NodeRetired { node: id, .. }, Response::Done) => {
                node(EventKind::NodeLeft, *id)
            }
            (Command::NodeRecovered { node: id, .. }, Response::Done) => {
                node(EventKind::NodeRecovered, *id)
            }
            (Command::Checkpoint { .. }, Response::CheckpointRecorded { hash }) => {
                let mut e = Event::new(EventKind::Checkpoint);
                e.detail = hex(hash);
                e
            }
            _ => return,
        };
        e.at_ms = command.at_ms();
        self.recorder.out.push(e);
    }

    /// Marks job `id` as about to change: its digest is recomputed at the next hash, and it
    /// leaves the indexes until the command ends. Every change to a job goes through here.
    fn touch(&mut self, id: JobId) {
        if self.recorder.on {
            let jobs = &self.jobs;
            self.recorder
                .before
                .entry(id)
                .or_insert_with(|| jobs.get(&id).map(|j| Before::of(&j)));
        }
        self.digests.touch(id);
        // Out of the indexes once per command (it goes back in when the command ends).
        if self.index.touched.insert(id) {
            if let Some(j) = self.jobs.get(&id) {
                self.index.remove(&j, self.namespaces.of(id));
            }
        }
    }

    /// Applies `command` under request id `id` unless the id was answered already.
    fn apply_request(&mut self, index: u64, id: &RequestId, command: &Command) -> Response {
        self.last_applied = Some(index);
        let refused = id.check().err().or_else(|| {
            (!command.batchable() || matches!(command, Command::Request { .. })).then(|| {
                Invalid::new(
                    "request",
                    format!("a {} cannot be a request", command.kind()),
                )
            })
        });
        if let Some(e) = refused {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        match self.requests.lookup(id, command) {
            Lookup::Answered(a) => {
                let first = a.response.clone();
                self.requests.count_repeat();
                first
            }
            Lookup::Conflict(e) => {
                self.requests.count_conflict();
                self.counters.rejected_commands += 1;
                Response::Rejected(e)
            }
            Lookup::New => {
                let response = self.apply_command(index, command);
                self.requests.remember(id, command, index, response.clone());
                response
            }
        }
    }

    fn apply_command(&mut self, index: u64, command: &Command) -> Response {
        match command {
            Command::Request { id, command } => return self.apply_request(index, id, command),
            Command::Authored { accessor, command } => {
                return self.apply_authored(index, accessor, command)
            }
            Command::WithJobOptions { options, command } => {
                return self.apply_with_options(index, options, command)
            }
            Command::InNamespace { namespace, command } => {
                return self.apply_in_namespace(index, namespace, command)
            }
            _ => {}
        }
        self.last_applied = Some(index);
        let response = match command {
            Command::SubmitJobs { at_ms, jobs } => self.submit_jobs(*at_ms, jobs),
            Command::SubmitWorkflow { at_ms, name, jobs } => {
                self.submit_workflow(*at_ms, name, jobs)
            }
            Command::AssignTasks { at_ms, assignments } => self.assign(*at_ms, assignments),
            Command::TaskStarted {
                at_ms,
                job,
                attempt,
                node,
            } => self.started(*at_ms, *job, *attempt, *node),
            Command::TaskFinished {
                at_ms,
                job,
                attempt,
                node,
                outcome,
            } => self.finished(*at_ms, *job, *attempt, *node, outcome),
            Command::CancelJob { at_ms, job, reason } => self.cancel(*at_ms, *job, reason),
            Command::NodeRegistered { at_ms, node } => self.register(*at_ms, node),
            Command::NodeFailed { at_ms, node } => {
                self.node_down(*at_ms, *node, NodeStatus::Failed)
            }
            Command::NodeRetired { at_ms, node } => {
                self.node_down(*at_ms, *node, NodeStatus::Retired)
            }
            Command::NodeRecovered { at_ms, node } => self.node_recovered(*at_ms, *node),
            Command::Batch { .. } => unreachable!("apply takes batches apart"),
            Command::Request { .. }
            | Command::Authored { .. }
            | Command::WithJobOptions { .. }
            | Command::InNamespace { .. } => {
                unreachable!("taken above")
            }
            Command::Namespace { at_ms, op } => {
                match self.namespaces.check(op, |ns| self.namespace_holds(ns)) {
                    Ok(()) => {
                        self.namespaces.apply(*at_ms, op);
                        Response::Done
                    }
                    Err(e) => Response::Rejected(e),
                }
            }
            Command::AclBootstrap { token, .. } => match self.acl.add(token.clone(), true) {
                Ok(()) => Response::Done,
                Err(e) => Response::Rejected(e),
            },
            Command::TokenCreate { token, .. } => match self.acl.add(token.clone(), false) {
                Ok(()) => Response::Done,
                Err(e) => Response::Rejected(e),
            },
            Command::TokenCreateScoped { token, grants, .. } => {
                match crate::namespace::check_grants(grants)
                    .and_then(|()| self.acl.add(token.clone(), false))
                {
                    Ok(()) => {
                        self.namespaces
                            .grants
                            .insert(token.accessor.clone(), grants.clone());
                        Response::Done
                    }
                    Err(e) => Response::Rejected(e),
                }
            }
            Command::Cron { at_ms, op } => self.apply_cron(*at_ms, op),
            Command::RerunWorkflow {
                at_ms,
                workflow,
                from,
            } => self.rerun(*at_ms, *workflow, *from),
            Command::TaskOutputs {
                job,
                attempt,
                node,
                outputs,
                ..
            } => self.publish_outputs(*job, *attempt, *node, outputs),
            Command::TokenRevoke { accessor, .. } => match self.acl.revoke(accessor) {
                Ok(_) => {
                    self.namespaces.grants.remove(accessor);
                    Response::Done
                }
                Err(e) => Response::Rejected(e),
            },
            Command::SetRules { at_ms, rules } => match rules.validate() {
                Ok(()) => {
                    if self.rules.is_none() {
                        let mut ended = Vec::new();
                        // Jobs that ended before the rules: their last attempt's end,
                        // else (cancelled before any) when the rules came.
                        for j in self.jobs.values().filter(|j| j.state.is_final()) {
                            let end = j
                                .attempts
                                .last()
                                .and_then(|a| a.finished_at_ms)
                                .unwrap_or(*at_ms);
                            ended.push((j.id, end));
                        }
                        for (id, end) in ended {
                            self.ended(id, end);
                            // Its digest covers its end (by-job hashing).
                            self.digests.touch(id);
                        }
                    }
                    self.rules = Some(*rules);
                    Response::Done
                }
                // (Counted with every rejection below.)
                Err(e) => Response::Rejected(e),
            },
            Command::Collect { jobs, .. } => match self.check(command) {
                Ok(()) => self.collect(jobs),
                Err(e) => Response::Rejected(e),
            },
            Command::Enable { feature, .. } => {
                if self.features.insert(*feature) {
                    // Digests are worked out anew the way the feature has them — now,
                    // while the entry applies (a leader turns features on as it starts,
                    // when a new cluster holds nothing), not at the next checkpoint,
                    // thousands of jobs later; from here they are kept up to date.
                    self.digests.invalidate();
                    self.jobs_digest();
                    self.requests.follow(&self.features);
                }
                Response::Done
            }
            Command::Checkpoint { .. } => {
                let hash = self.hash();
                self.checkpoints.insert(index, hash);
                while self.checkpoints.len() > CHECKPOINTS_KEPT {
                    self.checkpoints.pop_first();
                }
                Response::CheckpointRecorded { hash }
            }
            Command::CheckpointHash {
                index: at, hash, ..
            } => match self.checkpoints.get(at) {
                Some(mine) if mine == hash => Response::CheckpointCompared { matched: true },
                Some(mine) => {
                    self.counters.divergences += 1;
                    tracing::error!(
                        checkpoint = at,
                        local = %hex(mine),
                        leader = %hex(hash),
                        "STATE DIVERGENCE: this node's state hash differs from the leader's"
                    );
                    Response::CheckpointCompared { matched: false }
                }
                None => Response::Ignored {
                    reason: format!("no local checkpoint at index {at}"),
                },
            },
        };
        if self.recorder.on {
            self.record_command(command, &response);
        }
        match &response {
            Response::Rejected(_) => self.counters.rejected_commands += 1,
            Response::Ignored { .. }
                if matches!(
                    command,
                    Command::TaskStarted { .. } | Command::TaskFinished { .. }
                ) =>
            {
                self.counters.fenced_reports += 1
            }
            _ => {}
        }
        response
    }

    /// Applies `command` written under token `accessor`, recording it as the submitter of
    /// the jobs it creates.
    fn apply_authored(&mut self, index: u64, accessor: &str, command: &Command) -> Response {
        self.last_applied = Some(index);
        if let Err(e) = authored_allowed(command) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let response = self.apply_command(index, command);
        match &response {
            Response::Submitted { jobs } => self.acl.record_submitter(accessor, jobs),
            Response::WorkflowSubmitted { jobs, .. } => {
                let ids: Vec<JobId> = jobs.values().copied().collect();
                self.acl.record_submitter(accessor, &ids)
            }
            _ => {}
        }
        // Their digests cover their submitter (a repeat may record one only now).
        match &response {
            Response::Submitted { jobs } => jobs.iter().for_each(|j| self.digests.touch(*j)),
            Response::WorkflowSubmitted { jobs, .. } => {
                jobs.values().for_each(|j| self.digests.touch(*j))
            }
            _ => {}
        }
        response
    }

    /// Applies a submission with options per job; the options go to the jobs it created
    /// (not to those an idempotency key repeated).
    fn apply_with_options(
        &mut self,
        index: u64,
        options: &[Vec<JobOption>],
        command: &Command,
    ) -> Response {
        self.last_applied = Some(index);
        if let Err(e) = crate::command::check_job_options(options, command) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let first_new = self.next_job;
        let response = self.apply_command(index, command);
        let created: Vec<(JobId, &Vec<JobOption>)> = match (&response, command) {
            (Response::Submitted { jobs }, _) => jobs.iter().copied().zip(options).collect(),
            (Response::WorkflowSubmitted { jobs, .. }, Command::SubmitWorkflow { jobs: w, .. }) => {
                w.iter()
                    .zip(options)
                    .filter_map(|(j, o)| jobs.get(&j.key).map(|id| (*id, o)))
                    .collect()
            }
            _ => Vec::new(),
        };
        for (id, options) in created {
            if id < first_new {
                continue;
            }
            if let Some(ms) = JobOption::retain_ms(options) {
                self.retain.insert(id, ms);
            }
        }
        response
    }

    /// Applies a submission made in namespace `namespace`: its jobs are created in it.
    fn apply_in_namespace(&mut self, index: u64, namespace: &str, command: &Command) -> Response {
        self.last_applied = Some(index);
        if let Err(e) = self.check_in_namespace(namespace, command) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let outer = self.in_namespace.replace(namespace.to_string());
        let response = self.apply_command(index, command);
        self.in_namespace = outer;
        response
    }

    /// Job `id` ended at `t` (under rules): it joins the order retention collects by,
    /// under its own retention, else its namespace's (fixed now: a later change of the
    /// setting applies to jobs that end later), else the cluster's.
    fn ended(&mut self, id: JobId, t: u64) {
        self.ended_at.insert(id, t);
        if !self.retain.contains_key(&id) {
            let ns = self.namespaces.of(id);
            if let Some(ms) = self.namespaces.limits(ns).job_retention_ms {
                self.retain.insert(id, ms);
            }
        }
        self.order(id, t, true);
    }

    /// The jobs and the crons namespace `ns` holds (one that holds any cannot be deleted).
    pub(super) fn namespace_holds(&self, ns: &str) -> (u64, u64) {
        (self.index.jobs_in(ns), self.crons.count_in(ns))
    }

    /// The namespace of the submission being applied: the one an `InNamespace` names, or
    /// `default`.
    fn current_namespace(&self) -> &str {
        self.in_namespace
            .as_deref()
            .unwrap_or(crate::namespace::DEFAULT_NAMESPACE)
    }

    /// Checks the quotas a submission of `new` jobs (those its keys do not repeat) meets
    /// in the current namespace — pending jobs and the submit rate — and, when it does,
    /// draws them from the rate's bucket (the caller then creates them: nothing after this
    /// can refuse). A refusal's field starts with `quota.` (the API answers
    /// `RESOURCE_EXHAUSTED`).
    fn take_quota(&mut self, at: u64, new: u64) -> std::result::Result<(), Invalid> {
        if new == 0 {
            return Ok(());
        }
        let ns = self.current_namespace().to_string();
        let limits = self.namespaces.limits(&ns);
        if let Some(max) = limits.pending_jobs_max {
            let pending = self.index.usage(&ns).pending;
            if pending + new > max {
                return Err(Invalid::new(
                    "quota.pending_jobs_max",
                    format!(
                        "namespace {ns} holds {pending} pending jobs; {new} more would pass its pending_jobs_max quota of {max}"
                    ),
                ));
            }
        }
        if let Some((per_sec, burst)) = limits.submit_rate {
            let mut made = self.namespaces.get(&ns).unwrap_or_default();
            if let Err(have) = made.draw(new, at) {
                return Err(Invalid::new(
                    "quota.submit_rate",
                    format!(
                        "namespace {ns} may submit {per_sec} jobs a second (bursts of {burst}); {have} may be submitted now, {new} were"
                    ),
                ));
            }
            self.namespaces.made.insert(ns, made);
        }
        Ok(())
    }

    fn submit_jobs(&mut self, at: u64, specs: &[JobSpec]) -> Response {
        let ns = self.current_namespace().to_string();
        if let Err(e) = self.check_submit(&ns, specs) {
            return Response::Rejected(e);
        }
        let new = specs
            .iter()
            .filter(|s| self.job_of_key(&ns, s).is_none())
            .count() as u64;
        if let Err(e) = self.take_quota(at, new) {
            return Response::Rejected(e);
        }
        // A key this state holds names its job: `create_job` answers with it (a repeat).
        let jobs = specs
            .iter()
            .map(|spec| self.create_job(at, spec.clone(), None))
            .collect();
        Response::Submitted { jobs }
    }

    /// Creates a job (or returns the one its idempotency key names) in the current
    /// namespace.
    fn create_job(&mut self, at: u64, mut spec: JobSpec, workflow: Option<WorkflowId>) -> JobId {
        if let Some(existing) = self.job_of_key(self.current_namespace(), &spec) {
            return existing;
        }
        // The namespace's defaults for what the job asks none of.
        self.namespaces
            .limits(self.current_namespace())
            .with_defaults(&mut spec);
        let id = self.next_job;
        self.next_job += 1;
        match (&spec.idempotency_key, self.in_namespace.clone()) {
            (Some(k), Some(ns)) if ns != crate::namespace::DEFAULT_NAMESPACE => {
                self.namespaces.keys.insert((ns, k.clone()), id);
            }
            (Some(k), _) => {
                self.idempotency.insert(k.clone(), id);
            }
            (None, _) => {}
        }
        if let Some(ns) = self
            .in_namespace
            .clone()
            .filter(|ns| ns != crate::namespace::DEFAULT_NAMESPACE)
        {
            self.namespaces.of_job.insert(id, ns);
        }
        let mut deps: Vec<JobId> = spec.depends_on.clone();
        deps.sort_unstable();
        deps.dedup();
        let blocked_by = deps.iter().copied().find(|d| {
            let s = self.jobs.state(d).expect("present");
            s.is_final() && s != JobState::Succeeded
        });
        for d in &deps {
            self.touch(*d);
            self.jobs.get_mut(d).expect("checked").dependents.push(id);
        }
        let mut job = Job {
            id,
            spec,
            state: JobState::Pending,
            reason: None,
            submitted_at_ms: at,
            not_before_ms: at,
            attempts: Vec::new(),
            workflow,
            dependents: Vec::new(),
        };
        if let Some(d) = blocked_by {
            job.state = JobState::Cancelled;
            job.reason = Some(format!(
                "dependency {d} {}",
                self.jobs.state(&d).expect("present").name()
            ));
        }
        self.touch(id);
        self.jobs.insert(id, job);
        id
    }

    /// The id the next job will get: every job ever submitted has a lower one.
    pub fn next_job_id(&self) -> JobId {
        self.next_job
    }

    /// The namespaces, and the namespace of every job.
    pub fn namespaces(&self) -> &crate::namespace::Namespaces {
        &self.namespaces
    }

    /// Access control: tokens, and who submitted which job.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The rules of apply, once a `SetRules` entry set them.
    pub fn rules(&self) -> Option<Rules> {
        self.rules
    }
}

/// Refuses two jobs of one request with the same idempotency key: they would collapse into
/// one job (and a workflow would lose a dependency).
fn unique_keys<'a>(specs: impl Iterator<Item = &'a JobSpec>) -> std::result::Result<(), Invalid> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, spec) in specs.enumerate() {
        if let Some(k) = spec.idempotency_key.as_deref() {
            if let Some(first) = seen.insert(k, i) {
                return Err(Invalid::new(
                    &format!("jobs[{i}].idempotency_key"),
                    format!("{k:?} is also the key of jobs[{first}]; keys must differ within one request"),
                ));
            }
        }
    }
    Ok(())
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an `Authored` command may wrap: a client's submission or cancel.
fn authored_allowed(command: &Command) -> std::result::Result<(), Invalid> {
    match command {
        Command::SubmitJobs { .. }
        | Command::SubmitWorkflow { .. }
        | Command::WithJobOptions { .. }
        | Command::InNamespace { .. }
        | Command::CancelJob { .. }
        | Command::RerunWorkflow { .. } => Ok(()),
        other => Err(Invalid::new(
            "authored",
            format!("a {} is not written under a token", other.kind()),
        )),
    }
}
