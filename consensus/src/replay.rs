//! Offline replay: rebuilds a data directory's [`ClusterState`] from its latest snapshot (or
//! from the first entry when the log is complete) plus the log, without a server, and checks
//! every checkpoint on the way. Read-only: it takes no lock and writes nothing.
//!
//! Replaying the same entries gives the same state hash on any machine (see the
//! determinism rules in `ClusterState`), so the hash printed here equals the one a live node
//! reports for the same applied index. With `from_start`, every snapshot passed on the way is
//! compared with the replayed state too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cathedral_storage::{
    inspect_with_progress, read_purge_point, survey_snapshots, InspectReport, Visit,
};
use openraft::{BasicNode, EntryPayload, LogId, StoredMembership};
use serde::Serialize;

use crate::command::{Command, JobId};
use crate::raft::{decode_entry, read_snapshot};
use crate::state::{hex, ClusterState, JobState, Response};

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Stop after this index (inclusive); the whole log when `None`.
    pub to: Option<u64>,
    /// Start from the empty state at the first entry even when a snapshot is held (the log
    /// must be complete); every snapshot on the way is compared with the replayed state.
    pub from_start: bool,
    /// Record the history of this job.
    pub job: Option<JobId>,
}

/// Where the replay started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The empty state, before the first entry.
    Empty,
    /// A restored snapshot (`snapshot import` into a fresh directory): the state the log's
    /// first entry follows.
    Restored { path: PathBuf },
    /// A snapshot holding everything through `index`.
    Snapshot {
        path: PathBuf,
        index: u64,
        term: u64,
    },
}

/// One change to the followed job.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub index: u64,
    pub term: u64,
    /// The proposer's timestamp.
    pub at_ms: u64,
    /// The command's kind (`submit_jobs`, `task_finished`, …).
    pub command: &'static str,
    /// The job's state after the entry.
    pub state: &'static str,
    pub attempts: usize,
    /// What changed, in words.
    pub note: String,
}

/// A problem replay found: divergence at a checkpoint, a snapshot that disagrees with the
/// log, a gap, an entry that does not decode.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayFinding {
    pub index: u64,
    pub reason: String,
}

/// The result of [`replay`].
#[derive(Debug)]
pub struct Replay {
    pub state: ClusterState,
    pub start: Start,
    /// The last entry applied (or the snapshot's, when no entry followed it).
    pub last: Option<LogId<u64>>,
    /// The Raft membership as of `last`.
    pub membership: StoredMembership<u64, BasicNode>,
    /// Entries applied from the log, and their bytes on disk.
    pub entries: u64,
    pub bytes: u64,
    /// Checkpoints recorded, and leader hashes compared equal.
    pub checkpoints: u64,
    pub checkpoints_matched: u64,
    /// Leader hashes naming a checkpoint older than where the replay started.
    pub checkpoints_unverifiable: u64,
    /// Snapshots compared with the replayed state (`from_start`).
    pub snapshots_compared: u64,
    pub findings: Vec<ReplayFinding>,
    /// What the replay could not do as asked without anything being wrong with the data
    /// (`--to` past the log's end).
    pub notes: Vec<String>,
    /// The followed job's history, oldest first.
    pub history: Vec<JobEvent>,
    /// The read-only inspection made on the way (segments, storage findings).
    pub log: InspectReport,
}

impl Replay {
    /// The state hash, as a live node reports it.
    pub fn state_hash(&self) -> String {
        hex(&self.state.hash())
    }
}

