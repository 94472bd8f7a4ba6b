//! A follower's way to the leader: writes that arrive while an earlier forward is on its
//! way travel together in one batch, so a follower costs the leader one message per
//! batch, not one per write; the leader puts them through its batcher, where they join the
//! same entries as its own clients' writes. The batches travel on one long-lived
//! `Peer.ForwardStream` to the leader (its replies come back in order), which saves each
//! batch a call's headers, stream set-up and per-call middleware on both nodes; a leader
//! without the stream (an older version) gets one `ForwardBatch` call per batch.
//!
//! ```text
//!  propose (follower) ──▶ queue ──▶ forwarder ──ForwardStream──▶ leader: execute each ──▶ replies
//!                                   ≤ FORWARDS_IN_FLIGHT_MAX batches at once      (in order)
//! ```
//!
//! The batches on their way are abandoned as soon as this node sees another leader (or
//! none) than the one they went to, and all of them when one is not answered in time (the
//! stream is dropped: a late reply is never taken for the next batch's): a frozen or dead
//! leader does not hold the writes, or the in-flight slots, until the timeout. Their
//! outcome is then unknown; the proposer resends them to the new leader under the same
//! request ids (see `Node::propose`), which the state applies once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::metrics::RaftServerMetrics;
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::internal::{RaftReply, RaftRequest};
use crate::error::ServerError;
use crate::proposal::{Outcome, Proposal};
use crate::transport::{decode, encode, Peers};

/// Most proposals in one forwarded batch (the leader refuses more).
pub const FORWARD_BATCH_MAX: usize = 1024;
/// Most encoded proposal bytes in one forwarded batch.
pub const FORWARD_BATCH_BYTES_MAX: usize = crate::proposal::ENTRY_BYTES_MAX;
/// Forwarded batches on their way at once. Enough that a write never waits here for a
/// slot the leader's batcher could have used: the leader has one entry in Raft and
/// queues what comes meanwhile for the next, while replies, and the batches behind
/// them, are still on their way. Two (chosen when every batch was a call of its own)
/// held writes back for a whole entry's round: 16 clients spread over three nodes gained
/// 10-15 %, with less CPU per write (BENCHMARKS.md "Ninth round"). Bounds what one
/// follower has on its way to the leader: at most 16 × `FORWARD_BATCH_BYTES_MAX`.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 16;
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
    /// Starts forwarding for node `from`; a batch not answered within `timeout`, or still
    /// on its way when `metrics` shows another leader, fails every write in it and in the
    /// batches on the same stream (they may still be applied: the error says so). Raft's
    /// server metrics: they change with the role, vote, leader or membership only, not at
    /// every turn of Raft's core loop, which would wake every batch in flight.
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
    /// waits at most `wait` for the answer. A connection that could not be made (refused,
    /// timed out, its TLS handshake failed) or a node that is not the leader is `NotLeader`
    /// (nothing was proposed); a failure with an unknown outcome is `Unavailable`.
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
    // Leaders (by address) that answered the stream UNIMPLEMENTED: unary calls to them.
    // Forgotten when batches go to another leader (an upgraded node may lead next).
    let unary_only: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut last_leader: Option<u64> = None;
    let mut link: Option<Link> = None;
    let mut held: Option<Item> = None;
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
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
        if last_leader.replace(leader) != Some(leader) {
            unary_only.lock().unwrap().clear();
        }
        let (proposals, replies): (Vec<Proposal>, Vec<oneshot::Sender<Outcome>>) =
            batch.into_iter().map(|i| (i.proposal, i.reply)).unzip();
        let request = RaftRequest {
            target: leader,
            from,
            body: encode(&proposals),
        };
        if unary_only.lock().unwrap().contains(&addr) {
            link = None;
            let peers = peers.clone();
            let moved = leader_moved(metrics.clone(), leader);
            tokio::spawn(async move {
                let answers = match send(&peers, leader, &addr, request, timeout, moved).await {
                    Ok(reply) => decoded(&reply, replies.len()),
                    Err(failure) => Answers::Alike(failure.outcome(leader)),
                };
                answer(replies, answers);
                drop(slot);
            });
            continue;
        }
        let pending = Pending {
            replies,
            deadline: Instant::now() + timeout,
            slot,
        };
        // The link to this leader, or a new one when there is none or it ended (its
        // stream failed or the leader moved).
        let current = match link.take() {
            Some(l) if l.leader == leader && l.addr == addr && l.is_open() => l,
            _ => Link::open(
                &peers,
                leader,
                &addr,
                leader_moved(metrics.clone(), leader),
                unary_only.clone(),
            ),
        };
        if current.send(request, pending) {
            link = Some(current);
        }
    }
}

