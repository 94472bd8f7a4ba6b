//! Namespaces: one cluster shared by several teams.
//!
//! Every job and workflow belongs to one namespace; `default` exists from the start (jobs
//! of logs written before namespaces existed, and of submissions that name none, are in
//! it). A namespace is created, updated and deleted by [`NamespaceOp`] entries; a
//! submission made in one is wrapped in `Command::InNamespace`. Idempotency keys are
//! scoped by namespace, and so are job ids for readers (a job of another namespace is "not
//! found" there).
//!
//! Each namespace has settings ([`Setting`]): its fair-share weight and its quotas —
//! pending jobs, attempts running, CPU and memory reserved by running attempts, and a
//! submit rate. Quotas on what a submission adds (pending jobs, the rate) are decided in
//! apply, from the entry alone (the rate's token bucket refills by the entry's timestamp),
//! so every node and every replay agrees; quotas on what runs are kept by the leader's
//! scheduler, which never assigns past them.
//!
//! Settings are a list of variants, so a setting added later is a new variant appended,
//! and every entry written stays readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Invalid;

/// The namespace of everything that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Most namespaces a cluster holds (besides `default`).
pub const NAMESPACES_MAX: usize = 1000;
/// Longest namespace name, in bytes.
pub const NAMESPACE_NAME_BYTES_MAX: usize = 63;
/// Largest fair-share weight.
pub const WEIGHT_MAX: u32 = 1000;
/// Fair-share weight of a namespace that sets none.
pub const WEIGHT_DEFAULT: u32 = 1;
/// Largest submit rate, jobs per second (and largest burst).
pub const SUBMIT_RATE_MAX: u32 = 1_000_000;

/// Most grants one token holds.
pub const GRANTS_MAX: usize = 64;

/// What a token may do in a namespace (see [`Grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// See its jobs and workflows: get, list, watch, explain (a job's environment and
    /// step outputs left out).
    Read,
    /// Read its jobs' output, environment and step outputs.
    ReadOutput,
    /// Submit jobs and workflows, rerun workflows, cancel the jobs it submitted.
    Submit,
    /// Cancel any of its jobs.
    Cancel,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Read,
        Capability::ReadOutput,
        Capability::Submit,
        Capability::Cancel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::ReadOutput => "read-output",
            Capability::Submit => "submit",
            Capability::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Capabilities in the namespaces `namespaces` names: one (`ml`), those starting with a
/// prefix (`ml-*`), or every one (`*`). A token with grants may do in a namespace what
/// its grants matching it allow, and nothing else there; a token without grants does in
/// every namespace what its policy allows (read: read and read-output; submit: + submit;
/// operator and management: + cancel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub namespaces: String,
    pub capabilities: Vec<Capability>,
}

impl Grant {
    /// Whether the grant covers namespace `ns`.
    pub fn matches(&self, ns: &str) -> bool {
        match self.namespaces.strip_suffix('*') {
            Some(prefix) => ns.starts_with(prefix),
            None => self.namespaces == ns,
        }
    }

    /// Whether the grant allows `cap` in `ns`.
    pub fn allows(&self, cap: Capability, ns: &str) -> bool {
        self.matches(ns) && self.capabilities.contains(&cap)
    }

    fn check(&self) -> Result<(), Invalid> {
        let pattern = self
            .namespaces
            .strip_suffix('*')
            .unwrap_or(&self.namespaces);
        if !pattern.is_empty() || !self.namespaces.ends_with('*') {
            // A prefix of a name, or a whole name: the same characters.
            check_name(pattern).map_err(|e| Invalid::new("grants.namespaces", e.reason))?;
        }
        if self.capabilities.is_empty() {
            return Err(Invalid::new(
                "grants.capabilities",
                format!("a grant on {:?} names no capability", self.namespaces),
            ));
        }
        Ok(())
    }
}