/// Replays the data directory `dir` (holding `meta`, `log/`, `snapshots/`). I/O errors and
/// an unusable starting point are errors; damage and divergence are findings.
/// `progress(bytes_done, bytes_total)` follows the log files read.
///
/// Long on purpose: the starting point (snapshot or empty), the walk over the entries and
/// the checks at each checkpoint share the state being rebuilt; the per-entry work itself
/// is `ClusterState::apply`, the same code the servers run.
pub fn replay(
    dir: &Path,
    options: &ReplayOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Replay, cathedral_storage::Error> {
    // Damaged snapshot files are findings of the inspection below; only valid ones are
    // starting points.
    let survey = survey_snapshots(&cathedral_storage::snapshots_dir(dir), true)?;
    if options.from_start {
        if let Some(p) = read_purge_point(dir).ok().flatten() {
            if survey.gap(Some(p)).is_none() {
                let held = survey.newest().map_or(String::new(), |s| {
                    format!(" (held in {})", s.path.display())
                });
                return Err(cathedral_storage::Error::InvalidArgument(format!(
                    "--from-start needs the whole log, but entries 0..={p} are no longer held: they were compacted into a snapshot{held}; replay without --from-start starts from the newest snapshot"
                )));
            }
        }
    }
    let snapshots: Vec<_> = survey
        .snapshots
        .into_iter()
        .filter(|s| match (options.to, s.meta.last) {
            (Some(to), Some((i, _))) => i <= to,
            _ => true,
        })
        .collect();
    let mut run = Run {
        job: options.job,
        to: options.to,
        ..Run::default()
    };
    let mut findings = Vec::new();
    // The newest readable snapshot within `to`; an unreadable one is a finding and the next
    // older one is tried.
    let mut base = None;
    for s in snapshots.iter().rev() {
        match read_snapshot(&s.path) {
            Ok((meta, state)) => {
                base = Some((s.path.clone(), meta.last_log_id, meta.membership, state));
                break;
            }
            Err(e) => findings.push(ReplayFinding {
                index: s.meta.last.map_or(0, |l| l.0),
                reason: format!("snapshot {} unreadable: {e}", s.path.display()),
            }),
        }
    }
    // A job's history wants every entry: start from the first one when the log is
    // complete, from the snapshot otherwise (decided at the first entry seen).
    // A snapshot without a log position is a restored state: the log's origin.
    let restored = matches!(&base, Some((_, None, _, _)));
    if (options.from_start || options.job.is_some()) && !restored {
        for s in &snapshots {
            // The base snapshot is in memory already; the others are read once here.
            let read = match &base {
                Some((path, last, _, state)) if *path == s.path => Some((*last, state.hash())),
                _ => read_snapshot(&s.path)
                    .ok()
                    .map(|(meta, state)| (meta.last_log_id, state.hash())),
            };
            if let Some((Some(l), hash)) = read {
                run.compare_at.insert(l.index, (s.path.clone(), hash));
            }
        }
        if !options.from_start {
            run.fallback = base;
        }
    } else if let Some(b) = base {
        run.adopt(b);
    }
    run.findings = findings;
    let log = {
        let mut visit = |v: Visit<'_>| run.visit(v);
        inspect_with_progress(dir, Some(&mut visit), progress)?
    };
    if let Some(b) = run.fallback.take() {
        run.adopt(b);
    }
    let mut notes = Vec::new();
    if !run.broken {
        if let (Some(to), last) = (options.to, run.last.map(|l| l.index)) {
            if last.is_none_or(|l| l < to) {
                notes.push(format!(
                    "the log ends at index {}, before --to {to}: replayed through its end",
                    last.map_or("-".into(), |l| l.to_string())
                ));
            }
        }
    }
    Ok(Replay {
        state: run.state,
        start: run.start,
        last: run.last,
        membership: run.membership,
        entries: run.entries,
        bytes: run.bytes,
        checkpoints: run.checkpoints,
        checkpoints_matched: run.checkpoints_matched,
        checkpoints_unverifiable: run.checkpoints_unverifiable,
        snapshots_compared: run.snapshots_compared,
        findings: run.findings,
        notes,
        history: run.history,
        log,
    })
}

/// The replay in progress, fed entry by entry by the log inspection.
struct Run {
    state: ClusterState,
    start: Start,
    last: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The index the next applied entry must have (the log starts at 0).
    next: u64,
    to: Option<u64>,
    job: Option<JobId>,
    /// Snapshot states to compare with, by their last index (`from_start`).
    compare_at: BTreeMap<u64, (PathBuf, [u8; 32])>,
    /// The snapshot to start from if the log turns out not to begin at index 0.
    fallback: Option<Base>,
    broken: bool,
    entries: u64,
    bytes: u64,
    checkpoints: u64,
    checkpoints_matched: u64,
    checkpoints_unverifiable: u64,
    snapshots_compared: u64,
    findings: Vec<ReplayFinding>,
    history: Vec<JobEvent>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            state: ClusterState::new(),
            start: Start::Empty,
            last: None,
            membership: StoredMembership::default(),
            next: 0,
            to: None,
            job: None,
            compare_at: BTreeMap::new(),
            fallback: None,
            broken: false,
            entries: 0,
            bytes: 0,
            checkpoints: 0,
            checkpoints_matched: 0,
            checkpoints_unverifiable: 0,
            snapshots_compared: 0,
            findings: Vec::new(),
            history: Vec::new(),
        }
    }
}

