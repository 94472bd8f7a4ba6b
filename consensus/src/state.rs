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
//! | answered request ids | `REQUESTS_REMEMBERED_MAX` (100,000) for `REQUEST_RETENTION_MS` |
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

/// Checkpoint hashes kept for comparison with the leader's.
pub const CHECKPOINTS_KEPT: usize = 64;
/// Version 2 appends the answered-request table after the state, version 3 the access
/// control state after that, version 4 the crons, rerun bases and step outputs, version 5
/// the rules, version 6 the end times, version 7 the jobs' own retentions; version 8
/// writes each job as its encoding (with its state) instead of as a value, so an ended
/// job held as its encoding is written and loaded as it is. Every earlier version still
/// loads.
const SNAPSHOT_VERSION: u16 = 8;

/// The jobs as a snapshot (version 8) writes them: a sequence of `(id, state, encoding)`,
/// the encoding as bytes (a length, then the job's postcard bytes).
struct EncodedJobs<'a>(&'a Jobs);

impl Serialize for EncodedJobs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        struct Raw<'b>(&'b [u8]);
        impl Serialize for Raw<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (id, state, bytes) in self.0.encoded() {
            seq.serialize_element(&(id, state, Raw(&bytes)))?;
        }
        seq.end()
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed out",
        }
    }
}

/// One try at running a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub node: NodeId,
    pub assigned_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub outcome: Option<Outcome>,
}

/// A job and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Why the job is in a final state other than succeeded.
    pub reason: Option<String>,
    pub submitted_at_ms: u64,
    /// A retry waits until then.
    pub not_before_ms: u64,
    pub attempts: Vec<Attempt>,
    pub workflow: Option<WorkflowId>,
    /// Jobs that depend on this one.
    pub dependents: Vec<JobId>,
}

impl Attempt {
    /// Whether it ended lost with its node.
    pub fn lost(&self) -> bool {
        self.outcome.as_ref().is_some_and(|o| o.exit == Exit::Lost)
    }
}

impl Job {
    /// The attempt in flight (assigned or running), if any.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        matches!(self.state, JobState::Assigned | JobState::Running)
            .then(|| self.attempts.last())
            .flatten()
    }
}

/// Whether a node takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Alive,
    Failed,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub info: NodeInfo,
    pub status: NodeStatus,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: WorkflowId,
    pub name: String,
    /// Workflow key → job.
    pub jobs: BTreeMap<String, JobId>,
    pub submitted_at_ms: u64,
}

/// Counts of what apply refused or found, replicated like the rest of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reports about an attempt that is no longer current (fencing).
    pub fenced_reports: u64,
    /// Assignments that no longer fit the state when applied.
    pub ignored_assignments: u64,
    /// Commands rejected as a whole.
    pub rejected_commands: u64,
    /// Checkpoint hashes that differed from the leader's.
    pub divergences: u64,
}

/// What applying one command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// New (or, for a repeated idempotency key, existing) job ids, in order.
    Submitted {
        jobs: Vec<JobId>,
    },
    WorkflowSubmitted {
        workflow: WorkflowId,
        jobs: BTreeMap<String, JobId>,
    },
    Assigned {
        accepted: u32,
        ignored: u32,
    },
    Rejected(Invalid),
    /// Not applicable to the current state (a stale report, an unknown id); counted.
    Ignored {
        reason: String,
    },
    Done,
    CheckpointRecorded {
        hash: [u8; 32],
    },
    CheckpointCompared {
        matched: bool,
    },
    /// A batch's responses, one per command, in order.
    Batch(Vec<Response>),
    /// The jobs a `Collect` removed, and how many of those it named it kept.
    Collected {
        jobs: Vec<JobId>,
        kept: u32,
    },
}

/// A job a `Collect` removed, with what the state kept of it beside the job itself: its
/// final record, for the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    pub job: Job,
    pub outputs: BTreeMap<String, String>,
    pub submitted_by: Option<String>,
    pub ended_at_ms: Option<u64>,
    /// The job's own retention, if it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
}

/// Resources an attempt in flight holds on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub slots: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// The replicated state. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Persistent (structurally shared): a copy is O(1), so the state machine takes a
    /// snapshot's copy under its lock without stopping apply for the size of the state;
    /// an ended job is held as its encoding (see `jobs`). Encoded by the snapshot code
    /// ahead of the other fields (where a derived encoding of the struct had it).
    #[serde(skip)]
    jobs: Jobs,
    workflows: BTreeMap<WorkflowId, Workflow>,
    nodes: BTreeMap<NodeId, Node>,
    idempotency: BTreeMap<String, JobId>,
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
    rerun_base: BTreeMap<JobId, u32>,
    /// Step outputs each job's successful attempt published (`TaskOutputs`). Snapshot
    /// version 4; hashed only once not empty.
    #[serde(skip)]
    outputs: BTreeMap<JobId, BTreeMap<String, String>>,
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
    retain: BTreeMap<JobId, u64>,
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

/// Indexes over the jobs, kept in step with them: [`ClusterState::touch`] takes a job out
/// before it changes, and the end of every applied command puts the jobs it touched back
/// under their new state. A test checks them against a full rebuild after every entry.
#[derive(Default, Clone)]
struct JobIndex {
    /// Jobs in state pending, in scheduling order: higher priority first, then older.
    pending: BTreeSet<(std::cmp::Reverse<i32>, JobId)>,
    /// Jobs with an attempt in flight (assigned or running), by the node running it.
    active: BTreeMap<NodeId, BTreeSet<JobId>>,
    /// Jobs touched by the command being applied, to index again when it ends.
    touched: BTreeSet<JobId>,
    /// Jobs by state (`JobState as usize`).
    counts: [u64; 7],
}

impl JobIndex {
    fn insert(&mut self, j: &Job) {
        self.counts[j.state as usize] += 1;
        if j.state == JobState::Pending {
            self.pending
                .insert((std::cmp::Reverse(j.spec.priority), j.id));
        }
        if let Some(a) = j.current_attempt() {
            self.active.entry(a.node).or_default().insert(j.id);
        }
    }

