//! Periodic jobs (crons) that are correct by construction.
//!
//! A cron is replicated state: its schedule (a cron pattern in an IANA time zone), what it
//! launches (a job or a workflow), its overlap policy and catch-up window, and the history
//! of its fires. The leader decides when a fire is due ([`due`], a pure function of the
//! schedule, the last fire decided and the leader's clock) and proposes it as a log entry
//! with its scheduled time ([`CronOp::Fire`]). Apply takes a fire only if its scheduled
//! time is after the last one decided, so each scheduled time is decided once — across
//! leader changes, restarts and clock jumps — and apply never reads a clock or evaluates a
//! schedule: every node reaches the same state from the same entries.
//!
//! After downtime, fires within the catch-up window run (each once) and older ones are
//! recorded as skipped, as one range with its count. Overlap: `skip` records a fire whose
//! previous run is still active as skipped, `queue` keeps it (up to
//! [`CRON_QUEUE_MAX`]) until the previous run ends — then the leader proposes
//! [`CronOp::RunQueued`] — and `allow` launches it regardless. DST gaps and repeats
//! follow croner's rules (OCPS / Vixie cron): a fixed-time fire in a gap runs right after
//! it, once in a repeated hour; interval fires follow real time.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{JobId, JobSpec, WorkflowId, WorkflowJob};
use crate::error::Invalid;

/// Bytes of a cron's name.
pub const CRON_NAME_BYTES_MAX: usize = 128;
/// Crons a cluster holds.
pub const CRONS_MAX: usize = 1000;
/// Bytes of a schedule pattern.
pub const CRON_SCHEDULE_BYTES_MAX: usize = 256;
/// Bytes of a time zone name.
pub const CRON_TZ_BYTES_MAX: usize = 64;
/// Fires (and skipped ranges) kept in a cron's history; older ones are forgotten (the
/// counters keep counting).
pub const CRON_HISTORY_MAX: usize = 100;
/// Fires a `queue` cron keeps waiting; past it, a fire is skipped.
pub const CRON_QUEUE_MAX: usize = 100;
/// Fires one entry may decide.
pub const CRON_FIRES_PER_ENTRY_MAX: usize = 100;
/// Longest catch-up window.
pub const CATCH_UP_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// The catch-up window when a cron names none: a fire a leader change or a short restart
/// delayed still runs.
pub const CATCH_UP_MS_DEFAULT: u64 = 60_000;
/// Variables every launched job gets: the cron's name and the fire's scheduled time.
pub const CRON_ENV_NAME: &str = "CATHEDRAL_CRON";
pub const CRON_ENV_SCHEDULED: &str = "CATHEDRAL_SCHEDULED_MS";

/// What a fire does while the cron's previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Overlap {
    /// Record the fire as skipped.
    #[default]
    Skip,
    /// Keep it until the previous run ends.
    Queue,
    /// Launch it anyway.
    Allow,
}

impl Overlap {
    pub fn name(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

impl std::str::FromStr for Overlap {
    type Err = String;
    fn from_str(s: &str) -> Result<Overlap, String> {
        match s {
            "skip" => Ok(Overlap::Skip),
            "queue" => Ok(Overlap::Queue),
            "allow" => Ok(Overlap::Allow),
            _ => Err(format!("overlap {s:?}: expected skip, queue or allow")),
        }
    }
}

/// What a fire launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CronTarget {
    Job(Box<JobSpec>),
    Workflow {
        name: String,
        jobs: Vec<WorkflowJob>,
    },
}

/// A cron as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSpec {
    pub name: String,
    /// A cron pattern: 5 fields (minute first) or 6 (seconds first), `@daily` and the like.
    pub schedule: String,
    /// IANA time zone the pattern is read in (`Europe/Paris`, `UTC`).
    pub tz: String,
    pub overlap: Overlap,
    pub catch_up_ms: u64,
    pub target: CronTarget,
}

