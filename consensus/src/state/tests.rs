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
fn a_snapshot_of_version_8_with_live_jobs_as_values_loads_as_written_now() {
    // Version 8 snapshots first wrote the jobs that had not ended as values in place;
    // every job is now written as its encoding, so a load can decode them in parallel.
    #[derive(Serialize)]
    enum Held<'a> {
        Encoded(&'a [u8]),
        Value(&'a Job),
    }
    let (mut s, mut i) = (ClusterState::new(), 0);
    step(&mut s, &mut i, node(1));
    for k in 0..40 {
        submit(&mut s, &mut i, JobSpec::new(&format!("j{k}"), &["true"]));
    }
    for id in 1..=10 {
        run(&mut s, &mut i, 10, id, 1, 1, Exit::Code(id as i32 % 2));
    }
    assign(&mut s, &mut i, 20, 11, 1, 1);
    let jobs: Vec<(JobId, JobState, Vec<u8>, Job)> = s
        .jobs
        .encoded()
        .map(|(id, state, b)| (id, state, b.to_vec(), s.job(id).unwrap().into_owned()))
        .collect();
    let held: Vec<(JobId, JobState, Held)> = jobs
        .iter()
        .map(|(id, state, b, j)| {
            let h = if state.is_final() {
                Held::Encoded(b)
            } else {
                Held::Value(j)
            };
            (*id, *state, h)
        })
        .collect();
    // A version 8 body around `jobs` (the rest of the state as `s` holds it).
    let body = |jobs: &[&(JobId, JobState, Held)]| {
        postcard::to_stdvec(&(
            8u16,
            jobs,
            &s,
            &s.requests,
            &s.acl,
            &s.crons,
            &s.rerun_base,
            &s.outputs,
            &s.rules,
            &s.ended_at,
            &s.retain,
            &s.features,
        ))
        .unwrap()
    };
    let old = body(&held.iter().collect::<Vec<_>>());
    // Out of id order (or an id twice): not a snapshot this project wrote.
    let mut reversed = held.iter().rev().collect::<Vec<_>>();
    reversed.truncate(3);
    let bad = body(&reversed);
    let e = ClusterState::from_snapshot(&bad).unwrap_err().to_string();
    assert!(e.contains("out of order"), "{e}");
    assert_ne!(old, s.to_snapshot(), "written differently now");
    let old = ClusterState::from_snapshot(&old).unwrap();
    assert_eq!(old, s);
    assert_eq!(old.hash(), s.hash());
    assert!(old.indexes_consistent());
    assert_eq!(old.job_counts(), s.job_counts());
}

#[test]
fn a_large_snapshot_loads_on_several_threads_as_written_and_a_bad_job_is_an_error() {
    let (mut s, mut i) = (ClusterState::new(), 0);
    step(&mut s, &mut i, node(1));
    let n = crate::jobs::LOAD_PARALLEL_MIN as u64 + 3 * crate::jobs::LOAD_CHUNK as u64 / 2;
    let specs: Vec<JobSpec> = (0..n)
        .map(|k| {
            let mut spec = JobSpec::new(&format!("j{k}"), &["true"]);
            spec.priority = (k % 3) as i32;
            spec
        })
        .collect();
    for chunk in specs.chunks(1000) {
        step(
            &mut s,
            &mut i,
            Command::SubmitJobs {
                at_ms: 10,
                jobs: chunk.to_vec(),
            },
        );
    }
    for id in 1..=50 {
        run(&mut s, &mut i, 10, id, 1, 1, Exit::Code(0));
    }
    assign(&mut s, &mut i, 20, 60, 1, 1);
    let bytes = s.to_snapshot();
    let loaded = ClusterState::from_snapshot(&bytes).unwrap();
    assert_eq!(loaded.jobs.len() as u64, n);
    assert_eq!(loaded, s);
    assert_eq!(loaded.hash(), s.hash());
    assert!(loaded.indexes_consistent());
    assert_eq!(loaded.job_counts(), s.job_counts());
    // A job's encoding that does not decode (past the checksums a file has) is an
    // error naming the job, not a panic on a loading thread: job n/2's bytes are
    // overwritten with 0xff (its id, a varint, never ends).
    let job = s.jobs.bytes(&(n / 2)).unwrap().to_vec();
    let at = bytes
        .windows(job.len())
        .position(|w| w == job.as_slice())
        .expect("the job's encoding is in the snapshot");
    let mut bad = bytes.clone();
    bad[at..at + job.len()].fill(0xff);
    let err = ClusterState::from_snapshot(&bad).unwrap_err().to_string();
    assert!(err.contains(&format!("job {}", n / 2)), "{err}");
}

#[test]
fn step_references_to_a_job_not_depended_on_are_refused_once_the_feature_is_on() {
    let (mut s, mut i) = (ClusterState::new(), 0);
    let first = submit(&mut s, &mut i, JobSpec::new("a", &["true"]));
    let mut typo = JobSpec::new("b", &["echo", "${{ jobs.99.outputs.x }}"]);
    typo.depends_on = vec![first];
    let submit_typo = Command::SubmitJobs {
        at_ms: 10,
        jobs: vec![typo.clone()],
    };
    // Logs written before the check keep applying as they did: accepted.
    assert!(s.check(&submit_typo).is_ok());
    step(
        &mut s,
        &mut i,
        Command::Enable {
            at_ms: 10,
            feature: Feature::StepReferencesCheckedAtSubmit,
        },
    );
    let e = s.check(&submit_typo).unwrap_err().to_string();
    assert!(e.contains("jobs[0].command[1]"), "{e}");
    assert!(e.contains(&format!("its dependencies: {first}")), "{e}");
    assert!(matches!(
        step(&mut s, &mut i, submit_typo),
        Response::Rejected(_)
    ));
    let mut good = typo;
    good.command[1] = format!("${{{{ jobs.{first}.outputs.x }}}}");
    assert!(s
        .check(&Command::SubmitJobs {
            at_ms: 10,
            jobs: vec![good]
        })
        .is_ok());
    // In a workflow, the keys it runs after.
    let wf = |key: &str| Command::SubmitWorkflow {
        at_ms: 10,
        name: "w".into(),
        jobs: vec![
            WorkflowJob {
                key: "build".into(),
                spec: JobSpec::new("build", &["true"]),
                after: vec![],
            },
            WorkflowJob {
                key: "ship".into(),
                spec: JobSpec::new(
                    "ship",
                    &["echo", &format!("${{{{ jobs.{key}.outputs.a }}}}")],
                ),
                after: vec!["build".into()],
            },
        ],
    };
    assert!(s.check(&wf("build")).is_ok());
    let e = s.check(&wf("biuld")).unwrap_err().to_string();
    assert!(
        e.contains("jobs[1].command[1]") && e.contains("its dependencies: build"),
        "{e}"
    );
}

#[test]
fn a_new_states_digests_are_kept_from_the_first_job_not_built_at_the_first_hash() {
    let (mut s, mut i) = (ClusterState::new(), 0);
    for k in 0..10 {
        submit(&mut s, &mut i, JobSpec::new(&format!("j{k}"), &["true"]));
    }
    assert_eq!(s.digests.dirty(), 10, "changes are tracked from the start");
    // Turning a feature on works the digests out at once (the state is small then).
    step(
        &mut s,
        &mut i,
        Command::Enable {
            at_ms: 10,
            feature: Feature::JobDigestsCoverTheirRecords,
        },
    );
    assert_eq!(s.digests.dirty(), 0);
    submit(&mut s, &mut i, JobSpec::new("after", &["true"]));
    assert_eq!(s.digests.dirty(), 1, "and kept from there");
    let hash = s.hash();
    assert_eq!(
        ClusterState::from_snapshot(&s.to_snapshot())
            .unwrap()
            .hash(),
        hash
    );
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
    assert!(matches!(s.apply(i, &unknown), Response::Rejected(e) if e.field == "jobs[0].after"));
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

/// A writer that takes `room` bytes, then fails as a full disk does.
struct FullDisk {
    room: usize,
    took: Vec<u8>,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        self.took.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_snapshot_whose_writer_fails_says_why_and_never_ends_short() {
    let (mut s, mut i) = (ClusterState::new(), 0);
    s.apply(0, &node(1));
    for k in 0..2_000 {
        submit(&mut s, &mut i, JobSpec::new(&format!("j{k}"), &["true"]));
    }
    let whole = s.to_snapshot().len();
    assert!(whole > 1 << 16, "{whole} bytes: more than the buffer");
    // Short by one byte (the failure then comes at the last flush, not while encoding),
    // by the buffer's tail, and from the start.
    for room in [whole - 1, whole - 100, whole / 2, 0] {
        let mut w = FullDisk {
            room,
            took: Vec::new(),
        };
        let e = s.write_snapshot(&mut w).expect_err("the disk was full");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::StorageFull,
            "room {room}: {e}"
        );
        assert!(
            e.to_string().contains("No space left on device"),
            "room {room}: {e}"
        );
    }
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
fn once_the_feature_is_on_a_nodes_request_ids_leave_after_a_minute_also_after_a_restore() {
    let by_node = |seq, at_ms| {
        Command::SubmitJobs {
            at_ms,
            jobs: vec![JobSpec::new("n", &["true"])],
        }
        .once(RequestId::Node {
            node: 1,
            incarnation: 7,
            seq,
        })
    };
    let mut s = ClusterState::new();
    s.apply(
        1,
        &Command::Enable {
            at_ms: 1,
            feature: Feature::NodeRequestIdsKeptAMinute,
        },
    );
    s.apply(2, &by_node(1, 1_000));
    s.apply(3, &request("client", 1_001, "c"));
    let mut restored = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
    assert_eq!(
        restored, s,
        "the restored table follows the state's features"
    );
    let later = 1_002 + crate::requests::REQUEST_KEPT_MIN_MS;
    for (i, st) in [&mut s, &mut restored].into_iter().enumerate() {
        // A node id answered after the client's (ids leave in order, so it would wait).
        st.apply(4, &by_node(2, later));
        assert!(
            st.repeat(&by_node(1, later)).is_none(),
            "state {i}: forgotten"
        );
        assert!(
            st.repeat(&request("client", later, "c")).is_some(),
            "state {i}"
        );
        assert!(st.repeat(&by_node(2, later)).is_some(), "state {i}");
    }
    assert_eq!(s.hash(), restored.hash());
}

#[test]
fn under_the_summed_table_feature_the_hash_follows_the_table_and_survives_a_restore() {
    let enable = |feature| Command::Enable { at_ms: 1, feature };
    // `whole` hashes the table whole (as before the feature).
    let (mut whole, mut summed) = (ClusterState::new(), ClusterState::new());
    whole.apply(1, &enable(Feature::JobDigestsCoverTheirRecords));
    summed.apply(1, &enable(Feature::JobDigestsCoverTheirRecords));
    summed.apply(2, &enable(Feature::RequestTableSummed));
    let mut hashes = std::collections::BTreeSet::new();
    for i in 3..50u64 {
        let c = request(&format!("r{i}"), 1_000 + i, "c");
        whole.apply(i, &c);
        summed.apply(i, &c);
        assert!(hashes.insert(summed.hash()), "every answer moves the hash");
    }
    // The table is the same either way; the summed hash is the same after a restore (the
    // sum is worked out as the table is decoded).
    assert_eq!(whole.requests, summed.requests);
    let restored = ClusterState::from_snapshot(&summed.to_snapshot()).unwrap();
    assert_eq!(restored, summed);
    assert_eq!(restored.hash(), summed.hash());
    // A copy answered from the table changes the counters, and so the hash.
    let before = summed.hash();
    summed.apply(60, &request("r3", 2_000, "c"));
    assert_ne!(summed.hash(), before);
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
    // (Held as std maps then: the persistent maps must encode to the same bytes.)
    let workflows: BTreeMap<WorkflowId, Workflow> =
        s.workflows.iter().map(|(k, v)| (*k, v.clone())).collect();
    let idempotency: BTreeMap<String, JobId> =
        s.idempotency.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let before = Before {
        jobs: s.jobs.len() as u64,
        jobs_digest: s.digests.of(&s.jobs, None),
        workflows: &workflows,
        nodes: &s.nodes,
        idempotency: &idempotency,
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

#[test]
fn changed_jobs_digests_are_folded_in_as_entries_apply_not_all_at_the_next_hash() {
    for by_job in [false, true] {
        let mut s = ClusterState::default();
        let mut i = 0;
        if by_job {
            i += 1;
            s.apply(
                i,
                &Command::Enable {
                    at_ms: 1,
                    feature: Feature::JobDigestsCoverTheirRecords,
                },
            );
        }
        let _ = s.hash(); // digests valid from here: changes are tracked
        for n in 0..(super::hash::DIGESTS_DIRTY_MAX * 2 + 7) {
            submit(&mut s, &mut i, JobSpec::new(&format!("j{n}"), &["true"]));
            assert!(
                s.digests.dirty() < super::hash::DIGESTS_DIRTY_MAX,
                "{} jobs wait to be digested",
                s.digests.dirty()
            );
        }
        assert_eq!(s.digests.dirty(), 7, "folded twice, seven wait");
        let rebuilt = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
        assert_eq!(s.hash(), rebuilt.hash(), "by_job {by_job}");
    }
}

fn ns_op(s: &mut ClusterState, i: &mut u64, op: crate::namespace::NamespaceOp) -> Response {
    *i += 1;
    s.apply(*i, &Command::Namespace { at_ms: 10, op })
}

fn submit_in(
    s: &mut ClusterState,
    i: &mut u64,
    at_ms: u64,
    ns: &str,
    jobs: Vec<JobSpec>,
) -> Response {
    *i += 1;
    s.apply(
        *i,
        &Command::InNamespace {
            namespace: ns.into(),
            command: Box::new(Command::SubmitJobs { at_ms, jobs }),
        },
    )
}

fn keyed(name: &str, key: &str) -> JobSpec {
    JobSpec {
        idempotency_key: Some(key.into()),
        ..JobSpec::new(name, &["true"])
    }
}

#[test]
fn jobs_belong_to_their_namespace_and_keys_are_its_own() {
    use crate::namespace::NamespaceOp;
    let (mut s, mut i) = (ClusterState::new(), 0);
    s.apply(0, &node(1));
    let before = s.hash();
    // A submission in a namespace that does not exist is refused, and nothing is made.
    let r = submit_in(&mut s, &mut i, 10, "ml", vec![JobSpec::new("a", &["true"])]);
    assert!(
        matches!(&r, Response::Rejected(e) if e.reason.contains("no namespace ml")),
        "{r:?}"
    );
    assert_eq!(s.next_job_id(), 1);
    let r = ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "ml".into(),
            settings: vec![],
        },
    );
    assert_eq!(r, Response::Done);
    assert_ne!(s.hash(), before, "a namespace is part of the state hash");
    // One key, two namespaces: two jobs; again in one: the same job.
    let Response::Submitted { jobs: a } =
        submit_in(&mut s, &mut i, 10, "ml", vec![keyed("a", "k")])
    else {
        panic!()
    };
    let b = submit(&mut s, &mut i, keyed("b", "k"));
    assert_ne!(a[0], b);
    let Response::Submitted { jobs: again } =
        submit_in(&mut s, &mut i, 20, "ml", vec![keyed("a", "k")])
    else {
        panic!()
    };
    assert_eq!(again, a);
    assert_eq!(s.namespace_of(a[0]), "ml");
    assert_eq!(s.namespace_of(b), "default");
    // A proposer sees the repeat too (answered without an entry).
    let repeat = Command::InNamespace {
        namespace: "ml".into(),
        command: Box::new(Command::SubmitJobs {
            at_ms: 30,
            jobs: vec![keyed("a", "k")],
        }),
    };
    assert_eq!(
        s.repeat(&repeat),
        Some(Response::Submitted { jobs: a.clone() })
    );
    // A dependency must be a job of the same namespace.
    let dep_on_b = JobSpec {
        depends_on: vec![b],
        ..JobSpec::new("c", &["true"])
    };
    let r = submit_in(&mut s, &mut i, 10, "ml", vec![dep_on_b]);
    assert!(
        matches!(&r, Response::Rejected(e) if e.field.contains("depends_on")),
        "{r:?}"
    );
    // A namespace holding a job cannot be deleted; `default` never.
    let r = ns_op(&mut s, &mut i, NamespaceOp::Delete { name: "ml".into() });
    assert!(
        matches!(&r, Response::Rejected(e) if e.reason.contains("holds 1 jobs")),
        "{r:?}"
    );
    let r = ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Delete {
            name: "default".into(),
        },
    );
    assert!(matches!(r, Response::Rejected(_)));
    // A snapshot carries all of it.
    let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.hash(), s.hash());
    assert_eq!(back.namespace_of(a[0]), "ml");
    assert!(back.indexes_consistent() && back.idempotency_consistent());
    // Collected, the job leaves its namespace (and its key), which can then go.
    run(&mut s, &mut i, 20, a[0], 1, 1, Exit::Code(0));
    i += 1;
    s.apply(
        i,
        &Command::Collect {
            at_ms: 30,
            jobs: vec![a[0]],
        },
    );
    assert!(s.job(a[0]).is_none());
    assert!(s.idempotency_consistent());
    let r = ns_op(&mut s, &mut i, NamespaceOp::Delete { name: "ml".into() });
    assert_eq!(r, Response::Done);
    assert!(!s.namespaces().exists("ml"));
}

#[test]
fn a_namespace_over_its_quota_is_refused_whole_and_others_are_not() {
    use crate::namespace::{NamespaceOp, Setting};
    let (mut s, mut i) = (ClusterState::new(), 0);
    s.apply(0, &node(1));
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "ml".into(),
            settings: vec![
                Setting::PendingJobsMax(3),
                Setting::SubmitRate {
                    per_sec: 1,
                    burst: 5,
                },
            ],
        },
    );
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "web".into(),
            settings: vec![],
        },
    );
    let two = || vec![JobSpec::new("a", &["true"]), JobSpec::new("b", &["true"])];
    assert!(matches!(
        submit_in(&mut s, &mut i, 1_000, "ml", two()),
        Response::Submitted { .. }
    ));
    // 2 pending + 2 > 3: refused whole, nothing made.
    let next = s.next_job_id();
    let r = submit_in(&mut s, &mut i, 1_000, "ml", two());
    assert!(
        matches!(&r, Response::Rejected(e) if e.field == "quota.pending_jobs_max" && e.reason.contains("holds 2 pending")),
        "{r:?}"
    );
    assert_eq!(s.next_job_id(), next);
    assert_eq!(s.namespace_usage("ml").pending, 2);
    // Another namespace is not held back.
    assert!(matches!(
        submit_in(&mut s, &mut i, 1_000, "web", two()),
        Response::Submitted { .. }
    ));
    // The rate: 5 at once, then 1 a second (by the entries' timestamps). Raise the
    // pending quota out of the way.
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Update {
            name: "ml".into(),
            settings: vec![],
            clear: vec!["pending_jobs_max".into()],
        },
    );
    assert!(matches!(
        submit_in(&mut s, &mut i, 1_000, "ml", two()),
        Response::Submitted { .. }
    ));
    // Drawn: 2 + 2 of 5; 2 more at the same time would pass it.
    let r = submit_in(&mut s, &mut i, 1_000, "ml", two());
    assert!(
        matches!(&r, Response::Rejected(e) if e.field == "quota.submit_rate"),
        "{r:?}"
    );
    // A second later one more is there: 1 + 1 = 2.
    assert!(matches!(
        submit_in(&mut s, &mut i, 2_000, "ml", two()),
        Response::Submitted { .. }
    ));
    // A rejected draw left the bucket as it was: a replay from a snapshot agrees.
    let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
    assert_eq!(back.hash(), s.hash());
    assert_eq!(back.namespace_usage("ml"), s.namespace_usage("ml"));
}

