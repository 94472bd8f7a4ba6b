//! A follower's way to the leader: writes that arrive while an earlier forward is on its
//! way travel together in one `ForwardBatch` call, so a follower costs the leader one
//! request per batch, not one per write; the leader puts them through its batcher, where
//! they join the same entries as its own clients' writes.
//!
//! ```text
//!  propose (follower) ──▶ queue ──▶ forwarder ──ForwardBatch──▶ leader: execute each ──▶ replies
//!                                   ≤ FORWARDS_IN_FLIGHT_MAX calls at once
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::api::internal::RaftRequest;
use crate::error::{Result, ServerError};
use crate::node::{Proposal, ProposalReply};
use crate::transport::{decode, encode, Peers};

/// Most proposals in one forwarded batch (the leader refuses more).
pub const FORWARD_BATCH_MAX: usize = 1024;
/// Most encoded proposal bytes in one forwarded batch.
pub const FORWARD_BATCH_BYTES_MAX: usize = crate::node::ENTRY_BYTES_MAX;
/// Forwarded batches on their way at once.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 2;
/// Writes waiting to be forwarded; callers wait for room beyond it.
pub const FORWARD_QUEUE_MAX: usize = 16 * 1024;

struct Item {
    leader: u64,
    addr: String,
    proposal: Proposal,
    bytes: usize,
    reply: oneshot::Sender<Result<ProposalReply>>,
}

/// Handle on the forwarder task.
pub struct Forwarder {
    tx: mpsc::Sender<Item>,
}

impl Forwarder {
    /// Starts forwarding for node `from`; a call not answered within `timeout` fails every
    /// write in it (they may still be applied: the error says so).
    pub fn start(peers: Arc<Peers>, from: u64, timeout: Duration) -> Forwarder {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_MAX);
        tokio::spawn(run(peers, from, rx, timeout));
        Forwarder { tx }
    }

    /// Sends `proposal` (`bytes` encoded) to `leader` at `addr` with the next batch. A
    /// connection refused or a node that is not the leader is `NotLeader` (nothing was
    /// proposed, so retrying is safe); any other failure leaves the outcome unknown.
    pub async fn forward(
        &self,
        leader: u64,
        addr: String,
        proposal: Proposal,
        bytes: usize,
    ) -> Result<ProposalReply> {
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
        rx.await
            .unwrap_or_else(|_| Err(ServerError::Unavailable("the node is shutting down".into())))
    }
}

async fn run(peers: Arc<Peers>, from: u64, mut rx: mpsc::Receiver<Item>, timeout: Duration) {
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
        tokio::spawn(async move {
            send(&peers, from, leader, &addr, batch, timeout).await;
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
) {
    let (proposals, replies): (Vec<Proposal>, Vec<oneshot::Sender<Result<ProposalReply>>>) =
        batch.into_iter().map(|i| (i.proposal, i.reply)).unzip();
    let n = proposals.len();
    let answers: Vec<Result<ProposalReply>> = match peers.client(leader, addr) {
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
            match client.forward_batch(req).await {
                Ok(reply) => match decode::<Vec<ProposalReply>>(&reply.get_ref().body) {
                    Ok(rs) if rs.len() == n => rs.into_iter().map(Ok).collect(),
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
                        .map(|_| Ok(ProposalReply::NotLeader { leader: None }))
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
            }
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}