/// Checks a token's grants: at most `GRANTS_MAX`, each a valid pattern with capabilities.
pub fn check_grants(grants: &[Grant]) -> Result<(), Invalid> {
    if grants.len() > GRANTS_MAX {
        return Err(Invalid::new(
            "grants",
            format!("{} > GRANTS_MAX ({GRANTS_MAX})", grants.len()),
        ));
    }
    grants.iter().try_for_each(Grant::check)
}

/// One setting of a namespace. New settings are new variants, appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Setting {
    /// Its share of free slots against other namespaces with pending work (1..=1000).
    Weight(u32),
    /// Most jobs pending (waiting to be placed) at once; a submission past it is refused.
    PendingJobsMax(u64),
    /// Most attempts assigned or running at once; the scheduler places no more.
    RunningMax(u64),
    /// Most CPU (millicores) reserved by its running attempts.
    CpuMillisMax(u64),
    /// Most memory (bytes) reserved by its running attempts.
    MemoryBytesMax(u64),
    /// Jobs submitted per second, with bursts of up to `burst` (a token bucket).
    SubmitRate { per_sec: u32, burst: u32 },
    /// The sandboxes its jobs may ask for, a set of [`SANDBOX_BITS`]; others are refused.
    Sandboxes(u8),
    /// Longest timeout a job may ask for (a job asking none gets the default, else this).
    JobTimeoutMsMax(u64),
    /// Most CPU one job may reserve.
    JobCpuMillisMax(u32),
    /// Most memory one job may reserve.
    JobMemoryBytesMax(u64),
    /// The timeout of a job that asks none (0).
    JobTimeoutMsDefault(u64),
    /// The CPU reserved by a job that asks none.
    JobCpuMillisDefault(u32),
    /// The memory reserved by a job that asks none.
    JobMemoryBytesDefault(u64),
    /// How long its jobs are kept once ended before the leader collects them (0: kept
    /// until deleted by hand), instead of the cluster's `--job-retention`. Fixed for a
    /// job when it ends; a job's own `retain` comes first.
    JobRetentionMs(u64),
    /// Most crons it holds; making one past it is refused.
    CronsMax(u64),
}

/// The sandboxes by name and bit, for [`Setting::Sandboxes`].
pub const SANDBOX_BITS: [(&str, u8); 4] = [
    ("default", 1),
    ("process", 2),
    ("bubblewrap", 4),
    ("docker", 8),
];

/// The bit of a job's sandbox in [`SANDBOX_BITS`].
pub fn sandbox_bit(s: &crate::SandboxKind) -> (&'static str, u8) {
    SANDBOX_BITS[match s {
        crate::SandboxKind::Default => 0,
        crate::SandboxKind::Process => 1,
        crate::SandboxKind::Bubblewrap => 2,
        crate::SandboxKind::Docker(_) => 3,
    }]
}