/// A snapshot to start from: its file, last log id (none for a restored state, which
/// precedes index 0), membership and state.
type Base = (
    PathBuf,
    Option<LogId<u64>>,
    StoredMembership<u64, BasicNode>,
    ClusterState,
);

/// What the history compares before and after an entry.
type JobMark = Option<(JobState, usize, Option<u64>, Option<u64>)>;

impl Run {
    fn finding(&mut self, index: u64, reason: String) {
        self.findings.push(ReplayFinding { index, reason });
    }

    fn adopt(&mut self, (path, last, membership, state): Base) {
        self.state = state;
        self.membership = membership;
        let Some(last) = last else {
            self.start = Start::Restored { path };
            return;
        };
        self.last = Some(last);
        self.next = last.index + 1;
        self.compare_at.retain(|i, _| *i > last.index);
        self.start = Start::Snapshot {
            path,
            index: last.index,
            term: last.leader_id.term,
        };
    }

    fn visit(&mut self, v: Visit<'_>) {
        if let Some(b) = self.fallback.take() {
            if v.index > 0 {
                self.adopt(b);
            }
        }
        if self.broken || self.to.is_some_and(|t| v.index > t) || v.index < self.next {
            return;
        }
        if v.index > self.next {
            let reason = match &self.start {
                Start::Empty if self.next == 0 => format!(
                    "the log starts at index {} and no usable snapshot covers the entries before it",
                    v.index
                ),
                _ => format!(
                    "entries {}..{} are missing: the log continues at {}",
                    self.next,
                    v.index - 1,
                    v.index
                ),
            };
            self.finding(v.index, reason);
            self.broken = true;
            return;
        }
        let entry = match decode_entry(v.payload) {
            Ok(e) => e,
            Err(e) => {
                self.finding(v.index, format!("entry does not decode: {e}"));
                self.broken = true;
                return;
            }
        };
        if entry.log_id.index != v.index || entry.log_id.leader_id.term != v.term {
            self.finding(
                v.index,
                format!(
                    "entry says {}:{}, its record says {}:{}",
                    entry.log_id.index, entry.log_id.leader_id.term, v.index, v.term
                ),
            );
        }
        self.next = v.index + 1;
        self.last = Some(entry.log_id);
        self.entries += 1;
        self.bytes += v.record_bytes;
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            // A batch's commands one by one (the state's apply does the same), so the
            // history and the checkpoint counts see each.
            EntryPayload::Normal(Command::Batch { at_ms, commands }) => {
                for c in commands {
                    if c.batchable() {
                        self.apply(v.index, v.term, c);
                    } else {
                        self.state.apply(
                            v.index,
                            &Command::Batch {
                                at_ms: *at_ms,
                                commands: vec![c.clone()],
                            },
                        );
                    }
                }
            }
            EntryPayload::Normal(cmd) => self.apply(v.index, v.term, cmd),
        }
        if let Some((path, hash)) = self.compare_at.remove(&v.index) {
            self.snapshots_compared += 1;
            let mine = self.state.hash();
            if mine != hash {
                self.finding(
                    v.index,
                    format!(
                        "snapshot {} holds state hash {}, the log gives {} at its index",
                        path.display(),
                        hex(&hash),
                        hex(&mine)
                    ),
                );
            }
        }
    }

    fn apply(&mut self, index: u64, term: u64, cmd: &Command) {
        let before = self.job.map(|j| self.mark(j));
        // A copy of a request already answered changes nothing; its history line says so.
        let repeat_of = match cmd {
            Command::Request { id, command } => match self.state.requests().lookup(id, command) {
                crate::requests::Lookup::Answered(a) => Some((id.clone(), a.index)),
                _ => None,
            },
            _ => None,
        };
        let response = self.state.apply(index, cmd);
        let cmd = cmd.inner();
        match (&response, cmd) {
            (Response::CheckpointRecorded { .. }, _) => self.checkpoints += 1,
            (Response::CheckpointCompared { matched: true }, _) => self.checkpoints_matched += 1,
            (
                Response::CheckpointCompared { matched: false },
                Command::CheckpointHash {
                    index: at, hash, ..
                },
            ) => {
                let mine = self.state.checkpoint(*at).map_or("-".into(), |h| hex(&h));
                self.finding(
                    index,
                    format!(
                        "DIVERGENCE at checkpoint {at}: replayed state hash {mine}, the leader recorded {}",
                        hex(hash)
                    ),
                );
            }
            (Response::Ignored { .. }, Command::CheckpointHash { .. }) => {
                self.checkpoints_unverifiable += 1
            }
            _ => {}
        }
        if let (Some(job), Some(before)) = (self.job, before) {
            let after = self.mark(job);
            let created = matches!(&response, Response::Submitted { jobs } if jobs.contains(&job))
                || matches!(&response, Response::WorkflowSubmitted { jobs, .. } if jobs.values().any(|j| *j == job));
            if after.is_some() && (after != before || created || names_job(cmd, job)) {
                let mut event = self.event(index, term, cmd, job, &response);
                if let Some((id, first)) = repeat_of {
                    event.note = format!(
                        "repeat of request {id:?} (answered at index {first}), not applied again"
                    );
                }
                self.history.push(event);
            }
        }
    }

    fn mark(&self, job: JobId) -> JobMark {
        self.state.job(job).map(|j| {
            let a = j.attempts.last();
            (
                j.state,
                j.attempts.len(),
                a.and_then(|a| a.started_at_ms),
                a.and_then(|a| a.finished_at_ms),
            )
        })
    }

    fn event(
        &self,
        index: u64,
        term: u64,
        cmd: &Command,
        job: JobId,
        response: &Response,
    ) -> JobEvent {
        let j = self.state.job(job).expect("marked present");
        let mut note = match cmd {
            Command::SubmitJobs { .. } | Command::SubmitWorkflow { .. } => {
                format!("submitted: {}", j.spec.command.join(" "))
            }
            other => match crate::words::attempts(&j).pop() {
                Some(a) => a,
                None => crate::words::command(other),
            },
        };
        if let Response::Ignored { reason } = response {
            note.push_str(&format!(" (report ignored: {reason})"));
        }
        if let Some(r) = j.reason.as_ref().filter(|_| j.state.is_final()) {
            note.push_str(&format!(" — {r}"));
        }
        if j.state == JobState::Pending && j.not_before_ms > cmd.at_ms() {
            note.push_str(&format!(
                " — retry not before {}",
                crate::words::time_ms(j.not_before_ms)
            ));
        }
        JobEvent {
            index,
            term,
            at_ms: cmd.at_ms(),
            command: cmd.kind(),
            state: j.state.name(),
            attempts: j.attempts.len(),
            note,
        }
    }
}

