//! The leader's loop: tracks node liveness from heartbeats, declares silent nodes failed,
//! times out overdue attempts, and proposes the scheduler's placements. Every other node
//! sends heartbeats to whoever leads.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cathedral_consensus::{hex, Command, Exit, NodeStatus, Outcome, Response};
use openraft::ServerState;

use crate::api::internal::HeartbeatRequest;
use crate::node::{now_ms, Node, Proposal};
use crate::scheduler::{overdue, place, ASSIGNMENTS_PER_ENTRY_MAX};

/// How often nodes send heartbeats to the leader.
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Period of the leader loop when nothing is applied in between.
const LEADER_TICK_MS: u64 = 200;
/// Extra time past a job's timeout before the leader times an attempt out itself.
pub const TIMEOUT_SLACK_MS: u64 = 5_000;

/// When each node was last heard from, as this node (when leading) saw it.
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<HashMap<u64, Instant>>,
}

impl Liveness {
    pub fn heard(&self, node: u64) {
        self.seen.lock().unwrap().insert(node, Instant::now());
    }

    fn since(&self, node: u64) -> Option<Duration> {
        self.seen.lock().unwrap().get(&node).map(|t| t.elapsed())
    }

    fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Runs until `stop`: while leading, liveness, timeouts and placement; always, heartbeats.
pub async fn run(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut applied = node.raft.metrics();
    let mut leading_since: Option<Instant> = None;
    let mut last_heartbeat = Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = applied.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(LEADER_TICK_MS)) => {}
        }
        if last_heartbeat.elapsed() >= Duration::from_millis(HEARTBEAT_INTERVAL_MS) {
            last_heartbeat = Instant::now();
            let n = node.clone();
            tokio::spawn(async move { send_heartbeat(&n).await });
        }
        if node.metrics().state != ServerState::Leader {
            if leading_since.take().is_some() {
                node.liveness.reset();
            }
            continue;
        }
        // A new leader gives every node a full timeout to be heard from.
        let since = *leading_since.get_or_insert_with(Instant::now);
        if let Err(e) = lead_once(&node, since).await {
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

async fn send_heartbeat(node: &Node) {
    let Some(leader) = node.metrics().current_leader else {
        return;
    };
    if leader == node.id {
        return;
    }
    let Some(addr) = node.address_of(leader) else {
        return;
    };
    let Ok(mut client) = node.peers.client(leader, &addr) else {
        return;
    };
    let mut req = tonic::Request::new(HeartbeatRequest {
        target: leader,
        node_id: node.id,
    });
    req.set_timeout(Duration::from_millis(HEARTBEAT_INTERVAL_MS * 2));
    let _ = client.heartbeat(req).await;
}

async fn lead_once(node: &Arc<Node>, since: Instant) -> crate::error::Result<()> {
    let timeout = Duration::from_millis(node.config.node_timeout_ms);
    let now = now_ms();
    // A node outside the Raft membership (removed, or one of an old cluster whose state
    // was restored here) can never be heard from: it is failed at once, not after a timeout.
    let members: BTreeSet<u64> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let (failed, alive, timed_out, assignments) = {
        let a = node.applied.read().unwrap();
        let state = &a.state;
        let mut alive = BTreeSet::new();
        let mut failed = Vec::new();
        for n in state.nodes().filter(|n| n.status == NodeStatus::Alive) {
            let id = n.info.id;
            let heard = id == node.id
                || (members.contains(&id)
                    && (node.liveness.since(id).is_some_and(|d| d < timeout)
                        || since.elapsed() < timeout));
            if heard {
                alive.insert(id);
            } else {
                failed.push(id);
            }
        }
        let timed_out = overdue(state, now, TIMEOUT_SLACK_MS);
        let assignments = place(state, &alive, now, ASSIGNMENTS_PER_ENTRY_MAX);
        (failed, alive, timed_out, assignments)
    };
    for id in failed {
        if members.contains(&id) {
            tracing::warn!(
                node = id,
                "no heartbeat within {} ms; declaring it failed",
                timeout.as_millis()
            );
        } else {
            tracing::warn!(
                node = id,
                "not a member of this cluster; declaring it failed"
            );
        }
        node.propose(Proposal::Write(Command::NodeFailed {
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
        tracing::debug!(count = assignments.len(), nodes = alive.len(), "assigning");
        node.propose(Proposal::Write(Command::AssignTasks {
            at_ms: now,
            assignments,
        }))
        .await?;
    }
    Ok(())
}