impl Setting {
    /// The setting's name (as the CLI and API spell it).
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Weight(_) => "weight",
            Setting::PendingJobsMax(_) => "pending_jobs_max",
            Setting::RunningMax(_) => "running_max",
            Setting::CpuMillisMax(_) => "cpu_millis_max",
            Setting::MemoryBytesMax(_) => "memory_bytes_max",
            Setting::SubmitRate { .. } => "submit_rate",
            Setting::Sandboxes(_) => "sandboxes",
            Setting::JobTimeoutMsMax(_) => "job_timeout_ms_max",
            Setting::JobCpuMillisMax(_) => "job_cpu_millis_max",
            Setting::JobMemoryBytesMax(_) => "job_memory_bytes_max",
            Setting::JobTimeoutMsDefault(_) => "job_timeout_ms_default",
            Setting::JobCpuMillisDefault(_) => "job_cpu_millis_default",
            Setting::JobMemoryBytesDefault(_) => "job_memory_bytes_default",
            Setting::JobRetentionMs(_) => "job_retention_ms",
            Setting::CronsMax(_) => "crons_max",
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        use crate::command::limits::{CPU_MILLIS_MAX, MEMORY_BYTES_MAX, TIMEOUT_MS_MAX};
        match *self {
            Setting::Sandboxes(bits) if bits == 0 || bits > 15 => Err(Invalid::new(
                "sandboxes",
                "must allow one or more of default, process, bubblewrap, docker",
            )),
            Setting::JobTimeoutMsMax(v) | Setting::JobTimeoutMsDefault(v) if v > TIMEOUT_MS_MAX => {
                Err(Invalid::new(
                    self.name(),
                    format!("{v} > TIMEOUT_MS_MAX {TIMEOUT_MS_MAX}"),
                ))
            }
            Setting::JobCpuMillisMax(v) | Setting::JobCpuMillisDefault(v) if v > CPU_MILLIS_MAX => {
                Err(Invalid::new(
                    self.name(),
                    format!("{v} > CPU_MILLIS_MAX {CPU_MILLIS_MAX}"),
                ))
            }
            Setting::JobMemoryBytesMax(v) | Setting::JobMemoryBytesDefault(v)
                if v > MEMORY_BYTES_MAX =>
            {
                Err(Invalid::new(
                    self.name(),
                    format!("{v} > MEMORY_BYTES_MAX {MEMORY_BYTES_MAX}"),
                ))
            }
            Setting::JobRetentionMs(v) if v > crate::command::limits::JOB_RETAIN_MS_MAX => {
                Err(Invalid::new(
                    self.name(),
                    format!(
                        "{v} > JOB_RETAIN_MS_MAX {}",
                        crate::command::limits::JOB_RETAIN_MS_MAX
                    ),
                ))
            }
            Setting::Weight(w) if w == 0 || w > WEIGHT_MAX => Err(Invalid::new(
                "weight",
                format!("{w}: must be 1..={WEIGHT_MAX} (WEIGHT_MAX)"),
            )),
            Setting::SubmitRate { per_sec, burst }
                if per_sec == 0
                    || per_sec > SUBMIT_RATE_MAX
                    || burst == 0
                    || burst > SUBMIT_RATE_MAX =>
            {
                Err(Invalid::new(
                    "submit_rate",
                    format!(
                        "{per_sec}/s, burst {burst}: each must be 1..={SUBMIT_RATE_MAX} (SUBMIT_RATE_MAX)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Checks a namespace's name: 1..=63 bytes of lower-case letters, digits and `-`,
/// starting with a letter or digit (it appears in metrics labels and paths).
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= NAMESPACE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "namespace",
            format!(
                "{name:?}: 1..={NAMESPACE_NAME_BYTES_MAX} bytes (NAMESPACE_NAME_BYTES_MAX) of a-z, 0-9 and '-', not starting with '-'"
            ),
        ))
    }
}

/// Checks a list of settings: each within its bounds, none twice.
pub fn check_settings(settings: &[Setting]) -> Result<(), Invalid> {
    for (i, s) in settings.iter().enumerate() {
        s.validate()?;
        if settings[..i].iter().any(|t| t.name() == s.name()) {
            return Err(Invalid::new(
                s.name(),
                "given twice; each setting at most once",
            ));
        }
    }
    Ok(())
}

/// A change to the namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceOp {
    /// A new namespace with these settings.
    Create {
        name: String,
        settings: Vec<Setting>,
    },
    /// Sets these settings (others stay); `clear` names settings to drop (back to
    /// unlimited, or the default weight).
    Update {
        name: String,
        settings: Vec<Setting>,
        clear: Vec<String>,
    },
    /// Removes a namespace that holds no job (not `default`).
    Delete { name: String },
}

impl NamespaceOp {
    pub fn name(&self) -> &str {
        match self {
            NamespaceOp::Create { name, .. }
            | NamespaceOp::Update { name, .. }
            | NamespaceOp::Delete { name } => name,
        }
    }
}

/// A namespace as the state keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub created_at_ms: u64,
    /// At most one of each kind, in the order set.
    pub settings: Vec<Setting>,
    /// The submit rate's bucket: milli-jobs available and when it was last refilled (the
    /// timestamp of the last submission that drew from it). Replicated: decided in apply.
    pub bucket: Option<(u64, u64)>,
}