/// One `Peer.ForwardStream` to a leader: batches in, their replies back in the same
/// order, read by a task of its own that answers each batch's writes.
struct Link {
    leader: u64,
    addr: String,
    requests: mpsc::Sender<RaftRequest>,
    /// The batches sent and not yet answered, oldest first. Closed by the reader when the
    /// stream ended.
    pending: mpsc::UnboundedSender<Pending>,
    /// Ends the stream, failing what it holds: a batch registered on it could not be sent,
    /// so its replies would no longer match its batches.
    kill: CancellationToken,
}

/// A batch on its way: its writes' replies, when it must be answered by, and its slot
/// among the batches in flight.
struct Pending {
    replies: Vec<oneshot::Sender<Outcome>>,
    deadline: Instant,
    slot: OwnedSemaphorePermit,
}

impl Link {
    /// Starts the reader, which opens the stream with the first batch.
    fn open(
        peers: &Peers,
        leader: u64,
        addr: &str,
        moved: impl std::future::Future<Output = ()> + Send + 'static,
        unary_only: Arc<Mutex<HashSet<String>>>,
    ) -> Link {
        // At most FORWARDS_IN_FLIGHT_MAX batches are unanswered, so sends never wait.
        let (requests, requests_rx) = mpsc::channel(FORWARDS_IN_FLIGHT_MAX);
        let (pending, pending_rx) = mpsc::unbounded_channel();
        let client = peers.client(leader, addr);
        let addr = addr.to_string();
        let kill = CancellationToken::new();
        tokio::spawn({
            let addr = addr.clone();
            let killed = kill.clone().cancelled_owned();
            async move {
                let mut pending_rx = pending_rx;
                let failure = tokio::select! {
                    f = read_replies(client, leader, requests_rx, &mut pending_rx, moved) => f,
                    () = killed => Failure::Broken,
                };
                if let Failure::Unimplemented = failure {
                    unary_only.lock().unwrap().insert(addr);
                }
                // The stream is gone: everything sent on it fails alike, and the link
                // takes nothing more.
                pending_rx.close();
                while let Ok(p) = pending_rx.try_recv() {
                    answer_alike(p.replies, || failure.outcome(leader));
                }
            }
        });
        Link {
            leader,
            addr,
            requests,
            pending,
            kill,
        }
    }

    fn is_open(&self) -> bool {
        !self.pending.is_closed() && !self.kill.is_cancelled()
    }

    /// Sends `request`, the batch `pending` stands for. Registered first, so its reply
    /// cannot come before it; when the stream ended meanwhile the reader answers it.
    /// False: the link is done (its stream ended, or the batch could not be sent and the
    /// link was killed, failing what it held); the next batch takes a new one.
    fn send(&self, request: RaftRequest, pending: Pending) -> bool {
        if let Err(mpsc::error::SendError(p)) = self.pending.send(pending) {
            answer_alike(p.replies, || {
                Err(ServerError::Unavailable(format!(
                    "the stream to leader {} ended before the write left; it was not applied",
                    self.leader
                )))
            });
            return false;
        }
        if let Err(e) = self.requests.try_send(request) {
            // The stream ended (its reader answers what it holds), or more batches than
            // FORWARDS_IN_FLIGHT_MAX were sent, which the slots rule out: either way no
            // later reply may be taken for this batch's.
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(
                    leader = self.leader,
                    "a forwarded batch found its stream full"
                );
            }
            self.kill.cancel();
            return false;
        }
        true
    }
}

