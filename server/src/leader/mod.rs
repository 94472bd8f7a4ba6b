//! The leader's loop: turns gossip's view into node-failed and node-recovered entries,
//! times out overdue attempts, and proposes the scheduler's placements.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use cathedral_consensus::{
    hex, Assignment, Command, Exit, JobId, NodeId, NodeStatus, Outcome, Response,
};
use openraft::ServerState;

pub(crate) mod settings;

use crate::gossip::Liveness;
use crate::node::{Node, Proposal};
use crate::scheduler::{
    overdue, place_counting, Candidates, Strategy, ASSIGNMENTS_PER_ENTRY_MAX, FULL_COUNT_INTERVAL,
};

/// Period of the leader loop when nothing is applied in between: as often as crons are
/// looked at (`CRON_CHECK_INTERVAL`), so an idle leader fires them on time.
const LEADER_TICK_MS: u64 = 100;
/// Extra time past a job's timeout before the leader times an attempt out itself.
pub const TIMEOUT_SLACK_MS: u64 = 5_000;

/// The longest between two looks for jobs to collect (shorter for short retentions: a
/// tenth of it, at least `COLLECT_CHECK_MS_MIN`).
pub const COLLECT_CHECK_MS_MAX: u64 = 60_000;
pub const COLLECT_CHECK_MS_MIN: u64 = 1_000;

/// A node gets work only if it answered one of the leader's Raft RPCs within this long
/// (at least `PLACEMENT_CONTACT_HEARTBEATS` heartbeat periods, when those are longer).
pub const PLACEMENT_CONTACT_MS: u64 = 1_000;
/// Heartbeat periods a node may go unheard and still get work, for long heartbeat periods.
pub const PLACEMENT_CONTACT_HEARTBEATS: u64 = 5;