impl CronSpec {
    /// Bounds and the target's own validity. The schedule's and the zone's syntax are
    /// checked where they are evaluated (the API edge, with [`Schedule::parse`]); apply
    /// checks only what it can without evaluating them.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |f: &str, r: String| Err(Invalid::new(f, r));
        if self.name.is_empty()
            || self.name.len() > CRON_NAME_BYTES_MAX
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(
                "name",
                format!("1..={CRON_NAME_BYTES_MAX} bytes of letters, digits, - _ . (CRON_NAME_BYTES_MAX)"),
            );
        }
        if self.schedule.trim().is_empty() || self.schedule.len() > CRON_SCHEDULE_BYTES_MAX {
            return bad(
                "schedule",
                format!("1..={CRON_SCHEDULE_BYTES_MAX} bytes (CRON_SCHEDULE_BYTES_MAX)"),
            );
        }
        if self.tz.is_empty() || self.tz.len() > CRON_TZ_BYTES_MAX {
            return bad(
                "tz",
                format!("1..={CRON_TZ_BYTES_MAX} bytes (CRON_TZ_BYTES_MAX)"),
            );
        }
        if self.catch_up_ms == 0 || self.catch_up_ms > CATCH_UP_MS_MAX {
            return bad(
                "catch_up_ms",
                format!("must be 1..={CATCH_UP_MS_MAX} (CATCH_UP_MS_MAX)"),
            );
        }
        let specs: Vec<(&str, &JobSpec)> = match &self.target {
            CronTarget::Job(s) => vec![("job", s)],
            CronTarget::Workflow { name, jobs } => {
                if name.is_empty() || jobs.is_empty() {
                    return bad("workflow", "needs a name and jobs".into());
                }
                jobs.iter().map(|j| ("workflow.jobs", &j.spec)).collect()
            }
        };
        for (field, s) in specs {
            s.validate().map_err(|e| e.at(field))?;
            if s.idempotency_key.is_some() {
                return bad(
                    field,
                    "a cron's jobs cannot carry an idempotency key (every fire makes new jobs)"
                        .into(),
                );
            }
            if !s.depends_on.is_empty() {
                return bad(field, "a cron's job cannot depend on a fixed job".into());
            }
            if s.env.len() + 2 > crate::limits::ENV_VARS_MAX {
                return bad(
                    field,
                    format!(
                        "leave room for {CRON_ENV_NAME} and {CRON_ENV_SCHEDULED} (ENV_VARS_MAX)"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// What a fire launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Launched {
    Job(JobId),
    Workflow(WorkflowId),
}

/// Why a fire did not launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// The previous run was still active (`skip`).
    Overlap,
    /// The queue was full (`queue`).
    QueueFull,
    /// Decided after the catch-up window had passed.
    Late,
}

impl SkipReason {
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::QueueFull => "queue full",
            SkipReason::Late => "late",
        }
    }
}

/// How one scheduled time was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FireOutcome {
    Launched(Launched),
    Queued,
    Skipped(SkipReason),
    /// The target could not be submitted (a workflow the state refused); the reason.
    Failed(String),
}

/// One entry of a cron's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    /// The first scheduled time this entry covers.
    pub scheduled_ms: u64,
    /// For a skipped range: its last scheduled time and how many fires it holds.
    pub through_ms: u64,
    pub count: u64,
    /// The proposer's clock when it was decided.
    pub decided_at_ms: u64,
    pub outcome: FireOutcome,
}

/// Fires older than the catch-up window, decided together as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateFires {
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u64,
}

/// A cron's replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cron {
    pub spec: CronSpec,
    pub created_at_ms: u64,
    pub paused: bool,
    /// The scheduled time of the last fire decided; the next fire is after it (a new
    /// cron: its creation time).
    pub last_scheduled_ms: u64,
    /// The latest run launched (overlap is judged against it).
    pub current: Option<Launched>,
    /// Scheduled times waiting for the current run to end (`queue`).
    pub queued: VecDeque<u64>,
    pub history: VecDeque<Fire>,
    pub launched: u64,
    pub skipped: u64,
}