#[test]
fn a_scoped_token_keeps_its_grants_until_revoked_and_they_are_hashed() {
    use crate::acl::{secret_hash, Policy, Token};
    use crate::namespace::{Capability, Grant};
    let token = |n: u8, policy| Token {
        accessor: format!("{n:032x}"),
        name: format!("t{n}"),
        policy,
        secret_hash: secret_hash(&format!("secret-{n}")),
        created_at_ms: 1,
    };
    let (mut s, mut i) = (ClusterState::new(), 0);
    i += 1;
    s.apply(
        i,
        &Command::AclBootstrap {
            at_ms: 1,
            token: token(1, Policy::Management),
        },
    );
    let grants = vec![Grant {
        namespaces: "ml-*".into(),
        capabilities: vec![Capability::Read, Capability::Submit],
    }];
    // A bad grant is refused whole: no token made.
    let bad = Command::TokenCreateScoped {
        at_ms: 2,
        token: token(2, Policy::Read),
        grants: vec![Grant {
            namespaces: "Bad*".into(),
            capabilities: vec![Capability::Read],
        }],
    };
    assert!(s.check(&bad).is_err());
    i += 1;
    assert!(matches!(s.apply(i, &bad), Response::Rejected(_)));
    assert!(s.acl().token(&format!("{:032x}", 2)).is_none());
    let before = s.hash();
    i += 1;
    let r = s.apply(
        i,
        &Command::TokenCreateScoped {
            at_ms: 2,
            token: token(2, Policy::Read),
            grants: grants.clone(),
        },
    );
    assert_eq!(r, Response::Done);
    assert_ne!(s.hash(), before);
    let acc = format!("{:032x}", 2);
    assert_eq!(s.namespaces().grants(&acc), Some(grants.as_slice()));
    let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
    assert_eq!(back.namespaces().grants(&acc), Some(grants.as_slice()));
    assert_eq!(back.hash(), s.hash());
    i += 1;
    s.apply(
        i,
        &Command::TokenRevoke {
            at_ms: 3,
            accessor: acc.clone(),
        },
    );
    assert_eq!(s.namespaces().grants(&acc), None);
}

