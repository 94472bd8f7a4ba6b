//! Property tests over random command sequences (seeded; prints the seed; replay with
//! CATHEDRAL_SEED=<seed>; CATHEDRAL_PROP_CASES sets the number of sequences):
//! - two instances applying the same sequence reach the same state and hash;
//! - a snapshot taken at any step and restored continues to the same hash;
//! - no job ever has two succeeded attempts;
//! - a job never has an attempt before all its dependencies succeeded;
//! - the commands grouped into batches give the same state;
//! - the commands sent as requests, some twice (resends), give the same jobs, and every
//!   copy gets its first answer.

use std::collections::BTreeMap;

use cathedral_consensus::events::{Event, EventKind};
use cathedral_consensus::namespace::{NamespaceOp, Setting, Usage};
use cathedral_consensus::raft::{decode_entry, encode_entry, TypeConfig};
use cathedral_consensus::requests::RequestId;
use cathedral_consensus::{
    Assignment, Capacity, ClusterState, Command, Exit, Feature, JobOption, JobSpec, JobState,
    NodeInfo, Outcome, Response, RetryPolicy, Role, Rules, WorkflowJob,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// The events of one entry against the jobs before and after it: numbered in order, one
/// per changed job, each naming the state the job reached.
fn check_events(
    before: &BTreeMap<u64, (JobState, usize)>,
    after: &ClusterState,
    index: u64,
    events: &[Event],
) -> Result<(), TestCaseError> {
    for (seq, e) in events.iter().enumerate() {
        prop_assert_eq!((e.index, e.seq), (index, seq as u32));
    }
    let mut changed: Vec<u64> = after
        .jobs()
        .filter(|j| before.get(&j.id) != Some(&(j.state, j.attempts.len())))
        .map(|j| j.id)
        .collect();
    let mut named: Vec<u64> = events.iter().filter_map(|e| e.job).collect();
    changed.sort_unstable();
    named.sort_unstable();
    prop_assert_eq!(&named, &changed, "job events {:?}", events);
    for e in events.iter().filter(|e| e.job.is_some()) {
        let j = after
            .job(e.job.unwrap())
            .expect("an event names a job that exists");
        let fits = match e.kind {
            EventKind::JobSubmitted => !before.contains_key(&j.id) && e.detail == j.state.name(),
            EventKind::JobAssigned => j.state == JobState::Assigned,
            EventKind::JobStarted => j.state == JobState::Running,
            EventKind::JobRetried => j.state == JobState::Pending,
            EventKind::JobCancelled => j.state == JobState::Cancelled,
            EventKind::JobFinished => matches!(
                j.state,
                JobState::Succeeded | JobState::Failed | JobState::TimedOut
            ),
            _ => false,
        };
        prop_assert!(fits, "{:?} for job in state {:?}", e, j.state);
    }
    Ok(())
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (
        prop::collection::vec(1u64..10, 0..3),
        1u32..4,
        0i32..3,
        prop::option::weighted(0.2, 0u8..4),
    )
        .prop_map(|(deps, attempts, priority, key)| JobSpec {
            depends_on: deps,
            idempotency_key: key.map(|k| format!("key{k}")),
            retry: RetryPolicy {
                max_attempts: attempts,
                initial_backoff_ms: 10,
                max_backoff_ms: 100,
                multiplier_milli: 2000,
            },
            priority,
            ..JobSpec::new("job", &["true"])
        })
}

/// The namespaces the sequences make (besides `default`).
const NAMESPACES: [&str; 2] = ["ns-a", "ns-b"];

fn setting() -> impl Strategy<Value = Setting> {
    prop_oneof![
        (1u32..4).prop_map(Setting::Weight),
        (0u64..4).prop_map(Setting::PendingJobsMax),
        (0u64..3).prop_map(Setting::RunningMax),
        (1u32..3, 1u32..4).prop_map(|(per_sec, burst)| Setting::SubmitRate { per_sec, burst }),
    ]
}

fn exit() -> impl Strategy<Value = Exit> {
    prop_oneof![4 => Just(Exit::Code(0)), 1 => Just(Exit::Code(1)), 1 => Just(Exit::Signal(9)), 1 => Just(Exit::TimedOut), 1 => Just(Exit::Lost)]
}

fn command() -> impl Strategy<Value = Command> {
    let at = 0u64..10_000;
    prop_oneof![
        3 => (at.clone(), prop::collection::vec(spec(), 1..3)).prop_map(|(at_ms, jobs)| Command::SubmitJobs { at_ms, jobs }),
        1 => (at.clone(), prop::collection::vec((0usize..4, prop::collection::vec(0usize..4, 0..2)), 1..4)).prop_map(|(at_ms, js)| {
            let jobs = js.iter().enumerate().map(|(i, (_, after))| WorkflowJob {
                key: format!("k{i}"),
                spec: JobSpec::new("wf", &["true"]),
                after: after.iter().filter(|&&a| a < js.len()).map(|a| format!("k{a}")).collect(),
            }).collect();
            Command::SubmitWorkflow { at_ms, name: "w".into(), jobs }
        }),
        4 => (at.clone(), prop::collection::vec((1u64..10, 1u32..4, 1u64..4), 1..4)).prop_map(|(at_ms, a)| Command::AssignTasks {
            at_ms,
            assignments: a.into_iter().map(|(job, attempt, node)| Assignment { job, attempt, node }).collect(),
        }),
        3 => (at.clone(), 1u64..10, 1u32..4, 1u64..4).prop_map(|(at_ms, job, attempt, node)| Command::TaskStarted { at_ms, job, attempt, node }),
        4 => (at.clone(), 1u64..10, 1u32..4, 1u64..4, exit()).prop_map(|(at_ms, job, attempt, node, exit)| Command::TaskFinished {
            at_ms, job, attempt, node, outcome: Outcome { exit, duration_ms: 3, output_tail: vec![7; 10] },
        }),
        1 => (at.clone(), 1u64..10).prop_map(|(at_ms, job)| Command::CancelJob { at_ms, job, reason: "p".into() }),
        1 => (at.clone(), 1u64..10, 1u32..4, 1u64..4).prop_map(|(at_ms, job, attempt, node)| Command::TaskOutputs {
            at_ms, job, attempt, node, outputs: BTreeMap::from([("out".to_string(), format!("v{at_ms}"))]),
        }),
        2 => (at.clone(), 1u64..4).prop_map(|(at_ms, id)| Command::NodeRegistered { at_ms, node: NodeInfo {
            id, address: "a".into(), role: Role::Worker, tags: BTreeMap::new(), capacity: Capacity { slots: 2, cpu_millis: 1000, memory_bytes: 1 << 20 },
        }}),
        1 => (at.clone(), 1u64..4).prop_map(|(at_ms, node)| Command::NodeFailed { at_ms, node }),
        1 => (at.clone(), 1u64..4).prop_map(|(at_ms, node)| Command::NodeRetired { at_ms, node }),
        1 => (at.clone(), 1u64..4).prop_map(|(at_ms, node)| Command::NodeRecovered { at_ms, node }),
        1 => at.clone().prop_map(|at_ms| Command::Checkpoint { at_ms }),
        1 => (at.clone(), 0u32..3).prop_map(|(at_ms, lost_retries)| Command::SetRules { at_ms, rules: Rules { lost_retries } }),
        1 => (at.clone(), prop::sample::select(Feature::ALL.to_vec())).prop_map(|(at_ms, feature)| Command::Enable { at_ms, feature }),
        2 => (at.clone(), prop::collection::vec(1u64..10, 1..5)).prop_map(|(at_ms, jobs)| Command::Collect { at_ms, jobs }),
        // Namespaces made, changed and deleted, with quotas small enough to refuse.
        2 => (at.clone(), 0usize..2, prop::collection::vec(setting(), 0..3), 0u8..3).prop_map(|(at_ms, n, settings, what)| {
            let name = NAMESPACES[n].to_string();
            let op = match what {
                0 => NamespaceOp::Create { name, settings },
                1 => NamespaceOp::Update { name, settings, clear: vec!["pending_jobs_max".into()] },
                _ => NamespaceOp::Delete { name },
            };
            Command::Namespace { at_ms, op }
        }),
        // Submissions in a namespace (one that may not exist).
        3 => (at.clone(), 0usize..3, prop::collection::vec(spec(), 1..3)).prop_map(|(at_ms, n, jobs)| Command::InNamespace {
            namespace: ["ns-a", "ns-b", "nope"][n].to_string(),
            command: Box::new(Command::SubmitJobs { at_ms, jobs }),
        }),
        // Jobs with a retention of their own (0: kept), some of them without one.
        2 => (at, prop::collection::vec((spec(), prop::option::of(0u64..3_000)), 1..3)).prop_map(|(at_ms, js)| {
            let options = js.iter().map(|(_, r)| r.map(JobOption::RetainMs).into_iter().collect()).collect();
            Command::WithJobOptions {
                options,
                command: Box::new(Command::SubmitJobs { at_ms, jobs: js.into_iter().map(|(s, _)| s).collect() }),
            }
        }),
    ]
}

fn check_invariants(s: &ClusterState) -> Result<(), TestCaseError> {
    for j in s.jobs() {
        let succeeded = j
            .attempts
            .iter()
            .filter(|a| a.outcome.as_ref().is_some_and(|o| o.succeeded()))
            .count();
        prop_assert!(
            succeeded <= 1,
            "job {} has {succeeded} succeeded attempts",
            j.id
        );
        prop_assert_eq!(
            succeeded == 1,
            j.state == JobState::Succeeded,
            "job {} state {:?}",
            j.id,
            j.state
        );
        // Nothing unfinished lost a dependency to collection.
        if !j.state.is_final() {
            for d in &j.spec.depends_on {
                prop_assert!(s.job(*d).is_some(), "job {} lost dependency {}", j.id, d);
            }
        }
        if !j.attempts.is_empty() {
            // (A finished job's dependencies may have been collected since.)
            for dep in j.spec.depends_on.iter().filter_map(|d| s.job(*d)) {
                let d = dep.id;
                prop_assert_eq!(
                    dep.state,
                    JobState::Succeeded,
                    "job {} ran before dependency {}",
                    j.id,
                    d
                );
            }
        }
    }
    // What the leader would collect is collectable, and due under its own retention or
    // the cluster's.
    for (now, retention) in [(5_000, 0), (5_000, 1_000), (20_000, 1), (u64::MAX, 0)] {
        for id in s.collection_due(now, retention, 1000) {
            prop_assert!(s.collectable(id), "job {} due but not collectable", id);
            let due = s.due_at(id, retention);
            prop_assert!(
                due.is_some_and(|t| t <= now),
                "job {} named at {} with retention {} but due at {:?}",
                id,
                now,
                retention,
                due
            );
        }
    }
    // Quota accounting equals a recount from the jobs.
    let mut recount: BTreeMap<String, Usage> = BTreeMap::new();
    for j in s.jobs() {
        let u = recount.entry(s.namespace_of(j.id).to_string()).or_default();
        if j.state == JobState::Pending {
            u.pending += 1;
        }
        if j.current_attempt().is_some() {
            u.running += 1;
            u.cpu_millis += u64::from(j.spec.resources.cpu_millis);
            u.memory_bytes += j.spec.resources.memory_bytes;
        }
    }
    for ns in ["default", "ns-a", "ns-b", "nope"] {
        prop_assert_eq!(
            s.namespace_usage(ns),
            recount.get(ns).copied().unwrap_or_default(),
            "namespace {}'s usage differs from a recount",
            ns
        );
    }
    // Jobs are only in namespaces that exist.
    for j in s.jobs() {
        prop_assert!(s.namespaces().exists(s.namespace_of(j.id)));
    }
    // The hash by job leaves the idempotency keys to the job digests: they must follow.
    prop_assert!(
        s.idempotency_consistent(),
        "idempotency keys differ from the jobs'"
    );
    // A workflow loses jobs to collection only once all of them ended.
    for w in s.workflows() {
        let present: Vec<_> = w.jobs.values().filter_map(|id| s.job(*id)).collect();
        if present.len() < w.jobs.len() {
            prop_assert!(
                present.iter().all(|j| j.state.is_final()),
                "workflow {} lost a job while another had not ended",
                w.id
            );
        }
    }
    Ok(())
}

/// `cmd` encoded as the log entry record at `index` and decoded again.
fn through_the_log(index: u64, cmd: &Command) -> Result<Command, TestCaseError> {
    let entry = openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(cmd.clone()),
    };
    match decode_entry(&encode_entry(&entry))
        .map_err(TestCaseError::fail)?
        .payload
    {
        openraft::EntryPayload::Normal(c) => Ok(c),
        _ => Err(TestCaseError::fail("not a normal entry")),
    }
}