/// A change to the crons: the payload of [`Command::Cron`](crate::Command::Cron).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CronOp {
    Create(Box<CronSpec>),
    SetPaused {
        name: String,
        paused: bool,
    },
    Delete {
        name: String,
    },
    /// Fires the leader found due: `late` are older than the catch-up window (skipped),
    /// `scheduled` are within it (each decided by the overlap policy), all after the last
    /// fire decided, ascending.
    Fire {
        name: String,
        late: Option<LateFires>,
        scheduled: Vec<u64>,
    },
    /// Launches the first queued fire: the current run has ended.
    RunQueued {
        name: String,
        scheduled_ms: u64,
    },
}

/// A change to the crons, in words (see `words`).
pub fn describe(op: &CronOp) -> String {
    match op {
        CronOp::Create(s) => format!("cron {:?} created: {} ({})", s.name, s.schedule, s.tz),
        CronOp::SetPaused { name, paused: true } => format!("cron {name:?} paused"),
        CronOp::SetPaused {
            name,
            paused: false,
        } => format!("cron {name:?} resumed"),
        CronOp::Delete { name } => format!("cron {name:?} deleted"),
        CronOp::Fire {
            name,
            late,
            scheduled,
        } => {
            let mut s = format!("cron {name:?} fires");
            match scheduled.as_slice() {
                [] => {}
                [one] => s += &format!(" for {}", crate::words::time_ms(*one)),
                many => s += &format!(" {} times", many.len()),
            }
            if let Some(l) = late {
                s += &format!(" ({} late fire(s) skipped)", l.count);
            }
            s
        }
        CronOp::RunQueued { name, scheduled_ms } => format!(
            "cron {name:?} runs its queued fire for {}",
            crate::words::time_ms(*scheduled_ms)
        ),
    }
}

impl CronOp {
    pub fn name(&self) -> &str {
        match self {
            CronOp::Create(s) => &s.name,
            CronOp::SetPaused { name, .. }
            | CronOp::Delete { name }
            | CronOp::Fire { name, .. }
            | CronOp::RunQueued { name, .. } => name,
        }
    }
}

/// Every cron, by name. Replicated, hashed once not empty, snapshotted (version 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crons {
    pub(crate) map: BTreeMap<String, Cron>,
}