#[test]
fn a_namespace_limits_its_jobs_sandboxes_and_fills_in_their_defaults() {
    use crate::command::SandboxKind;
    use crate::namespace::{NamespaceOp, Setting};
    let (mut s, mut i) = (ClusterState::new(), 0);
    s.apply(0, &node(1));
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "ml".into(),
            settings: vec![
                Setting::Sandboxes(2), // process only
                Setting::JobTimeoutMsMax(1_000),
                Setting::JobTimeoutMsDefault(500),
                Setting::JobMemoryBytesDefault(1 << 20),
            ],
        },
    );
    let spec = |sandbox, timeout_ms| JobSpec {
        sandbox,
        timeout_ms,
        ..JobSpec::new("j", &["true"])
    };
    let r = submit_in(
        &mut s,
        &mut i,
        10,
        "ml",
        vec![spec(SandboxKind::Bubblewrap, 100)],
    );
    assert!(
        matches!(&r, Response::Rejected(e) if e.reason.contains("allows the sandboxes process, not bubblewrap")),
        "{r:?}"
    );
    let r = submit_in(
        &mut s,
        &mut i,
        10,
        "ml",
        vec![spec(SandboxKind::Process, 5_000)],
    );
    assert!(
        matches!(&r, Response::Rejected(e) if e.reason.contains("job_timeout_ms_max of 1000")),
        "{r:?}"
    );
    let Response::Submitted { jobs } = submit_in(
        &mut s,
        &mut i,
        10,
        "ml",
        vec![spec(SandboxKind::Process, 0)],
    ) else {
        panic!("a job within the limits is accepted")
    };
    let j = s.job(jobs[0]).unwrap();
    assert_eq!(j.spec.timeout_ms, 500, "the namespace's default timeout");
    assert_eq!(j.spec.resources.memory_bytes, 1 << 20);
    // `default` is untouched: any sandbox, no limit.
    submit(&mut s, &mut i, spec(SandboxKind::Bubblewrap, 0));
}

