//! A follower's way to the leader: writes that arrive while an earlier forward is on its
//! way travel together in one `ForwardBatch` call, so a follower costs the leader one
//! request per batch, not one per write; the leader puts them through its batcher, where
//! they join the same entries as its own clients' writes.
//!
//! ```text
//!  propose (follower) ──▶ queue ──▶ forwarder ──ForwardBatch──▶ leader: execute each ──▶ replies
//!                                   ≤ FORWARDS_IN_FLIGHT_MAX calls at once
//! ```
//!
//! A call is abandoned as soon as this node sees another leader (or none) than the one it
//! went to: a frozen or dead leader does not hold the writes in it, or a call slot, until
//! the timeout. Their outcome is then unknown; the proposer resends them to the new leader
//! under the same request ids (see `Node::propose`), which the state applies once.

use std::sync::Arc;
use std::time::Duration;

use openraft::metrics::RaftServerMetrics;
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::api::internal::RaftRequest;
use crate::error::ServerError;
use crate::proposal::{Outcome, Proposal};
use crate::transport::{decode, encode, Peers};

/// Most proposals in one forwarded batch (the leader refuses more).
pub const FORWARD_BATCH_MAX: usize = 1024;
/// Most encoded proposal bytes in one forwarded batch.
pub const FORWARD_BATCH_BYTES_MAX: usize = crate::proposal::ENTRY_BYTES_MAX;
/// Forwarded batches on their way at once.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 2;
/// Writes waiting to be forwarded; callers wait for room beyond it.
pub const FORWARD_QUEUE_MAX: usize = 16 * 1024;

struct Item {
    leader: u64,
    addr: String,
    proposal: Proposal,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// Handle on the forwarder task.
pub struct Forwarder {
    tx: mpsc::Sender<Item>,
}

impl Forwarder {
    /// Starts forwarding for node `from`; a call not answered within `timeout`, or still
    /// on its way when `metrics` shows another leader, fails every write in it (they may
    /// still be applied: the error says so). Raft's server metrics: they change with the
    /// role, vote, leader or membership only, not at every turn of Raft's core loop, which
    /// would wake every call in flight.
    pub fn start(
        peers: Arc<Peers>,
        from: u64,
        metrics: watch::Receiver<RaftServerMetrics<u64, BasicNode>>,
        timeout: Duration,
    ) -> Forwarder {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_MAX);
        tokio::spawn(run(peers, from, metrics, rx, timeout));
        Forwarder { tx }
    }

    /// Sends `proposal` (`bytes` encoded) to `leader` at `addr` with the next batch and
    /// waits at most `wait` for the answer. A connection refused or a node that is not the
    /// leader is `NotLeader` (nothing was proposed); a failure with an unknown outcome is
    /// `Unavailable`.
    pub async fn forward(
        &self,
        leader: u64,
        addr: String,
        proposal: Proposal,
        bytes: usize,
        wait: Duration,
    ) -> Outcome {
        let (reply, rx) = oneshot::channel();
        let item = Item {
            leader,
            addr,
            proposal,
            bytes,
            reply,
        };
        if self.tx.send(item).await.is_err() {
            return Err(ServerError::Unavailable("the node is shutting down".into()));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(answer) => answer.unwrap_or_else(|_| {
                Err(ServerError::Unavailable("the node is shutting down".into()))
            }),
            Err(_) => Err(ServerError::Unavailable(format!(
                "leader {leader} did not answer within the write timeout; the write may or may not have been applied"
            ))),
        }
    }
}

async fn run(
    peers: Arc<Peers>,
    from: u64,
    metrics: watch::Receiver<RaftServerMetrics<u64, BasicNode>>,
    mut rx: mpsc::Receiver<Item>,
    timeout: Duration,
) {
    let in_flight = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX));
    let mut held: Option<Item> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => return,
            },
        };
        let (leader, addr) = (first.leader, first.addr.clone());
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < FORWARD_BATCH_MAX {
            let Ok(i) = rx.try_recv() else { break };
            if i.leader != leader || i.addr != addr || bytes + i.bytes > FORWARD_BATCH_BYTES_MAX {
                held = Some(i);
                break;
            }
            bytes += i.bytes;
            batch.push(i);
        }
        let peers = peers.clone();
        let moved = leader_moved(metrics.clone(), leader);
        tokio::spawn(async move {
            send(&peers, from, leader, &addr, batch, timeout, moved).await;
            drop(permit);
        });
    }
}

async fn send(
    peers: &Peers,
    from: u64,
    leader: u64,
    addr: &str,
    batch: Vec<Item>,
    timeout: Duration,
    moved: impl std::future::Future<Output = ()>,
) {
    let (proposals, replies): (Vec<Proposal>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|i| (i.proposal, i.reply)).unzip();
    let n = proposals.len();
    let answers: Vec<Outcome> = match peers.client(leader, addr) {
        Err(e) => (0..n)
            .map(|_| Err(ServerError::Unavailable(e.clone())))
            .collect(),
        Ok(mut client) => {
            let mut req = tonic::Request::new(RaftRequest {
                target: leader,
                from,
                body: encode(&proposals),
            });
            req.set_timeout(timeout);
            let answer = tokio::select! {
                a = client.forward_batch(req) => Some(a),
                _ = moved => None,
            };
            match answer {
                None => (0..n)
                    .map(|_| {
                        Err(ServerError::Unavailable(format!(
                            "leader {leader} was replaced while the write was on its way to it; it may or may not have been applied"
                        )))
                    })
                    .collect(),
                Some(answer) => match answer {
                Ok(reply) => match decode::<Vec<Outcome>>(&reply.get_ref().body) {
                    Ok(rs) if rs.len() == n => rs,
                    Ok(rs) => (0..n)
                        .map(|_| {
                            Err(ServerError::Internal(format!(
                                "the leader answered {} of {n} forwarded writes",
                                rs.len()
                            )))
                        })
                        .collect(),
                    Err(e) => (0..n)
                        .map(|_| Err(ServerError::Internal(e.clone())))
                        .collect(),
                },
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        || s.code() == tonic::Code::FailedPrecondition =>
                {
                    (0..n)
                        .map(|_| Err(ServerError::NotLeader { leader: None }))
                        .collect()
                }
                Err(s) => (0..n)
                    .map(|_| {
                        Err(ServerError::Unavailable(format!(
                            "forwarding to leader {leader} failed, the write may or may not have been applied: {}",
                            s.message()
                        )))
                    })
                    .collect(),
                },
            }
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// Resolves once `metrics` shows a leader other than `leader`, or none.
async fn leader_moved(
    mut metrics: watch::Receiver<RaftServerMetrics<u64, BasicNode>>,
    leader: u64,
) {
    loop {
        if metrics.borrow_and_update().current_leader != Some(leader) {
            return;
        }
        if metrics.changed().await.is_err() {
            // Raft stopped: the node is shutting down; the call's own timeout ends it.
            std::future::pending::<()>().await;
        }
    }
}
