//! What the log and the state hold, in words: outcomes, attempts, commands, sizes,
//! durations and times. One rendering, shared by everything that shows them to a person —
//! the server (its API's summaries, `explain`, the dashboard's views, which all read them
//! from the API), the CLI (which prints what the API says) and `cathedral-log` (offline).
//! JSON output keeps the structured fields; these are for text.

use crate::command::{Command, Exit, JobOption, Outcome};
use crate::state::{Attempt, Job, NodeStatus};

/// The conventional name of a Linux signal number.
pub fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return None,
    })
}

/// How an attempt ended: "exited 0", "exited with status 3", "killed by signal 9
/// (SIGKILL)", "timed out", "lost with its node".
pub fn exit(e: &Exit) -> String {
    match e {
        Exit::Code(0) => "exited 0".into(),
        Exit::Code(c) => format!("exited with status {c}"),
        Exit::Signal(s) => match signal_name(*s) {
            Some(name) => format!("killed by signal {s} ({name})"),
            None => format!("killed by signal {s}"),
        },
        Exit::TimedOut => "timed out".into(),
        Exit::Lost => "lost with its node".into(),
    }
}

/// The last note the cluster added to an attempt's output (`[cathedral: …]`), if any: why
/// it could not start, what killed it, what became of it.
pub fn note(output_tail: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output_tail);
    let start = text.rfind("[cathedral: ")?;
    let rest = &text[start + "[cathedral: ".len()..];
    let end = rest.rfind(']')?;
    Some(rest[..end].to_string())
}

/// An outcome: its exit, how long it ran, and the cluster's note. An attempt that never
/// started (status 127 after no time, with a note) says so.
pub fn outcome(o: &Outcome) -> String {
    let note = note(&o.output_tail);
    if o.exit == Exit::Code(127) && o.duration_ms == 0 {
        if let Some(n) = &note {
            return format!("could not start: {n}");
        }
    }
    let mut s = exit(&o.exit);
    if o.exit != Exit::Lost && o.duration_ms > 0 {
        s += &format!(" after {}", duration_ms(o.duration_ms));
    }
    if let Some(n) = note {
        s += &format!(" ({n})");
    }
    s
}

/// One attempt: where it ran and what became of it. `lost_before` counts the attempts
/// before it that were lost with their node after they started (for "lost retry N").
pub fn attempt(a: &Attempt, lost_before: u32) -> String {
    let what = match &a.outcome {
        None if a.started_at_ms.is_some() => "running".to_string(),
        None => "assigned, not started yet".to_string(),
        Some(o) if o.exit == Exit::Lost && a.started_at_ms.is_none() => {
            "lost with its node before it started (not counted)".to_string()
        }
        Some(o) if o.exit == Exit::Lost => format!(
            "lost with its node after it started (lost retry {})",
            lost_before + 1
        ),
        Some(o) => outcome(o),
    };
    format!("attempt {} on node {}: {what}", a.number, a.node)
}

/// Every attempt of a job, in words, in order (see [`attempt`]).
pub fn attempts(j: &Job) -> Vec<String> {
    let mut lost = 0;
    j.attempts
        .iter()
        .map(|a| {
            // An attempt whose job ended under it (cancelled) gets no report: its node's
            // is fenced.
            let line = match (&a.outcome, j.state) {
                (None, crate::state::JobState::Cancelled) => format!(
                    "attempt {} on node {}: stopped, the job was cancelled",
                    a.number, a.node
                ),
                (None, s) if s.is_final() => format!(
                    "attempt {} on node {}: ended without a report (the job is {})",
                    a.number,
                    a.node,
                    s.name()
                ),
                _ => attempt(a, lost),
            };
            if a.lost() && a.started_at_ms.is_some() {
                lost += 1;
            }
            line
        })
        .collect()
}

/// A node's status.
pub fn node_status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Alive => "alive",
        NodeStatus::Failed => "failed",
        NodeStatus::Retired => "retired",
    }
}

/// Bytes in binary units: "512 B", "64 MiB", "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{:.1} {}", v, UNITS[unit])
    }
}

/// A duration: "850 ms", "4.2 s", "3 min 5 s", "2 h 1 min".
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        return if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        };
    }
    let s = ms / 1000;
    if s < 3600 {
        return match s % 60 {
            0 => format!("{} min", s / 60),
            r => format!("{} min {r} s", s / 60),
        };
    }
    match (s % 3600) / 60 {
        0 => format!("{} h", s / 3600),
        m => format!("{} h {m} min", s / 3600),
    }
}

