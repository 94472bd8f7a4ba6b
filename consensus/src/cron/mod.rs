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
        check_name(&self.name)?;
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

/// Checks a cron's name: 1..=`CRON_NAME_BYTES_MAX` bytes of letters, digits, `-`, `_`
/// and `.` — never a `/`, so a name of one namespace never reads as another's key.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || name.len() > CRON_NAME_BYTES_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Invalid::new(
            "name",
            format!(
                "1..={CRON_NAME_BYTES_MAX} bytes of letters, digits, - _ . (CRON_NAME_BYTES_MAX)"
            ),
        ));
    }
    Ok(())
}

/// The key cron `name` of namespace `namespace` is kept under: its name in `default`,
/// `namespace/name` in another (a cron's name holds no `/`), so the crons of a log written
/// before namespaces keep their keys, encoding and hash.
pub fn cron_key(namespace: &str, name: &str) -> String {
    if namespace == crate::namespace::DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// The namespace and the name a cron key stands for (see [`cron_key`]).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/')
        .unwrap_or((crate::namespace::DEFAULT_NAMESPACE, key))
}

/// Every cron, by key ([`cron_key`]: its name, qualified by its namespace outside
/// `default`). Replicated, hashed once not empty, snapshotted (version 4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crons {
    pub(crate) map: BTreeMap<String, Cron>,
}

impl Crons {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Cron `name` of namespace `namespace` (none for a name no cron may have).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Cron> {
        check_name(name).ok()?;
        self.map.get(&cron_key(namespace, name))
    }

    /// Every cron with its namespace, in the order of their keys.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Cron)> {
        self.map.iter().map(|(k, c)| (split_key(k).0, c))
    }

    /// The crons of namespace `namespace`.
    pub fn count_in(&self, namespace: &str) -> u64 {
        self.iter().filter(|(ns, _)| *ns == namespace).count() as u64
    }

    pub(crate) fn get_key(&self, key: &str) -> Option<&Cron> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Cron> {
        self.map.get_mut(key)
    }

    /// Whether `op`, made in namespace `namespace`, would take effect; the proposer
    /// checks it first.
    pub fn check(&self, namespace: &str, op: &CronOp) -> Result<(), Invalid> {
        // Every op's name, not only a new cron's: `ns/name` must never reach another
        // namespace's cron through its key.
        check_name(op.name())?;
        let key = cron_key(namespace, op.name());
        match op {
            CronOp::Create(spec) => {
                spec.validate()?;
                if self.map.contains_key(&key) {
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
                .get(&key)
                .map(|_| ())
                .ok_or_else(|| Invalid::new("name", format!("no cron {name:?}"))),
            CronOp::Fire { .. } | CronOp::RunQueued { .. } => Ok(()),
        }
    }

    pub(crate) fn create(&mut self, at_ms: u64, key: String, spec: CronSpec) {
        self.map.insert(
            key,
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
mod tests;
