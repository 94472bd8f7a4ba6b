//! Between the public protobuf messages and the consensus crate's types. Protobuf input is
//! untrusted: enum values and sizes are checked here, every other bound by
//! `JobSpec::validate`.

use cathedral_consensus::{
    Attempt, Command, ContainerSpec, Exit, Job, JobOption, JobSpec, JobState, Outcome, Resources,
    RetryPolicy, SandboxKind, WorkflowJob,
};

use crate::api::v1 as pb;
use crate::error::{Result, ServerError};

/// A job's timeout when the request leaves it out.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

pub fn spec_from_pb(spec: Option<pb::JobSpec>, field: &str) -> Result<JobSpec> {
    let s = spec.ok_or_else(|| ServerError::invalid(field, "missing"))?;
    let sandbox = match (pb::Sandbox::try_from(s.sandbox), s.docker) {
        (Ok(pb::Sandbox::Docker), Some(d)) => SandboxKind::Docker(ContainerSpec {
            image: d.image,
            pull: d.pull,
            user: d.user,
        }),
        (Ok(pb::Sandbox::Docker), None) => {
            return Err(ServerError::invalid(
                &format!("{field}.docker"),
                "SANDBOX_DOCKER needs docker.image",
            ))
        }
        (Ok(_), Some(_)) => {
            return Err(ServerError::invalid(
                &format!("{field}.docker"),
                "set only with SANDBOX_DOCKER",
            ))
        }
        (Ok(pb::Sandbox::Default), None) => SandboxKind::Default,
        (Ok(pb::Sandbox::Process), None) => SandboxKind::Process,
        (Ok(pb::Sandbox::Bubblewrap), None) => SandboxKind::Bubblewrap,
        (Err(_), _) => {
            return Err(ServerError::invalid(
                &format!("{field}.sandbox"),
                format!("unknown value {}", s.sandbox),
            ))
        }
    };
    let retry = match s.retry {
        Some(r) => RetryPolicy {
            max_attempts: r.max_attempts,
            initial_backoff_ms: r.initial_backoff_ms,
            max_backoff_ms: r.max_backoff_ms,
            multiplier_milli: r.multiplier_milli,
        },
        None => RetryPolicy::default(),
    };
    let spec = JobSpec {
        name: s.name,
        command: s.command,
        env: s.env.into_iter().collect(),
        resources: Resources {
            cpu_millis: s.cpu_millis,
            memory_bytes: s.memory_bytes,
        },
        constraints: s.constraints.into_iter().collect(),
        timeout_ms: s.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        retry,
        priority: s.priority,
        depends_on: s.depends_on,
        idempotency_key: Some(s.idempotency_key).filter(|k| !k.is_empty()),
        sandbox,
    };
    spec.validate()
        .map_err(|e| ServerError::from(e.at(field)))?;
    Ok(spec)
}

/// The options of a job (see `JobOption`) its protobuf spec carries besides the spec.
pub fn options_from_pb(spec: Option<&pb::JobSpec>) -> Vec<JobOption> {
    spec.and_then(|s| s.retain_ms)
        .map(JobOption::RetainMs)
        .into_iter()
        .collect()
}

/// `command` (a submission) with `options` for its jobs, when any job has one; checked
/// against their bounds here, so bad input never takes a log entry.
pub fn with_job_options(command: Command, options: Vec<Vec<JobOption>>) -> Result<Command> {
    if options.iter().all(Vec::is_empty) {
        return Ok(command);
    }
    cathedral_consensus::check_job_options(&options, &command)?;
    Ok(Command::WithJobOptions {
        options,
        command: Box::new(command),
    })
}

pub fn workflow_jobs_from_pb(jobs: Vec<pb::WorkflowJob>) -> Result<Vec<WorkflowJob>> {
    jobs.into_iter()
        .enumerate()
        .map(|(i, j)| {
            Ok(WorkflowJob {
                key: j.key,
                spec: spec_from_pb(j.spec, &format!("jobs[{i}].spec"))?,
                after: j.after,
            })
        })
        .collect()
}

pub fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: s.name.clone(),
        command: s.command.clone(),
        env: s.env.clone().into_iter().collect(),
        cpu_millis: s.resources.cpu_millis,
        memory_bytes: s.resources.memory_bytes,
        constraints: s.constraints.clone().into_iter().collect(),
        timeout_ms: Some(s.timeout_ms),
        retry: Some(pb::RetryPolicy {
            max_attempts: s.retry.max_attempts,
            initial_backoff_ms: s.retry.initial_backoff_ms,
            max_backoff_ms: s.retry.max_backoff_ms,
            multiplier_milli: s.retry.multiplier_milli,
        }),
        priority: s.priority,
        depends_on: s.depends_on.clone(),
        idempotency_key: s.idempotency_key.clone().unwrap_or_default(),
        // Not part of the spec: `job_to_pb` sets it from the state.
        retain_ms: None,
        sandbox: match s.sandbox {
            SandboxKind::Default => pb::Sandbox::Default,
            SandboxKind::Process => pb::Sandbox::Process,
            SandboxKind::Bubblewrap => pb::Sandbox::Bubblewrap,
            SandboxKind::Docker(_) => pb::Sandbox::Docker,
        } as i32,
        docker: match &s.sandbox {
            SandboxKind::Docker(c) => Some(pb::DockerSpec {
                image: c.image.clone(),
                pull: c.pull,
                user: c.user.clone(),
            }),
            _ => None,
        },
    }
}

pub fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Pending => pb::JobState::Pending,
        JobState::Assigned => pb::JobState::Assigned,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
        JobState::TimedOut => pb::JobState::TimedOut,
    }
}