/// A namespace's settings, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub weight: u32,
    pub pending_jobs_max: Option<u64>,
    pub running_max: Option<u64>,
    pub cpu_millis_max: Option<u64>,
    pub memory_bytes_max: Option<u64>,
    pub submit_rate: Option<(u32, u32)>,
    /// Allowed sandboxes ([`SANDBOX_BITS`]); `None`: any.
    pub sandboxes: Option<u8>,
    pub job_timeout_ms_max: Option<u64>,
    pub job_cpu_millis_max: Option<u32>,
    pub job_memory_bytes_max: Option<u64>,
    pub job_timeout_ms_default: Option<u64>,
    pub job_cpu_millis_default: Option<u32>,
    pub job_memory_bytes_default: Option<u64>,
    pub job_retention_ms: Option<u64>,
    pub crons_max: Option<u64>,
}

impl Limits {
    /// `spec` as a job of this namespace runs it: a timeout, CPU or memory it asks none
    /// of (0) takes the namespace's default.
    pub fn with_defaults(&self, spec: &mut crate::JobSpec) {
        if spec.timeout_ms == 0 {
            spec.timeout_ms = self.job_timeout_ms_default.unwrap_or(0);
        }
        if spec.resources.cpu_millis == 0 {
            spec.resources.cpu_millis = self.job_cpu_millis_default.unwrap_or(0);
        }
        if spec.resources.memory_bytes == 0 {
            spec.resources.memory_bytes = self.job_memory_bytes_default.unwrap_or(0);
        }
    }

    /// Why a job of this namespace may not run as `spec` asks (after its defaults): a
    /// sandbox it does not allow, or a limit past its maximum.
    pub fn check_job(&self, ns: &str, spec: &crate::JobSpec) -> Result<(), Invalid> {
        let mut spec = spec.clone();
        self.with_defaults(&mut spec);
        let (name, bit) = sandbox_bit(&spec.sandbox);
        if self.sandboxes.is_some_and(|allowed| allowed & bit == 0) {
            let allowed: Vec<&str> = SANDBOX_BITS
                .iter()
                .filter(|(_, b)| self.sandboxes.unwrap_or(0) & b != 0)
                .map(|(n, _)| *n)
                .collect();
            return Err(Invalid::new(
                "sandbox",
                format!(
                    "namespace {ns} allows the sandboxes {}, not {name}",
                    allowed.join(", ")
                ),
            ));
        }
        let over = |what: &str, asked: u64, max: Option<u64>| match max {
            Some(m) if asked > m || (asked == 0 && m > 0 && what == "timeout_ms") => {
                Err(Invalid::new(
                    what,
                    format!("{asked} (0: none) is past namespace {ns}'s job_{what}_max of {m}"),
                ))
            }
            _ => Ok(()),
        };
        over("timeout_ms", spec.timeout_ms, self.job_timeout_ms_max)?;
        over(
            "cpu_millis",
            u64::from(spec.resources.cpu_millis),
            self.job_cpu_millis_max.map(u64::from),
        )?;
        over(
            "memory_bytes",
            spec.resources.memory_bytes,
            self.job_memory_bytes_max,
        )
    }
}