impl Crons {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Cron> {
        self.map.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Cron> {
        self.map.values()
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Cron> {
        self.map.get_mut(name)
    }

    /// Whether `op` would take effect; the proposer checks it first.
    pub fn check(&self, op: &CronOp) -> Result<(), Invalid> {
        match op {
            CronOp::Create(spec) => {
                spec.validate()?;
                if self.map.contains_key(&spec.name) {
                    return Err(Invalid::new("name", format!("cron {:?} exists", spec.name)));
                }
                if self.map.len() >= CRONS_MAX {
                    return Err(Invalid::new(
                        "name",
                        format!("{CRONS_MAX} crons exist (CRONS_MAX)"),
                    ));
                }
                Ok(())
            }
            CronOp::SetPaused { name, .. } | CronOp::Delete { name } => self
                .map
                .get(name)
                .map(|_| ())
                .ok_or_else(|| Invalid::new("name", format!("no cron {name:?}"))),
            CronOp::Fire { .. } | CronOp::RunQueued { .. } => Ok(()),
        }
    }

    pub(crate) fn create(&mut self, at_ms: u64, spec: CronSpec) {
        self.map.insert(
            spec.name.clone(),
            Cron {
                spec,
                created_at_ms: at_ms,
                paused: false,
                last_scheduled_ms: at_ms,
                current: None,
                queued: VecDeque::new(),
                history: VecDeque::new(),
                launched: 0,
                skipped: 0,
            },
        );
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<Cron> {
        self.map.remove(name)
    }
}

impl Cron {
    /// Records a decision in the history (bounded) and the counters.
    pub(crate) fn record(&mut self, fire: Fire) {
        match &fire.outcome {
            FireOutcome::Launched(l) => {
                self.launched += 1;
                self.current = Some(*l);
            }
            FireOutcome::Skipped(_) | FireOutcome::Failed(_) => self.skipped += fire.count,
            FireOutcome::Queued => {}
        }
        if self.history.len() == CRON_HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(fire);
    }

    /// The job spec(s) a fire at `scheduled_ms` submits: the target's, with the cron's
    /// name and the scheduled time in the environment.
    pub fn stamped(&self, scheduled_ms: u64) -> CronTarget {
        let stamp = |s: &JobSpec| {
            let mut s = s.clone();
            s.env
                .insert(CRON_ENV_NAME.to_string(), self.spec.name.clone());
            s.env
                .insert(CRON_ENV_SCHEDULED.to_string(), scheduled_ms.to_string());
            s
        };
        match &self.spec.target {
            CronTarget::Job(s) => CronTarget::Job(Box::new(stamp(s))),
            CronTarget::Workflow { name, jobs } => CronTarget::Workflow {
                name: name.clone(),
                jobs: jobs
                    .iter()
                    .map(|j| WorkflowJob {
                        key: j.key.clone(),
                        spec: stamp(&j.spec),
                        after: j.after.clone(),
                    })
                    .collect(),
            },
        }
    }
}

/// A parsed schedule in its time zone: what the leader (and previews) evaluate.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

/// The fires due at some moment: ones too old to run, and ones to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    pub late: Option<LateFires>,
    pub scheduled: Vec<u64>,
}

impl Due {
    pub fn is_empty(&self) -> bool {
        self.late.is_none() && self.scheduled.is_empty()
    }
}

/// Occurrences [`due`] walks in one call at most while counting late fires; the rest are
/// counted at the next call (the last fire decided has moved on by then).
pub const LATE_SCAN_MAX: u64 = 1_000_000;

impl Schedule {
    pub fn parse(schedule: &str, tz: &str) -> Result<Schedule, Invalid> {
        let cron: croner::Cron = schedule
            .parse()
            .map_err(|e| Invalid::new("schedule", format!("{schedule:?}: {e}")))?;
        let tz: chrono_tz::Tz = tz.parse().map_err(|_| {
            Invalid::new(
                "tz",
                format!("{tz:?} is not an IANA time zone (Europe/Paris, UTC)"),
            )
        })?;
        let s = Schedule { cron, tz };
        if s.next_after(0).is_none() {
            return Err(Invalid::new(
                "schedule",
                format!("{schedule:?} never fires"),
            ));
        }
        Ok(s)
    }