/// Runs until `stop`: while leading, node failure and recovery, timeouts and placement.
pub async fn run(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // What the loop wakes on: entries applied, a change of Raft's role or leader, the
    // gossip view, and a tick. Not Raft's full metrics: those are sent at every turn of
    // Raft's core loop (every heartbeat answer and replication step), and each wake-up is a
    // pass over the leader's duties.
    let mut applied = node.events.subscribe();
    let mut role = node.raft.server_metrics();
    let mut view = node.gossip.watch();
    // A steady tick, not a sleep armed again at every wake: a wake just before the crons
    // were due would put their check off by a whole tick more.
    let mut tick = tokio::time::interval(Duration::from_millis(LEADER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<Instant> = None;
    let mut strategy = Strategy::new(
        node.config.leader.placement,
        node.config.leader.placement_seed,
    );
    let mut schedules = std::collections::HashMap::new();
    let mut crons_checked = Instant::now() - CRON_CHECK_INTERVAL;
    let mut collected_at: Option<Instant> = None;
    let mut full_counted: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = applied.changed() => if r.is_err() { return },
            // Raft's metrics end only when Raft stopped (a fatal error: the node stops);
            // waiting on an ended watch would wake the loop at once, for ever.
            r = role.changed() => if r.is_err() { return },
            r = view.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        // The server metrics, not the full ones: openraft sends these first, so the full
        // ones may not say Leader yet when this wakes for the change.
        if role.borrow_and_update().state != ServerState::Leader {
            leading_since = None;
            continue;
        }
        // A new leader gives every node a full timeout to be seen by gossip.
        let since = *leading_since.get_or_insert_with(Instant::now);
        // A shutdown does not wait for a proposal in flight (up to the write timeout
        // without a quorum): whatever it decided, the next leader decides again.
        let duties = async {
            if let Err(e) = lead_once(&node, since, &mut strategy, &mut full_counted).await {
                tracing::debug!("leader duties: {e}");
            }
            if let Err(e) = checkpoint_if_due(&node).await {
                tracing::debug!("checkpoint: {e}");
            }
            if let Err(e) = collect_if_due(&node, &mut collected_at).await {
                tracing::debug!("collection: {e}");
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = duties => {}
        }
        // The loop wakes at every applied batch: crons are looked at a few times a second.
        if crons_checked.elapsed() >= CRON_CHECK_INTERVAL {
            crons_checked = Instant::now();
            crate::cron_service::fire_due(&node, &mut schedules).await;
        }
    }
}

/// How often the leader looks for due cron fires (a fire runs within this of its time,
/// plus the time to commit it).
pub const CRON_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Retention: every so often (see `COLLECT_CHECK_MS_MAX`), a `Collect` entry naming the
/// jobs that ended `--job-retention` ago or more, or their own retention ago
/// (`ClusterState::collection_due`), at most `COLLECT_PER_ENTRY_MAX` at a time (a full
/// entry is followed by the next at once). With `--job-retention 0` only jobs that asked
/// for a retention of their own are collected.
async fn collect_if_due(node: &Node, last: &mut Option<Instant>) -> crate::error::Result<()> {
    // No interval is shorter than the minimum: most passes (one per applied batch) stop
    // here, before reading the namespaces.
    if last.is_some_and(|t| t.elapsed() < Duration::from_millis(COLLECT_CHECK_MS_MIN)) {
        return Ok(());
    }
    let retention = node.config.leader.job_retention_ms;
    let interval = |r: u64| match r {
        0 => COLLECT_CHECK_MS_MIN,
        r => (r / 10).clamp(COLLECT_CHECK_MS_MIN, COLLECT_CHECK_MS_MAX),
    };
    // A namespace that keeps its jobs a shorter time is looked at as often as it needs.
    let shortest = node
        .state()
        .read()
        .state
        .namespaces()
        .retentions()
        .filter(|r| *r > 0)
        .map(interval)
        .min();
    let every =
        Duration::from_millis(shortest.map_or(interval(retention), |n| n.min(interval(retention))));
    if last.is_some_and(|t| t.elapsed() < every) {
        return Ok(());
    }
    let now = node.now_ms();
    let due = {
        let a = node.state().read();
        if a.state.rules().is_none() {
            return Ok(());
        }
        a.state.collection_due(
            now,
            retention,
            cathedral_consensus::limits::COLLECT_PER_ENTRY_MAX,
        )
    };
    let full = due.len() == cathedral_consensus::limits::COLLECT_PER_ENTRY_MAX;
    if !full {
        *last = Some(Instant::now());
    }
    if due.is_empty() {
        return Ok(());
    }
    tracing::debug!(count = due.len(), "collecting finished jobs");
    node.propose(Proposal::Write(Command::Collect {
        at_ms: now,
        jobs: due,
    }))
    .await?;
    Ok(())
}

/// Every `checkpoint_interval` entries: a `Checkpoint` (each node records its state hash at
/// that index), then a `CheckpointHash` carrying the leader's, which every node — and the
/// offline replay — compares with its own.
async fn checkpoint_if_due(node: &Node) -> crate::error::Result<()> {
    let interval = node.config.leader.checkpoint_interval;
    if interval == 0 {
        return Ok(());
    }
    let (applied, latest) = {
        let a = node.state().read();
        (
            a.last_applied.map_or(0, |l| l.index),
            a.state.latest_checkpoint().unwrap_or(0),
        )
    };
    if applied < latest + interval {
        return Ok(());
    }
    let (index, response) = node
        .propose(Proposal::Write(Command::Checkpoint {
            at_ms: node.now_ms(),
        }))
        .await?;
    if let Response::CheckpointRecorded { hash } = response {
        tracing::debug!(index, hash = %hex(&hash), "checkpoint");
        node.propose(Proposal::Write(Command::CheckpointHash {
            at_ms: node.now_ms(),
            index,
            hash,
        }))
        .await?;
    }
    Ok(())
}

/// Why the leader declares a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    NotMember,
    Dead(Duration),
    Left,
    Unseen,
}

/// What gossip says of a node: its liveness, for how long, whether it takes work, and
/// how suspect it is (phi; `None` before it was sampled).
#[derive(Debug, Clone, Copy)]
struct Seen {
    liveness: Liveness,
    for_: Duration,
    available: bool,
    phi: Option<f64>,
}

/// One registered node as the leader sees it.
#[derive(Debug, Clone, Copy)]
struct Facts {
    /// The leader itself (never declared failed by itself).
    is_self: bool,
    status: NodeStatus,
    /// In the Raft membership.
    member: bool,
    /// `None`: gossip has not heard of it.
    seen: Option<Seen>,
    /// Time since it last answered one of this node's Raft RPCs; `None`: never.
    contact: Option<Duration>,
}

/// The timeouts the classification applies.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// How long this node has led (a new leader gives every node a full timeout).
    leading_for: Duration,
    /// A node gossip never saw alive within this long of the leadership is failed.
    unseen_timeout: Duration,
    /// A node gossip calls dead is failed only after this long.
    grace: Duration,
    /// A candidate answered a Raft RPC of this leader within this long.
    contact: Duration,
    /// A candidate's phi is at most this (half the failure detector's threshold).
    phi_max: f64,
}

