//! The worker loop, on every node: starts the attempts assigned to this node as soon as
//! the assignment is applied, reports start and finish through the leader (retrying until
//! committed), kills attempts the cluster no longer wants (cancelled, timed out, moved), and
//! after a restart reports attempts it no longer runs as lost.
//!
//! ```text
//!  applied state ──▶ running_on(me) ─┬─ new & slot free ─▶ Executor::start ─▶ TaskStarted
//!                                    │                      … wait ─▶ TaskFinished
//!                                    ├─ mine but gone ─▶ cancel (kill)
//!                                    └─ Running, not here (restart) ─▶ TaskFinished(Lost)
//! ```
//!
//! Every attempt's task (start, wait, reports) belongs to the loop's `JoinSet`. A graceful
//! shutdown kills the attempts and waits, up to `SHUTDOWN_REPORTS_WAIT`, for each to
//! report itself lost ("the node shut down"): the cluster retries them at once instead of
//! after the restart (or after the node is declared failed). What is not committed by then
//! is reported by the restart, as after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use cathedral_consensus::events::EventKind;
use cathedral_consensus::raft::Kinds;
use cathedral_consensus::{Command, Exit, JobId, JobState, Outcome, Response, SandboxKind};
use cathedral_executor::{
    AttemptResult, AttemptSpec, AttemptStarter, ContainerImage, Executor, KillReason, SandboxChoice,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::error::ServerError;
use crate::node::{Node, Proposal};

/// How often output retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Pause between retries of a report that could not be committed.
const REPORT_RETRY_MS: u64 = 500;
/// How long a graceful shutdown waits for the reports of the attempts it killed.
pub const SHUTDOWN_REPORTS_WAIT: Duration = Duration::from_secs(5);

/// How often the container engine is asked whether it answers (and the node's
/// `driver.docker` tag set or removed to match).
pub const ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How long an attempt runs before its start is reported. One that ends sooner is
/// reported started and ended at once: one entry as a rule (both queue for the same
/// batch), one apply, one wake-up of each watcher, instead of two of each one after the
/// other. Until then the job reads `assigned`; the start is timed when it started. A node
/// that crashes within the hold starts the attempt again when it comes back (it was never
/// recorded running), as it always did for one that crashed before its start committed.
/// 100 ms: under trivial jobs at 1,000/s, 25 ms caught 41–48 % of the ends and 100 ms
/// all of them (BENCHMARKS.md, issue 35's eighth round).
pub const START_REPORT_HOLD: Duration = Duration::from_millis(100);

/// What an attempt's end is reported as when the node killed it to shut down.
const SHUT_DOWN_NOTE: &[u8] = b"[cathedral: the node shut down while the attempt ran]";

type Key = (JobId, u32);

enum Slot {
    /// Running here; the sender cancels it.
    Running(Option<oneshot::Sender<()>>),
    /// Ended here; its report is on its way.
    Reporting,
}

/// The events the loop wakes for: all but a job's submission, a start (it started its own
/// attempts; one recorded by an earlier run of this node is seen at the next tick) and a
/// checkpoint.
const WAKES_ON: Kinds = Kinds::all_but(&[
    EventKind::JobSubmitted,
    EventKind::JobStarted,
    EventKind::Checkpoint,
]);

/// Runs until `stop`.
pub async fn run(
    node: Arc<Node>,
    executor: Arc<Executor>,
    starter: Arc<dyn AttemptStarter>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Entries applied with an event this loop acts on (an assignment, a cancel, an end, a
    // node's change) and a change of Raft's role or leader; not every applied batch (a
    // batch of submissions alone has nothing for it: at one write per batch that was a
    // wake-up per write), nor Raft's full metrics, sent at every turn of its core loop (see
    // the leader loop). Anything without an event is seen at the next tick.
    let mut applied = node.events.subscribe_to(WAKES_ON);
    let mut role = node.raft.server_metrics();
    let mut mine: BTreeMap<Key, Slot> = BTreeMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Key>();
    let mut tasks = JoinSet::new();
    let mut last_retention = Instant::now() - RETENTION_INTERVAL;
    let engine = tokio::spawn(watch_engine(node.clone(), executor.clone(), stop.clone()));
    // Attempts of this node whose output copy the replica holder has confirmed.
    let confirmed: Arc<std::sync::Mutex<BTreeSet<Key>>> = Arc::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = applied.changed() => if r.is_err() { break },
            // Ended only when Raft stopped (fatal): nothing can be reported any more, and
            // an ended watch would wake the loop at once, for ever.
            r = role.changed() => if r.is_err() { break },
            Some(k) = done_rx.recv() => { mine.remove(&k); }
            Some(_) = tasks.join_next() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        while let Ok(k) = done_rx.try_recv() {
            mine.remove(&k);
        }
        let spawn = Spawner {
            tasks: &mut tasks,
            done: &done_tx,
            stop: &stop,
            starter: &starter,
        };
        step(&node, &executor, &mut mine, spawn);
        let running = mine
            .values()
            .filter(|s| matches!(s, Slot::Running(_)))
            .count();
        node.gossip.set_load(running as u64).await;
        if last_retention.elapsed() >= RETENTION_INTERVAL {
            last_retention = Instant::now();
            tasks.spawn(retention(node.clone(), confirmed.clone()));
        }
    }
    engine.abort();
    // Shutting down: kill every attempt; each task then reports its attempt lost.
    let mut killed = 0;
    for slot in mine.values_mut() {
        if let Slot::Running(c) = slot {
            if let Some(tx) = c.take() {
                let _ = tx.send(());
                killed += 1;
            }
        }
    }
    if !tasks.is_empty() {
        tracing::info!(
            killed,
            tasks = tasks.len(),
            "waiting for the attempts' reports before stopping"
        );
    }
    let waited = tokio::time::timeout(SHUTDOWN_REPORTS_WAIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "reports not committed within {} s; the restart reports those attempts lost",
            SHUTDOWN_REPORTS_WAIT.as_secs()
        );
        tasks.shutdown().await;
    }
}