/// A wall-clock time from epoch milliseconds, in UTC: "2026-12-03T13:28:30.123Z".
pub fn time_ms(ms: u64) -> String {
    // RFC 3339 stops at year 9999: later (nonsense) times are shown as numbers.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    if ms >= YEAR_10000_MS {
        return format!("{ms} ms since the epoch");
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// What a command decided, in one line.
/// Long on purpose: one arm per command.
pub fn command(c: &Command) -> String {
    let jobs = |n: usize| {
        if n == 1 {
            "1 job".to_string()
        } else {
            format!("{n} jobs")
        }
    };
    match c {
        Command::SubmitJobs { jobs: specs, .. } => match specs.as_slice() {
            [one] => format!("submit job {:?}: {}", one.name, one.command.join(" ")),
            many => format!(
                "submit {}: {}",
                jobs(many.len()),
                many.iter()
                    .take(5)
                    .map(|s| format!("{:?}", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if many.len() > 5 { ", …" } else { "" }
            ),
        },
        Command::SubmitWorkflow {
            name, jobs: specs, ..
        } => format!("submit workflow {name:?} of {}", jobs(specs.len())),
        Command::AssignTasks { assignments, .. } => {
            let parts: Vec<String> = assignments
                .iter()
                .take(8)
                .map(|a| format!("job {} attempt {} to node {}", a.job, a.attempt, a.node))
                .collect();
            let more = assignments.len().saturating_sub(parts.len());
            let mut s = format!("assign {}", parts.join(", "));
            if more > 0 {
                s += &format!(" and {more} more");
            }
            s
        }
        Command::TaskStarted {
            job, attempt, node, ..
        } => format!("job {job} attempt {attempt} started on node {node}"),
        Command::TaskFinished {
            job,
            attempt,
            node,
            outcome: o,
            ..
        } => format!(
            "job {job} attempt {attempt} on node {node} ended: {}",
            outcome(o)
        ),
        Command::CancelJob { job, reason, .. } if reason.is_empty() => format!("cancel job {job}"),
        Command::CancelJob { job, reason, .. } => format!("cancel job {job}: {reason}"),
        Command::NodeRegistered { node, .. } => format!(
            "node {} joined at {} as {} with {} slots",
            node.id,
            node.address,
            node.role.name(),
            node.capacity.slots
        ),
        Command::NodeFailed { node, .. } => format!("node {node} failed"),
        Command::NodeRetired { node, .. } => format!("node {node} left"),
        Command::NodeRecovered { node, .. } => format!("node {node} recovered"),
        Command::Checkpoint { .. } => "checkpoint: every node records its state hash".into(),
        Command::CheckpointHash { index, hash, .. } => format!(
            "the leader's state hash at checkpoint {index}: {}",
            crate::state::hex(&hash[..8])
        ),
        Command::Batch { commands, .. } => {
            let parts: Vec<String> = commands.iter().take(3).map(command).collect();
            let more = commands.len().saturating_sub(parts.len());
            let mut s = format!("{} commands: {}", commands.len(), parts.join("; "));
            if more > 0 {
                s += &format!("; and {more} more");
            }
            s
        }
        Command::Request { command: inner, .. } => command(inner),
        Command::Enable { feature, .. } => format!("apply turns on {feature:?}"),
        Command::InNamespace {
            namespace,
            command: inner,
        } => format!("{} in namespace {namespace}", command(inner)),
        Command::TokenCreateScoped { token, grants, .. } => format!(
            "token {} ({:?}) created with policy {}, scoped to namespaces: {}",
            token.accessor,
            token.name,
            token.policy,
            grants
                .iter()
                .map(|g| format!(
                    "{} ({})",
                    g.namespaces,
                    g.capabilities
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Command::Namespace { op, .. } => match op {
            crate::namespace::NamespaceOp::Create { name, settings } => {
                format!("namespace {name} created{}", settings_words(settings))
            }
            crate::namespace::NamespaceOp::Update {
                name,
                settings,
                clear,
            } => {
                let mut s = format!("namespace {name} updated{}", settings_words(settings));
                if !clear.is_empty() {
                    s += &format!(", cleared {}", clear.join(", "));
                }
                s
            }
            crate::namespace::NamespaceOp::Delete { name } => format!("namespace {name} deleted"),
        },
        Command::WithJobOptions {
            options,
            command: inner,
        } => {
            let retains: Vec<String> = options
                .iter()
                .filter_map(|o| JobOption::retain_ms(o))
                .map(|ms| match ms {
                    0 => "kept".to_string(),
                    ms => format!("kept {}", duration_ms(ms)),
                })
                .collect();
            match retains.as_slice() {
                [] => command(inner),
                [one] => format!("{} ({one} after it ends)", command(inner)),
                _ => format!("{} (with retentions of their own)", command(inner)),
            }
        }
        Command::Authored {
            accessor,
            command: inner,
        } => format!("{} (token {accessor})", command(inner)),
        Command::AclBootstrap { token, .. } => {
            format!(
                "access control on, with management token {}",
                token.accessor
            )
        }
        Command::TokenCreate { token, .. } => format!(
            "token {} ({:?}) created with policy {}",
            token.accessor,
            token.name,
            token.policy.name()
        ),
        Command::TokenRevoke { accessor, .. } => format!("token {accessor} revoked"),
        Command::Cron { op, .. } => crate::cron::describe(op),
        Command::TaskOutputs {
            job,
            attempt,
            outputs,
            ..
        } => format!(
            "job {job} attempt {attempt} published outputs {}",
            outputs.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        Command::RerunWorkflow { workflow, from, .. } => {
            format!("rerun workflow {workflow} from job {from}")
        }
        Command::Collect { jobs: ids, .. } => match ids.as_slice() {
            [one] => format!("collect finished job {one}"),
            many => format!(
                "collect {} finished jobs ({}…{})",
                many.len(),
                many.first().copied().unwrap_or(0),
                many.last().copied().unwrap_or(0)
            ),
        },
        Command::SetRules { rules, .. } => format!(
            "rules: a job lost with its node after it started is queued again up to {} time(s)",
            rules.lost_retries
        ),
    }
}

/// A namespace's settings in words (`: weight 2, running_max 5`), or nothing.
pub fn settings_words(settings: &[crate::namespace::Setting]) -> String {
    use crate::namespace::Setting;
    if settings.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = settings
        .iter()
        .map(|s| match *s {
            Setting::Weight(w) => format!("weight {w}"),
            Setting::PendingJobsMax(n) => format!("pending_jobs_max {n}"),
            Setting::RunningMax(n) => format!("running_max {n}"),
            Setting::CpuMillisMax(n) => format!("cpu_millis_max {n}"),
            Setting::MemoryBytesMax(n) => format!("memory_bytes_max {n}"),
            Setting::SubmitRate { per_sec, burst } => {
                format!("submit_rate {per_sec}/s burst {burst}")
            }
            Setting::Sandboxes(bits) => format!(
                "sandboxes {}",
                crate::namespace::SANDBOX_BITS
                    .iter()
                    .filter(|(_, b)| bits & b != 0)
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join("+")
            ),
            Setting::JobTimeoutMsMax(v) => format!("job_timeout_ms_max {v}"),
            Setting::JobCpuMillisMax(v) => format!("job_cpu_millis_max {v}"),
            Setting::JobMemoryBytesMax(v) => format!("job_memory_bytes_max {v}"),
            Setting::JobTimeoutMsDefault(v) => format!("job_timeout_ms_default {v}"),
            Setting::JobCpuMillisDefault(v) => format!("job_cpu_millis_default {v}"),
            Setting::JobMemoryBytesDefault(v) => format!("job_memory_bytes_default {v}"),
            Setting::JobRetentionMs(v) => format!("job_retention_ms {v}"),
            Setting::CronsMax(v) => format!("crons_max {v}"),
        })
        .collect();
    format!(": {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_sizes_durations_and_times_read_as_words() {
        assert_eq!(exit(&Exit::Code(0)), "exited 0");
        assert_eq!(exit(&Exit::Code(3)), "exited with status 3");
        assert_eq!(exit(&Exit::Signal(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(exit(&Exit::Signal(64)), "killed by signal 64");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(4_200), "4.2 s");
        assert_eq!(duration_ms(185_000), "3 min 5 s");
        assert_eq!(duration_ms(7_260_000), "2 h 1 min");
        assert_eq!(time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_ms(1_796_304_255_762), "2026-12-03T13:24:15.762Z");
        assert_eq!(
            time_ms(u64::MAX),
            format!("{} ms since the epoch", u64::MAX)
        );
    }

    #[test]
    fn outcomes_carry_the_clusters_note_and_say_when_nothing_started() {
        let o = |exit, duration_ms, tail: &[u8]| Outcome {
            exit,
            duration_ms,
            output_tail: tail.to_vec(),
        };
        assert_eq!(
            outcome(&o(
                Exit::Code(127),
                0,
                b"[cathedral: image busybox:nope not found]"
            )),
            "could not start: image busybox:nope not found"
        );
        assert_eq!(
            outcome(&o(
                Exit::Signal(9),
                1200,
                b"out\n[cathedral: killed by the memory limit]\n"
            )),
            "killed by signal 9 (SIGKILL) after 1.2 s (killed by the memory limit)"
        );
        assert_eq!(
            outcome(&o(Exit::Code(0), 5, b"hello\n")),
            "exited 0 after 5 ms"
        );
    }

    #[test]
    fn a_lost_attempt_says_whether_it_had_started() {
        let mut a = Attempt {
            number: 2,
            node: 7,
            assigned_at_ms: 1,
            started_at_ms: None,
            finished_at_ms: Some(2),
            outcome: Some(Outcome {
                exit: Exit::Lost,
                duration_ms: 0,
                output_tail: vec![],
            }),
        };
        assert_eq!(
            attempt(&a, 0),
            "attempt 2 on node 7: lost with its node before it started (not counted)"
        );
        a.started_at_ms = Some(1);
        assert_eq!(
            attempt(&a, 1),
            "attempt 2 on node 7: lost with its node after it started (lost retry 2)"
        );
    }
}