/// Whether `cmd` names `job` itself.
fn names_job(cmd: &Command, job: JobId) -> bool {
    match cmd {
        Command::TaskStarted { job: j, .. }
        | Command::TaskFinished { job: j, .. }
        | Command::CancelJob { job: j, .. } => *j == job,
        Command::AssignTasks { assignments, .. } => assignments.iter().any(|a| a.job == job),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Assignment, Exit, JobSpec, Outcome};
    use crate::raft::{encode_entry, TypeConfig};
    use cathedral_storage::{Durability, Entry as Record, Log, Options, SnapshotMeta};
    use openraft::{CommittedLeaderId, Entry};

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    /// A workload: submissions, assignments, finishes, a checkpoint and its hash. Returns
    /// the entries and the state after each index.
    fn workload() -> (Vec<Entry<TypeConfig>>, Vec<ClusterState>) {
        let mut cmds = vec![Command::NodeRegistered {
            at_ms: 1,
            node: crate::command::NodeInfo {
                id: 1,
                address: "127.0.0.1:1".into(),
                role: crate::command::Role::Worker,
                tags: Default::default(),
                capacity: crate::command::Capacity {
                    slots: 4,
                    cpu_millis: 4000,
                    memory_bytes: 1 << 30,
                },
            },
        }];
        for j in 1..=5u64 {
            cmds.push(Command::SubmitJobs {
                at_ms: 10 * j,
                jobs: vec![JobSpec::new(&format!("j{j}"), &["true"])],
            });
            cmds.push(Command::AssignTasks {
                at_ms: 10 * j + 1,
                assignments: vec![Assignment {
                    job: j,
                    attempt: 1,
                    node: 1,
                }],
            });
            cmds.push(Command::TaskFinished {
                at_ms: 10 * j + 2,
                job: j,
                attempt: 1,
                node: 1,
                outcome: Outcome {
                    exit: Exit::Code(0),
                    duration_ms: 1,
                    output_tail: Vec::new(),
                },
            });
        }
        cmds.push(Command::Checkpoint { at_ms: 100 });
        let mut states = Vec::new();
        let mut s = ClusterState::new();
        let mut entries = Vec::new();
        // Index 0 is a blank entry, as openraft's first entries are not commands.
        entries.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), 0),
            payload: EntryPayload::Blank,
        });
        states.push(s.clone());
        for (k, c) in cmds.into_iter().enumerate() {
            let index = k as u64 + 1;
            s.apply(index, &c);
            entries.push(entry(index, c));
            states.push(s.clone());
        }
        let at = entries.len() as u64 - 1;
        let hash = s.checkpoint(at).unwrap();
        let c = Command::CheckpointHash {
            at_ms: 101,
            index: at,
            hash,
        };
        s.apply(at + 1, &c);
        entries.push(entry(at + 1, c));
        states.push(s);
        (entries, states)
    }

    fn write_log(dir: &Path, entries: &[Entry<TypeConfig>]) {
        let log = Log::open(dir, Options::default()).unwrap();
        append(&log, entries);
    }

    fn append(log: &Log, entries: &[Entry<TypeConfig>]) {
        let payloads: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
        let records: Vec<Record<'_>> = entries
            .iter()
            .zip(&payloads)
            .map(|(e, p)| Record {
                index: e.log_id.index,
                term: e.log_id.leader_id.term,
                payload: p,
            })
            .collect();
        log.append(&records, Durability::Durable).unwrap();
    }

    fn write_snapshot(dir: &Path, index: u64, state: &ClusterState) {
        let store = cathedral_storage::SnapshotStore::open(
            dir.join("snapshots"),
            cathedral_storage::SnapshotOptions::default(),
        )
        .unwrap();
        let last = LogId::new(CommittedLeaderId::new(1, 0), index);
        let meta = crate::raft::RaftSnapshotMeta {
            last_log_id: Some(last),
            membership: StoredMembership::default(),
            snapshot_id: "t".into(),
        };
        let mut w = store
            .writer(SnapshotMeta {
                last: Some((index, 1)),
                data: postcard::to_stdvec(&meta).unwrap(),
                created_ms: 1,
            })
            .unwrap();
        state.write_snapshot(&mut w).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn replay_equals_applying_and_stops_at_to() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, states) = workload();
        write_log(dir.path(), &entries);
        let r = replay(dir.path(), &ReplayOptions::default(), &mut |_, _| {}).unwrap();
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.start, Start::Empty);
        assert_eq!(r.entries, entries.len() as u64);
        assert_eq!(r.state, *states.last().unwrap());
        assert_eq!((r.checkpoints, r.checkpoints_matched), (1, 1));
        let to = ReplayOptions {
            to: Some(7),
            ..Default::default()
        };
        let r = replay(dir.path(), &to, &mut |_, _| {}).unwrap();
        assert_eq!(r.last.unwrap().index, 7);
        assert_eq!(r.state_hash(), hex(&states[7].hash()));
        let past = ReplayOptions {
            to: Some(1000),
            ..Default::default()
        };
        let r = replay(dir.path(), &past, &mut |_, _| {}).unwrap();
        assert!(r.findings.is_empty(), "not damage: {:?}", r.findings);
        assert!(r.notes[0].contains("before --to 1000"), "{:?}", r.notes);
        assert_eq!(r.state, *states.last().unwrap());
    }

    #[test]
    fn starts_from_the_snapshot_and_checks_it_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, states) = workload();
        write_log(dir.path(), &entries);
        write_snapshot(dir.path(), 9, &states[9]);
        let r = replay(dir.path(), &ReplayOptions::default(), &mut |_, _| {}).unwrap();
        assert!(matches!(r.start, Start::Snapshot { index: 9, .. }));
        assert_eq!(r.entries, entries.len() as u64 - 10);
        assert_eq!(r.state, *states.last().unwrap());
        // From the start, the snapshot is compared with the replayed state at index 9.
        let all = ReplayOptions {
            from_start: true,
            ..Default::default()
        };
        let r = replay(dir.path(), &all, &mut |_, _| {}).unwrap();
        assert_eq!(r.snapshots_compared, 1);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        // A snapshot that disagrees with the log is reported at its index.
        let dir2 = tempfile::tempdir().unwrap();
        write_log(dir2.path(), &entries);
        write_snapshot(dir2.path(), 9, &states[8]);
        let r = replay(dir2.path(), &all, &mut |_, _| {}).unwrap();
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].index, 9);
    }

    #[test]
    fn a_wrong_leader_hash_is_divergence() {
        let dir = tempfile::tempdir().unwrap();
        let (mut entries, _) = workload();
        let last = entries.last_mut().unwrap();
        if let EntryPayload::Normal(Command::CheckpointHash { hash, .. }) = &mut last.payload {
            hash[0] ^= 1;
        }
        write_log(dir.path(), &entries);
        let r = replay(dir.path(), &ReplayOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert!(r.findings[0].reason.contains("DIVERGENCE"));
        assert_eq!(r.state.counters().divergences, 1);
    }

    #[test]
    fn follows_one_job() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, states) = workload();
        write_log(dir.path(), &entries);
        // A snapshot past the job's whole life: the log is complete, so the history still
        // starts at the first entry.
        write_snapshot(dir.path(), 12, &states[12]);
        let o = ReplayOptions {
            job: Some(3),
            ..Default::default()
        };
        let r = replay(dir.path(), &o, &mut |_, _| {}).unwrap();
        let kinds: Vec<_> = r.history.iter().map(|e| (e.command, e.state)).collect();
        assert_eq!(
            kinds,
            [
                ("submit_jobs", "pending"),
                ("assign_tasks", "assigned"),
                ("task_finished", "succeeded")
            ]
        );
        assert_eq!(r.start, Start::Empty);
        assert_eq!(r.snapshots_compared, 1);
        assert_eq!(r.state, *states.last().unwrap());
        assert!(!names_job(&Command::Checkpoint { at_ms: 1 }, 3));
    }

    #[test]
    fn a_gap_after_the_start_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, _) = workload();
        // The log starts at 5 with no snapshot covering 0..=4.
        let log = Log::open(dir.path(), Options::default()).unwrap();
        log.purge(4, None).unwrap();
        append(&log, &entries[5..]);
        drop(log);
        let r = replay(dir.path(), &ReplayOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(r.entries, 0);
        assert!(
            r.findings[0].reason.contains("no usable snapshot"),
            "{:?}",
            r.findings
        );
    }
}