impl Namespace {
    pub fn limits(&self) -> Limits {
        let mut l = Limits {
            weight: WEIGHT_DEFAULT,
            ..Limits::default()
        };
        for s in &self.settings {
            match *s {
                Setting::Weight(w) => l.weight = w,
                Setting::PendingJobsMax(n) => l.pending_jobs_max = Some(n),
                Setting::RunningMax(n) => l.running_max = Some(n),
                Setting::CpuMillisMax(n) => l.cpu_millis_max = Some(n),
                Setting::MemoryBytesMax(n) => l.memory_bytes_max = Some(n),
                Setting::SubmitRate { per_sec, burst } => l.submit_rate = Some((per_sec, burst)),
                Setting::Sandboxes(b) => l.sandboxes = Some(b),
                Setting::JobTimeoutMsMax(v) => l.job_timeout_ms_max = Some(v),
                Setting::JobCpuMillisMax(v) => l.job_cpu_millis_max = Some(v),
                Setting::JobMemoryBytesMax(v) => l.job_memory_bytes_max = Some(v),
                Setting::JobTimeoutMsDefault(v) => l.job_timeout_ms_default = Some(v),
                Setting::JobCpuMillisDefault(v) => l.job_cpu_millis_default = Some(v),
                Setting::JobMemoryBytesDefault(v) => l.job_memory_bytes_default = Some(v),
                Setting::JobRetentionMs(v) => l.job_retention_ms = Some(v),
                Setting::CronsMax(v) => l.crons_max = Some(v),
            }
        }
        l
    }

    /// Sets `new` (replacing a setting of the same kind) and drops the settings `clear`
    /// names.
    pub(crate) fn update(&mut self, new: &[Setting], clear: &[String]) {
        self.settings.retain(|s| {
            !clear.iter().any(|c| c == s.name()) && !new.iter().any(|n| n.name() == s.name())
        });
        self.settings.extend_from_slice(new);
        if self.limits().submit_rate.is_none() {
            self.bucket = None;
        }
    }

    /// Draws `n` jobs from the submit-rate bucket at `at_ms` (refilled by the time since
    /// the last draw; a timestamp earlier than that refills nothing): `Err` with the jobs
    /// available when there are fewer than `n`, and the bucket unchanged.
    pub(crate) fn draw(&mut self, n: u64, at_ms: u64) -> Result<(), u64> {
        let Some((per_sec, burst)) = self.limits().submit_rate else {
            return Ok(());
        };
        let cap = u64::from(burst) * 1000;
        let (milli, last) = self.bucket.unwrap_or((cap, at_ms));
        // per_sec jobs a second = per_sec milli-jobs a millisecond.
        let refill = at_ms
            .saturating_sub(last)
            .saturating_mul(u64::from(per_sec));
        let have = milli.saturating_add(refill).min(cap);
        let want = n.saturating_mul(1000);
        if have < want {
            return Err(have / 1000);
        }
        self.bucket = Some((have - want, at_ms.max(last)));
        Ok(())
    }
}

/// What a namespace uses now (derived from the jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub pending: u64,
    /// Attempts assigned or running.
    pub running: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// The namespaces part of the state: the namespaces made, and the namespace of every job
/// not in `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// Created namespaces (and `default` once its settings were changed).
    pub(crate) made: BTreeMap<String, Namespace>,
    /// The namespace of each job outside `default`. Persistent: O(1) to copy.
    pub(crate) of_job: imbl::OrdMap<crate::JobId, String>,
    /// Idempotency keys of jobs outside `default`: (namespace, key) → job.
    pub(crate) keys: imbl::OrdMap<(String, String), crate::JobId>,
    /// The grants of tokens scoped to namespaces, by accessor (a token without an entry
    /// acts by its policy in every namespace).
    pub(crate) grants: BTreeMap<String, Vec<Grant>>,
}

impl Namespaces {
    /// Whether nothing was ever recorded (hashes and snapshots of such a state are as
    /// they were before namespaces existed).
    pub fn is_empty(&self) -> bool {
        self.made.is_empty()
            && self.of_job.is_empty()
            && self.keys.is_empty()
            && self.grants.is_empty()
    }

    /// The grants of token `accessor`, if it is scoped to namespaces.
    pub fn grants(&self, accessor: &str) -> Option<&[Grant]> {
        self.grants.get(accessor).map(Vec::as_slice)
    }

    /// Whether namespace `name` exists (`default` always does).
    pub fn exists(&self, name: &str) -> bool {
        name == DEFAULT_NAMESPACE || self.made.contains_key(name)
    }