#[test]
fn a_rerun_counts_against_its_namespaces_pending_quota() {
    use crate::namespace::{NamespaceOp, Setting};
    let (mut s, mut i) = (ClusterState::new(), 0);
    s.apply(0, &node(1));
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "ml".into(),
            settings: vec![],
        },
    );
    let step = |key: &str, after: &[&str]| WorkflowJob {
        key: key.into(),
        spec: JobSpec::new(key, &["true"]),
        after: after.iter().map(|a| a.to_string()).collect(),
    };
    i += 1;
    let Response::WorkflowSubmitted { workflow, jobs } = s.apply(
        i,
        &Command::InNamespace {
            namespace: "ml".into(),
            command: Box::new(Command::SubmitWorkflow {
                at_ms: 0,
                name: "w".into(),
                jobs: vec![step("a", &[]), step("b", &["a"])],
            }),
        },
    ) else {
        panic!("submitted")
    };
    run(&mut s, &mut i, 10, jobs["a"], 1, 1, Exit::Code(1));
    assert_eq!(s.job(jobs["b"]).unwrap().state, JobState::Cancelled);
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Update {
            name: "ml".into(),
            settings: vec![Setting::PendingJobsMax(1)],
            clear: vec![],
        },
    );
    let rerun = |s: &mut ClusterState, i: &mut u64| {
        *i += 1;
        s.apply(
            *i,
            &Command::RerunWorkflow {
                at_ms: 30,
                workflow,
                from: jobs["a"],
            },
        )
    };
    // Two jobs back to pending would pass the quota of one: refused, nothing changed.
    let r = rerun(&mut s, &mut i);
    assert!(
        matches!(&r, Response::Rejected(e) if e.field == "quota.pending_jobs_max"),
        "{r:?}"
    );
    assert_eq!(s.job(jobs["a"]).unwrap().state, JobState::Failed);
    assert_eq!(s.namespace_usage("ml").pending, 0);
    ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Update {
            name: "ml".into(),
            settings: vec![],
            clear: vec!["pending_jobs_max".into()],
        },
    );
    assert!(matches!(rerun(&mut s, &mut i), Response::Submitted { .. }));
    assert_eq!(s.namespace_usage("ml").pending, 2);
    assert!(s.indexes_consistent());
}