/// Where the loop's tasks go: owned by its `JoinSet`, each told when it ends (to free
/// its slot) and whether the node is shutting down.
struct Spawner<'a> {
    tasks: &'a mut JoinSet<()>,
    done: &'a mpsc::UnboundedSender<Key>,
    stop: &'a tokio::sync::watch::Receiver<bool>,
    /// What starts the attempts (the executor, or a simulation's stand-in).
    starter: &'a Arc<dyn AttemptStarter>,
}

/// One pass over this node's share of the applied state.
///
/// Long on purpose: the kills, the lost reports and the starts must see one consistent
/// reading of the applied state and of `mine`, taken once at the top.
fn step(
    node: &Arc<Node>,
    executor: &Arc<Executor>,
    mine: &mut BTreeMap<Key, Slot>,
    spawn: Spawner<'_>,
) {
    if node.cluster_id().is_none() {
        return;
    }
    // (key, started?, spec) of every attempt the state places on this node.
    let (wanted, slots) = {
        let a = node.state().read();
        let slots = a
            .state
            .node(node.id)
            .map_or(0, |n| n.info.capacity.slots as usize);
        // The spec only of attempts new here (the others run already), with the step
        // outputs of its dependencies put in (or why they cannot be).
        let wanted: Vec<(Key, bool, Option<Resolved>)> = a
            .state
            .running_on(node.id)
            .into_iter()
            .filter_map(|(job, attempt)| {
                let j = a.state.job(job)?;
                let key = (job, attempt);
                let spec = (!mine.contains_key(&key)).then(|| {
                    let mut spec = j.spec.clone();
                    let resolved = with_step_outputs(&a.state, &j, &mut spec);
                    (spec, resolved)
                });
                Some((key, j.state == JobState::Running, spec))
            })
            .collect();
        (wanted, slots)
    };
    let wanted_keys: BTreeSet<Key> = wanted.iter().map(|(k, _, _)| *k).collect();
    // Attempts the cluster no longer wants here: kill them.
    for (k, slot) in mine.iter_mut() {
        if !wanted_keys.contains(k) {
            if let Slot::Running(c) = slot {
                if c.take().is_some_and(|tx| tx.send(()).is_ok()) {
                    tracing::info!(
                        job = k.0,
                        attempt = k.1,
                        "attempt no longer wanted here; killing it"
                    );
                }
            }
        }
    }
    for (key, started, spec) in wanted {
        let Some((spec, resolved)) = spec.filter(|_| !mine.contains_key(&key)) else {
            continue;
        };
        if started {
            // Recorded as running here, but not running: this node restarted. A container
            // may outlive the node: its attempt is reported lost (and retried elsewhere)
            // only once the engine's sweep removed what the previous run left, so it
            // never runs twice at once.
            let container = matches!(spec.sandbox, SandboxKind::Docker(_));
            let swept = executor
                .docker()
                .map(|d| (d.is_swept(), d.swept_away(key.0, key.1)));
            let note = match (container, swept) {
                (true, Some((false, _))) => {
                    tracing::debug!(
                        job = key.0,
                        attempt = key.1,
                        "lost container attempt waits for the engine"
                    );
                    continue;
                }
                (true, Some((true, true))) => LOST_CONTAINER_NOTE,
                _ => LOST_NOTE,
            };
            mine.insert(key, Slot::Reporting);
            spawn
                .tasks
                .spawn(report_lost(node.clone(), key, note, spawn.done.clone()));
            continue;
        }
        let running = mine
            .values()
            .filter(|s| matches!(s, Slot::Running(_)))
            .count();
        // A partitioned (or leaving) node starts nothing new.
        if running >= slots || !node.gossip.accepting_work() {
            continue;
        }
        if let Err(why) = resolved {
            // A reference to an output that was never published: the attempt fails at once.
            mine.insert(key, Slot::Reporting);
            let (node, done) = (node.clone(), spawn.done.clone());
            spawn.tasks.spawn(async move {
                let outcome = Outcome {
                    exit: Exit::Code(127),
                    duration_ms: 0,
                    output_tail: format!("[cathedral: {why}]").into_bytes(),
                };
                report_finished(&node, key, outcome).await;
                let _ = done.send(key);
            });
            continue;
        }
        let mut env = spec.env.clone();
        env.insert("CATHEDRAL_JOB_ID".into(), key.0.to_string());
        env.insert("CATHEDRAL_ATTEMPT".into(), key.1.to_string());
        let attempt = AttemptSpec {
            job: key.0,
            attempt: key.1,
            command: spec.command.clone(),
            env,
            timeout_ms: spec.timeout_ms,
            cpu_millis: spec.resources.cpu_millis,
            memory_bytes: spec.resources.memory_bytes,
            pids_max: 0,
        };
        let choice = match &spec.sandbox {
            SandboxKind::Default => SandboxChoice::Auto,
            SandboxKind::Process => SandboxChoice::Process,
            SandboxKind::Bubblewrap => SandboxChoice::Bwrap,
            SandboxKind::Docker(c) => SandboxChoice::Docker(ContainerImage {
                image: c.image.clone(),
                pull: c.pull,
                user: c.user.clone(),
            }),
        };
        // The start (work directory, output file, cgroup, spawn) is file-system work: it
        // runs on the executor's spawner threads, so the async threads keep serving while
        // many attempts start at once. The slot is taken now; a cancel that comes first is
        // kept and passed on once the attempt runs.
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        mine.insert(key, Slot::Running(Some(cancel_tx)));
        spawn.tasks.spawn(run_attempt(
            node.clone(),
            spawn.starter.clone(),
            key,
            (attempt, choice),
            cancel_rx,
            spawn.stop.clone(),
            spawn.done.clone(),
        ));
    }
}

