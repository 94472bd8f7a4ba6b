//! The leader's loop: turns gossip's view into node-failed and node-recovered entries,
//! times out overdue attempts, and proposes the scheduler's placements.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cathedral_consensus::{hex, Command, Exit, NodeStatus, Outcome, Response};
use openraft::ServerState;

use crate::gossip::Liveness;
use crate::node::{now_ms, Node, Proposal};
use crate::scheduler::{overdue, place, Candidates, Strategy, ASSIGNMENTS_PER_ENTRY_MAX};

/// Period of the leader loop when nothing is applied in between.
const LEADER_TICK_MS: u64 = 200;
/// Extra time past a job's timeout before the leader times an attempt out itself.
pub const TIMEOUT_SLACK_MS: u64 = 5_000;

/// Runs until `stop`: while leading, node failure and recovery, timeouts and placement.
pub async fn run(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut applied = node.raft.metrics();
    let mut view = node.gossip.watch();
    let mut leading_since: Option<Instant> = None;
    let mut strategy = Strategy::new(node.config.placement, node.config.placement_seed);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = applied.changed() => {}
            _ = view.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(LEADER_TICK_MS)) => {}
        }
        if node.metrics().state != ServerState::Leader {
            leading_since = None;
            continue;
        }
        // A new leader gives every node a full timeout to be seen by gossip.
        let since = *leading_since.get_or_insert_with(Instant::now);
        if let Err(e) = lead_once(&node, since, &mut strategy).await {
            tracing::debug!("leader duties: {e}");
        }
        if let Err(e) = checkpoint_if_due(&node).await {
            tracing::debug!("checkpoint: {e}");
        }
    }
}

/// Every `checkpoint_interval` entries: a `Checkpoint` (each node records its state hash at
/// that index), then a `CheckpointHash` carrying the leader's, which every node — and the
/// offline replay — compares with its own.
async fn checkpoint_if_due(node: &Node) -> crate::error::Result<()> {
    let interval = node.config.checkpoint_interval;
    if interval == 0 {
        return Ok(());
    }
    let (applied, latest) = {
        let a = node.applied.read().unwrap();
        (
            a.last_applied.map_or(0, |l| l.index),
            a.state.latest_checkpoint().unwrap_or(0),
        )
    };
    if applied < latest + interval {
        return Ok(());
    }
    let (index, response) = node
        .propose(Proposal::Write(Command::Checkpoint { at_ms: now_ms() }))
        .await?;
    if let Response::CheckpointRecorded { hash } = response {
        tracing::debug!(index, hash = %hex(&hash), "checkpoint");
        node.propose(Proposal::Write(Command::CheckpointHash {
            at_ms: now_ms(),
            index,
            hash,
        }))
        .await?;
    }
    Ok(())
}

/// Why the leader declares a node failed.
#[derive(Debug)]
enum Down {
    NotMember,
    Dead(Duration),
    Left,
    Unseen,
}

async fn lead_once(
    node: &Arc<Node>,
    since: Instant,
    strategy: &mut Strategy,
) -> crate::error::Result<()> {
    let unseen_timeout = Duration::from_millis(node.config.node_timeout_ms);
    let grace = Duration::from_millis(node.config.failure_grace_ms);
    let now = now_ms();
    let view = node.gossip.view();
    // A node outside the Raft membership (removed, or one of an old cluster whose state
    // was restored here) can never be heard from: it is failed at once, not after a timeout.
    let members: BTreeSet<u64> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let (failed, recovered, timed_out, assignments) = {
        let a = node.applied.read().unwrap();
        let state = &a.state;
        let mut failed = Vec::new();
        let mut recovered = Vec::new();
        let mut candidates = Candidates::new();
        for n in state.nodes() {
            let id = n.info.id;
            let seen = view.member(id);
            match n.status {
                NodeStatus::Alive => {
                    let down = if id == node.id {
                        None
                    } else if !members.contains(&id) {
                        Some(Down::NotMember)
                    } else {
                        match seen.map(|m| (m.liveness, m.since.elapsed())) {
                            Some((Liveness::Dead, for_)) if for_ >= grace => Some(Down::Dead(for_)),
                            Some((Liveness::Left, _)) => Some(Down::Left),
                            Some((Liveness::Alive | Liveness::Dead, _)) => None,
                            None | Some((Liveness::Joining, _)) => {
                                (since.elapsed() >= unseen_timeout).then_some(Down::Unseen)
                            }
                        }
                    };
                    match down {
                        Some(why) => failed.push((id, why)),
                        None => {
                            if let Some(m) = seen.filter(|m| m.available()) {
                                candidates.insert(id, m.tags.clone());
                            }
                        }
                    }
                }
                NodeStatus::Failed => {
                    if members.contains(&id) && seen.is_some_and(|m| m.liveness == Liveness::Alive)
                    {
                        recovered.push(id);
                    }
                }
                NodeStatus::Retired => {}
            }
        }
        let timed_out = overdue(state, now, TIMEOUT_SLACK_MS);
        let assignments = place(state, &candidates, now, ASSIGNMENTS_PER_ENTRY_MAX, strategy);
        (failed, recovered, timed_out, assignments)
    };
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
