//! The state as snapshot bytes, and back: every body version since the first loads.

use super::*;
use crate::jobs::Loaded;

/// Version 2 appends the answered-request table after the state, version 3 the access
/// control state after that, version 4 the crons, rerun bases and step outputs, version 5
/// the rules, version 6 the end times, version 7 the jobs' own retentions; version 8
/// writes each job as its encoding (with its state) instead of as a value, so an ended
/// job held as its encoding is written and loaded as it is; version 9 appends the
/// namespaces (with the namespace and idempotency keys of every job outside `default`).
/// Every earlier version still loads.
pub(super) const SNAPSHOT_VERSION: u16 = 9;

/// The jobs as a snapshot (version 8) writes them: a sequence of `(id, state, held)`,
/// `held` an enum: `Encoded(bytes)` (a length, then the job's postcard bytes) or
/// `Value(job)` (the job encoded in place). Every job is written as `Encoded` — an ended
/// one as the state holds it, any other encoded into a scratch buffer first — so a load
/// can find each job's bytes without decoding it and decode the jobs on several threads
/// ([`Jobs::load`]). `Value` is what snapshots written before that hold for the jobs that
/// had not ended; it still loads.
pub(super) struct EncodedJobs<'a>(&'a Jobs);

/// How one job is read from a version 8 snapshot (variant order fixed by the format;
/// written by `EncodedJobs`).
#[derive(Deserialize)]
pub(super) enum HeldJob<'a> {
    Encoded(&'a [u8]),
    Value(Box<Job>),
}

impl Serialize for EncodedJobs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        /// `HeldJob::Encoded` by reference (without copying the bytes).
        struct Ref<'b>(&'b [u8]);
        impl Serialize for Ref<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                struct Raw<'c>(&'c [u8]);
                impl Serialize for Raw<'_> {
                    fn serialize<S: serde::Serializer>(
                        &self,
                        s: S,
                    ) -> std::result::Result<S::Ok, S::Error> {
                        s.serialize_bytes(self.0)
                    }
                }
                s.serialize_newtype_variant("HeldJob", 0, "Encoded", &Raw(self.0))
            }
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut scratch = Vec::new();
        for (id, state, held) in self.0.held() {
            let r = match held {
                crate::jobs::Held::Encoded(b) => Ref(b),
                crate::jobs::Held::Value(j) => {
                    scratch.clear();
                    scratch = postcard::to_extend(j, std::mem::take(&mut scratch))
                        .map_err(serde::ser::Error::custom)?;
                    Ref(&scratch)
                }
            };
            seq.serialize_element(&(id, state, r))?;
        }
        seq.end()
    }
}

impl ClusterState {
    /// What a snapshot encodes, in order: the version, the state, then the parts added
    /// after version 1 (each read only from the version that added it).
    #[allow(clippy::type_complexity)]
    pub(super) fn snapshot_parts(
        &self,
    ) -> (
        u16,
        EncodedJobs<'_>,
        &Self,
        &Requests,
        &Acl,
        &crate::cron::Crons,
        &imbl::OrdMap<JobId, u32>,
        &imbl::OrdMap<JobId, BTreeMap<String, String>>,
        &Option<Rules>,
        &imbl::OrdMap<JobId, u64>,
        &imbl::OrdMap<JobId, u64>,
        &BTreeSet<Feature>,
        &crate::namespace::Namespaces,
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
            &self.namespaces,
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
            namespaces: self.namespaces.clone(),
            in_namespace: None,
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
    ///
    /// A failure of `w` comes back as itself (postcard reports any writer's failure as
    /// "the serialize buffer is full", which would hide a full disk), and the buffered tail
    /// is flushed here: a flush failing in the buffer's drop would go unseen, and the bytes
    /// before it could then be finished as a whole snapshot.
    pub fn write_snapshot<W: std::io::Write>(&self, w: W) -> std::io::Result<()> {
        use std::io::Write;
        let failed = std::cell::Cell::new(None);
        let w = FirstError {
            inner: w,
            failed: &failed,
        };
        let w = std::io::BufWriter::with_capacity(1 << 16, w);
        let encoded = postcard::to_io(&self.snapshot_parts(), w);
        let e = match encoded {
            Ok(mut w) => return w.flush(),
            Err(e) => e,
        };
        Err(failed
            .take()
            .unwrap_or_else(|| std::io::Error::other(format!("encode: {e}"))))
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
        // Read the entries first (a job's bytes are only sliced), then decode the jobs
        // (on several threads for a large state). The count is the file's word, so the
        // space reserved for it is bounded by the bytes that could hold it.
        let mut entries: Vec<(JobId, Loaded)> = Vec::with_capacity(count.min(rest.len() / 16));
        for _ in 0..count {
            let (id, loaded) = if version >= 8 {
                let (id, state, held): (JobId, JobState, HeldJob) = next(&mut rest)?;
                let loaded = match held {
                    HeldJob::Encoded(bytes) => Loaded::Encoded(state, bytes),
                    HeldJob::Value(job) => Loaded::Value(job),
                };
                (id, loaded)
            } else {
                let (id, job): (JobId, Job) = next(&mut rest)?;
                (id, Loaded::Value(Box::new(job)))
            };
            // Written in id order, each once: anything else is not a snapshot this
            // project wrote (and which copy of a repeated id won would depend on which
            // loading thread finished last).
            if entries.last().is_some_and(|(last, _)| *last >= id) {
                return Err(ConsensusError::Decode(format!(
                    "snapshot jobs out of order: job {id} after job {}",
                    entries.last().map_or(0, |(l, _)| *l)
                )));
            }
            entries.push((id, loaded));
        }
        let jobs = Jobs::load(entries).map_err(ConsensusError::Decode)?;
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
        if version >= 9 {
            state.namespaces = next(&mut rest)?;
        }
        state.requests.follow(&state.features);
        let ended: Vec<(JobId, u64)> = state.ended_at.iter().map(|(id, t)| (*id, *t)).collect();
        for (id, t) in ended {
            state.order(id, t, true);
        }
        state.index = JobIndex::rebuilt(&state.jobs, &state.namespaces);
        Ok(state)
    }
}

/// A writer that keeps the first error of the one it wraps, for a caller (postcard) that
/// reports only that something failed.
struct FirstError<'a, W> {
    inner: W,
    failed: &'a std::cell::Cell<Option<std::io::Error>>,
}

impl<W: std::io::Write> std::io::Write for FirstError<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| self.keep(e))
    }
}

impl<W> FirstError<'_, W> {
    fn keep(&self, e: &std::io::Error) {
        let first = self.failed.take();
        self.failed
            .set(first.or_else(|| Some(std::io::Error::new(e.kind(), e.to_string()))));
    }
}