/// What the leader does about one registered node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Commit node-failed (its attempts are requeued).
    Fail(Down),
    /// Commit node-recovered.
    Recover,
    /// Alive and taking work: a placement candidate.
    Candidate,
    /// Nothing to do (alive but not available, within a grace, retired, still failed).
    Leave,
}

/// The leader's judgement of one node, a pure function of what it knows: a node outside
/// the Raft membership (removed, or one of an old cluster whose state was restored here)
/// can never be heard from, so it fails at once; a node gossip calls dead fails after the
/// grace; one that left fails at once; one gossip never saw fails after the unseen timeout
/// counted from the start of this leadership; a failed member gossip sees alive recovers.
///
/// The placement rule: a node gets work only on recent evidence that it lives — gossip
/// sees it alive and taking work, its phi is at most half the failure threshold (not
/// rising toward failure), and it answered one of this leader's Raft RPCs since this
/// leadership began and within `contact` (`PLACEMENT_CONTACT_MS`). The leader itself
/// qualifies on gossip alone. So a new leader never places on the node of the leader it
/// replaced (dead, but not yet declared failed), and a node that stopped answering
/// heartbeats gets nothing while the failure detector makes up its mind.
fn classify(n: Facts, t: Timing) -> Verdict {
    match n.status {
        NodeStatus::Alive => {
            let down = if n.is_self {
                None
            } else if !n.member {
                Some(Down::NotMember)
            } else {
                match n.seen.map(|s| (s.liveness, s.for_)) {
                    Some((Liveness::Dead, for_)) if for_ >= t.grace => Some(Down::Dead(for_)),
                    Some((Liveness::Left, _)) => Some(Down::Left),
                    Some((Liveness::Alive | Liveness::Dead, _)) => None,
                    None | Some((Liveness::Joining, _)) => {
                        (t.leading_for >= t.unseen_timeout).then_some(Down::Unseen)
                    }
                }
            };
            match down {
                Some(why) => Verdict::Fail(why),
                None if placeable(n, t) => Verdict::Candidate,
                None => Verdict::Leave,
            }
        }
        NodeStatus::Failed if n.member && n.seen.is_some_and(|s| s.liveness == Liveness::Alive) => {
            Verdict::Recover
        }
        NodeStatus::Failed | NodeStatus::Retired => Verdict::Leave,
    }
}

/// Whether a live node may be given work now (the placement rule of [`classify`]).
fn placeable(n: Facts, t: Timing) -> bool {
    let Some(seen) = n.seen else {
        return false;
    };
    if !seen.available {
        return false;
    }
    if n.is_self {
        return true;
    }
    let heard = n
        .contact
        .is_some_and(|c| c <= t.contact && c < t.leading_for);
    heard && seen.phi.is_none_or(|p| p <= t.phi_max)
}