/// The state filter of ListJobs: `None` for "any".
pub fn state_from_pb(v: i32) -> Result<Option<JobState>> {
    Ok(Some(match pb::JobState::try_from(v) {
        Ok(pb::JobState::Unspecified) => return Ok(None),
        Ok(pb::JobState::Pending) => JobState::Pending,
        Ok(pb::JobState::Assigned) => JobState::Assigned,
        Ok(pb::JobState::Running) => JobState::Running,
        Ok(pb::JobState::Succeeded) => JobState::Succeeded,
        Ok(pb::JobState::Failed) => JobState::Failed,
        Ok(pb::JobState::Cancelled) => JobState::Cancelled,
        Ok(pb::JobState::TimedOut) => JobState::TimedOut,
        Err(_) => return Err(ServerError::invalid("state", format!("unknown value {v}"))),
    }))
}

pub fn outcome_to_pb(o: &Outcome) -> pb::Outcome {
    use pb::outcome::Exit as E;
    pb::Outcome {
        exit: Some(match o.exit {
            Exit::Code(c) => E::Code(c),
            Exit::Signal(s) => E::Signal(s),
            Exit::TimedOut => E::TimedOut(true),
            Exit::Lost => E::Lost(true),
        }),
        duration_ms: o.duration_ms,
        output_tail: o.output_tail.clone(),
    }
}

fn attempt_to_pb(a: &Attempt, summary: String) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        node_id: a.node,
        assigned_at_ms: a.assigned_at_ms,
        started_at_ms: a.started_at_ms,
        finished_at_ms: a.finished_at_ms,
        outcome: a.outcome.as_ref().map(outcome_to_pb),
        summary,
    }
}

/// `j` as the API shows it; `submitted_by`: the accessor of the token that submitted it;
/// `retain_ms`: the retention it asked for itself.
pub fn job_to_pb(
    j: &Job,
    submitted_by: Option<&str>,
    outputs: Option<&std::collections::BTreeMap<String, String>>,
    retain_ms: Option<u64>,
) -> pb::Job {
    pb::Job {
        id: j.id,
        spec: Some(pb::JobSpec {
            retain_ms,
            ..spec_to_pb(&j.spec)
        }),
        state: state_to_pb(j.state) as i32,
        reason: j.reason.clone().unwrap_or_default(),
        submitted_at_ms: j.submitted_at_ms,
        not_before_ms: j.not_before_ms,
        attempts: j
            .attempts
            .iter()
            .zip(cathedral_consensus::words::attempts(j))
            .map(|(a, words)| attempt_to_pb(a, words))
            .collect(),
        workflow_id: j.workflow.unwrap_or(0),
        dependents: j.dependents.clone(),
        submitted_by: submitted_by.unwrap_or_default().to_string(),
        outputs: outputs
            .map(|o| o.clone().into_iter().collect())
            .unwrap_or_default(),
        collected_at_ms: None,
        namespace: cathedral_consensus::namespace::DEFAULT_NAMESPACE.into(),
    }
}

/// A job retention collected, as the API shows it: from its archived record, marked with
/// when it was collected.
pub fn archived_to_pb(r: &cathedral_consensus::archive::Record) -> pb::Job {
    let c = &r.collected;
    let mut j = job_to_pb(
        &c.job,
        c.submitted_by.as_deref(),
        Some(&c.outputs),
        c.retain_ms,
    );
    j.collected_at_ms = Some(r.collected_at_ms);
    j.namespace = c.namespace().to_string();
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_round_trip() {
        let mut s = JobSpec::new("build", &["make", "-j4"]);
        s.env.insert("A".into(), "1".into());
        s.constraints.insert("zone".into(), "a".into());
        s.timeout_ms = 5000;
        s.depends_on = vec![3, 4];
        s.idempotency_key = Some("k".into());
        s.sandbox = SandboxKind::Process;
        assert_eq!(spec_from_pb(Some(spec_to_pb(&s)), "spec").unwrap(), s);
        s.sandbox = SandboxKind::Docker(ContainerSpec {
            image: "busybox:1.36".into(),
            pull: true,
            user: "65534:65534".into(),
        });
        assert_eq!(spec_from_pb(Some(spec_to_pb(&s)), "spec").unwrap(), s);
    }

    #[test]
    fn defaults_and_bad_values() {
        let p = pb::JobSpec {
            name: "x".into(),
            command: vec!["true".into()],
            ..Default::default()
        };
        let s = spec_from_pb(Some(p.clone()), "spec").unwrap();
        assert_eq!(s.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(s.idempotency_key, None);
        let e = spec_from_pb(
            Some(pb::JobSpec {
                command: vec![],
                ..p.clone()
            }),
            "spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.command"), "{e}");
        let e = spec_from_pb(
            Some(pb::JobSpec {
                sandbox: 9,
                ..p.clone()
            }),
            "spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.sandbox"), "{e}");
        let docker = pb::JobSpec {
            sandbox: pb::Sandbox::Docker as i32,
            ..p.clone()
        };
        let e = spec_from_pb(Some(docker.clone()), "spec").unwrap_err();
        assert!(e.to_string().contains("spec.docker"), "{e}");
        let e = spec_from_pb(
            Some(pb::JobSpec {
                docker: Some(pb::DockerSpec::default()),
                ..docker
            }),
            "spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.docker.image"), "{e}");
        let e = spec_from_pb(
            Some(pb::JobSpec {
                docker: Some(pb::DockerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..p
            }),
            "spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only with SANDBOX_DOCKER"), "{e}");
        assert!(spec_from_pb(None, "spec").is_err());
        assert!(state_from_pb(42).is_err());
        assert_eq!(state_from_pb(0).unwrap(), None);
    }
}