/// Why a link's stream ended; how the batches still on it are answered.
enum Failure {
    /// The link was dropped with nothing on its way (a new leader, or the node stopping).
    Idle,
    /// The leader does not know the stream (an older version): nothing was proposed.
    Unimplemented,
    /// This node sees another leader (or none).
    Moved,
    /// The oldest batch was not answered by its deadline.
    Late,
    /// No client for the leader's address.
    Client(String),
    /// Opening the stream failed with this status: nothing was proposed when the leader
    /// could not be reached or is another node.
    Refused(tonic::Status),
    /// The open stream failed with this status.
    Status(tonic::Status),
    /// The leader ended the stream (it is shutting down).
    Ended,
    /// A batch registered on the stream could not be sent on it.
    Broken,
}

impl Failure {
    fn outcome(&self, leader: u64) -> Outcome {
        let unknown = |why: &str| {
            ServerError::Unavailable(format!("{why}; the write may or may not have been applied"))
        };
        Err(match self {
            Failure::Idle | Failure::Ended | Failure::Broken => {
                unknown(&format!("the stream to leader {leader} ended"))
            }
            Failure::Unimplemented => ServerError::NotLeader { leader: None },
            Failure::Moved => unknown(&format!(
                "leader {leader} was replaced while the write was on its way to it"
            )),
            Failure::Late => unknown(&format!(
                "leader {leader} did not answer a write on this stream within the write timeout"
            )),
            Failure::Client(e) => ServerError::Unavailable(e.clone()),
            Failure::Refused(s) => status_outcome(leader, s),
            // Sent and maybe applied: a broken connection too (a keep-alive timeout is
            // UNAVAILABLE). Only a node that is not the leader's id refuses every batch
            // before proposing any (FAILED_PRECONDITION, `check_target`).
            Failure::Status(s) if s.code() == tonic::Code::FailedPrecondition => {
                ServerError::NotLeader { leader: None }
            }
            Failure::Status(s) => unknown(&format!(
                "forwarding to leader {leader} failed: {}",
                s.message()
            )),
        })
    }
}

/// Opens the stream (its first batch leaves with the headers) and answers each batch with
/// its reply, in order, until the stream fails or the link is dropped. While nothing is
/// on its way it still reads the stream, so one that ended (a connection reset, the
/// leader restarting) is noticed before a batch is sent into it.
async fn read_replies(
    client: Result<crate::transport::Client, String>,
    leader: u64,
    requests: mpsc::Receiver<RaftRequest>,
    pending: &mut mpsc::UnboundedReceiver<Pending>,
    moved: impl std::future::Future<Output = ()>,
) -> Failure {
    tokio::pin!(moved);
    let Some(mut oldest) = pending.recv().await else {
        return Failure::Idle;
    };
    let mut client = match client {
        Ok(c) => c,
        Err(e) => return fail(oldest, Failure::Client(e), leader),
    };
    let opened = tokio::select! {
        o = client.forward_stream(tokio_stream::wrappers::ReceiverStream::new(requests)) => o,
        () = &mut moved => return fail(oldest, Failure::Moved, leader),
        () = tokio::time::sleep_until(oldest.deadline) => return fail(oldest, Failure::Late, leader),
    };
    let mut replies = match opened {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            return fail(oldest, Failure::Unimplemented, leader)
        }
        Err(s) => return fail(oldest, Failure::Refused(s), leader),
    };
    loop {
        let got = tokio::select! {
            r = replies.message() => r,
            () = &mut moved => return fail(oldest, Failure::Moved, leader),
            () = tokio::time::sleep_until(oldest.deadline) => return fail(oldest, Failure::Late, leader),
        };
        let reply = match got {
            Ok(Some(reply)) => reply,
            Ok(None) => return fail(oldest, Failure::Ended, leader),
            Err(s) => return fail(oldest, Failure::Status(s), leader),
        };
        let Pending {
            replies: writes,
            slot,
            ..
        } = oldest;
        let n = writes.len();
        answer(writes, decoded(&reply, n));
        drop(slot);
        oldest = tokio::select! {
            // A reply comes only after its batch was registered: a batch waiting is taken
            // before anything the stream says.
            biased;
            p = pending.recv() => match p {
                Some(p) => p,
                None => return Failure::Idle,
            },
            () = &mut moved => return Failure::Moved,
            // Nothing is on its way, so nothing may come: whatever does ends the link.
            r = replies.message() => return match r {
                Err(s) => Failure::Status(s),
                Ok(_) => Failure::Ended,
            },
        };
    }
}