/// Passes a cancel from the worker on to the attempt while the futures given to
/// [`Relay::during`] run (the attempt's own task is one of them, so no task is spawned
/// for it).
struct Relay {
    kill: Option<oneshot::Sender<()>>,
    cancel: Option<oneshot::Receiver<()>>,
}

impl Relay {
    async fn during<F: std::future::Future>(&mut self, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        loop {
            let Some(cancel) = self.cancel.as_mut() else {
                return f.await;
            };
            tokio::select! {
                biased;
                out = &mut f => return out,
                r = cancel => {
                    self.cancel = None;
                    // Only a cancel sent is passed on: a worker that dropped its end (it
                    // stopped tracking the attempt) cancels nothing.
                    if r.is_ok() {
                        if let Some(kill) = self.kill.take() {
                            let _ = kill.send(());
                        }
                    }
                }
            }
        }
    }
}

fn outcome(r: &AttemptResult) -> Outcome {
    let mut tail = r.output_tail.clone();
    for why in &r.outputs_refused {
        tail.extend_from_slice(
            format!("\n[cathedral: step output not published: {why}]").as_bytes(),
        );
    }
    match r.killed_because {
        Some(KillReason::MemoryLimit) => {
            tail.extend_from_slice(b"\n[cathedral: killed by the memory limit]\n")
        }
        Some(KillReason::Cancelled) => tail.extend_from_slice(b"\n[cathedral: cancelled]\n"),
        _ => {}
    }
    let keep = cathedral_consensus::limits::OUTPUT_TAIL_BYTES_MAX;
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    Outcome {
        exit: match r.exit {
            cathedral_executor::Exit::Code(c) => Exit::Code(c),
            cathedral_executor::Exit::Signal(s) => Exit::Signal(s),
            cathedral_executor::Exit::TimedOut => Exit::TimedOut,
        },
        duration_ms: r.duration_ms,
        output_tail: tail,
    }
}

