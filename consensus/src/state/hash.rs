//! The state hash: per-job digests kept up to date as jobs change, and the hash over
//! them and the rest of the state (whole maps for logs written before
//! `Feature::JobDigestsCoverTheirRecords`, per-job records after).

use super::*;

/// Per-job digests behind the state hash, kept up to date incrementally, so a hash costs
/// O(jobs changed since the last one) instead of O(all jobs) — checkpoints come every
/// `checkpoint_interval` entries on every node and in every replay, and all jobs are
/// kept. Derived state: never encoded, rebuilt in full on the first hash after a snapshot
/// load, ignored by equality. Every place that changes a job calls [`touch`](Self::touch)
/// first; a test compares the incremental hash with a full rebuild after every entry.
#[derive(Default)]
pub(super) struct JobDigests(std::sync::Mutex<Digests>);

#[derive(Default, Clone)]
pub(super) struct Digests {
    /// `each` and `sum` describe every job but those in `dirty`.
    valid: bool,
    each: BTreeMap<JobId, [u8; 32]>,
    /// The sum of every digest, as a 256-bit integer (wrapping): order-independent, so a
    /// changed job is one subtraction and one addition.
    sum: [u64; 4],
    dirty: BTreeSet<JobId>,
}

impl JobDigests {
    /// The digests of a state with no jobs: valid (the sum of nothing), so they are kept
    /// up to date from the first job on instead of worked out for every job at the first
    /// hash — a fresh cluster's first checkpoint otherwise digested ~190,000 jobs at once
    /// (0.3 s of apply) at 64 clients.
    pub(super) fn empty() -> JobDigests {
        JobDigests(std::sync::Mutex::new(Digests {
            valid: true,
            ..Digests::default()
        }))
    }

    pub(super) fn invalidate(&mut self) {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner()).valid = false;
    }

    /// How many jobs changed since their digests were last folded in.
    pub(super) fn dirty(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).dirty.len()
    }

    pub(super) fn touch(&mut self, id: JobId) {
        let d = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if d.valid {
            d.dirty.insert(id);
        }
    }

    /// The digest of all jobs: the sum of `BLAKE3(job's encoding)`, each followed by
    /// `record(id)` when given (what the state keeps for the job besides it).
    pub(super) fn of(&self, jobs: &Jobs, record: Option<&dyn Fn(JobId) -> Vec<u8>>) -> [u8; 32] {
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

/// The answered-request table as the state hash covers it: whole (logs written before
/// `Feature::RequestTableSummed`), or by the sum of its answers' digests. Encoded as what
/// it holds, with no tag, so a hash without the feature is the same bytes as before.
enum RequestsView<'a> {
    Whole(&'a Requests),
    Summed(crate::requests::RequestsSummed),
}

impl Serialize for RequestsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RequestsView::Whole(r) => r.serialize(s),
            RequestsView::Summed(r) => r.serialize(s),
        }
    }
}