/// One pass of the leader's loop. Long on purpose: its decisions go in a fixed order
/// (rules, features, failures and recoveries, timeouts, placement, collection), each
/// returning early when it proposed something, so the next pass sees its effect.
async fn lead_once(
    node: &Arc<Node>,
    since: Instant,
    strategy: &mut Strategy,
    full_counted: &mut Option<Instant>,
) -> crate::error::Result<()> {
    let unseen_timeout = Duration::from_millis(node.config.leader.node_timeout_ms);
    let grace = Duration::from_millis(node.config.leader.failure_grace_ms);
    let now = node.now_ms();
    let view = node.gossip.view();
    let members: BTreeSet<u64> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let heartbeat = node.config.raft.heartbeat_interval_ms;
    let timing = Timing {
        leading_for: since.elapsed(),
        unseen_timeout,
        grace,
        contact: Duration::from_millis(
            PLACEMENT_CONTACT_MS.max(heartbeat.saturating_mul(PLACEMENT_CONTACT_HEARTBEATS)),
        ),
        phi_max: node.config.gossip.phi_threshold / 2.0,
    };
    // The rules first: nothing is placed under rules other than the leader's settings.
    let rules = cathedral_consensus::Rules {
        lost_retries: node.config.leader.lost_retries,
    };
    let current = node.state().read().state.rules();
    if current != Some(rules) {
        tracing::info!(?current, ?rules, "writing the rules of apply");
        node.propose(Proposal::Write(Command::SetRules { at_ms: now, rules }))
            .await?;
        return Ok(());
    }
    // Then the features of apply this build has that the log has not turned on yet.
    let missing = {
        let a = node.state().read();
        cathedral_consensus::Feature::ALL
            .into_iter()
            .find(|f| !a.state.has_feature(*f))
    };
    if let Some(feature) = missing {
        tracing::info!(?feature, "turning on a feature of apply");
        node.propose(Proposal::Write(Command::Enable {
            at_ms: now,
            feature,
        }))
        .await?;
        return Ok(());
    }
    let (failed, recovered, timed_out, assignments) = {
        let a = node.state().read();
        let state = &a.state;
        let mut failed = Vec::new();
        let mut recovered = Vec::new();
        let mut candidates = Candidates::new();
        for n in state.nodes() {
            let id = n.info.id;
            let seen = view.member(id);
            let facts = Facts {
                is_self: id == node.id,
                status: n.status,
                member: members.contains(&id),
                seen: seen.map(|m| Seen {
                    liveness: m.liveness,
                    for_: m.since.elapsed(),
                    available: m.available(),
                    phi: m.phi,
                }),
                contact: node.peers.since_contact(id),
            };
            match classify(facts, timing) {
                Verdict::Fail(why) => failed.push((id, why)),
                Verdict::Recover => recovered.push(id),
                Verdict::Candidate => {
                    if let Some(m) = seen {
                        candidates.insert(id, m.tags.clone());
                    }
                }
                Verdict::Leave => {}
            }
        }
        let timed_out = overdue(state, now, TIMEOUT_SLACK_MS);
        let started = std::time::Instant::now();
        // With every slot taken, the jobs that wait are counted once a second.
        let count = full_counted.is_none_or(|t| t.elapsed() >= FULL_COUNT_INTERVAL);
        let (assignments, stuck) = place_counting(
            state,
            &candidates,
            now,
            ASSIGNMENTS_PER_ENTRY_MAX,
            strategy,
            count,
        );
        if count {
            *full_counted = Some(Instant::now());
        }
        crate::metrics::scheduler_pass(started.elapsed(), assignments.len(), stuck);
        (failed, recovered, timed_out, assignments)
    };
    commit(
        node,
        now,
        unseen_timeout,
        Decisions {
            failed,
            recovered,
            timed_out,
            assignments,
        },
    )
    .await
}

/// What one pass of the leader decided, to commit in this order.
struct Decisions {
    failed: Vec<(NodeId, Down)>,
    recovered: Vec<NodeId>,
    timed_out: Vec<(JobId, u32, NodeId)>,
    assignments: Vec<Assignment>,
}