const LOST_NOTE: &[u8] = b"[cathedral: the node restarted while the attempt ran]";
const LOST_CONTAINER_NOTE: &[u8] =
    b"[cathedral: the node restarted while the attempt ran; its container was removed]";

/// What resolving a spec's step-output references gave: `Err` names the missing one.
type Resolved = (cathedral_consensus::JobSpec, Result<(), String>);

/// Puts the step outputs of `job`'s dependencies into `spec`: every
/// `${{ jobs.KEY.outputs.NAME }}` in its arguments and environment values is replaced by
/// the value (KEY is a dependency's key in the job's workflow, or its id), and each output
/// is also in the environment as `CATHEDRAL_OUTPUT_<KEY>_<NAME>` (upper case, other
/// characters as `_`). A reference to an output no dependency published is an error.
pub fn with_step_outputs(
    state: &cathedral_consensus::ClusterState,
    job: &cathedral_consensus::Job,
    spec: &mut cathedral_consensus::JobSpec,
) -> Result<(), String> {
    // Most jobs neither read outputs nor follow a job that published some: nothing to do
    // (and the workflow's keys, a walk of the whole workflow, are not looked at).
    let templated = spec
        .command
        .iter()
        .chain(spec.env.values())
        .any(|t| cathedral_consensus::step_refs::templated(t));
    let published = job
        .spec
        .depends_on
        .iter()
        .any(|d| state.step_outputs(*d).is_some());
    if !templated && !published {
        return Ok(());
    }
    let keys: BTreeMap<JobId, String> = job
        .workflow
        .and_then(|w| state.workflow(w))
        .map(|w| w.jobs.iter().map(|(k, id)| (*id, k.clone())).collect())
        .unwrap_or_default();
    // (key or id) -> outputs
    let mut known: BTreeMap<String, &BTreeMap<String, String>> = BTreeMap::new();
    for d in &job.spec.depends_on {
        let Some(outputs) = state.step_outputs(*d) else {
            continue;
        };
        known.insert(d.to_string(), outputs);
        if let Some(k) = keys.get(d) {
            known.insert(k.clone(), outputs);
        }
    }
    let env_name = |key: &str, name: &str| {
        format!("CATHEDRAL_OUTPUT_{key}_{name}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    for d in &job.spec.depends_on {
        let Some(outputs) = state.step_outputs(*d) else {
            continue;
        };
        let key = keys.get(d).cloned().unwrap_or_else(|| d.to_string());
        for (name, value) in outputs {
            spec.env.insert(env_name(&key, name), value.clone());
        }
    }
    let substitute = |text: &str| {
        cathedral_consensus::step_refs::substitute(text, |r| {
            known
                .get(r.key)
                .and_then(|o| o.get(r.name))
                .map(String::as_str)
        })
    };
    for text in spec.command.iter_mut().chain(spec.env.values_mut()) {
        if cathedral_consensus::step_refs::templated(text) {
            *text = substitute(text)?;
        }
    }
    Ok(())
}

/// Reports an attempt the state has running here that this node no longer runs (it
/// restarted), then frees its slot.
async fn report_lost(
    node: Arc<Node>,
    key: Key,
    note: &'static [u8],
    done: mpsc::UnboundedSender<Key>,
) {
    tracing::warn!(
        job = key.0,
        attempt = key.1,
        "attempt lost in a restart; reporting it"
    );
    let outcome = Outcome {
        exit: Exit::Lost,
        duration_ms: 0,
        output_tail: note.to_vec(),
    };
    report_finished(&node, key, outcome).await;
    let _ = done.send(key);
}

/// One attempt on this node: starts it on a spawner thread (work directory, output file,
/// cgroup, spawn), passes a cancel on, reports its start and its end — lost, when the node
/// killed it to shut down — then frees its slot.
async fn run_attempt(
    node: Arc<Node>,
    starter: Arc<dyn AttemptStarter>,
    key: Key,
    (attempt, choice): (AttemptSpec, SandboxChoice),
    cancel_rx: oneshot::Receiver<()>,
    stop: tokio::sync::watch::Receiver<bool>,
    done: mpsc::UnboundedSender<Key>,
) {
    let started = starter.start_attempt(attempt, choice).await;
    match started {
        Ok(mut a) => {
            tracing::info!(
                job = key.0,
                attempt = key.1,
                sandbox = a.sandbox,
                "attempt started"
            );
            crate::metrics::attempt_started(a.sandbox);
            let start = Command::TaskStarted {
                at_ms: node.now_ms(),
                job: key.0,
                attempt: key.1,
                node: node.id,
            };
            // A cancel is passed on while the attempt runs, not after: the worker then
            // finds the canceller gone (an attempt whose end was applied before its task
            // freed its slot is not reported killed).
            let mut relay = Relay {
                kill: a.canceller(),
                cancel: Some(cancel_rx),
            };
            let mut wait = std::pin::pin!(a.wait());
            // The start is reported once the attempt outlived START_REPORT_HOLD; one that
            // ended by then is reported started and ended together (see the constant).
            let (result, start) = match relay
                .during(tokio::time::timeout(START_REPORT_HOLD, &mut wait))
                .await
            {
                Ok(result) => (result, Some(start)),
                Err(_) => {
                    relay.during(report(&node, key, start)).await;
                    (relay.during(&mut wait).await, None)
                }
            };
            drop(relay);
            if let Some(why) = result.killed_because {
                crate::metrics::attempt_killed(why);
            }
            if !result.outputs_refused.is_empty() {
                tracing::warn!(job = key.0, refused = ?result.outputs_refused, "step outputs refused");
            }
            // Step outputs are applied before the end (a dependent placed after the end
            // reads them), so they go in order, after the start.
            let start =
                if result.exit == cathedral_executor::Exit::Code(0) && !result.outputs.is_empty() {
                    if let Some(start) = start {
                        report(&node, key, start).await;
                    }
                    let outputs = result
                        .outputs
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect();
                    report(
                        &node,
                        key,
                        Command::TaskOutputs {
                            at_ms: node.now_ms(),
                            job: key.0,
                            attempt: key.1,
                            node: node.id,
                            outputs,
                        },
                    )
                    .await;
                    None
                } else {
                    start
                };
            let outcome = if *stop.borrow() && result.killed_because == Some(KillReason::Cancelled)
            {
                Outcome {
                    exit: Exit::Lost,
                    duration_ms: result.duration_ms,
                    output_tail: SHUT_DOWN_NOTE.to_vec(),
                }
            } else {
                outcome(&result)
            };
            match start {
                // Proposed together, the start first: they go to the leader in that order
                // and usually share an entry. Should the start be retried after the end
                // committed, the state ignores it (the attempt has no start time then).
                Some(start) => {
                    futures_util::future::join(
                        report(&node, key, start),
                        report_finished(&node, key, outcome),
                    )
                    .await;
                }
                None => report_finished(&node, key, outcome).await,
            }
        }
        Err(e) => {
            tracing::warn!(job = key.0, attempt = key.1, "cannot start: {e}");
            let outcome = Outcome {
                exit: Exit::Code(127),
                duration_ms: 0,
                output_tail: format!("[cathedral: {e}]").into_bytes(),
            };
            report_finished(&node, key, outcome).await;
        }
    }
    let _ = done.send(key);
}

async fn report_finished(node: &Node, key: Key, outcome: Outcome) {
    tracing::info!(job = key.0, attempt = key.1, exit = ?outcome.exit, "attempt ended");
    report(
        node,
        key,
        Command::TaskFinished {
            at_ms: node.now_ms(),
            job: key.0,
            attempt: key.1,
            node: node.id,
            outcome,
        },
    )
    .await;
}

/// Proposes a report until it is committed, as one request (one id across its retries,
/// so it is applied once). A report the state ignores (the attempt is no longer current)
/// is done too: that is fencing, not failure.
async fn report(node: &Node, key: Key, cmd: Command) {
    let cmd = cmd.once(node.new_request_id());
    loop {
        match node.propose(Proposal::Write(cmd.clone())).await {
            Ok((_, Response::Ignored { reason })) => {
                tracing::debug!(job = key.0, attempt = key.1, "report ignored: {reason}");
                return;
            }
            Ok(_) => return,
            Err(ServerError::Invalid { field, reason }) => {
                tracing::error!(job = key.0, "report refused: {field}: {reason}");
                return;
            }
            Err(e) => {
                tracing::debug!(job = key.0, "report not committed yet: {e}");
                tokio::time::sleep(Duration::from_millis(REPORT_RETRY_MS)).await;
            }
        }
    }
}

/// Asks the container engine, every [`ENGINE_PROBE_INTERVAL`], whether it answers, and
/// keeps this node's `driver.docker=true` tag to match: the scheduler places containers
/// only on nodes that carry it. The first answer also sweeps away the containers the
/// previous run of this node left.
async fn watch_engine(
    node: Arc<Node>,
    executor: Arc<Executor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(driver) = executor.docker().cloned() else {
        return;
    };
    let tag = cathedral_consensus::DOCKER_DRIVER_TAG;
    let mut advertised = false;
    loop {
        let up = match driver.probe().await {
            Ok((info, removed)) => {
                if !advertised {
                    tracing::info!(
                        engine = %driver.host(),
                        version = %info.version,
                        api = %info.api_version,
                        swept = removed.len(),
                        "container engine answers; docker sandbox on"
                    );
                }
                true
            }
            Err(e) => {
                if advertised {
                    tracing::warn!(engine = %driver.host(), "container engine stopped answering: {e}");
                } else {
                    tracing::debug!(engine = %driver.host(), "no container engine: {e}");
                }
                false
            }
        };
        if up != advertised {
            let changed = if up {
                let set = BTreeMap::from([(tag.to_string(), "true".to_string())]);
                node.gossip.set_tags(&set, &[]).await
            } else {
                node.gossip
                    .set_tags(&BTreeMap::new(), &[tag.to_string()])
                    .await
            };
            match changed {
                Ok(_) => advertised = up,
                Err(e) => tracing::warn!("cannot change the {tag} tag: {e}"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(ENGINE_PROBE_INTERVAL) => {}
        }
    }
}

/// Applies output retention on this node. The output of an attempt that ran here stays
/// until its replica holder has confirmed its copy (see `replicas`), so it outlives this
/// node; copies this node holds for others follow the bounds as they are.
async fn retention(node: Arc<Node>, confirmed: Arc<std::sync::Mutex<BTreeSet<Key>>>) {
    let root = node.data.outputs();
    let files = {
        let root = root.clone();
        cathedral_consensus::blocking::run(move || flat_outputs(&root))
            .await
            .unwrap_or_default()
    };
    let voters = crate::replicas::voters(&node);
    // What was confirmed for a file that is gone is forgotten: the set is bounded by the
    // output files on disk, not by every attempt this node ever ran.
    let present: BTreeSet<Key> = files.iter().map(|(k, _)| *k).collect();
    confirmed.lock().unwrap().retain(|k| present.contains(k));
    let (mut keep, own): (BTreeSet<Key>, Vec<(Key, u64, u64)>) = {
        let a = node.state().read();
        let keep = a.state.running_on(node.id).into_iter().collect();
        let own = files
            .into_iter()
            .filter_map(|(key, len)| {
                let at = a.state.attempt(key.0, key.1)?;
                (at.node == node.id && at.finished_at_ms.is_some()).then_some(())?;
                let holder = crate::replicas::replica_holder(&voters, key.0, key.1, node.id)?;
                Some((key, len, holder))
            })
            .collect();
        (keep, own)
    };
    for (key, len, holder) in own {
        if confirmed.lock().unwrap().contains(&key) {
            continue;
        }
        if crate::replicas::confirmed(&node, holder, key.0, key.1, len).await {
            confirmed.lock().unwrap().insert(key);
        } else {
            keep.insert(key);
        }
    }
    let (max_age, max_total) = (
        Duration::from_secs(node.config.output.retention_hours * 3600),
        node.config.output.bytes_total_max,
    );
    let removed =
        cathedral_consensus::blocking::run(move || sweep_outputs(&root, &keep, max_age, max_total))
            .await
            .unwrap_or(0);
    if removed > 0 {
        tracing::info!(files = removed, "output retention removed old output");
    }
}

/// (attempt, bytes) of every output file in `root`'s flat layout (`<job>-<attempt>.log`).
fn flat_outputs(root: &Path) -> Vec<(Key, u64)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (j, a) = name.strip_suffix(".log")?.split_once('-')?;
            let key = (j.parse().ok()?, a.parse().ok()?);
            Some((key, e.metadata().ok()?.len()))
        })
        .collect()
}