#[test]
fn a_namespaces_retention_is_fixed_for_a_job_when_it_ends_and_a_jobs_own_comes_first() {
    use crate::namespace::{NamespaceOp, Setting};
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
    let settings = vec![Setting::JobRetentionMs(100)];
    let r = ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Create {
            name: "ml".into(),
            settings,
        },
    );
    assert_eq!(r, Response::Done);
    let Response::Submitted { jobs } = submit_in(
        &mut s,
        &mut i,
        10,
        "ml",
        vec![JobSpec::new("a", &["true"]), JobSpec::new("b", &["true"])],
    ) else {
        panic!()
    };
    let (a, b) = (jobs[0], jobs[1]);
    // b asks to be kept: its own retention comes first.
    i += 1;
    s.apply(
        i,
        &Command::InNamespace {
            namespace: "ml".into(),
            command: Box::new(Command::WithJobOptions {
                options: vec![vec![JobOption::RetainMs(0)]],
                command: Box::new(Command::SubmitJobs {
                    at_ms: 10,
                    jobs: vec![JobSpec::new("kept", &["true"])],
                }),
            }),
        },
    );
    let kept = b + 1;
    assert_eq!(s.namespace_of(kept), "ml");
    let plain = submit(&mut s, &mut i, JobSpec::new("plain", &["true"]));
    assert_eq!(s.retain_of(a), None, "fixed when the job ends, not before");
    run(&mut s, &mut i, 10, a, 1, 1, Exit::Code(0));
    // The setting changes: a job that ends later takes the new value.
    let r = ns_op(
        &mut s,
        &mut i,
        NamespaceOp::Update {
            name: "ml".into(),
            settings: vec![Setting::JobRetentionMs(1_000)],
            clear: vec![],
        },
    );
    assert_eq!(r, Response::Done);
    for j in [b, kept, plain] {
        run(&mut s, &mut i, 10, j, 1, 1, Exit::Code(0));
    }
    assert_eq!(s.retain_of(a), Some(100));
    assert_eq!(s.retain_of(b), Some(1_000));
    assert_eq!(s.retain_of(kept), Some(0));
    assert_eq!(s.retain_of(plain), None, "default has no setting");
    // Ended at 15: a is due at 115, b at 1015, whatever the cluster keeps; the default
    // job by the cluster's retention; the kept one never.
    assert_eq!(s.collection_due(115, 0, 100), vec![a]);
    assert_eq!(s.collection_due(1_015, 0, 100), vec![a, b]);
    assert_eq!(s.collection_due(1_015, 500, 100), vec![a, plain, b]);
    assert_eq!(s.due_at(kept, 1), None);
    let back = ClusterState::from_snapshot(&s.to_snapshot()).unwrap();
    assert_eq!(back.hash(), s.hash());
    assert_eq!(back.collection_due(1_015, 0, 100), vec![a, b]);
}