    /// The first occurrence strictly after `after_ms` (milliseconds since the epoch).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        use chrono::TimeZone;
        let at = self.tz.timestamp_millis_opt(after_ms as i64).single()?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The next `n` occurrences after `after_ms`.
    pub fn preview(&self, after_ms: u64, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after_ms;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// A time in this schedule's zone, as RFC 3339 (for people).
    pub fn local(&self, ms: u64) -> String {
        use chrono::TimeZone;
        self.tz
            .timestamp_millis_opt(ms as i64)
            .single()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| ms.to_string())
    }
}

/// The fires of `schedule` after `after_ms` up to `now_ms`: those more than `catch_up_ms`
/// before `now_ms` are late, the others (at most [`CRON_FIRES_PER_ENTRY_MAX`]) to be
/// decided. Pure: the leader calls it with its clock, tests with any.
pub fn due(schedule: &Schedule, after_ms: u64, now_ms: u64, catch_up_ms: u64) -> Due {
    let mut d = Due::default();
    let mut t = after_ms;
    let mut scanned = 0;
    while let Some(next) = schedule.next_after(t) {
        if next > now_ms || d.scheduled.len() == CRON_FIRES_PER_ENTRY_MAX {
            break;
        }
        if now_ms - next > catch_up_ms {
            let late = d.late.get_or_insert(LateFires {
                first_ms: next,
                last_ms: next,
                count: 0,
            });
            late.last_ms = next;
            late.count += 1;
            scanned += 1;
            if scanned == LATE_SCAN_MAX {
                break;
            }
        } else {
            d.scheduled.push(next);
        }
        t = next;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterState, Command, JobState, Response};
    use chrono::TimeZone;

    fn spec(name: &str, overlap: Overlap) -> CronSpec {
        CronSpec {
            name: name.into(),
            schedule: "* * * * *".into(),
            tz: "UTC".into(),
            overlap,
            catch_up_ms: CATCH_UP_MS_DEFAULT,
            target: CronTarget::Job(Box::new(JobSpec::new("tick", &["true"]))),
        }
    }

    struct Log {
        s: ClusterState,
        i: u64,
    }

    impl Log {
        fn new() -> Log {
            Log {
                s: ClusterState::new(),
                i: 0,
            }
        }
        fn op(&mut self, at_ms: u64, op: CronOp) -> Response {
            self.i += 1;
            self.s.apply(self.i, &Command::Cron { at_ms, op })
        }
        fn fire(&mut self, name: &str, scheduled: &[u64]) -> Response {
            let at = *scheduled.last().unwrap();
            self.op(
                at,
                CronOp::Fire {
                    name: name.into(),
                    late: None,
                    scheduled: scheduled.to_vec(),
                },
            )
        }
        fn end(&mut self, job: JobId) {
            self.i += 1;
            self.s.apply(
                self.i,
                &Command::CancelJob {
                    at_ms: 0,
                    job,
                    reason: "test".into(),
                },
            );
            assert!(self.s.job(job).unwrap().state.is_final());
        }
        fn cron(&self, name: &str) -> &Cron {
            self.s.crons().get(name).unwrap()
        }
        fn outcomes(&self, name: &str) -> Vec<FireOutcome> {
            self.cron(name)
                .history
                .iter()
                .map(|f| f.outcome.clone())
                .collect()
        }
    }

    use FireOutcome::*;

    #[test]
    fn a_fire_is_decided_once_and_skip_waits_for_the_run_to_end() {
        let mut l = Log::new();
        assert_eq!(
            l.op(1_000, CronOp::Create(Box::new(spec("s", Overlap::Skip)))),
            Response::Done
        );
        assert!(matches!(
            l.op(1_001, CronOp::Create(Box::new(spec("s", Overlap::Skip)))),
            Response::Rejected(_)
        ));
        assert_eq!(l.fire("s", &[60_000]), Response::Done);
        let job = l.s.job(1).unwrap();
        assert_eq!(job.spec.env[CRON_ENV_NAME], "s");
        assert_eq!(job.spec.env[CRON_ENV_SCHEDULED], "60000");
        // A second leader's copy of the same fire, and an older one: nothing happens.
        assert!(matches!(l.fire("s", &[60_000]), Response::Ignored { .. }));
        assert!(matches!(l.fire("s", &[30_000]), Response::Ignored { .. }));
        assert_eq!(l.s.job_count(), 1);
        // Job 1 still pending: skipped.
        l.fire("s", &[120_000]);
        l.end(1);
        l.fire("s", &[180_000]);
        assert_eq!(
            l.outcomes("s"),
            vec![
                Launched(super::Launched::Job(1)),
                Skipped(SkipReason::Overlap),
                Launched(super::Launched::Job(2))
            ]
        );
        let c = l.cron("s");
        assert_eq!(
            (c.launched, c.skipped, c.last_scheduled_ms),
            (2, 1, 180_000)
        );
    }

    #[test]
    fn queue_runs_a_held_fire_once_the_run_ends_and_allow_overlaps() {
        let mut l = Log::new();
        l.op(0, CronOp::Create(Box::new(spec("q", Overlap::Queue))));
        l.fire("q", &[60_000, 120_000]);
        assert_eq!(
            l.outcomes("q"),
            vec![Launched(super::Launched::Job(1)), Queued]
        );
        let run = |l: &mut Log| {
            l.op(
                130_000,
                CronOp::RunQueued {
                    name: "q".into(),
                    scheduled_ms: 120_000,
                },
            )
        };
        assert!(
            matches!(run(&mut l), Response::Ignored { .. }),
            "job 1 runs"
        );
        l.end(1);
        assert_eq!(run(&mut l), Response::Done);
        assert!(matches!(run(&mut l), Response::Ignored { .. }), "once");
        assert_eq!(l.s.job(2).unwrap().spec.env[CRON_ENV_SCHEDULED], "120000");
        assert!(l.cron("q").queued.is_empty());
        assert_eq!(l.s.job(2).unwrap().state, JobState::Pending);

        l.op(0, CronOp::Create(Box::new(spec("a", Overlap::Allow))));
        l.fire("a", &[60_000, 120_000]);
        assert_eq!(
            l.cron("a").launched,
            2,
            "allow launches while the first runs"
        );
    }

    #[test]
    fn late_fires_are_one_skipped_range_and_a_pause_owes_nothing() {
        let mut l = Log::new();
        l.op(0, CronOp::Create(Box::new(spec("p", Overlap::Allow))));
        let late = LateFires {
            first_ms: 60_000,
            last_ms: 300_000,
            count: 5,
        };
        l.op(
            400_000,
            CronOp::Fire {
                name: "p".into(),
                late: Some(late),
                scheduled: vec![360_000],
            },
        );
        let c = l.cron("p");
        assert_eq!((c.launched, c.skipped), (1, 5));
        assert_eq!(c.history[0].count, 5);
        assert_eq!(c.history[0].through_ms, 300_000);
        assert_eq!(c.history[0].outcome, Skipped(SkipReason::Late));
        // Paused: fires change nothing; resumed at 1_000_000: the schedule goes on from there.
        l.op(
            500_000,
            CronOp::SetPaused {
                name: "p".into(),
                paused: true,
            },
        );
        assert!(matches!(l.fire("p", &[420_000]), Response::Ignored { .. }));
        l.op(
            1_000_000,
            CronOp::SetPaused {
                name: "p".into(),
                paused: false,
            },
        );
        assert_eq!(l.cron("p").last_scheduled_ms, 1_000_000);
        assert!(matches!(l.fire("p", &[960_000]), Response::Ignored { .. }));

        // Crons are in the hash and the snapshot.
        let bytes = l.s.to_snapshot();
        let back = ClusterState::from_snapshot(&bytes).unwrap();
        assert_eq!(back.crons(), l.s.crons());
        assert_eq!(back.hash(), l.s.hash());
        let before = l.s.hash();
        l.op(2_000_000, CronOp::Delete { name: "p".into() });
        assert!(l.s.crons().get("p").is_none());
        assert_ne!(l.s.hash(), before);
    }

    #[test]
    fn cron_specs_are_bounded() {
        let s = spec("ok", Overlap::Skip);
        s.validate().unwrap();
        for (change, want) in [
            (
                Box::new(|s: &mut CronSpec| s.name = "a b".into()) as Box<dyn Fn(&mut CronSpec)>,
                "CRON_NAME_BYTES_MAX",
            ),
            (
                Box::new(|s: &mut CronSpec| s.catch_up_ms = 0),
                "CATCH_UP_MS_MAX",
            ),
            (
                Box::new(|s: &mut CronSpec| s.tz = "x".repeat(65)),
                "CRON_TZ_BYTES_MAX",
            ),
            (
                Box::new(|s: &mut CronSpec| {
                    if let CronTarget::Job(j) = &mut s.target {
                        j.idempotency_key = Some("k".into());
                    }
                }),
                "idempotency key",
            ),
        ] {
            let mut bad = s.clone();
            change(&mut bad);
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    fn ms(tz: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis() as u64
    }

    fn utc(s: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as u64
    }

    /// Europe/Paris springs forward on 2026-03-29 at 02:00 (to 03:00) and falls back on
    /// 2026-10-25 at 03:00 (to 02:00). With a fixed clock: a daily 02:30 fire runs once
    /// right after the gap and once in the repeated hour; an every-15-minutes fire skips
    /// the gap and runs in both passes of the repeated hour.
    #[test]
    fn dst_gaps_and_repeats_follow_the_zone() {
        let paris = chrono_tz::Europe::Paris;
        let daily = Schedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        // Spring: from the evening before to the evening of the change.
        let fires = due(
            &daily,
            ms(paris, 2026, 3, 28, 12, 0),
            ms(paris, 2026, 3, 29, 12, 0),
            CATCH_UP_MS_MAX,
        );
        assert_eq!(
            fires.scheduled,
            vec![utc("2026-03-29T01:00:00Z")],
            "03:00 CEST, once"
        );
        // Autumn: 02:30 happens twice; the fire runs once, at the first (CEST).
        let fires = due(
            &daily,
            ms(paris, 2026, 10, 24, 12, 0),
            ms(paris, 2026, 10, 25, 12, 0),
            CATCH_UP_MS_MAX,
        );
        assert_eq!(fires.scheduled, vec![utc("2026-10-25T00:30:00Z")]);

        let quarter = Schedule::parse("*/15 * * * *", "Europe/Paris").unwrap();
        let spring = due(
            &quarter,
            utc("2026-03-29T00:40:00Z"), // 01:40 CET
            utc("2026-03-29T01:20:00Z"), // 03:20 CEST
            CATCH_UP_MS_MAX,
        );
        assert_eq!(
            spring.scheduled,
            vec![
                utc("2026-03-29T00:45:00Z"), // 01:45 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST: 02:xx does not exist
                utc("2026-03-29T01:15:00Z"),
            ]
        );
        let autumn = due(
            &quarter,
            utc("2026-10-24T23:50:00Z"), // 01:50 CEST
            utc("2026-10-25T01:10:00Z"), // 02:10 CET
            CATCH_UP_MS_MAX,
        );
        // Real time, every 15 minutes, through both passes of 02:00-03:00.
        let want: Vec<u64> = (0..5)
            .map(|i| utc("2026-10-25T00:00:00Z") + i * 15 * 60_000)
            .collect();
        assert_eq!(autumn.scheduled, want);
    }

    #[test]
    fn old_fires_are_late_and_counted_the_rest_run() {
        let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
        let start = utc("2026-01-01T00:00:00Z");
        // Down for 10 minutes; a catch-up window of 3 minutes.
        let d = due(
            &every_minute,
            start,
            start + 10 * 60_000 + 30_000,
            3 * 60_000,
        );
        assert_eq!(
            d.late,
            Some(LateFires {
                first_ms: start + 60_000,
                last_ms: start + 7 * 60_000,
                count: 7
            })
        );
        assert_eq!(
            d.scheduled,
            vec![start + 8 * 60_000, start + 9 * 60_000, start + 10 * 60_000]
        );
        // Nothing is due before its time, and a decided fire is not due again.
        assert!(due(&every_minute, start, start + 59_999, 60_000).is_empty());
        assert!(due(&every_minute, start + 60_000, start + 60_000, 60_000).is_empty());
        // A clock that jumped back decides nothing twice.
        assert!(due(&every_minute, start + 10 * 60_000, start, 60_000).is_empty());
    }

    #[test]
    fn schedules_and_zones_are_checked() {
        assert!(Schedule::parse("*/5 * * * *", "Europe/Paris").is_ok());
        assert!(Schedule::parse("@daily", "UTC").is_ok());
        let e = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert_eq!(e.field, "schedule");
        let e = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e.field, "tz");
        let s = Schedule::parse("0 9 * * MON", "UTC").unwrap();
        let p = s.preview(utc("2026-11-29T00:00:00Z"), 3);
        assert_eq!(
            p,
            vec![
                utc("2026-11-30T09:00:00Z"),
                utc("2026-12-07T09:00:00Z"),
                utc("2026-12-14T09:00:00Z")
            ]
        );
    }
}