/// Answers `oldest` as `failure` says, and returns it for the rest.
fn fail(oldest: Pending, failure: Failure, leader: u64) -> Failure {
    answer_alike(oldest.replies, || failure.outcome(leader));
    failure
}

/// One `ForwardBatch` call with `request` (a leader without the stream).
async fn send(
    peers: &Peers,
    leader: u64,
    addr: &str,
    request: RaftRequest,
    timeout: Duration,
    moved: impl std::future::Future<Output = ()>,
) -> Result<RaftReply, Failure> {
    let mut client = peers.client(leader, addr).map_err(Failure::Client)?;
    let mut req = tonic::Request::new(request);
    req.set_timeout(timeout);
    tokio::select! {
        a = client.forward_batch(req) => a.map(tonic::Response::into_inner).map_err(Failure::Refused),
        _ = moved => Err(Failure::Moved),
    }
}

/// Answers a batch's writes.
fn answer(replies: Vec<oneshot::Sender<Outcome>>, answers: Answers) {
    match answers {
        Answers::Each(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Answers::Alike(outcome) => answer_alike(replies, || outcome.clone()),
    }
}

/// Every write of a batch answered alike, or each with its own.
enum Answers {
    Each(Vec<Outcome>),
    Alike(Outcome),
}

/// The answers a leader's reply to a batch of `n` carries.
fn decoded(reply: &RaftReply, n: usize) -> Answers {
    match decode::<Vec<Outcome>>(&reply.body) {
        Ok(rs) if rs.len() == n => Answers::Each(rs),
        Ok(rs) => Answers::Alike(Err(ServerError::Internal(format!(
            "the leader answered {} of {n} forwarded writes",
            rs.len()
        )))),
        Err(e) => Answers::Alike(Err(ServerError::Internal(e))),
    }
}

fn answer_alike(replies: Vec<oneshot::Sender<Outcome>>, outcome: impl Fn() -> Outcome) {
    for r in replies {
        let _ = r.send(outcome());
    }
}

/// A failed call's outcome (a unary call, or the stream's opening): a connection that
/// could not be made, or a node that is not the leader, proposed nothing; anything else —
/// an UNAVAILABLE from a connection that broke after the request left, above all — may
/// have. (A write resent under its request id is applied once either way; a write without
/// one, a member's removal, is not resent after an unknown outcome.)
fn status_outcome(leader: u64, s: &tonic::Status) -> ServerError {
    match s.code() {
        tonic::Code::FailedPrecondition => ServerError::NotLeader { leader: None },
        tonic::Code::Unavailable if never_connected(s) => ServerError::NotLeader { leader: None },
        _ => ServerError::Unavailable(format!(
            "forwarding to leader {leader} failed, the write may or may not have been applied: {}",
            s.message()
        )),
    }
}

/// Whether a failed call never reached its peer: the connection could not be made
/// (tonic's `ConnectError` in the status's source chain).
fn never_connected(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
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
            // Raft stopped: the node is shutting down; the batch's own deadline ends it.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use openraft::{ServerState, StoredMembership, Vote};

    use super::*;
    use crate::security::Security;
    use crate::transport::tests::{serve, FakePeer};

    fn leader_is(leader: u64) -> RaftServerMetrics<u64, BasicNode> {
        RaftServerMetrics {
            id: 1,
            vote: Vote::new_committed(1, leader),
            state: ServerState::Follower,
            current_leader: Some(leader),
            membership_config: Arc::new(StoredMembership::default()),
        }
    }

    /// A forwarder of node 1 towards `peer`, serving as leader 2; its address, and the
    /// metrics the forwarder watches.
    async fn forwarder(
        peer: FakePeer,
        timeout: Duration,
    ) -> (
        Arc<Forwarder>,
        String,
        watch::Sender<RaftServerMetrics<u64, BasicNode>>,
    ) {
        let addr = serve(peer).await;
        let (metrics, rx) = watch::channel(leader_is(2));
        let peers = Peers::new(1, Security::default(), None);
        (
            Arc::new(Forwarder::start(peers, 1, rx, timeout)),
            addr,
            metrics,
        )
    }

    /// Forwards the write the fake peer answers with index `k`.
    async fn write(f: &Forwarder, addr: &str, k: u64) -> Outcome {
        let wait = Duration::from_secs(5);
        f.forward(2, addr.to_string(), Proposal::RemoveNode(k), 16, wait)
            .await
    }

    fn index(o: Outcome) -> u64 {
        o.unwrap_or_else(|e| panic!("{e}")).0
    }

    #[test]
    fn only_a_connection_never_made_or_a_wrong_node_reads_as_nothing_proposed() {
        let refused = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(matches!(
            status_outcome(2, &refused),
            ServerError::NotLeader { .. }
        ));
        let wrong = tonic::Status::failed_precondition("not node 2");
        assert!(matches!(
            status_outcome(2, &wrong),
            ServerError::NotLeader { .. }
        ));
        // A call cut after it left (a reset connection, a keep-alive timeout): unknown.
        let broken = tonic::Status::unavailable("connection reset");
        assert!(matches!(
            status_outcome(2, &broken),
            ServerError::Unavailable(m) if m.contains("may or may not")
        ));
    }

    #[tokio::test]
    async fn a_leader_that_cannot_be_reached_proposed_nothing() {
        // A port bound and not listening: connections to it are refused, and no other
        // test can be given it meanwhile.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let (_metrics, rx) = watch::channel(leader_is(2));
        let peers = Peers::new(1, Security::default(), None);
        let f = Forwarder::start(peers, 1, rx, Duration::from_secs(5));
        let o = f
            .forward(2, addr, Proposal::RemoveNode(7), 16, Duration::from_secs(5))
            .await;
        assert!(matches!(o, Err(ServerError::NotLeader { .. })), "{o:?}");
        drop(held);
    }

    #[tokio::test]
    async fn batches_share_one_stream_and_each_write_gets_its_own_answer() {
        let peer = FakePeer {
            streams: true,
            ..FakePeer::default()
        };
        let (f, addr, _metrics) = forwarder(peer.clone(), Duration::from_secs(5)).await;
        let writes: Vec<_> = (10..70)
            .map(|k| {
                let (f, addr) = (f.clone(), addr.clone());
                tokio::spawn(async move { (k, write(&f, &addr, k).await) })
            })
            .collect();
        for w in writes {
            let (k, o) = w.await.unwrap();
            assert_eq!(index(o), k);
        }
        for k in 70..75 {
            assert_eq!(index(write(&f, &addr, k).await), k);
        }
        assert_eq!(peer.forward_opened.load(SeqCst), 1, "one stream");
        assert_eq!(peer.forward_unary.load(SeqCst), 0);
    }

    /// A batch not answered in time fails, and its reply, coming later, must not be taken
    /// for the next batch's.
    #[tokio::test]
    async fn a_batch_not_answered_in_time_leaves_no_reply_for_the_next() {
        let peer = FakePeer {
            streams: true,
            slow_ms: 3000,
            ..FakePeer::default()
        };
        let (f, addr, _metrics) = forwarder(peer.clone(), Duration::from_secs(1)).await;
        assert_eq!(index(write(&f, &addr, 2).await), 2);
        let late = write(&f, &addr, 1).await;
        assert!(
            matches!(&late, Err(ServerError::Unavailable(m)) if m.contains("within the write timeout")),
            "{late:?}"
        );
        for k in 3..6 {
            assert_eq!(index(write(&f, &addr, k).await), k);
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(index(write(&f, &addr, 6).await), 6);
        assert_eq!(
            peer.forward_opened.load(SeqCst),
            2,
            "a new stream after the late batch"
        );
    }

    #[tokio::test]
    async fn a_leader_without_the_stream_gets_unary_calls() {
        let peer = FakePeer::default();
        let (f, addr, _metrics) = forwarder(peer.clone(), Duration::from_secs(5)).await;
        // The first write learns the leader lacks the stream: nothing was proposed.
        let first = write(&f, &addr, 2).await;
        assert!(
            matches!(first, Err(ServerError::NotLeader { .. })),
            "{first:?}"
        );
        for k in 3..6 {
            assert_eq!(index(write(&f, &addr, k).await), k);
        }
        // A unary call that broke after it left: unknown, never "not proposed" (which
        // would have a write without a request id proposed twice).
        let broken = write(&f, &addr, FakePeer::BREAKS).await;
        assert!(
            matches!(&broken, Err(ServerError::Unavailable(m)) if m.contains("may or may not")),
            "{broken:?}"
        );
        assert_eq!(peer.forward_unary.load(SeqCst), 4);
        assert_eq!(
            peer.forward_opened.load(SeqCst),
            1,
            "asked once for the stream"
        );
    }

    /// A stream that fails once its batches left: their outcome is unknown (they may have
    /// been applied), never "not proposed", which would have a write proposed twice.
    #[tokio::test]
    async fn a_stream_failing_mid_way_leaves_its_writes_unknown_and_the_next_on_a_new_one() {
        let peer = FakePeer {
            streams: true,
            ..FakePeer::default()
        };
        let (f, addr, _metrics) = forwarder(peer.clone(), Duration::from_secs(5)).await;
        assert_eq!(index(write(&f, &addr, 2).await), 2);
        let broken = write(&f, &addr, FakePeer::BREAKS).await;
        assert!(
            matches!(&broken, Err(ServerError::Unavailable(m)) if m.contains("may or may not")),
            "{broken:?}"
        );
        assert_eq!(index(write(&f, &addr, 3).await), 3);
        assert_eq!(peer.forward_opened.load(SeqCst), 2, "a new stream");
    }

    #[tokio::test]
    async fn writes_on_their_way_fail_as_soon_as_another_leader_is_seen() {
        let peer = FakePeer {
            streams: true,
            slow_ms: 60_000,
            ..FakePeer::default()
        };
        let (f, addr, metrics) = forwarder(peer, Duration::from_secs(30)).await;
        let w = tokio::spawn({
            let (f, addr) = (f.clone(), addr.clone());
            async move { write(&f, &addr, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!w.is_finished(), "the leader holds it");
        metrics.send(leader_is(3)).unwrap();
        let o = tokio::time::timeout(Duration::from_secs(2), w)
            .await
            .expect("answered once another leader is seen")
            .unwrap();
        assert!(
            matches!(&o, Err(ServerError::Unavailable(m)) if m.contains("replaced")),
            "{o:?}"
        );
    }
}