fn run(cmds: Vec<Command>) -> Result<(), TestCaseError> {
    let (mut a, mut b) = (ClusterState::new(), ClusterState::new());
    let snap_at = cmds.len() / 2;
    let mut restored: Option<ClusterState> = None;
    for (i, c) in cmds.iter().enumerate() {
        let index = i as u64 + 1;
        // The entry goes through its encoding, as it would through the log.
        let decoded = through_the_log(index, c)?;
        prop_assert_eq!(&decoded, c);
        let ra = a.apply(index, c);
        // `b` records events as the server's state machine does: the same answers and
        // state, and one event per job whose state or attempts changed, saying so.
        let before: BTreeMap<u64, (JobState, usize)> = b
            .jobs()
            .map(|j| (j.id, (j.state, j.attempts.len())))
            .collect();
        let (rb, events) = b.apply_recording(index, &decoded);
        prop_assert_eq!(ra, rb);
        check_events(&before, &b, index, &events)?;
        if let Some(r) = restored.as_mut() {
            r.apply(index, c);
        }
        if i == snap_at {
            let bytes = a.to_snapshot();
            restored = Some(
                ClusterState::from_snapshot(&bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
            );
        }
        check_invariants(&a)?;
        // The hash is kept incrementally (per-job digests touched by apply): after every
        // entry it equals the hash of the same state rebuilt from scratch.
        let rebuilt = ClusterState::from_snapshot(&a.to_snapshot())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            a.hash(),
            rebuilt.hash(),
            "incremental hash went stale at {}",
            index
        );
        // So is what each namespace uses: a snapshot's load recounts it the same.
        for ns in ["default", "ns-a", "ns-b"] {
            prop_assert_eq!(rebuilt.namespace_usage(ns), a.namespace_usage(ns));
            prop_assert_eq!(rebuilt.namespace_counts(ns), a.namespace_counts(ns));
        }
        // The pending queue and the attempts in flight per node are kept incrementally too.
        prop_assert!(a.indexes_consistent(), "indexes went stale at {}", index);
    }
    prop_assert_eq!(a.hash(), b.hash());
    prop_assert!(a == b);
    // The same commands, consecutive ones grouped into batches (as the leader proposes
    // them): a batch applied at the index of its last command gives the state the commands
    // give one entry at a time.
    let mut c = ClusterState::new();
    let mut i = 0;
    while i < cmds.len() {
        let mut end = i + 1;
        while end < cmds.len() && end - i < 4 && cmds[i].batchable() && cmds[end].batchable() {
            end += 1;
        }
        let index = end as u64;
        if end - i == 1 {
            c.apply(index, &cmds[i]);
        } else {
            let batch = Command::Batch {
                at_ms: 0,
                commands: cmds[i..end].to_vec(),
            };
            let decoded = through_the_log(index, &batch)?;
            prop_assert_eq!(&decoded, &batch);
            let r = c.apply(index, &decoded);
            prop_assert!(
                matches!(&r, Response::Batch(rs) if rs.len() == end - i),
                "{:?}",
                r
            );
        }
        prop_assert!(c.indexes_consistent());
        i = end;
    }
    prop_assert_eq!(c.hash(), a.hash(), "batched and one by one differ");
    // The same commands as requests, every third sent again one entry later with a later
    // timestamp (a resend to a new leader): each copy is answered with the first answer,
    // changes nothing, and the jobs end as the commands applied once leave them.
    let mut d = ClusterState::new();
    let mut index = 0u64;
    let mut resend: Option<(Command, Response)> = None;
    for (i, cmd) in cmds.iter().enumerate() {
        let req = if cmd.batchable() {
            cmd.clone().once(RequestId::Node {
                node: 1,
                incarnation: 7,
                seq: i as u64,
            })
        } else {
            cmd.clone()
        };
        index += 1;
        let first = d.apply(index, &req);
        if let Some((copy, answer)) = resend.take() {
            index += 1;
            prop_assert_eq!(d.apply(index, &copy), answer);
        }
        if i % 3 == 0 && req.batchable() {
            let mut copy = req.clone();
            copy.set_at_ms(cmd.at_ms() + 1_000);
            resend = Some((copy, first));
        }
        prop_assert!(d.indexes_consistent());
    }
    if let Some((copy, answer)) = resend {
        prop_assert_eq!(d.apply(index + 1, &copy), answer);
    }
    prop_assert!(
        d.jobs().eq(a.jobs()),
        "requests sent twice changed the jobs"
    );
    let restored_d = ClusterState::from_snapshot(&d.to_snapshot())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(restored_d.hash(), d.hash());
    if let Some(r) = restored {
        prop_assert_eq!(r.hash(), a.hash(), "snapshot + replay diverged");
    }
    Ok(())
}

#[test]
fn random_sequences_are_deterministic_and_keep_invariants() {
    let seed: u64 = std::env::var("CATHEDRAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("random_sequences_are_deterministic_and_keep_invariants: seed = {seed} (replay with CATHEDRAL_SEED={seed})");
    let cases = std::env::var("CATHEDRAL_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    if let Err(e) = runner.run(&prop::collection::vec(command(), 1..200), run) {
        panic!("seed {seed}: {e}");
    }
}

/// The sequences above must reach interesting states, or the properties say little.
#[test]
fn random_sequences_reach_success_failure_and_retries() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut retried = false;
    for _ in 0..400 {
        let cmds = prop::collection::vec(command(), 150..200)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut s = ClusterState::new();
        // Seen after every entry: collection may remove a job once it ended.
        for (i, c) in cmds.iter().enumerate() {
            s.apply(i as u64 + 1, c);
            for j in s.jobs() {
                seen.insert(j.state);
                retried |= j.attempts.len() > 1;
            }
        }
    }
    for state in [
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Pending,
        JobState::TimedOut,
    ] {
        assert!(seen.contains(&state), "never reached {state:?}: {seen:?}");
    }
    assert!(retried, "no job was ever retried");
}