/// `sum += h` (or `-=`) modulo 2^256, little-endian limbs.
pub(crate) fn wide_add(sum: &mut [u64; 4], h: &[u8; 32], subtract: bool) {
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
pub(super) struct HashView<'a> {
    jobs: u64,
    jobs_digest: [u8; 32],
    workflows: &'a imbl::OrdMap<WorkflowId, Workflow>,
    nodes: &'a BTreeMap<NodeId, Node>,
    idempotency: &'a imbl::OrdMap<String, JobId>,
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

pub(super) fn pristine(r: &&Requests) -> bool {
    r.is_pristine()
}

/// Most jobs changed since their digests were last folded into the sum before apply
/// folds them in (at the end of the entry that reached it). Without it the changes of a
/// whole checkpoint interval were digested at once, by the checkpoint's hash or a
/// snapshot's, under the state's lock: with 64 clients submitting, ~300,000 jobs and
/// ~0.4 s during which no entry was applied. Folding every 4,096 spreads the same work
/// over the entries (a job changed again later is digested again: a few percent more).
pub const DIGESTS_DIRTY_MAX: usize = 4096;

impl ClusterState {
    /// What the state keeps for job `id` besides the job itself, as its digest covers it
    /// under `Feature::JobDigestsCoverTheirRecords`.
    fn job_record(&self, id: JobId) -> Vec<u8> {
        let mut bytes = postcard::to_stdvec(&(
            self.ended_at.get(&id),
            self.retain.get(&id),
            self.outputs.get(&id),
            self.rerun_base.get(&id),
            self.acl.submitter(id),
        ))
        .expect("records always encode");
        // Its namespace, outside `default` only: a job of `default` (every job of a log
        // written before namespaces) is digested as before.
        if let Some(ns) = self.namespaces.of_job.get(&id) {
            bytes.extend_from_slice(b"ns");
            bytes = postcard::to_extend(ns, bytes).expect("records always encode");
        }
        bytes
    }

    /// The sum of the job digests, with the changed jobs folded in: each covering the
    /// job's records under `Feature::JobDigestsCoverTheirRecords`, the job alone before.
    pub(super) fn jobs_digest(&self) -> [u8; 32] {
        if self
            .features
            .contains(&Feature::JobDigestsCoverTheirRecords)
        {
            let record = |id: JobId| self.job_record(id);
            self.digests.of(&self.jobs, Some(&record))
        } else {
            self.digests.of(&self.jobs, None)
        }
    }

    /// Folds the changed jobs' digests into the sum once [`DIGESTS_DIRTY_MAX`] wait (the
    /// hash is the same whenever they are folded).
    pub(super) fn fold_digests_when_due(&self) {
        if self.digests.dirty() >= DIGESTS_DIRTY_MAX {
            self.jobs_digest();
        }
    }

    /// The state hash under `Feature::JobDigestsCoverTheirRecords`: what the state keeps
    /// per job is in that job's digest (kept up to date as jobs change), so a hash costs
    /// the jobs changed since the last one plus the parts that are not per job (workflows,
    /// nodes, the answered-request table, tokens, crons, rules, features). The
    /// idempotency keys are not hashed apart: each names the one held job whose spec has
    /// it, which the job digests cover.
    pub(super) fn hash_by_job(&self) -> [u8; 32] {
        #[derive(Serialize)]
        struct View<'a> {
            jobs: u64,
            jobs_digest: [u8; 32],
            workflows: &'a imbl::OrdMap<WorkflowId, Workflow>,
            nodes: &'a BTreeMap<NodeId, Node>,
            next_job: JobId,
            next_workflow: WorkflowId,
            checkpoints: &'a BTreeMap<u64, [u8; 32]>,
            counters: &'a Counters,
            last_applied: Option<u64>,
            requests: RequestsView<'a>,
            tokens: Vec<u8>,
            crons: &'a crate::cron::Crons,
            rules: &'a Option<Rules>,
            features: &'a BTreeSet<Feature>,
        }
        let view = View {
            jobs: self.jobs.len() as u64,
            jobs_digest: self.jobs_digest(),
            workflows: &self.workflows,
            nodes: &self.nodes,
            next_job: self.next_job,
            next_workflow: self.next_workflow,
            checkpoints: &self.checkpoints,
            counters: &self.counters,
            last_applied: self.last_applied,
            requests: if self.features.contains(&Feature::RequestTableSummed) {
                RequestsView::Summed(self.requests.summed())
            } else {
                RequestsView::Whole(&self.requests)
            },
            tokens: self.acl.tokens_encoded(),
            crons: &self.crons,
            rules: &self.rules,
            features: &self.features,
        };
        let hash = blake3::hash(&postcard::to_stdvec(&view).expect("state always encodes"));
        // The namespaces once one was made (the jobs' namespaces and keys are in their
        // digests): a state that never had one hashes as before they existed.
        if !self.namespaces.any_made() {
            return *hash.as_bytes();
        }
        let mut h = blake3::Hasher::new();
        h.update(hash.as_bytes());
        h.update(b"namespaces");
        h.update(&self.namespaces.made_encoded());
        *h.finalize().as_bytes()
    }

    /// Whether the idempotency keys are what the jobs make them: each names the held job
    /// whose spec has it (what `hash_by_job` relies on).
    pub fn idempotency_consistent(&self) -> bool {
        let mut derived: imbl::OrdMap<String, JobId> = imbl::OrdMap::new();
        let mut scoped: imbl::OrdMap<(String, String), JobId> = imbl::OrdMap::new();
        for j in self.jobs.values() {
            if let Some(k) = j.spec.idempotency_key.clone() {
                match self.namespaces.of_job.get(&j.id) {
                    Some(ns) => scoped.insert((ns.clone(), k), j.id),
                    None => derived.insert(k, j.id),
                };
            }
        }
        derived == self.idempotency && scoped == self.namespaces.keys
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
            jobs_digest: self.jobs_digest(),
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
            && self.namespaces.is_empty()
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
        if !self.namespaces.is_empty() {
            h.update(b"namespaces");
            h.update(&postcard::to_stdvec(&self.namespaces).expect("state always encodes"));
        }
        *h.finalize().as_bytes()
    }
}