    fn remove(&mut self, j: &Job) {
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
    fn rebuilt(jobs: &Jobs) -> JobIndex {
        let mut index = JobIndex::default();
        for (id, state) in jobs.states() {
            if state.is_final() {
                index.counts[state as usize] += 1;
            } else {
                index.insert(jobs.live(&id));
            }
        }
        index
    }

    fn same(&self, other: &JobIndex) -> bool {
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

/// Per-job digests behind the state hash, kept up to date incrementally, so a hash costs
/// O(jobs changed since the last one) instead of O(all jobs) — checkpoints come every
/// `checkpoint_interval` entries on every node and in every replay, and all jobs are
/// kept. Derived state: never encoded, rebuilt in full on the first hash after a snapshot
/// load, ignored by equality. Every place that changes a job calls [`touch`](Self::touch)
/// first; a test compares the incremental hash with a full rebuild after every entry.
#[derive(Default)]
struct JobDigests(std::sync::Mutex<Digests>);

#[derive(Default, Clone)]
struct Digests {
    /// `each` and `sum` describe every job but those in `dirty`.
    valid: bool,
    each: BTreeMap<JobId, [u8; 32]>,
    /// The sum of every digest, as a 256-bit integer (wrapping): order-independent, so a
    /// changed job is one subtraction and one addition.
    sum: [u64; 4],
    dirty: BTreeSet<JobId>,
}

impl JobDigests {
    fn invalidate(&mut self) {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner()).valid = false;
    }

    fn touch(&mut self, id: JobId) {
        let d = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if d.valid {
            d.dirty.insert(id);
        }
    }

    /// The digest of all jobs: the sum of `BLAKE3(job's encoding)`, each followed by
    /// `record(id)` when given (what the state keeps for the job besides it).
    fn of(&self, jobs: &Jobs, record: Option<&dyn Fn(JobId) -> Vec<u8>>) -> [u8; 32] {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let digest = |id: JobId, bytes: &[u8]| -> [u8; 32] {
            let mut h = blake3::Hasher::new();
            h.update(bytes);
            if let Some(r) = record {
                h.update(&r(id));
            }
            *h.finalize().as_bytes()
        };
        if !d.valid {
            d.each.clear();
            d.sum = [0; 4];
            for (id, _, bytes) in jobs.encoded() {
                let h = digest(id, &bytes);
                wide_add(&mut d.sum, &h, false);
                d.each.insert(id, h);
            }
            d.dirty.clear();
            d.valid = true;
        } else {
            for id in std::mem::take(&mut d.dirty) {
                if let Some(old) = d.each.remove(&id) {
                    wide_add(&mut d.sum, &old, true);
                }
                if let Some(bytes) = jobs.bytes(&id) {
                    let h = digest(id, &bytes);
                    wide_add(&mut d.sum, &h, false);
                    d.each.insert(id, h);
                }
            }
        }
        let mut out = [0u8; 32];
        for (k, limb) in d.sum.iter().enumerate() {
            out[k * 8..k * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

/// `sum += h` (or `-=`) modulo 2^256, little-endian limbs.
fn wide_add(sum: &mut [u64; 4], h: &[u8; 32], subtract: bool) {
    let mut carry = false;
    for (k, limb) in sum.iter_mut().enumerate() {
        let x = u64::from_le_bytes(h[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
        let (r, c) = if subtract {
            let (a, b1) = limb.overflowing_sub(x);
            let (a, b2) = a.overflowing_sub(carry as u64);
            (a, b1 || b2)
        } else {
            let (a, c1) = limb.overflowing_add(x);
            let (a, c2) = a.overflowing_add(carry as u64);
            (a, c1 || c2)
        };
        *limb = r;
        carry = c;
    }
}

impl Clone for JobDigests {
    fn clone(&self) -> Self {
        JobDigests(std::sync::Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
}

impl PartialEq for JobDigests {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JobDigests {}

impl std::fmt::Debug for JobDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobDigests")
    }
}

/// What the state hash covers: everything, with the jobs as their digest.
#[derive(Serialize)]
struct HashView<'a> {
    jobs: u64,
    jobs_digest: [u8; 32],
    workflows: &'a BTreeMap<WorkflowId, Workflow>,
    nodes: &'a BTreeMap<NodeId, Node>,
    idempotency: &'a BTreeMap<String, JobId>,
    next_job: JobId,
    next_workflow: WorkflowId,
    checkpoints: &'a BTreeMap<u64, [u8; 32]>,
    counters: &'a Counters,
    last_applied: Option<u64>,
    /// Left out while nothing was ever answered, so states of logs written before request
    /// ids existed hash as they always did.
    #[serde(skip_serializing_if = "pristine")]
    requests: &'a Requests,
}

fn pristine(r: &&Requests) -> bool {
    r.is_pristine()
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            jobs: Jobs::default(),
            workflows: BTreeMap::new(),
            nodes: BTreeMap::new(),
            idempotency: BTreeMap::new(),
            next_job: 1,
            next_workflow: 1,
            checkpoints: BTreeMap::new(),
            counters: Counters::default(),
            last_applied: None,
            digests: JobDigests::default(),
            index: JobIndex::default(),
            requests: Requests::default(),
            acl: Acl::default(),
            crons: Default::default(),
            rerun_base: BTreeMap::new(),
            outputs: BTreeMap::new(),
            rules: None,
            ended_at: imbl::OrdMap::new(),
            ended_order: imbl::OrdSet::new(),
            retain: BTreeMap::new(),
            own_due: imbl::OrdSet::new(),
            collected: Vec::new(),
            keep_collected: false,
            features: BTreeSet::new(),
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
                self.index.insert(&j);
                let ended = j.state.is_final();
                drop(j);
                if under_rules {
                    if ended {
                        if !self.ended_at.contains_key(&id) {
                            self.ended_at.insert(id, command.at_ms());
                            self.order(id, command.at_ms(), true);
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
                self.index.remove(&j);
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
            Command::Request { .. } | Command::Authored { .. } | Command::WithJobOptions { .. } => {
                unreachable!("taken above")
            }
            Command::AclBootstrap { token, .. } => match self.acl.add(token.clone(), true) {
                Ok(()) => Response::Done,
                Err(e) => Response::Rejected(e),
            },
            Command::TokenCreate { token, .. } => match self.acl.add(token.clone(), false) {
                Ok(()) => Response::Done,
                Err(e) => Response::Rejected(e),
            },
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
                Ok(_) => Response::Done,
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
                            self.ended_at.insert(j.id, end);
                            ended.push((j.id, end));
                        }
                        for (id, end) in ended {
                            self.order(id, end, true);
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
                    // Digests are worked out anew the way the feature has them.
                    self.digests.invalidate();
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

    fn submit_jobs(&mut self, at: u64, specs: &[JobSpec]) -> Response {
        if let Err(e) = self.check_submit(specs) {
            return Response::Rejected(e);
        }
        // A key this state holds names its job: `create_job` answers with it (a repeat).
        let jobs = specs
            .iter()
            .map(|spec| self.create_job(at, spec.clone(), None))
            .collect();
        Response::Submitted { jobs }
    }

    /// The answer to `command` when it repeats a request this state already accepted, so
    /// a proposer answers it without a log entry: a submission whose every job carries an
    /// idempotency key this state holds (the jobs those keys name), or a workflow whose
    /// jobs are exactly the jobs of one workflow by their keys (that workflow). `None`: not
    /// a repeat. [`apply`](Self::apply) gives the same answer for a repeat that was
    /// proposed anyway (two copies in flight), so the result does not depend on timing.
    pub fn repeat(&self, command: &Command) -> Option<Response> {
        match command {
            Command::Request { id, command } => match self.requests.lookup(id, command) {
                Lookup::Answered(a) => Some(a.response.clone()),
                Lookup::Conflict(_) => None,
                Lookup::New => self.repeat(command),
            },
            Command::Authored { command, .. } | Command::WithJobOptions { command, .. } => {
                self.repeat(command)
            }
            Command::SubmitJobs { jobs, .. } => {
                let ids: Option<Vec<JobId>> = jobs.iter().map(|s| self.job_of_key(s)).collect();
                ids.filter(|ids| !ids.is_empty())
                    .map(|jobs| Response::Submitted { jobs })
            }
            Command::SubmitWorkflow { jobs, .. } => {
                self.repeated_workflow(jobs)
                    .map(|w| Response::WorkflowSubmitted {
                        workflow: w.id,
                        jobs: w.jobs.clone(),
                    })
            }
            _ => None,
        }
    }

    /// The job `spec`'s idempotency key names, if any.
    fn job_of_key(&self, spec: &JobSpec) -> Option<JobId> {
        spec.idempotency_key
            .as_ref()
            .and_then(|k| self.idempotency.get(k))
            .copied()
    }

    /// The workflow `jobs` repeat: every job's idempotency key names the job of that
    /// workflow under the same workflow key, and the workflow has no other job.
    fn repeated_workflow(&self, jobs: &[WorkflowJob]) -> Option<&Workflow> {
        let first = self.job_of_key(&jobs.first()?.spec)?;
        let w = self.workflows.get(&self.jobs.get(&first)?.workflow?)?;
        let same = w.jobs.len() == jobs.len()
            && jobs.iter().all(|j| {
                self.job_of_key(&j.spec)
                    .is_some_and(|id| w.jobs.get(&j.key) == Some(&id))
            });
        same.then_some(w)
    }

    /// Whether `command` would be accepted by [`apply`](Self::apply) on this state: a
    /// proposer checks it first so that bad input never takes a log entry. Apply checks
    /// again: a job named here may have been collected (retention) in between.
    pub fn check(&self, command: &Command) -> std::result::Result<(), Invalid> {
        match command {
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
                self.check(command)
            }
            Command::Authored { command, .. } => {
                authored_allowed(command)?;
                self.check(command)
            }
            Command::WithJobOptions { options, command } => {
                crate::command::check_job_options(options, command)?;
                self.check(command)
            }
            Command::SubmitJobs { jobs, .. } => self.check_submit(jobs),
            Command::SubmitWorkflow { name, jobs, .. } => {
                self.plan_workflow(name, jobs).map(|_| ())
            }
            Command::AclBootstrap { token, .. } => self.acl.check_add(token, true),
            Command::TokenCreate { token, .. } => self.acl.check_add(token, false),
            Command::Cron { op, .. } => self.crons.check(op),
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

    fn check_submit(&self, specs: &[JobSpec]) -> std::result::Result<(), Invalid> {
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
            self.check_spec(spec)
                .map_err(|e| e.at(&format!("jobs[{i}]")))?;
        }
        unique_keys(specs.iter())
    }

    /// Spec validity plus references: every dependency must exist.
    fn check_spec(&self, spec: &JobSpec) -> std::result::Result<(), Invalid> {
        spec.validate()?;
        if let Some(d) = spec.depends_on.iter().find(|d| !self.jobs.contains_key(d)) {
            return Err(Invalid::new("depends_on", format!("unknown job {d}")));
        }
        Ok(())
    }

    /// Creates a job (or returns the one its idempotency key names).
    fn create_job(&mut self, at: u64, spec: JobSpec, workflow: Option<WorkflowId>) -> JobId {
        if let Some(existing) = spec
            .idempotency_key
            .as_ref()
            .and_then(|k| self.idempotency.get(k))
        {
            return *existing;
        }
        let id = self.next_job;
        self.next_job += 1;
        if let Some(k) = &spec.idempotency_key {
            self.idempotency.insert(k.clone(), id);
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

    /// Checks a workflow whole and returns its jobs in creation order (dependencies first;
    /// Kahn's algorithm in input order, so deterministic), or the first problem found.
    fn plan_workflow(
        &self,
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
            self.check_spec(&j.spec)
                .map_err(|e| e.at(&format!("jobs[{i}]")))?;
        }
        unique_keys(jobs.iter().map(|j| &j.spec))?;
        // A workflow repeats a submitted one whole (answered with it, see `repeat`) or
        // names only new idempotency keys: a job of another submission cannot become part
        // of this one.
        for (i, j) in jobs.iter().enumerate() {
            if let Some(id) = self.job_of_key(&j.spec) {
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

    fn submit_workflow(&mut self, at: u64, name: &str, jobs: &[WorkflowJob]) -> Response {
        // A repeat (proposed twice before either applied) answers with the first.
        if let Some(w) = self.repeated_workflow(jobs) {
            return Response::WorkflowSubmitted {
                workflow: w.id,
                jobs: w.jobs.clone(),
            };
        }
        let order = match self.plan_workflow(name, jobs) {
            Ok(order) => order,
            Err(e) => return Response::Rejected(e),
        };
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

    fn assign(&mut self, at: u64, assignments: &[Assignment]) -> Response {
        let (mut accepted, mut ignored) = (0, 0);
        for a in assignments {
            if self.assignable(at, a) {
                self.touch(a.job);
                let job = self.jobs.get_mut(&a.job).expect("checked");
                job.attempts.push(Attempt {
                    number: a.attempt,
                    node: a.node,
                    assigned_at_ms: at,
                    started_at_ms: None,
                    finished_at_ms: None,
                    outcome: None,
                });
                job.state = JobState::Assigned;
                accepted += 1;
            } else {
                ignored += 1;
            }
        }
        self.counters.ignored_assignments += ignored as u64;
        Response::Assigned { accepted, ignored }
    }

    fn assignable(&self, at: u64, a: &Assignment) -> bool {
        let Some(job) = self.jobs.get(&a.job) else {
            return false;
        };
        let node_alive = self
            .nodes
            .get(&a.node)
            .is_some_and(|n| n.status == NodeStatus::Alive);
        job.state == JobState::Pending
            && a.attempt as usize == job.attempts.len() + 1
            && job.not_before_ms <= at
            && node_alive
            && self.dependencies_succeeded(&job)
    }

    fn dependencies_succeeded(&self, job: &Job) -> bool {
        job.spec
            .depends_on
            .iter()
            .all(|d| self.jobs.state(d) == Some(JobState::Succeeded))
    }

    /// The job whose current attempt is `attempt` on `node`, or why a report about it is
    /// stale.
    fn current(
        &mut self,
        job: JobId,
        attempt: u32,
        node: NodeId,
    ) -> std::result::Result<&mut Job, String> {
        self.touch(job);
        let j = self
            .jobs
            .get_mut(&job)
            .ok_or_else(|| format!("unknown job {job}"))?;
        match j.current_attempt() {
            Some(a) if a.number == attempt && a.node == node => Ok(j),
            Some(a) => Err(format!(
                "job {job}: attempt {attempt} on node {node} is not current (attempt {} on node {})",
                a.number, a.node
            )),
            None => Err(format!("job {job} is {}, no attempt in flight", j.state.name())),
        }
    }

    fn started(&mut self, at: u64, job: JobId, attempt: u32, node: NodeId) -> Response {
        match self.current(job, attempt, node) {
            Ok(j) if j.state == JobState::Assigned => {
                j.state = JobState::Running;
                j.attempts.last_mut().expect("current").started_at_ms = Some(at);
                Response::Done
            }
            Ok(_) => Response::Ignored {
                reason: format!("job {job} attempt {attempt} already running"),
            },
            Err(reason) => Response::Ignored { reason },
        }
    }

    fn finished(
        &mut self,
        at: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
        outcome: &Outcome,
    ) -> Response {
        if let Err(reason) = self.current(job, attempt, node) {
            return Response::Ignored { reason };
        }
        let mut outcome = outcome.clone();
        let tail = &mut outcome.output_tail;
        if tail.len() > limits::OUTPUT_TAIL_BYTES_MAX {
            tail.drain(..tail.len() - limits::OUTPUT_TAIL_BYTES_MAX);
        }
        self.end_attempt(at, job, outcome);
        Response::Done
    }

    /// Records the current attempt's outcome and moves the job on: succeeded, retried after
    /// backoff, or finally failed / timed out (cancelling its dependents). Under [`Rules`],
    /// an attempt lost with its node is not the job's failure (see `lost_attempt`).
    fn end_attempt(&mut self, at: u64, job: JobId, outcome: Outcome) {
        self.touch(job);
        let rules = self.rules;
        let base = self.rerun_base.get(&job).copied().unwrap_or(0) as usize;
        let j = self.jobs.get_mut(&job).expect("caller checked");
        let a = j.attempts.last_mut().expect("attempt in flight");
        a.finished_at_ms = Some(at);
        let exit = outcome.exit;
        self.attempts_ended.0[exit.kind()] += 1;
        let success = outcome.succeeded();
        a.outcome = Some(outcome);
        if success {
            j.state = JobState::Succeeded;
            return;
        }
        if let (Exit::Lost, Some(rules)) = (exit, rules) {
            if Self::lost_attempt(at, j, base, rules) {
                self.cancel_dependents(job);
            }
            return;
        }
        // Attempts of this run (a rerun job's budget counts from its rerun); under rules,
        // those lost with their node are counted apart.
        let attempts = j.attempts[base.min(j.attempts.len())..]
            .iter()
            .filter(|a| rules.is_none() || !a.lost())
            .count() as u32;
        if attempts < j.spec.retry.max_attempts {
            j.state = JobState::Pending;
            j.not_before_ms = at.saturating_add(j.spec.retry.backoff_ms(attempts + 1));
            return;
        }
        j.state = if exit == Exit::TimedOut {
            JobState::TimedOut
        } else {
            JobState::Failed
        };
        j.reason = Some(match exit {
            Exit::Code(c) => format!("exited with status {c} after {attempts} attempt(s)"),
            Exit::Signal(s) => format!("killed by signal {s} after {attempts} attempt(s)"),
            Exit::TimedOut => format!("timed out after {attempts} attempt(s)"),
            Exit::Lost => format!("lost with its node after {attempts} attempt(s)"),
        });
        self.cancel_dependents(job);
    }

    /// A job whose current attempt was just lost with its node, under `rules`: lost before
    /// its start was committed, the attempt never ran and the job is queued again at once,
    /// counting against nothing; lost after it started, the job is queued again while its
    /// lost-retry budget lasts, and fails once it is spent. Returns whether it failed.
    fn lost_attempt(at: u64, j: &mut Job, base: usize, rules: Rules) -> bool {
        let run = &j.attempts[base.min(j.attempts.len())..];
        let unstarted = run
            .iter()
            .filter(|a| a.lost() && a.started_at_ms.is_none())
            .count() as u32;
        let current = j.attempts.last().expect("attempt in flight");
        if current.started_at_ms.is_none() && unstarted <= limits::LOST_BEFORE_START_FREE {
            j.state = JobState::Pending;
            j.not_before_ms = at;
            return false;
        }
        let lost = run
            .iter()
            .filter(|a| a.lost() && a.started_at_ms.is_some())
            .count() as u32
            + unstarted.saturating_sub(limits::LOST_BEFORE_START_FREE);
        if lost <= rules.lost_retries {
            j.state = JobState::Pending;
            j.not_before_ms = at;
            return false;
        }
        j.state = JobState::Failed;
        j.reason = Some(format!(
            "lost with its node {lost} time(s) (lost retries: {})",
            rules.lost_retries
        ));
        true
    }

    /// The jobs a rerun of `workflow` from `from` puts back in the queue: `from` and every
    /// job of the workflow downstream of it, in id order. `from` must have ended without
    /// succeeding, and every one of them must have ended.
    fn rerun_plan(
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

    /// Records the outputs the current attempt of `job` published (a stale attempt's are
    /// ignored: fencing, as for its end).
    fn publish_outputs(
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

    /// The step outputs job `id` published.
    pub fn step_outputs(&self, id: JobId) -> Option<&BTreeMap<String, String>> {
        self.outputs.get(&id)
    }

    fn rerun(&mut self, at: u64, workflow: WorkflowId, from: JobId) -> Response {
        let plan = match self.rerun_plan(workflow, from) {
            Ok(p) => p,
            Err(e) => {
                self.counters.rejected_commands += 1;
                return Response::Rejected(e);
            }
        };
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

    /// Cancels every job that (transitively) depends on `root`, which ended unsuccessfully.
    fn cancel_dependents(&mut self, root: JobId) {
        let mut queue: VecDeque<(JobId, JobId)> = self
            .jobs
            .get(&root)
            .expect("present")
            .dependents
            .iter()
            .map(|&d| (d, root))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((id, because)) = queue.pop_front() {
            if !seen.insert(id) {
                continue;
            }
            let state = self.jobs.state(&because).expect("present");
            self.touch(id);
            let j = self.jobs.get_mut(&id).expect("dependents exist");
            if j.state.is_final() {
                continue;
            }
            j.state = JobState::Cancelled;
            j.reason = Some(format!("dependency {because} {}", state.name()));
            queue.extend(j.dependents.iter().map(|&d| (d, id)));
        }
    }

    fn cancel(&mut self, at: u64, job: JobId, reason: &str) -> Response {
        self.touch(job);
        let Some(j) = self.jobs.get_mut(&job) else {
            return Response::Ignored {
                reason: format!("unknown job {job}"),
            };
        };
        if j.state.is_final() {
            return Response::Ignored {
                reason: format!("job {job} is already {}", j.state.name()),
            };
        }
        if matches!(j.state, JobState::Assigned | JobState::Running) {
            if let Some(a) = j.attempts.last_mut() {
                a.finished_at_ms = Some(at);
            }
        }
        j.state = JobState::Cancelled;
        j.reason = Some(if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        });
        self.cancel_dependents(job);
        Response::Done
    }

    fn register(&mut self, at: u64, info: &NodeInfo) -> Response {
        let registered_at_ms = self.nodes.get(&info.id).map_or(at, |n| n.registered_at_ms);
        self.nodes.insert(
            info.id,
            Node {
                info: info.clone(),
                status: NodeStatus::Alive,
                registered_at_ms,
                updated_at_ms: at,
            },
        );
        Response::Done
    }

    /// A failed node alive again; a retired one stays retired.
    fn node_recovered(&mut self, at: u64, node: NodeId) -> Response {
        match self.nodes.get_mut(&node) {
            None => Response::Ignored {
                reason: format!("unknown node {node}"),
            },
            Some(n) if n.status != NodeStatus::Failed => Response::Ignored {
                reason: format!("node {node} is {:?}, not failed", n.status),
            },
            Some(n) => {
                n.status = NodeStatus::Alive;
                n.updated_at_ms = at;
                Response::Done
            }
        }
    }

    /// Removes the jobs of `ids` that may go (see [`collectable`](Self::collectable)), in
    /// order, with what only they used: their idempotency key, submitter, step outputs,
    /// rerun base and end time; a workflow goes with its last job.
    fn collect(&mut self, ids: &[JobId]) -> Response {
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
            if let Some(k) = &job.spec.idempotency_key {
                if self.idempotency.get(k) == Some(&id) {
                    self.idempotency.remove(k);
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
    fn collectable_by(
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
    fn order(&mut self, id: JobId, t: u64, add: bool) {
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

    /// The state hash under `Feature::JobDigestsCoverTheirRecords`: what the state keeps
    /// per job is in that job's digest (kept up to date as jobs change), so a hash costs
    /// the jobs changed since the last one plus the parts that are not per job (workflows,
    /// nodes, the answered-request table, tokens, crons, rules, features). The
    /// idempotency keys are not hashed apart: each names the one held job whose spec has
    /// it, which the job digests cover.
    fn hash_by_job(&self) -> [u8; 32] {
        let record = |id: JobId| -> Vec<u8> {
            postcard::to_stdvec(&(
                self.ended_at.get(&id),
                self.retain.get(&id),
                self.outputs.get(&id),
                self.rerun_base.get(&id),
                self.acl.submitter(id),
            ))
            .expect("records always encode")
        };
        #[derive(Serialize)]
        struct View<'a> {
            jobs: u64,
            jobs_digest: [u8; 32],
            workflows: &'a BTreeMap<WorkflowId, Workflow>,
            nodes: &'a BTreeMap<NodeId, Node>,
            next_job: JobId,
            next_workflow: WorkflowId,
            checkpoints: &'a BTreeMap<u64, [u8; 32]>,
            counters: &'a Counters,
            last_applied: Option<u64>,
            requests: &'a Requests,
            tokens: Vec<u8>,
            crons: &'a crate::cron::Crons,
            rules: &'a Option<Rules>,
            features: &'a BTreeSet<Feature>,
        }
        let view = View {
            jobs: self.jobs.len() as u64,
            jobs_digest: self.digests.of(&self.jobs, Some(&record)),
            workflows: &self.workflows,
            nodes: &self.nodes,
            next_job: self.next_job,
            next_workflow: self.next_workflow,
            checkpoints: &self.checkpoints,
            counters: &self.counters,
            last_applied: self.last_applied,
            requests: &self.requests,
            tokens: self.acl.tokens_encoded(),
            crons: &self.crons,
            rules: &self.rules,
            features: &self.features,
        };
        *blake3::hash(&postcard::to_stdvec(&view).expect("state always encodes")).as_bytes()
    }

    /// Whether the idempotency keys are what the jobs make them: each names the held job
    /// whose spec has it (what `hash_by_job` relies on).
    pub fn idempotency_consistent(&self) -> bool {
        let derived: BTreeMap<String, JobId> = self
            .jobs
            .values()
            .filter_map(|j| j.spec.idempotency_key.clone().map(|k| (k, j.id)))
            .collect();
        derived == self.idempotency
    }

    /// Keep the jobs collections remove, for [`take_collected`](Self::take_collected).
    pub fn keep_collected(&mut self, on: bool) {
        self.keep_collected = on;
    }

    /// The jobs collected since the last call, with what they carried, oldest first.
    pub fn take_collected(&mut self) -> Vec<Collected> {
        std::mem::take(&mut self.collected)
    }

    /// The id the next job will get: every job ever submitted has a lower one.
    pub fn next_job_id(&self) -> JobId {
        self.next_job
    }

    /// When job `id` ended, under rules.
    pub fn ended_at(&self, id: JobId) -> Option<u64> {
        self.ended_at.get(&id).copied()
    }

    /// Marks a node failed or retired; its attempts in flight are lost and retried (or fail).
    fn node_down(&mut self, at: u64, node: NodeId, status: NodeStatus) -> Response {
        let Some(n) = self.nodes.get_mut(&node) else {
            return Response::Ignored {
                reason: format!("unknown node {node}"),
            };
        };
        n.status = status;
        n.updated_at_ms = at;
        let lost: Vec<JobId> = self
            .index
            .active
            .get(&node)
            .map_or(Vec::new(), |ids| ids.iter().copied().collect());
        for job in lost {
            self.end_attempt(
                at,
                job,
                Outcome {
                    exit: Exit::Lost,
                    duration_ms: 0,
                    output_tail: Vec::new(),
                },
            );
        }
        Response::Done
    }

    /// The state hash (BLAKE3, 32 bytes) over the canonical encoding of everything but the
    /// jobs, their count and the sum of their digests (see `JobDigests`): equal states give
    /// equal hashes on every node and in every replay.
    pub fn hash(&self) -> [u8; 32] {
        if self
            .features
            .contains(&Feature::JobDigestsCoverTheirRecords)
        {
            return self.hash_by_job();
        }
        let view = HashView {
            jobs: self.jobs.len() as u64,
            jobs_digest: self.digests.of(&self.jobs, None),
            workflows: &self.workflows,
            nodes: &self.nodes,
            idempotency: &self.idempotency,
            next_job: self.next_job,
            next_workflow: self.next_workflow,
            checkpoints: &self.checkpoints,
            counters: &self.counters,
            last_applied: self.last_applied,
            requests: &self.requests,
        };
        let hash = blake3::hash(&postcard::to_stdvec(&view).expect("state always encodes"));
        if self.acl.is_empty()
            && self.crons.is_empty()
            && self.rerun_base.is_empty()
            && self.outputs.is_empty()
            && self.rules.is_none()
            && self.ended_at.is_empty()
            && self.retain.is_empty()
        {
            return *hash.as_bytes();
        }
        let mut h = blake3::Hasher::new();
        h.update(hash.as_bytes());
        if !self.acl.is_empty() {
            h.update(&postcard::to_stdvec(&self.acl).expect("state always encodes"));
        }
        if !self.crons.is_empty() {
            h.update(b"crons");
            h.update(&postcard::to_stdvec(&self.crons).expect("state always encodes"));
        }
        if !self.rerun_base.is_empty() {
            h.update(b"reruns");
            h.update(&postcard::to_stdvec(&self.rerun_base).expect("state always encodes"));
        }
        if !self.outputs.is_empty() {
            h.update(b"outputs");
            h.update(&postcard::to_stdvec(&self.outputs).expect("state always encodes"));
        }
        if let Some(rules) = &self.rules {
            h.update(b"rules");
            h.update(&postcard::to_stdvec(rules).expect("state always encodes"));
        }
        if !self.ended_at.is_empty() {
            h.update(b"ended");
            h.update(&postcard::to_stdvec(&self.ended_at).expect("state always encodes"));
        }
        if !self.retain.is_empty() {
            h.update(b"retain");
            h.update(&postcard::to_stdvec(&self.retain).expect("state always encodes"));
        }
        *h.finalize().as_bytes()
    }

    /// Access control: tokens, and who submitted which job.
    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// The rules of apply, once a `SetRules` entry set them.
    pub fn rules(&self) -> Option<Rules> {
        self.rules
    }

    /// The crons.
    pub fn crons(&self) -> &crate::cron::Crons {
        &self.crons
    }

    /// Whether what a cron launched last (a job, or any job of a workflow) has not ended.
    pub fn cron_active(&self, current: Option<crate::cron::Launched>) -> bool {
        use crate::cron::Launched;
        match current {
            None => false,
            Some(Launched::Job(id)) => self.jobs.state(&id).is_some_and(|s| !s.is_final()),
            Some(Launched::Workflow(w)) => self.workflows.get(&w).is_some_and(|w| {
                w.jobs
                    .values()
                    .any(|id| self.jobs.state(id).is_some_and(|s| !s.is_final()))
            }),
        }
    }

    fn apply_cron(&mut self, at: u64, op: &crate::cron::CronOp) -> Response {
        use crate::cron::{CronOp, Fire, FireOutcome, SkipReason, CRON_FIRES_PER_ENTRY_MAX};
        if let Err(e) = self.crons.check(op) {
            self.counters.rejected_commands += 1;
            return Response::Rejected(e);
        }
        let ignored = |reason: &str| Response::Ignored {
            reason: reason.to_string(),
        };
        match op {
            CronOp::Create(spec) => {
                self.crons.create(at, (**spec).clone());
                Response::Done
            }
            CronOp::SetPaused { name, paused } => {
                let c = self.crons.get_mut(name).expect("checked");
                c.paused = *paused;
                // Fires a pause covered are not owed: the schedule resumes from now.
                if !*paused {
                    c.last_scheduled_ms = c.last_scheduled_ms.max(at);
                }
                Response::Done
            }
            CronOp::Delete { name } => {
                self.crons.remove(name);
                Response::Done
            }
            CronOp::Fire {
                name,
                late,
                scheduled,
            } => {
                let Some(c) = self.crons.get(name) else {
                    return ignored("no such cron");
                };
                if c.paused {
                    return ignored("the cron is paused");
                }
                // Each scheduled time is decided once: a fire at or before the last one
                // decided (a second leader's copy, a clock that went back) changes nothing.
                let mut after = c.last_scheduled_ms;
                if let Some(l) = late {
                    if l.first_ms <= after || l.last_ms < l.first_ms || l.count == 0 {
                        return ignored("fire already decided");
                    }
                    after = l.last_ms;
                }
                for t in scheduled {
                    if *t <= after {
                        return ignored("fire already decided");
                    }
                    after = *t;
                }
                if scheduled.len() > CRON_FIRES_PER_ENTRY_MAX {
                    return ignored("too many fires in one entry");
                }
                if let Some(l) = *late {
                    let c = self.crons.get_mut(name).expect("present");
                    c.record(Fire {
                        scheduled_ms: l.first_ms,
                        through_ms: l.last_ms,
                        count: l.count,
                        decided_at_ms: at,
                        outcome: FireOutcome::Skipped(SkipReason::Late),
                    });
                    c.last_scheduled_ms = l.last_ms;
                }
                for &t in scheduled {
                    let c = &self.crons.map[name];
                    let active = self.cron_active(c.current);
                    let outcome = match (c.spec.overlap, active) {
                        (crate::cron::Overlap::Skip, true) => {
                            FireOutcome::Skipped(SkipReason::Overlap)
                        }
                        (crate::cron::Overlap::Queue, true) => {
                            if c.queued.len() >= crate::cron::CRON_QUEUE_MAX {
                                FireOutcome::Skipped(SkipReason::QueueFull)
                            } else {
                                FireOutcome::Queued
                            }
                        }
                        _ => self.launch_cron(name, at, t),
                    };
                    let c = self.crons.get_mut(name).expect("present");
                    if outcome == FireOutcome::Queued {
                        c.queued.push_back(t);
                    }
                    c.record(Fire {
                        scheduled_ms: t,
                        through_ms: t,
                        count: 1,
                        decided_at_ms: at,
                        outcome,
                    });
                    c.last_scheduled_ms = t;
                }
                Response::Done
            }
            CronOp::RunQueued { name, scheduled_ms } => {
                let Some(c) = self.crons.get(name) else {
                    return ignored("no such cron");
                };
                if c.queued.front() != Some(scheduled_ms) || self.cron_active(c.current) {
                    return ignored("not the next queued fire, or the current run is active");
                }
                let outcome = self.launch_cron(name, at, *scheduled_ms);
                let c = self.crons.get_mut(name).expect("present");
                c.queued.pop_front();
                c.record(Fire {
                    scheduled_ms: *scheduled_ms,
                    through_ms: *scheduled_ms,
                    count: 1,
                    decided_at_ms: at,
                    outcome,
                });
                Response::Done
            }
        }
    }

    /// Submits what cron `name` launches for its fire at `scheduled_ms`.
    fn launch_cron(&mut self, name: &str, at: u64, scheduled_ms: u64) -> crate::cron::FireOutcome {
        use crate::cron::{CronTarget, FireOutcome, Launched};
        match self.crons.map[name].stamped(scheduled_ms) {
            CronTarget::Job(spec) => match self.check_spec(&spec) {
                Ok(()) => FireOutcome::Launched(Launched::Job(self.create_job(at, *spec, None))),
                Err(e) => FireOutcome::Failed(e.to_string()),
            },
            CronTarget::Workflow { name, jobs } => match self.submit_workflow(at, &name, &jobs) {
                Response::WorkflowSubmitted { workflow, .. } => {
                    FireOutcome::Launched(Launched::Workflow(workflow))
                }
                Response::Rejected(e) => FireOutcome::Failed(e.to_string()),
                other => FireOutcome::Failed(format!("{other:?}")),
            },
        }
    }

    /// What a snapshot encodes, in order: the version, the state, then the parts added
    /// after version 1 (each read only from the version that added it).
    #[allow(clippy::type_complexity)]
    fn snapshot_parts(
        &self,
    ) -> (
        u16,
        EncodedJobs<'_>,
        &Self,
        &Requests,
        &Acl,
        &crate::cron::Crons,
        &BTreeMap<JobId, u32>,
        &BTreeMap<JobId, BTreeMap<String, String>>,
        &Option<Rules>,
        &imbl::OrdMap<JobId, u64>,
        &BTreeMap<JobId, u64>,
        &BTreeSet<Feature>,
    ) {
        (
            SNAPSHOT_VERSION,
            EncodedJobs(&self.jobs),
            self,
            &self.requests,
            &self.acl,
            &self.crons,
            &self.rerun_base,
            &self.outputs,
            &self.rules,
            &self.ended_at,
            &self.retain,
            &self.features,
        )
    }

    /// A copy of what a snapshot encodes, for writing it beside apply: the jobs and their
    /// end times are shared (O(1)); the derived parts (job digests, indexes) are left out —
    /// a copy to encode, never to apply to (a snapshot loaded back rebuilds them).
    pub fn snapshot_copy(&self) -> ClusterState {
        ClusterState {
            jobs: self.jobs.clone(),
            workflows: self.workflows.clone(),
            nodes: self.nodes.clone(),
            idempotency: self.idempotency.clone(),
            next_job: self.next_job,
            next_workflow: self.next_workflow,
            checkpoints: self.checkpoints.clone(),
            counters: self.counters.clone(),
            last_applied: self.last_applied,
            digests: JobDigests::default(),
            index: JobIndex::default(),
            requests: self.requests.clone(),
            acl: self.acl.clone(),
            crons: self.crons.clone(),
            rerun_base: self.rerun_base.clone(),
            outputs: self.outputs.clone(),
            rules: self.rules,
            ended_at: self.ended_at.clone(),
            ended_order: imbl::OrdSet::new(),
            retain: self.retain.clone(),
            own_due: imbl::OrdSet::new(),
            features: self.features.clone(),
            collected: Vec::new(),
            keep_collected: false,
            attempts_ended: Tally::default(),
            recorder: Recorder::default(),
        }
    }

    /// The state as snapshot bytes (versioned).
    pub fn to_snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(&self.snapshot_parts()).expect("state always encodes")
    }

    /// Streams the state's snapshot encoding (the same bytes as [`to_snapshot`]) into `w`,
    /// without building it in memory first.
    ///
    /// [`to_snapshot`]: ClusterState::to_snapshot
    pub fn write_snapshot<W: std::io::Write>(&self, w: W) -> std::io::Result<()> {
        let w = std::io::BufWriter::with_capacity(1 << 16, w);
        postcard::to_io(&self.snapshot_parts(), w)
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// A state from snapshot bytes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<ClusterState> {
        let (version, rest): (u16, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| ConsensusError::Decode(e.to_string()))?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(ConsensusError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        // Each version appends parts after the previous one's, so a part is read only
        // from the version that added it on.
        let mut rest = rest;
        fn next<'a, T: Deserialize<'a>>(rest: &mut &'a [u8]) -> Result<T> {
            let (value, tail) = postcard::take_from_bytes(rest)
                .map_err(|e| ConsensusError::Decode(e.to_string()))?;
            *rest = tail;
            Ok(value)
        }
        // The jobs: to version 7 a map of jobs (where the derived encoding of the state
        // put its first field), from version 8 each job as its encoding, with its state.
        let (count, tail): (usize, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| ConsensusError::Decode(e.to_string()))?;
        rest = tail;
        let mut jobs = Jobs::default();
        for _ in 0..count {
            if version >= 8 {
                let (id, state, bytes): (JobId, JobState, &[u8]) = next(&mut rest)?;
                jobs.insert_encoded(id, state, bytes);
            } else {
                let (id, job): (JobId, Job) = next(&mut rest)?;
                jobs.insert(id, job);
                jobs.settle(&id);
            }
        }
        let mut state: ClusterState = next(&mut rest)?;
        state.jobs = jobs;
        if version >= 2 {
            state.requests = next(&mut rest)?;
        }
        if version >= 3 {
            state.acl = next(&mut rest)?;
            state.acl.reindex();
        }
        if version >= 4 {
            state.crons = next(&mut rest)?;
            state.rerun_base = next(&mut rest)?;
            state.outputs = next(&mut rest)?;
        }
        if version >= 5 {
            state.rules = next(&mut rest)?;
        }
        if version >= 6 {
            state.ended_at = next(&mut rest)?;
        }
        if version >= 7 {
            state.retain = next(&mut rest)?;
        }
        if version >= 8 {
            state.features = next(&mut rest)?;
        }
        let ended: Vec<(JobId, u64)> = state.ended_at.iter().map(|(id, t)| (*id, *t)).collect();
        for (id, t) in ended {
            state.order(id, t, true);
        }
        state.index = JobIndex::rebuilt(&state.jobs);
        Ok(state)
    }

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

    // Queries for the server and the scheduler.

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
        | Command::CancelJob { .. }
        | Command::RerunWorkflow { .. } => Ok(()),
        other => Err(Invalid::new(
            "authored",
            format!("a {} is not written under a token", other.kind()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Capacity, RetryPolicy, Role};

    fn node(id: NodeId) -> Command {
        Command::NodeRegistered {
            at_ms: 0,
            node: NodeInfo {
                id,
                address: format!("127.0.0.1:{}", 7000 + id),
                role: Role::Worker,
                tags: BTreeMap::new(),
                capacity: Capacity {
                    slots: 4,
                    cpu_millis: 4000,
                    memory_bytes: 1 << 30,
                },
            },
        }
    }

    fn submit(s: &mut ClusterState, i: &mut u64, spec: JobSpec) -> JobId {
        *i += 1;
        match s.apply(
            *i,
            &Command::SubmitJobs {
                at_ms: 10,
                jobs: vec![spec],
            },
        ) {
            Response::Submitted { jobs } => jobs[0],
            other => panic!("submit: {other:?}"),
        }
    }

    fn run(
        s: &mut ClusterState,
        i: &mut u64,
        at: u64,
        job: JobId,
        attempt: u32,
        n: NodeId,
        exit: Exit,
    ) {
        *i += 1;
        let r = s.apply(
            *i,
            &Command::AssignTasks {
                at_ms: at,
                assignments: vec![Assignment {
                    job,
                    attempt,
                    node: n,
                }],
            },
        );
        assert_eq!(
            r,
            Response::Assigned {
                accepted: 1,
                ignored: 0
            },
            "assign {job}#{attempt}"
        );
        *i += 1;
        assert_eq!(
            s.apply(
                *i,
                &Command::TaskStarted {
                    at_ms: at,
                    job,
                    attempt,
                    node: n
                }
            ),
            Response::Done
        );
        *i += 1;
        let outcome = Outcome {
            exit,
            duration_ms: 5,
            output_tail: b"out".to_vec(),
        };
        assert_eq!(
            s.apply(
                *i,
                &Command::TaskFinished {
                    at_ms: at + 5,
                    job,
                    attempt,
                    node: n,
                    outcome
                }
            ),
            Response::Done
        );
    }

    #[test]
    fn a_job_runs_and_succeeds_once() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let j = submit(&mut s, &mut i, JobSpec::new("hello", &["echo", "hello"]));
        assert_eq!(s.runnable(10).map(|j| j.id).collect::<Vec<_>>(), vec![j]);
        run(&mut s, &mut i, 20, j, 1, 1, Exit::Code(0));
        assert_eq!(s.job(j).unwrap().state, JobState::Succeeded);
        // A late duplicate report is fenced and changes nothing.
        let before = s.clone();
        let late = Command::TaskFinished {
            at_ms: 99,
            job: j,
            attempt: 1,
            node: 1,
            outcome: Outcome {
                exit: Exit::Code(1),
                duration_ms: 0,
                output_tail: vec![],
            },
        };
        assert!(matches!(s.apply(100, &late), Response::Ignored { .. }));
        assert_eq!(s.counters().fenced_reports, 1);
        assert_eq!(s.jobs, before.jobs);
    }

    #[test]
    fn retries_wait_for_backoff_from_the_proposers_clock() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let mut spec = JobSpec::new("flaky", &["false"]);
        spec.retry = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            multiplier_milli: 2000,
        };
        let j = submit(&mut s, &mut i, spec);
        run(&mut s, &mut i, 20, j, 1, 1, Exit::Code(1));
        let job = s.job(j).unwrap();
        assert_eq!(
            (job.state, job.not_before_ms),
            (JobState::Pending, 25 + 100)
        );
        assert!(s.runnable(124).next().is_none() && s.runnable(125).count() == 1);
        // Assigning before the backoff ends is ignored.
        i += 1;
        let early = Command::AssignTasks {
            at_ms: 50,
            assignments: vec![Assignment {
                job: j,
                attempt: 2,
                node: 1,
            }],
        };
        assert_eq!(
            s.apply(i, &early),
            Response::Assigned {
                accepted: 0,
                ignored: 1
            }
        );
        run(&mut s, &mut i, 200, j, 2, 1, Exit::Signal(9));
        assert_eq!(s.job(j).unwrap().not_before_ms, 205 + 200);
        run(&mut s, &mut i, 500, j, 3, 1, Exit::Code(0));
        let job = s.job(j).unwrap();
        assert_eq!((job.state, job.attempts.len()), (JobState::Succeeded, 3));
    }

    #[test]
    fn failure_cancels_dependents_and_says_why() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let a = submit(&mut s, &mut i, JobSpec::new("a", &["false"]));
        let b = submit(
            &mut s,
            &mut i,
            JobSpec {
                depends_on: vec![a],
                ..JobSpec::new("b", &["true"])
            },
        );
        let c = submit(
            &mut s,
            &mut i,
            JobSpec {
                depends_on: vec![b],
                ..JobSpec::new("c", &["true"])
            },
        );
        assert_eq!(s.runnable(10).count(), 1, "only a is runnable");
        run(&mut s, &mut i, 20, a, 1, 1, Exit::Code(2));
        assert_eq!(s.job(a).unwrap().state, JobState::Failed);
        assert_eq!(
            s.job(b).unwrap().reason.as_deref(),
            Some("dependency 1 failed")
        );
        assert_eq!(
            s.job(c).unwrap().reason.as_deref(),
            Some("dependency 2 cancelled")
        );
        // A job submitted later on a failed dependency never runs either.
        let d = submit(
            &mut s,
            &mut i,
            JobSpec {
                depends_on: vec![a],
                ..JobSpec::new("d", &["true"])
            },
        );
        assert_eq!(s.job(d).unwrap().state, JobState::Cancelled);
    }

    /// A three-step workflow fails in the middle; the rerun from it keeps the first step's
    /// success, runs the middle and last steps again (the middle with a fresh retry
    /// budget), keeps every earlier attempt, and survives a snapshot.
    #[test]
    fn a_rerun_from_a_failed_middle_step_keeps_upstream_and_history() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let step = |key: &str, after: &[&str]| WorkflowJob {
            key: key.into(),
            spec: JobSpec::new(key, &["true"]),
            after: after.iter().map(|a| a.to_string()).collect(),
        };
        i += 1;
        let Response::WorkflowSubmitted { workflow, jobs } = s.apply(
            i,
            &Command::SubmitWorkflow {
                at_ms: 0,
                name: "w".into(),
                jobs: vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])],
            },
        ) else {
            panic!("submitted")
        };
        let (a, b, c) = (jobs["a"], jobs["b"], jobs["c"]);
        run(&mut s, &mut i, 10, a, 1, 1, Exit::Code(0));
        run(&mut s, &mut i, 20, b, 1, 1, Exit::Code(1));
        assert_eq!(s.job(c).unwrap().state, JobState::Cancelled);
        let rerun = |s: &mut ClusterState, i: &mut u64, from| {
            *i += 1;
            s.apply(
                *i,
                &Command::RerunWorkflow {
                    at_ms: 30,
                    workflow,
                    from,
                },
            )
        };
        // Not from a succeeded job, nor from another workflow's.
        assert!(matches!(rerun(&mut s, &mut i, a), Response::Rejected(_)));
        assert!(s
            .check(&Command::RerunWorkflow {
                at_ms: 0,
                workflow: 9,
                from: b
            })
            .is_err());
        assert_eq!(
            rerun(&mut s, &mut i, b),
            Response::Submitted { jobs: vec![b, c] }
        );
        assert_eq!(s.job(a).unwrap().state, JobState::Succeeded);
        assert_eq!(s.job(b).unwrap().state, JobState::Pending);
        assert_eq!(s.job(c).unwrap().state, JobState::Pending);
        assert_eq!(s.runnable(30).map(|j| j.id).collect::<Vec<_>>(), vec![b]);
        // Attempt 2 of b: its budget (1 attempt) counts from the rerun.
        run(&mut s, &mut i, 40, b, 2, 1, Exit::Code(0));
        run(&mut s, &mut i, 50, c, 1, 1, Exit::Code(0));
        let jb = s.job(b).unwrap();
        assert_eq!(
            jb.attempts.len(),
            2,
            "the failed attempt stays in the history"
        );
        assert_eq!(jb.state, JobState::Succeeded);
        assert_eq!(s.job(c).unwrap().state, JobState::Succeeded);
        assert!(s.indexes_consistent());
        let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.hash(), s.hash());
        // Nothing left to rerun: b succeeded.
        assert!(matches!(rerun(&mut s, &mut i, b), Response::Rejected(_)));
    }

    /// Applies one command at the next index.
    fn step(s: &mut ClusterState, i: &mut u64, c: Command) -> Response {
        *i += 1;
        s.apply(*i, &c)
    }

    fn assign(s: &mut ClusterState, i: &mut u64, at: u64, job: JobId, attempt: u32, node: NodeId) {
        let r = step(
            s,
            i,
            Command::AssignTasks {
                at_ms: at,
                assignments: vec![Assignment { job, attempt, node }],
            },
        );
        assert_eq!(
            r,
            Response::Assigned {
                accepted: 1,
                ignored: 0
            }
        );
    }

    /// Assigns `job`'s `attempt` to `node` at `at`, reports it started, then fails the node.
    fn lose_started(
        s: &mut ClusterState,
        i: &mut u64,
        at: u64,
        job: JobId,
        attempt: u32,
        node: NodeId,
    ) {
        assign(s, i, at, job, attempt, node);
        step(
            s,
            i,
            Command::TaskStarted {
                at_ms: at + 1,
                job,
                attempt,
                node,
            },
        );
        step(
            s,
            i,
            Command::NodeFailed {
                at_ms: at + 2,
                node,
            },
        );
    }

    #[test]
    fn under_rules_a_lost_attempt_is_requeued_and_counted_apart_from_retries() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        for n in 1..=6 {
            step(&mut s, &mut i, node(n));
        }
        let before = s.hash();
        let rules = Rules { lost_retries: 2 };
        assert_eq!(
            step(&mut s, &mut i, Command::SetRules { at_ms: 1, rules }),
            Response::Done
        );
        assert_eq!(s.rules(), Some(rules));
        assert_ne!(s.hash(), before, "the rules are part of the state");
        // Default retries: one attempt of its own.
        let j = submit(&mut s, &mut i, JobSpec::new("j", &["true"]));
        // Lost before its start was committed: queued again at once, counted nowhere.
        assign(&mut s, &mut i, 20, j, 1, 1);
        step(&mut s, &mut i, Command::NodeFailed { at_ms: 21, node: 1 });
        let job = s.job(j).unwrap();
        assert_eq!((job.state, job.not_before_ms), (JobState::Pending, 21));
        // Lost after it started, twice: within the budget of two.
        for (attempt, n) in [(2, 2), (3, 3)] {
            let at = 30 + 10 * u64::from(attempt);
            lose_started(&mut s, &mut i, at, j, attempt, n);
            let job = s.job(j).unwrap();
            assert_eq!((job.state, job.not_before_ms), (JobState::Pending, at + 2));
        }
        // Its own attempt still counts as its first: an exit fails it (retries 0), and the
        // reason names one attempt.
        run(&mut s, &mut i, 70, j, 4, 4, Exit::Code(2));
        let job = s.job(j).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.reason.as_deref(),
            Some("exited with status 2 after 1 attempt(s)")
        );
        // A third loss after the start spends the budget: failed, saying why.
        let k = submit(&mut s, &mut i, JobSpec::new("k", &["true"]));
        for (attempt, n) in [(1, 4), (2, 5), (3, 6)] {
            let at = 100 + 10 * u64::from(attempt);
            lose_started(&mut s, &mut i, at, k, attempt, n);
        }
        let job = s.job(k).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.reason.as_deref(),
            Some("lost with its node 3 time(s) (lost retries: 2)")
        );
        // Losses before the start are free only up to LOST_BEFORE_START_FREE; past them
        // they spend the budget too.
        let m = submit(&mut s, &mut i, JobSpec::new("m", &["true"]));
        let free = limits::LOST_BEFORE_START_FREE;
        for attempt in 1..=free + 3 {
            let at = 1000 + 10 * u64::from(attempt);
            let n = 1 + u64::from(attempt) % 6;
            if s.node(n).unwrap().status != NodeStatus::Alive {
                step(
                    &mut s,
                    &mut i,
                    Command::NodeRecovered { at_ms: at, node: n },
                );
            }
            assign(&mut s, &mut i, at, m, attempt, n);
            step(
                &mut s,
                &mut i,
                Command::NodeFailed {
                    at_ms: at + 1,
                    node: n,
                },
            );
            let want = if attempt <= free + 2 {
                JobState::Pending
            } else {
                JobState::Failed
            };
            assert_eq!(
                s.job(m).unwrap().state,
                want,
                "after {attempt} unstarted losses"
            );
        }
        // The rules survive a snapshot, and so does the hash.
        let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.rules(), Some(rules));
        assert_eq!(back.hash(), s.hash());
        // Past the bound: refused by check and by apply, the rules unchanged.
        let too_many = Command::SetRules {
            at_ms: 200,
            rules: Rules {
                lost_retries: limits::LOST_RETRIES_MAX + 1,
            },
        };
        assert!(s.check(&too_many).is_err());
        assert!(matches!(
            step(&mut s, &mut i, too_many),
            Response::Rejected(_)
        ));
        assert_eq!(s.rules(), Some(rules));
    }

    #[test]
    fn a_job_with_a_retention_of_its_own_is_due_by_it_and_one_kept_never() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.keep_collected(true);
        step(&mut s, &mut i, node(1));
        step(
            &mut s,
            &mut i,
            Command::SetRules {
                at_ms: 1,
                rules: Rules::default(),
            },
        );
        let with = |options: Vec<Vec<JobOption>>, jobs: Vec<JobSpec>| Command::WithJobOptions {
            options,
            command: Box::new(Command::SubmitJobs { at_ms: 10, jobs }),
        };
        // Three jobs in one submission: 100 ms of its own, kept, the cluster's.
        let r = step(
            &mut s,
            &mut i,
            with(
                vec![
                    vec![JobOption::RetainMs(100)],
                    vec![JobOption::RetainMs(0)],
                    vec![],
                ],
                vec![
                    JobSpec::new("short", &["true"]),
                    JobSpec::new("kept", &["true"]),
                    JobSpec::new("plain", &["true"]),
                ],
            ),
        );
        let Response::Submitted { jobs } = r else {
            panic!("submitted: {r:?}")
        };
        let (short, kept, plain) = (jobs[0], jobs[1], jobs[2]);
        assert_eq!(s.retain_of(short), Some(100));
        assert_eq!(s.retain_of(kept), Some(0));
        assert_eq!(s.retain_of(plain), None);
        for j in [short, kept, plain] {
            run(&mut s, &mut i, 10, j, 1, 1, Exit::Code(0));
        }
        assert!(s.indexes_consistent());
        // Ended at 15: the short one is due at 115, whatever the cluster keeps.
        assert!(s.collection_due(114, 0, 100).is_empty());
        assert_eq!(s.collection_due(115, 0, 100), vec![short]);
        assert_eq!(s.collection_due(115, 1_000_000, 100), vec![short]);
        // The cluster's retention takes the plain one; the kept one never goes.
        assert_eq!(s.collection_due(1_015, 1_000, 100), vec![short, plain]);
        assert_eq!(
            s.collection_due(u64::MAX, 1, 100),
            vec![plain, short],
            "earliest due first"
        );
        assert_eq!(s.due_at(kept, 1), None);
        // Snapshots and hashes carry the retentions; the derived order is rebuilt.
        let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.hash(), s.hash());
        assert_eq!(back.collection_due(115, 0, 100), vec![short]);
        assert!(back.indexes_consistent());
        let Response::Collected { jobs, .. } = step(
            &mut s,
            &mut i,
            Command::Collect {
                at_ms: 200,
                jobs: vec![short],
            },
        ) else {
            panic!("collected")
        };
        assert_eq!(jobs, vec![short]);
        assert_eq!(s.take_collected()[0].retain_ms, Some(100));
        assert_eq!(s.retain_of(short), None, "the retention goes with its job");
        assert!(s.indexes_consistent());
        // A repeated idempotency key does not take the new options.
        let mut keyed = JobSpec::new("keyed", &["true"]);
        keyed.idempotency_key = Some("k".into());
        let first = submit(&mut s, &mut i, keyed.clone());
        let r = step(
            &mut s,
            &mut i,
            with(vec![vec![JobOption::RetainMs(5)]], vec![keyed]),
        );
        assert_eq!(r, Response::Submitted { jobs: vec![first] });
        assert_eq!(s.retain_of(first), None);
        // Options that do not fit the submission, or past their bound, are refused whole.
        let before = s.next_job_id();
        for bad in [
            with(vec![], vec![JobSpec::new("x", &["true"])]),
            with(
                vec![vec![JobOption::RetainMs(limits::JOB_RETAIN_MS_MAX + 1)]],
                vec![JobSpec::new("x", &["true"])],
            ),
            with(
                vec![vec![JobOption::RetainMs(1), JobOption::RetainMs(2)]],
                vec![JobSpec::new("x", &["true"])],
            ),
        ] {
            assert!(s.check(&bad).is_err(), "{bad:?}");
            assert!(matches!(step(&mut s, &mut i, bad), Response::Rejected(_)));
        }
        assert_eq!(s.next_job_id(), before, "nothing accepted");
    }

    #[test]
    fn collection_removes_only_what_nothing_unfinished_needs_and_workflows_as_units() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.keep_collected(true);
        step(&mut s, &mut i, node(1));
        step(
            &mut s,
            &mut i,
            Command::SetRules {
                at_ms: 1,
                rules: Rules::default(),
            },
        );
        let mut keyed = JobSpec::new("keyed", &["true"]);
        keyed.idempotency_key = Some("k1".into());
        let done = submit(&mut s, &mut i, keyed.clone());
        run(&mut s, &mut i, 10, done, 1, 1, Exit::Code(0));
        assert_eq!(
            s.ended_at(done),
            Some(15),
            "the end time of the entry that ended it"
        );
        // A dependency of a job still pending stays.
        let dep = submit(&mut s, &mut i, JobSpec::new("dep", &["true"]));
        run(&mut s, &mut i, 20, dep, 1, 1, Exit::Code(0));
        let mut waiting = JobSpec::new("waiting", &["true"]);
        waiting.depends_on = vec![dep];
        waiting.constraints.insert("zone".into(), "mars".into());
        let w = submit(&mut s, &mut i, waiting);
        // A workflow: a ended, b still pending: neither goes.
        let stepw = |key: &str, after: &[&str]| WorkflowJob {
            key: key.into(),
            spec: JobSpec::new(key, &["true"]),
            after: after.iter().map(|a| a.to_string()).collect(),
        };
        let Response::WorkflowSubmitted { workflow, jobs } = step(
            &mut s,
            &mut i,
            Command::SubmitWorkflow {
                at_ms: 30,
                name: "w".into(),
                jobs: vec![stepw("a", &[]), stepw("b", &["a"])],
            },
        ) else {
            panic!("submitted")
        };
        let (a, b) = (jobs["a"], jobs["b"]);
        run(&mut s, &mut i, 40, a, 1, 1, Exit::Code(0));
        assert_eq!(s.collection_due(u64::MAX, 1, 100), vec![done]);
        let before = s.clone();
        let r = step(
            &mut s,
            &mut i,
            Command::Collect {
                at_ms: 50,
                jobs: vec![done, dep, w, a, 999],
            },
        );
        assert_eq!(
            r,
            Response::Collected {
                jobs: vec![done],
                kept: 4
            }
        );
        assert!(s.job(done).is_none() && s.job(dep).is_some() && s.job(a).is_some());
        assert!(s.indexes_consistent());
        let archived = s.take_collected();
        assert_eq!(archived.len(), 1);
        assert_eq!(archived[0].job, *before.job(done).unwrap());
        assert_eq!(archived[0].ended_at_ms, Some(15));
        // Its idempotency key went with it: the same key makes a new job.
        let again = submit(&mut s, &mut i, keyed);
        assert_ne!(again, done);
        // The workflow goes as a unit once b ended, and takes its record with it.
        run(&mut s, &mut i, 60, b, 1, 1, Exit::Code(0));
        assert!(
            s.collection_due(65, 1, 100).is_empty(),
            "a (ended at 45) waits for b (ended at 65)"
        );
        assert_eq!(s.collection_due(66, 1, 100), vec![a, b]);
        step(
            &mut s,
            &mut i,
            Command::Collect {
                at_ms: 70,
                jobs: vec![a, b],
            },
        );
        assert!(s.workflow(workflow).is_none() && s.job(b).is_none());
        // Snapshots and hashes keep up.
        let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(back.hash(), s.hash());
        assert_eq!(back.ended_at(dep), Some(25));
        // A workflow job that depended on a job outside it, once that one is collected, is
        // not rerun (it would wait for it forever).
        let outside = submit(&mut s, &mut i, JobSpec::new("outside", &["true"]));
        run(&mut s, &mut i, 90, outside, 1, 1, Exit::Code(0));
        let mut x = stepw("x", &[]);
        x.spec.depends_on = vec![outside];
        let Response::WorkflowSubmitted { workflow: w2, jobs } = step(
            &mut s,
            &mut i,
            Command::SubmitWorkflow {
                at_ms: 100,
                name: "w2".into(),
                jobs: vec![x],
            },
        ) else {
            panic!("submitted")
        };
        run(&mut s, &mut i, 110, jobs["x"], 1, 1, Exit::Code(1));
        step(
            &mut s,
            &mut i,
            Command::Collect {
                at_ms: 120,
                jobs: vec![outside],
            },
        );
        assert!(s.job(outside).is_none());
        let rerun = Command::RerunWorkflow {
            at_ms: 130,
            workflow: w2,
            from: jobs["x"],
        };
        let refused = s.check(&rerun).unwrap_err();
        assert!(
            refused.to_string().contains("retention collected"),
            "{refused}"
        );
        // Past the bound: refused.
        let many = Command::Collect {
            at_ms: 80,
            jobs: (0..=limits::COLLECT_PER_ENTRY_MAX as u64).collect(),
        };
        assert!(matches!(step(&mut s, &mut i, many), Response::Rejected(_)));
    }

    #[test]
    fn a_snapshot_of_version_7_with_jobs_as_values_loads_as_written_now() {
        // To version 7 the jobs were a map of values where the state's derived encoding
        // put its first field; version 8 writes each job as its encoding.
        let (mut s, mut i) = (ClusterState::new(), 0);
        step(&mut s, &mut i, node(1));
        step(
            &mut s,
            &mut i,
            Command::SetRules {
                at_ms: 1,
                rules: Rules::default(),
            },
        );
        for k in 0..50 {
            submit(&mut s, &mut i, JobSpec::new(&format!("j{k}"), &["true"]));
        }
        for id in 1..=20 {
            run(&mut s, &mut i, 10, id, 1, 1, Exit::Code(id as i32 % 2));
        }
        let values: BTreeMap<JobId, Job> = s.jobs().map(|j| (j.id, j.into_owned())).collect();
        let v7 = postcard::to_stdvec(&(
            7u16,
            &values,
            &s,
            &s.requests,
            &s.acl,
            &s.crons,
            &s.rerun_base,
            &s.outputs,
            &s.rules,
            &s.ended_at,
            &s.retain,
        ))
        .unwrap();
        let old = ClusterState::from_snapshot(&v7).unwrap();
        let new = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(old, s);
        assert_eq!(new, s);
        assert_eq!(old.hash(), s.hash());
        assert_eq!(new.hash(), s.hash());
        assert!(old.indexes_consistent() && new.indexes_consistent());
        assert_eq!(old.job_counts(), s.job_counts());
        // A copy shares the jobs; changing the original leaves the copy as it was.
        let copy = s.clone();
        run(&mut s, &mut i, 10, 30, 1, 1, Exit::Code(0));
        assert_eq!(copy.job(30).unwrap().state, JobState::Pending);
        assert_eq!(s.job(30).unwrap().state, JobState::Succeeded);
    }

    #[test]
    fn without_rules_a_lost_attempt_spends_the_jobs_attempt_as_before() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let j = submit(&mut s, &mut i, JobSpec::new("j", &["true"]));
        assign(&mut s, &mut i, 20, j, 1, 1);
        step(&mut s, &mut i, Command::NodeFailed { at_ms: 21, node: 1 });
        let job = s.job(j).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(
            job.reason.as_deref(),
            Some("lost with its node after 1 attempt(s)")
        );
    }

    #[test]
    fn node_failure_requeues_or_fails_its_attempts_and_fences_old_reports() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        s.apply(0, &node(2));
        let mut spec = JobSpec::new("long", &["sleep", "60"]);
        spec.retry.max_attempts = 2;
        let j = submit(&mut s, &mut i, spec);
        let once = submit(&mut s, &mut i, JobSpec::new("once", &["sleep", "60"]));
        i += 1;
        s.apply(
            i,
            &Command::AssignTasks {
                at_ms: 20,
                assignments: vec![
                    Assignment {
                        job: j,
                        attempt: 1,
                        node: 1,
                    },
                    Assignment {
                        job: once,
                        attempt: 1,
                        node: 1,
                    },
                ],
            },
        );
        assert_eq!(s.running_on(1), vec![(j, 1), (once, 1)]);
        assert_eq!(s.load(1).slots, 2);
        i += 1;
        s.apply(i, &Command::NodeFailed { at_ms: 30, node: 1 });
        assert_eq!(s.job(j).unwrap().state, JobState::Pending);
        assert_eq!(s.job(once).unwrap().state, JobState::Failed);
        assert!(s.running_on(1).is_empty());
        // The old attempt's report arrives late: fenced.
        i += 1;
        let late = Command::TaskFinished {
            at_ms: 40,
            job: j,
            attempt: 1,
            node: 1,
            outcome: Outcome {
                exit: Exit::Code(0),
                duration_ms: 1,
                output_tail: vec![],
            },
        };
        assert!(matches!(s.apply(i, &late), Response::Ignored { .. }));
        // A failed node takes no assignment; the retry runs elsewhere and succeeds once.
        i += 1;
        let r = s.apply(
            i,
            &Command::AssignTasks {
                at_ms: 5000,
                assignments: vec![Assignment {
                    job: j,
                    attempt: 2,
                    node: 1,
                }],
            },
        );
        assert_eq!(
            r,
            Response::Assigned {
                accepted: 0,
                ignored: 1
            }
        );
        // Recovered, node 1 takes work again; a recovery of a node not failed is ignored.
        i += 1;
        assert_eq!(
            s.apply(i, &Command::NodeRecovered { at_ms: 41, node: 1 }),
            Response::Done
        );
        assert_eq!(s.node(1).unwrap().status, NodeStatus::Alive);
        i += 1;
        assert!(matches!(
            s.apply(i, &Command::NodeRecovered { at_ms: 42, node: 2 }),
            Response::Ignored { .. }
        ));
        run(&mut s, &mut i, 5000, j, 2, 2, Exit::Code(0));
        let succeeded = s
            .job(j)
            .unwrap()
            .attempts
            .iter()
            .filter(|a| a.outcome.as_ref().is_some_and(|o| o.succeeded()))
            .count();
        assert_eq!(succeeded, 1);
    }

    #[test]
    fn workflows_are_accepted_or_rejected_whole() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        let wj = |key: &str, after: &[&str]| WorkflowJob {
            key: key.into(),
            spec: JobSpec::new(key, &["true"]),
            after: after.iter().map(|a| a.to_string()).collect(),
        };
        let cyclic = Command::SubmitWorkflow {
            at_ms: 1,
            name: "w".into(),
            jobs: vec![
                wj("a", &["c"]),
                wj("b", &["a"]),
                wj("c", &["b"]),
                wj("d", &[]),
            ],
        };
        let before = s.hash();
        // The proposer's check finds the same problem without touching the state.
        let checked = s.check(&cyclic).unwrap_err();
        assert_eq!(s.hash(), before);
        i += 1;
        assert_eq!(s.apply(i, &cyclic), Response::Rejected(checked));
        let cyclic_again = cyclic.clone();
        match s.apply(i, &cyclic_again) {
            Response::Rejected(e) => assert!(e.reason.contains("cycle among: a, b, c"), "{e}"),
            other => panic!("{other:?}"),
        }
        let unknown = Command::SubmitWorkflow {
            at_ms: 1,
            name: "w".into(),
            jobs: vec![wj("a", &["zz"])],
        };
        i += 1;
        assert!(
            matches!(s.apply(i, &unknown), Response::Rejected(e) if e.field == "jobs[0].after")
        );
        // Rejections change nothing but the last applied index and the rejection counter.
        assert_eq!(s.jobs().count(), 0);
        assert_ne!(s.hash(), before);
        assert_eq!(s.counters().rejected_commands, 3);
        let ok = Command::SubmitWorkflow {
            at_ms: 1,
            name: "w".into(),
            jobs: vec![wj("c", &["a", "b"]), wj("a", &[]), wj("b", &["a"])],
        };
        assert_eq!(s.check(&ok), Ok(()));
        i += 1;
        let Response::WorkflowSubmitted { jobs, .. } = s.apply(i, &ok) else {
            panic!()
        };
        assert_eq!(
            s.job(jobs["c"]).unwrap().spec.depends_on,
            vec![jobs["a"], jobs["b"]]
        );
        assert_eq!(
            s.runnable(1).map(|j| j.id).collect::<Vec<_>>(),
            vec![jobs["a"]]
        );
    }

    #[test]
    fn idempotency_key_returns_the_existing_job() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        let spec = JobSpec {
            idempotency_key: Some("k1".into()),
            ..JobSpec::new("x", &["true"])
        };
        let a = submit(&mut s, &mut i, spec.clone());
        let repeat = Command::SubmitJobs {
            at_ms: 9,
            jobs: vec![spec.clone()],
        };
        assert_eq!(
            s.repeat(&repeat),
            Some(Response::Submitted { jobs: vec![a] }),
            "a proposer answers the repeat without an entry"
        );
        let b = submit(&mut s, &mut i, spec.clone());
        assert_eq!(a, b);
        assert_eq!(s.jobs().count(), 1);
        // Not a repeat while any job of the request is new.
        let mixed = Command::SubmitJobs {
            at_ms: 9,
            jobs: vec![spec.clone(), JobSpec::new("y", &["true"])],
        };
        assert_eq!(s.repeat(&mixed), None);
        // Two jobs of one request may not share a key.
        let twice = Command::SubmitJobs {
            at_ms: 9,
            jobs: vec![
                JobSpec {
                    idempotency_key: Some("k2".into()),
                    ..JobSpec::new("p", &["true"])
                },
                JobSpec {
                    idempotency_key: Some("k2".into()),
                    ..JobSpec::new("q", &["true"])
                },
            ],
        };
        assert!(s.check(&twice).unwrap_err().reason.contains("jobs[0]"));
    }

    #[test]
    fn a_repeated_workflow_is_the_first_one_and_partial_repeats_are_refused() {
        let mut s = ClusterState::new();
        let wj = |key: &str, idem: &str, after: &[&str]| WorkflowJob {
            key: key.into(),
            spec: JobSpec {
                idempotency_key: Some(idem.into()),
                ..JobSpec::new(key, &["true"])
            },
            after: after.iter().map(|a| a.to_string()).collect(),
        };
        let flow = Command::SubmitWorkflow {
            at_ms: 1,
            name: "f".into(),
            jobs: vec![wj("a", "ka", &[]), wj("b", "kb", &["a"])],
        };
        let first = s.apply(1, &flow);
        let Response::WorkflowSubmitted { workflow, jobs } = first.clone() else {
            panic!("{first:?}");
        };
        assert_eq!(s.repeat(&flow), Some(first.clone()));
        // Proposed twice anyway (both in flight): applied, the second is the first.
        assert_eq!(s.apply(2, &flow), first);
        assert_eq!(s.workflows().count(), 1);
        assert_eq!(s.jobs().count(), 2);
        assert_eq!(jobs.len(), 2);
        assert_eq!(workflow, 1);
        // The same keys under other workflow keys, a subset, or mixed with new keys.
        for jobs in [
            vec![wj("x", "ka", &[]), wj("y", "kb", &["x"])],
            vec![wj("a", "ka", &[])],
            vec![wj("a", "ka", &[]), wj("c", "kc", &["a"])],
        ] {
            let c = Command::SubmitWorkflow {
                at_ms: 3,
                name: "g".into(),
                jobs,
            };
            assert_eq!(s.repeat(&c), None);
            let e = s.check(&c).unwrap_err();
            assert!(e.reason.contains("already names job"), "{e}");
        }
        // Two jobs of one workflow with one key.
        let dup = Command::SubmitWorkflow {
            at_ms: 4,
            name: "d".into(),
            jobs: vec![wj("a", "same", &[]), wj("b", "same", &["a"])],
        };
        assert!(s
            .check(&dup)
            .unwrap_err()
            .reason
            .contains("also the key of jobs[0]"));
        assert!(matches!(s.apply(5, &dup), Response::Rejected(_)));
        assert_eq!(s.jobs().count(), 2);
    }

    #[test]
    fn invalid_specs_are_rejected_naming_the_problem() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        submit(&mut s, &mut i, JobSpec::new("ok", &["true"]));
        let bad = Command::SubmitJobs {
            at_ms: 1,
            jobs: vec![JobSpec::new("fine", &["true"]), JobSpec::new("empty", &[])],
        };
        match s.apply(9, &bad) {
            Response::Rejected(e) => assert_eq!(e.field, "jobs[1].command"),
            other => panic!("{other:?}"),
        }
        let dep = Command::SubmitJobs {
            at_ms: 1,
            jobs: vec![JobSpec {
                depends_on: vec![42],
                ..JobSpec::new("d", &["true"])
            }],
        };
        assert!(
            matches!(s.apply(10, &dep), Response::Rejected(e) if e.reason.contains("unknown job 42"))
        );
        assert_eq!(
            s.jobs().count(),
            1,
            "nothing of a rejected batch was created"
        );
    }

    #[test]
    fn checkpoints_detect_divergence() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        submit(&mut s, &mut i, JobSpec::new("x", &["true"]));
        let Response::CheckpointRecorded { hash } = s.apply(50, &Command::Checkpoint { at_ms: 1 })
        else {
            panic!()
        };
        let mut other = s.clone();
        assert_eq!(
            s.apply(
                51,
                &Command::CheckpointHash {
                    at_ms: 2,
                    index: 50,
                    hash
                }
            ),
            Response::CheckpointCompared { matched: true }
        );
        let mut wrong = hash;
        wrong[0] ^= 1;
        assert_eq!(
            other.apply(
                51,
                &Command::CheckpointHash {
                    at_ms: 2,
                    index: 50,
                    hash: wrong
                }
            ),
            Response::CheckpointCompared { matched: false }
        );
        assert_eq!(other.counters().divergences, 1);
        assert!(matches!(
            s.apply(
                52,
                &Command::CheckpointHash {
                    at_ms: 2,
                    index: 7,
                    hash
                }
            ),
            Response::Ignored { .. }
        ));
    }

    #[test]
    fn streamed_snapshot_equals_the_buffered_one() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        for k in 0..50 {
            submit(&mut s, &mut i, JobSpec::new(&format!("j{k}"), &["true"]));
        }
        let mut streamed = Vec::new();
        s.write_snapshot(&mut streamed).unwrap();
        assert_eq!(streamed, s.to_snapshot());
        assert_eq!(ClusterState::from_snapshot(&streamed).unwrap(), s);
    }

    #[test]
    fn cancel_ends_a_running_job_and_its_dependents() {
        let (mut s, mut i) = (ClusterState::new(), 0);
        s.apply(0, &node(1));
        let a = submit(&mut s, &mut i, JobSpec::new("a", &["sleep", "60"]));
        let b = submit(
            &mut s,
            &mut i,
            JobSpec {
                depends_on: vec![a],
                ..JobSpec::new("b", &["true"])
            },
        );
        i += 1;
        s.apply(
            i,
            &Command::AssignTasks {
                at_ms: 20,
                assignments: vec![Assignment {
                    job: a,
                    attempt: 1,
                    node: 1,
                }],
            },
        );
        i += 1;
        assert_eq!(
            s.apply(
                i,
                &Command::CancelJob {
                    at_ms: 30,
                    job: a,
                    reason: "user".into()
                }
            ),
            Response::Done
        );
        assert_eq!(s.job(a).unwrap().reason.as_deref(), Some("cancelled: user"));
        assert_eq!(s.job(b).unwrap().state, JobState::Cancelled);
        assert!(s.running_on(1).is_empty());
        i += 1;
        assert!(matches!(
            s.apply(
                i,
                &Command::CancelJob {
                    at_ms: 31,
                    job: a,
                    reason: String::new()
                }
            ),
            Response::Ignored { .. }
        ));
    }

    fn request(id: &str, at_ms: u64, name: &str) -> Command {
        Command::SubmitJobs {
            at_ms,
            jobs: vec![JobSpec::new(name, &["echo", name])],
        }
        .once(RequestId::Client(id.into()))
    }

    #[test]
    fn a_request_applies_once_and_its_copies_get_the_first_answer() {
        let mut s = ClusterState::new();
        let first = s.apply(1, &request("r1", 10, "a"));
        assert_eq!(first, Response::Submitted { jobs: vec![1] });
        // A resend (new timestamp), also inside a batch: answered, not applied.
        assert_eq!(s.apply(2, &request("r1", 99, "a")), first);
        let batch = Command::Batch {
            at_ms: 100,
            commands: vec![request("r1", 100, "a"), request("r2", 100, "b")],
        };
        assert_eq!(
            s.apply(3, &batch),
            Response::Batch(vec![first.clone(), Response::Submitted { jobs: vec![2] }])
        );
        assert_eq!(s.job_count(), 2);
        assert_eq!(s.requests().repeats(), 2);
        // The proposer's shortcut gives the same answer without an entry.
        assert_eq!(s.repeat(&request("r1", 200, "a")), Some(first));
        // The same id for another request is refused, before and at apply.
        assert!(s.check(&request("r1", 200, "other")).is_err());
        assert!(matches!(
            s.apply(4, &request("r1", 200, "other")),
            Response::Rejected(e) if e.to_string().contains("another request")
        ));
        assert_eq!(s.job_count(), 2);
        // A request wraps one write: not a checkpoint, not another request.
        let nested = request("r3", 1, "x").once(RequestId::Client("outer".into()));
        assert!(
            matches!(nested, Command::Request { ref command, .. } if !matches!(**command, Command::Request { .. }))
        );
        let checkpoint = Command::Request {
            id: RequestId::Client("r4".into()),
            command: Box::new(Command::Checkpoint { at_ms: 1 }),
        };
        assert!(s.check(&checkpoint).is_err());
        assert!(matches!(s.apply(5, &checkpoint), Response::Rejected(_)));
    }

    #[test]
    fn the_request_table_survives_a_snapshot_and_is_hashed() {
        let mut a = ClusterState::new();
        let mut b = ClusterState::new();
        for (i, s) in [&mut a, &mut b].into_iter().enumerate() {
            s.apply(1, &node(1));
            s.apply(2, &request("r1", 10, "a"));
            // The same jobs, one state without request ids.
            if i == 0 {
                s.apply(3, &request("r2", 11, "b"));
            } else {
                s.apply(
                    3,
                    &Command::SubmitJobs {
                        at_ms: 11,
                        jobs: vec![JobSpec::new("b", &["echo", "b"])],
                    },
                );
            }
        }
        assert_eq!(a.jobs().collect::<Vec<_>>(), b.jobs().collect::<Vec<_>>());
        assert_ne!(a.hash(), b.hash(), "the table is part of the state hash");
        let restored = ClusterState::from_snapshot(&a.to_snapshot()).unwrap();
        assert_eq!(restored, a);
        assert_eq!(restored.hash(), a.hash());
        assert_eq!(restored.requests().len(), 2);
        // Still deduplicated after the restore.
        let mut r = restored;
        assert_eq!(
            r.apply(4, &request("r2", 50, "b")),
            Response::Submitted { jobs: vec![2] }
        );
        assert_eq!(r.job_count(), 2);
    }

    #[test]
    fn a_state_without_requests_hashes_and_loads_as_before() {
        let mut s = ClusterState::new();
        s.apply(1, &node(1));
        s.apply(
            2,
            &Command::SubmitJobs {
                at_ms: 10,
                jobs: vec![JobSpec::new("a", &["true"])],
            },
        );
        // Version 1 snapshots (no table) load, with an empty table and the same hash.
        let jobs: BTreeMap<JobId, Job> = s.jobs().map(|j| (j.id, j.into_owned())).collect();
        let v1 = postcard::to_stdvec(&(1u16, &jobs, &s)).unwrap();
        let loaded = ClusterState::from_snapshot(&v1).unwrap();
        assert_eq!(loaded, s);
        assert_eq!(loaded.hash(), s.hash());
        // An empty table adds nothing to the hash: it is the hash of the view as it was
        // before request ids existed.
        #[derive(Serialize)]
        struct Before<'a> {
            jobs: u64,
            jobs_digest: [u8; 32],
            workflows: &'a BTreeMap<WorkflowId, Workflow>,
            nodes: &'a BTreeMap<NodeId, Node>,
            idempotency: &'a BTreeMap<String, JobId>,
            next_job: JobId,
            next_workflow: WorkflowId,
            checkpoints: &'a BTreeMap<u64, [u8; 32]>,
            counters: &'a Counters,
            last_applied: Option<u64>,
        }
        let before = Before {
            jobs: s.jobs.len() as u64,
            jobs_digest: s.digests.of(&s.jobs, None),
            workflows: &s.workflows,
            nodes: &s.nodes,
            idempotency: &s.idempotency,
            next_job: s.next_job,
            next_workflow: s.next_workflow,
            checkpoints: &s.checkpoints,
            counters: &s.counters,
            last_applied: s.last_applied,
        };
        let old = *blake3::hash(&postcard::to_stdvec(&before).unwrap()).as_bytes();
        assert_eq!(old, s.hash());
        s.apply(3, &request("r1", 10, "b"));
        assert_ne!(old, s.hash());
    }
}