/// Deletes output files under `root` (`<job>-<attempt>.log`, and earlier versions'
/// `<job>/<attempt>.log`) older than `max_age`, then the oldest until the total is within
/// `max_total` bytes; files of attempts in `keep` stay. Returns how many files it deleted.
fn sweep_outputs(root: &Path, keep: &BTreeSet<Key>, max_age: Duration, max_total: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let mut consider = |path: PathBuf, key: Option<Key>| {
        if key.is_some_and(|k| keep.contains(&k)) {
            return;
        }
        if let Ok(m) = path.metadata() {
            files.push((
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                path,
            ));
        }
    };
    let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            // Earlier layout: a directory per job.
            let job = number(Some(&name));
            for f in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let attempt = number(f.path().file_stem().and_then(|s| s.to_str()));
                let key = job.zip(attempt).map(|(j, a)| (j, a as u32));
                consider(f.path(), key);
            }
        } else {
            let key = name.strip_suffix(".log").and_then(|stem| {
                let (j, a) = stem.split_once('-')?;
                Some((number(Some(j))?, number(Some(a))? as u32))
            });
            consider(path, key);
        }
    }
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    let mut removed = 0;
    for (modified, len, path) in files {
        let old = modified.elapsed().is_ok_and(|age| age > max_age);
        if (old || total > max_total) && std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed += 1;
            if let Some(dir) = path.parent().filter(|d| *d != root) {
                let _ = std::fs::remove_dir(dir); // an earlier layout's job directory, when empty
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_old_then_oldest_and_keeps_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Jobs 1 and 2 in the earlier layout (a directory per job), the others flat.
        let write = |job: u64, attempt: u32, bytes: usize, age_s: u64| {
            let p = if job <= 2 {
                let d = root.join(job.to_string());
                std::fs::create_dir_all(&d).unwrap();
                d.join(format!("{attempt}.log"))
            } else {
                root.join(format!("{job}-{attempt}.log"))
            };
            std::fs::write(&p, vec![b'x'; bytes]).unwrap();
            let t = SystemTime::now() - Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
            p
        };
        let ancient = write(1, 1, 10, 10_000);
        let old = write(2, 1, 100, 300);
        let newer = write(3, 1, 100, 200);
        let newest = write(4, 1, 100, 100);
        let running = write(5, 1, 1000, 20_000);
        let keep: BTreeSet<Key> = [(5, 1)].into();
        // Age limit 1 h removes the ancient file; 250 bytes allowed removes the oldest
        // remaining one; the in-flight attempt stays whatever its age and size.
        let n = sweep_outputs(root, &keep, Duration::from_secs(3600), 250);
        assert_eq!(n, 2);
        assert!(!ancient.exists() && !old.exists());
        assert!(newer.exists() && newest.exists() && running.exists());
        assert!(!root.join("1").exists(), "empty job directories go too");
    }
}