    /// Namespace `name`, with `default`'s settings when it was never changed.
    pub fn get(&self, name: &str) -> Option<Namespace> {
        match self.made.get(name) {
            Some(n) => Some(n.clone()),
            None if name == DEFAULT_NAMESPACE => Some(Namespace::default()),
            None => None,
        }
    }

    /// Every namespace by name, `default` included.
    pub fn all(&self) -> BTreeMap<String, Namespace> {
        let mut all = self.made.clone();
        all.entry(DEFAULT_NAMESPACE.to_string()).or_default();
        all
    }

    /// The namespace of job `id` (`default` unless it was submitted in another).
    pub fn of(&self, id: crate::JobId) -> &str {
        self.of_job
            .get(&id)
            .map_or(DEFAULT_NAMESPACE, String::as_str)
    }

    /// The job retentions the namespaces set (`Setting::JobRetentionMs`).
    pub fn retentions(&self) -> impl Iterator<Item = u64> + '_ {
        self.made
            .values()
            .filter_map(|n| n.limits().job_retention_ms)
    }

    /// The limits of namespace `name` (the defaults for an unknown one).
    pub fn limits(&self, name: &str) -> Limits {
        self.made
            .get(name)
            .map_or_else(|| Namespace::default().limits(), Namespace::limits)
    }

    /// The encoding the state hash covers (namespaces and their buckets, and the tokens'
    /// grants; the jobs' namespaces are in their digests).
    pub(crate) fn made_encoded(&self) -> Vec<u8> {
        postcard::to_stdvec(&(&self.made, &self.grants)).expect("namespaces always encode")
    }

    /// Whether any namespace was made or any token scoped (the state hash covers them
    /// from then on).
    pub(crate) fn any_made(&self) -> bool {
        !self.made.is_empty() || !self.grants.is_empty()
    }

    /// Why `op` cannot be applied, if it cannot; `holds` counts the jobs and the crons a
    /// namespace holds.
    pub fn check(
        &self,
        op: &NamespaceOp,
        holds: impl Fn(&str) -> (u64, u64),
    ) -> Result<(), Invalid> {
        check_name(op.name())?;
        match op {
            NamespaceOp::Create { name, settings } => {
                check_settings(settings)?;
                if self.exists(name) {
                    return Err(Invalid::new(
                        "namespace",
                        format!("namespace {name} exists"),
                    ));
                }
                let created = self
                    .made
                    .keys()
                    .filter(|n| n.as_str() != DEFAULT_NAMESPACE)
                    .count();
                if created >= NAMESPACES_MAX {
                    return Err(Invalid::new(
                        "namespace",
                        format!("the cluster holds NAMESPACES_MAX ({NAMESPACES_MAX}) namespaces"),
                    ));
                }
                Ok(())
            }
            NamespaceOp::Update {
                name,
                settings,
                clear,
            } => {
                check_settings(settings)?;
                if clear.len() > SETTING_NAMES.len() {
                    return Err(Invalid::new(
                        "clear",
                        format!(
                            "{} names; there are {} settings",
                            clear.len(),
                            SETTING_NAMES.len()
                        ),
                    ));
                }
                if let Some(c) = clear.iter().find(|c| !SETTING_NAMES.contains(&c.as_str())) {
                    return Err(Invalid::new(
                        "clear",
                        format!(
                            "no setting {c:?}; settings are {}",
                            SETTING_NAMES.join(", ")
                        ),
                    ));
                }
                if !self.exists(name) {
                    return Err(Invalid::new("namespace", format!("no namespace {name}")));
                }
                Ok(())
            }
            NamespaceOp::Delete { name } => {
                if name == DEFAULT_NAMESPACE {
                    return Err(Invalid::new(
                        "namespace",
                        "the default namespace cannot be deleted",
                    ));
                }
                if !self.made.contains_key(name) {
                    return Err(Invalid::new("namespace", format!("no namespace {name}")));
                }
                let (jobs, crons) = holds(name);
                if jobs > 0 || crons > 0 {
                    return Err(Invalid::new(
                        "namespace",
                        format!("namespace {name} holds {jobs} jobs and {crons} crons; only an empty namespace can be deleted"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Applies `op` (checked first with [`check`](Self::check)).
    pub(crate) fn apply(&mut self, at_ms: u64, op: &NamespaceOp) {
        match op {
            NamespaceOp::Create { name, settings } => {
                self.made.insert(
                    name.clone(),
                    Namespace {
                        created_at_ms: at_ms,
                        settings: settings.clone(),
                        bucket: None,
                    },
                );
            }
            NamespaceOp::Update {
                name,
                settings,
                clear,
            } => {
                self.made
                    .entry(name.clone())
                    .or_default()
                    .update(settings, clear);
            }
            NamespaceOp::Delete { name } => {
                self.made.remove(name);
            }
        }
    }
}

/// Every setting's name.
pub const SETTING_NAMES: [&str; 15] = [
    "weight",
    "pending_jobs_max",
    "running_max",
    "cpu_millis_max",
    "memory_bytes_max",
    "submit_rate",
    "sandboxes",
    "job_timeout_ms_max",
    "job_cpu_millis_max",
    "job_memory_bytes_max",
    "job_timeout_ms_default",
    "job_cpu_millis_default",
    "job_memory_bytes_default",
    "job_retention_ms",
    "crons_max",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_settings_are_checked() {
        for ok in ["default", "ml", "team-a", "0x"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-a", "ML", "a_b", "a/b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_settings(&[Setting::Weight(0)]).is_err());
        assert!(check_settings(&[Setting::Weight(1001)]).is_err());
        assert!(check_settings(&[Setting::Weight(2), Setting::Weight(3)]).is_err());
        assert!(check_settings(&[Setting::SubmitRate {
            per_sec: 0,
            burst: 1
        }])
        .is_err());
        check_settings(&[Setting::Weight(3), Setting::RunningMax(0)]).unwrap();
    }

    #[test]
    fn the_bucket_refills_by_entry_time_and_never_goes_negative() {
        let mut n = Namespace {
            settings: vec![Setting::SubmitRate {
                per_sec: 10,
                burst: 20,
            }],
            ..Namespace::default()
        };
        // A full bucket at first: 20 at once, then none.
        n.draw(20, 1_000).unwrap();
        assert_eq!(n.draw(1, 1_000), Err(0));
        // 10 a second: half a second later, 5.
        assert_eq!(n.draw(6, 1_500), Err(5));
        n.draw(5, 1_500).unwrap();
        // A timestamp from the past (another leader's clock) refills nothing.
        assert_eq!(n.draw(1, 1_200), Err(0));
        // Never above the burst.
        assert_eq!(n.draw(21, 100_000), Err(20));
        // Dropping the rate drops the bucket.
        n.update(&[], &["submit_rate".to_string()]);
        assert_eq!(n.bucket, None);
        n.draw(1_000_000, 0).unwrap();
    }

    #[test]
    fn setting_encodings_are_stable() {
        // Log entries hold a setting as its variant's position.
        let enc = |s: &Setting| postcard::to_allocvec(s).unwrap()[0];
        assert_eq!(enc(&Setting::Weight(1)), 0);
        assert_eq!(enc(&Setting::PendingJobsMax(1)), 1);
        assert_eq!(enc(&Setting::RunningMax(1)), 2);
        assert_eq!(enc(&Setting::CpuMillisMax(1)), 3);
        assert_eq!(enc(&Setting::MemoryBytesMax(1)), 4);
        assert_eq!(
            enc(&Setting::SubmitRate {
                per_sec: 1,
                burst: 1
            }),
            5
        );
        assert_eq!(enc(&Setting::Sandboxes(1)), 6);
        assert_eq!(enc(&Setting::JobMemoryBytesDefault(1)), 12);
        assert_eq!(enc(&Setting::JobRetentionMs(1)), 13);
        assert_eq!(enc(&Setting::CronsMax(1)), 14);
        assert_eq!(SETTING_NAMES.len(), 15);
    }
}