/// Commits a pass's decisions: node-failed (saying why), node-recovered, timeouts of
/// overdue attempts, then the placements as one entry.
async fn commit(
    node: &Arc<Node>,
    now: u64,
    unseen_timeout: Duration,
    d: Decisions,
) -> crate::error::Result<()> {
    let Decisions {
        failed,
        recovered,
        timed_out,
        assignments,
    } = d;
    for (id, why) in failed {
        match why {
            Down::NotMember => tracing::warn!(
                node = id,
                "not a member of this cluster; declaring it failed"
            ),
            Down::Dead(for_) => tracing::warn!(
                node = id,
                "gossip declared it failed {} ms ago; committing node-failed",
                for_.as_millis()
            ),
            Down::Left => tracing::info!(node = id, "it left the cluster; committing node-failed"),
            Down::Unseen => tracing::warn!(
                node = id,
                "gossip has not seen it alive within {} ms; declaring it failed",
                unseen_timeout.as_millis()
            ),
        }
        node.propose(Proposal::Write(Command::NodeFailed {
            at_ms: now,
            node: id,
        }))
        .await?;
    }
    for id in recovered {
        tracing::info!(
            node = id,
            "gossip sees it alive again; committing node-recovered"
        );
        node.propose(Proposal::Write(Command::NodeRecovered {
            at_ms: now,
            node: id,
        }))
        .await?;
    }
    for (job, attempt, on) in timed_out {
        tracing::info!(job, attempt, node = on, "attempt overdue; timing it out");
        node.propose(Proposal::Write(Command::TaskFinished {
            at_ms: now,
            job,
            attempt,
            node: on,
            outcome: Outcome {
                exit: Exit::TimedOut,
                duration_ms: 0,
                output_tail: b"[cathedral: timed out by the leader; the node did not report]"
                    .to_vec(),
            },
        }))
        .await?;
    }
    if !assignments.is_empty() {
        tracing::debug!(count = assignments.len(), "assigning");
        node.propose(Proposal::Write(Command::AssignTasks {
            at_ms: now,
            assignments,
        }))
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        leading_for: Duration::from_secs(10),
        unseen_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(2),
        contact: Duration::from_secs(1),
        phi_max: 4.0,
    };

    fn alive(seen: Option<(Liveness, u64, bool)>) -> Facts {
        Facts {
            is_self: false,
            status: NodeStatus::Alive,
            member: true,
            seen: seen.map(|(liveness, secs, available)| Seen {
                liveness,
                for_: Duration::from_secs(secs),
                available,
                phi: Some(1.0),
            }),
            contact: Some(Duration::from_millis(50)),
        }
    }

    #[test]
    fn work_goes_only_to_nodes_heard_from_recently_and_not_suspected() {
        let live = alive(Some((Liveness::Alive, 1, true)));
        // Never heard from by this leader (the node of the leader it replaced): no work,
        // though gossip still calls it alive.
        let unheard = Facts {
            contact: None,
            ..live
        };
        assert_eq!(classify(unheard, T), Verdict::Leave);
        // Heard from only before this leadership began.
        let new_leader = Timing {
            leading_for: Duration::from_millis(40),
            ..T
        };
        assert_eq!(classify(live, new_leader), Verdict::Leave);
        // Heard from, but not within the bound.
        let quiet = Facts {
            contact: Some(Duration::from_millis(1_500)),
            ..live
        };
        assert_eq!(classify(quiet, T), Verdict::Leave);
        // Suspected: phi past half the threshold.
        let mut suspect = live;
        suspect.seen.as_mut().unwrap().phi = Some(4.5);
        assert_eq!(classify(suspect, T), Verdict::Leave);
        // Not yet sampled by the failure detector, but answering Raft: placed.
        let mut fresh = live;
        fresh.seen.as_mut().unwrap().phi = None;
        assert_eq!(classify(fresh, T), Verdict::Candidate);
        // The leader itself needs no Raft contact.
        let me = Facts {
            is_self: true,
            contact: None,
            ..live
        };
        assert_eq!(classify(me, new_leader), Verdict::Candidate);
    }

    #[test]
    fn a_live_available_member_is_a_candidate_and_an_unavailable_one_is_left() {
        assert_eq!(
            classify(alive(Some((Liveness::Alive, 1, true))), T),
            Verdict::Candidate
        );
        assert_eq!(
            classify(alive(Some((Liveness::Alive, 1, false))), T),
            Verdict::Leave
        );
    }

    #[test]
    fn dead_fails_only_after_the_grace_and_left_at_once() {
        assert_eq!(
            classify(alive(Some((Liveness::Dead, 1, false))), T),
            Verdict::Leave
        );
        assert_eq!(
            classify(alive(Some((Liveness::Dead, 2, false))), T),
            Verdict::Fail(Down::Dead(Duration::from_secs(2)))
        );
        assert_eq!(
            classify(alive(Some((Liveness::Left, 0, false))), T),
            Verdict::Fail(Down::Left)
        );
    }

    #[test]
    fn unseen_fails_after_the_timeout_counted_from_the_leadership() {
        let early = Timing {
            leading_for: Duration::from_secs(4),
            ..T
        };
        assert_eq!(classify(alive(None), early), Verdict::Leave);
        assert_eq!(
            classify(alive(Some((Liveness::Joining, 60, false))), early),
            Verdict::Leave
        );
        assert_eq!(classify(alive(None), T), Verdict::Fail(Down::Unseen));
        assert_eq!(
            classify(alive(Some((Liveness::Joining, 0, false))), T),
            Verdict::Fail(Down::Unseen)
        );
    }

    #[test]
    fn a_non_member_fails_at_once_and_the_leader_never_fails_itself() {
        let outsider = Facts {
            member: false,
            ..alive(Some((Liveness::Alive, 1, true)))
        };
        assert_eq!(classify(outsider, T), Verdict::Fail(Down::NotMember));
        let me = Facts {
            is_self: true,
            member: false,
            ..alive(None)
        };
        assert_eq!(classify(me, T), Verdict::Leave);
    }

    #[test]
    fn a_failed_member_seen_alive_recovers_and_nothing_else_does() {
        let failed = |member, liveness| Facts {
            status: NodeStatus::Failed,
            member,
            ..alive(Some((liveness, 1, true)))
        };
        assert_eq!(classify(failed(true, Liveness::Alive), T), Verdict::Recover);
        assert_eq!(classify(failed(false, Liveness::Alive), T), Verdict::Leave);
        assert_eq!(classify(failed(true, Liveness::Dead), T), Verdict::Leave);
        let retired = Facts {
            status: NodeStatus::Retired,
            ..alive(Some((Liveness::Alive, 1, true)))
        };
        assert_eq!(classify(retired, T), Verdict::Leave);
    }
}
