//! Raft over gRPC, server side: the internal `Peer` service.

use std::sync::Arc;

use cathedral_consensus::raft::TypeConfig;
use cathedral_storage::{Chunk, ChunkReceiver, ReceiverLimits};
use openraft::error::Fatal;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{Snapshot, SnapshotMeta, Vote};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::api::internal::peer_server::Peer;
use crate::api::internal::{
    FetchOutputRequest, GossipSeedsReply, GossipSeedsRequest, JoinReply, JoinRequest, OutputBytes,
    RaftReply, RaftRequest, ReadIndexReply, ReadIndexRequest, SetTagsReply, SetTagsRequest,
    SnapshotChunk,
};
use crate::error::ServerError;
use crate::node::{Node, Outcome, Proposal};
use crate::transport::{decode, encode};

pub struct PeerService {
    pub node: Arc<Node>,
}

impl PeerService {
    /// Refuses a request meant for another node (a stale address).
    fn check_target(&self, target: u64) -> Result<(), Status> {
        check_target(&self.node, target)
    }
}

/// Refuses a request meant for another node than `node` (a stale address).
fn check_target(node: &Node, target: u64) -> Result<(), Status> {
    if target != node.id {
        return Err(Status::failed_precondition(format!(
            "this is node {}, not {target}",
            node.id
        )));
    }
    Ok(())
}

/// One AppendEntries, from a unary call or a stream: refused when meant for another node.
async fn append_entries(node: &Node, req: RaftRequest) -> Result<RaftReply, Status> {
    check_target(node, req.target)?;
    let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.body).map_err(bad)?;
    let result = node.raft.append_entries(rpc).await;
    if result.as_ref().is_ok_and(|r| r.is_success()) {
        node.heard_leader();
    }
    Ok(RaftReply {
        body: encode(&result),
    })
}

/// Proposals a follower forwarded together, from a unary call or a stream: each goes
/// through this node's write path at once (so the batcher can put them in one entry),
/// answered in order. One task for the batch, which shutdown lets finish.
async fn forwarded(node: &Arc<Node>, req: RaftRequest) -> Result<RaftReply, Status> {
    check_target(node, req.target)?;
    let proposals: Vec<Proposal> = decode(&req.body).map_err(bad)?;
    if proposals.len() > crate::forwarder::FORWARD_BATCH_MAX {
        return Err(bad(format!(
            "{} proposals in one batch, more than FORWARD_BATCH_MAX {}",
            proposals.len(),
            crate::forwarder::FORWARD_BATCH_MAX
        )));
    }
    let leading = node.raft.current_leader().await;
    let n = proposals.len();
    let replies: Vec<Outcome> = if leading == Some(node.id) {
        let executing = node.clone();
        let task = node.spawn_owned(async move {
            futures_util::future::join_all(proposals.iter().map(|p| {
                let bytes = p.encoded_len();
                executing.execute(p, bytes)
            }))
            .await
        });
        task.await.unwrap_or_else(|e| {
            vec![
                Err(ServerError::Unavailable(format!(
                    "the task running the forwarded writes failed; some may have been applied: {e}"
                )));
                n
            ]
        })
    } else {
        vec![Err(ServerError::NotLeader { leader: leading }); n]
    };
    Ok(RaftReply {
        body: encode(&replies),
    })
}

fn bad(e: String) -> Status {
    Status::invalid_argument(e)
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        append_entries(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RaftReply, Status>> + Send>>;

    /// Answers the stream's requests one at a time, in order, as `append_entries` would.
    /// Ends when the node begins to shut down (the leader sees the stream end and opens
    /// another, which a node shutting down ends at once), or at the first request refused
    /// (tonic ends the response with its status: the leader sees the call fail, as a unary
    /// call would).
    async fn append_entries_stream(
        &self,
        req: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        use futures_util::StreamExt as S;
        let node = self.node.clone();
        let requests = S::take_until(req.into_inner(), self.node.stopping());
        let replies = S::then(requests, move |req| {
            let node = node.clone();
            async move { append_entries(&node, req?).await }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        self.check_target(req.target)?;
        let rpc: VoteRequest<u64> = decode(&req.body).map_err(bad)?;
        // A node that owes acknowledged entries (lost to disk damage) counts as holding them
        // when it votes: a candidate whose log ends before them may lack entries a majority
        // counted on this node for. Refused as Raft refuses a shorter log — with our vote,
        // and the log id the candidate must reach, so it backs off.
        if let Some(owed) = self.node.owed_log_id() {
            if rpc.last_log_id < Some(owed) {
                let vote = self.node.raft.metrics().borrow().vote;
                tracing::info!(candidate = %rpc.vote, last = ?rpc.last_log_id, %owed, "vote refused: this node owes entries the candidate's log does not reach");
                let refused: Result<VoteResponse<u64>, RaftError<u64>> = Ok(VoteResponse {
                    vote,
                    vote_granted: false,
                    last_log_id: Some(owed),
                });
                return Ok(Response::new(RaftReply {
                    body: encode(&refused),
                }));
            }
        }
        let result = self.node.raft.vote(rpc).await;
        Ok(Response::new(RaftReply {
            body: encode(&result),
        }))
    }

    /// Receives a snapshot into the file Raft's state machine hands out, checking every
    /// chunk's offset and CRC and then the whole file's checksum, and only then asks Raft to
    /// install it. A broken transfer installs nothing.
    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check_target(first.target)?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first chunk carries no header"))?;
        let vote: Vote<u64> = decode(&header.vote).map_err(bad)?;
        let meta: SnapshotMeta<u64, openraft::BasicNode> = decode(&header.meta).map_err(bad)?;
        let file = self
            .node
            .raft
            .begin_receiving_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let file = file.into_std().await;
        // The state machine created the file; its path is only used to remove it on error.
        let path = file_path(&file);
        let mut rx = ChunkReceiver::into_file(file, path.clone(), ReceiverLimits::default());
        let mut next = Some(first);
        while let Some(c) = next.take() {
            let chunk = Chunk {
                offset: c.offset,
                total_bytes: c.total_bytes,
                data: c.data,
                crc: c.crc,
            };
            in_place(|| rx.accept(&chunk)).map_err(|e| Status::invalid_argument(e.to_string()))?;
            next = match stream.next().await {
                Some(Ok(c)) => Some(c),
                Some(Err(s)) => return Err(s),
                None => None,
            };
        }
        let info = in_place(|| rx.finish_in_place())
            .map_err(|e| Status::invalid_argument(format!("snapshot rejected: {e}")))?;
        // Opened in place: `tokio::fs` would hop to the blocking pool (see `in_place`).
        let file = in_place(|| std::fs::File::open(&info.path))
            .map(tokio::fs::File::from_std)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = info.file_bytes,
            "snapshot received; installing"
        );
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> = self
            .node
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: Box::new(file),
                },
            )
            .await;
        Ok(Response::new(RaftReply {
            body: encode(&result),
        }))
    }

    async fn forward_batch(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        forwarded(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    type ForwardStreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RaftReply, Status>> + Send>>;

    /// Answers the stream's batches as `forward_batch` would, up to
    /// `FORWARDS_IN_FLIGHT_MAX` at once, each reply in its batch's order. Takes no batch
    /// once the node begins to shut down (the ones taken are answered; the follower sends
    /// the rest again), and ends at the first refused (tonic ends the response with its
    /// status).
    async fn forward_stream(
        &self,
        req: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        use futures_util::StreamExt as S;
        let node = self.node.clone();
        let requests = S::take_until(req.into_inner(), self.node.stopping());
        let replies = S::map(requests, move |req| {
            let node = node.clone();
            async move { forwarded(&node, req?).await }
        });
        Ok(Response::new(Box::pin(S::buffered(
            replies,
            crate::forwarder::FORWARDS_IN_FLIGHT_MAX,
        ))))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.node
            .join(req.into_inner())
            .await
            .map(Response::new)
            .map_err(|e| e.to_peer_status())
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        self.check_target(req.into_inner().target)?;
        let index = self
            .node
            .leader_read_index()
            .await
            .map_err(|e| e.to_peer_status())?;
        Ok(Response::new(ReadIndexReply { index }))
    }

    async fn gossip_seeds(
        &self,
        _req: Request<GossipSeedsRequest>,
    ) -> Result<Response<GossipSeedsReply>, Status> {
        Ok(Response::new(GossipSeedsReply {
            seeds: self.node.gossip_seeds(),
        }))
    }

    async fn set_tags(
        &self,
        req: Request<SetTagsRequest>,
    ) -> Result<Response<SetTagsReply>, Status> {
        let req = req.into_inner();
        self.check_target(req.target)?;
        let set = req.set.into_iter().collect();
        let tags = self
            .node
            .set_tags(&set, &req.unset)
            .await
            .map_err(|e| e.to_peer_status())?;
        Ok(Response::new(SetTagsReply {
            tags: tags.into_iter().collect(),
        }))
    }

    type FetchOutputStream = tokio_stream::wrappers::ReceiverStream<Result<OutputBytes, Status>>;

    async fn fetch_output(
        &self,
        req: Request<FetchOutputRequest>,
    ) -> Result<Response<Self::FetchOutputStream>, Status> {
        let req = req.into_inner();
        self.check_target(req.target)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.node.spawn_until_stop(crate::output::stream_local(
            self.node.clone(),
            req.job_id,
            req.attempt,
            req.offset,
            req.follow,
            tx,
        ));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// The path of an open file, read back from /proc (Linux).
fn file_path(file: &std::fs::File) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| std::path::PathBuf::from("(received snapshot)"))
}

/// Blocking file work on this task's thread: `block_in_place` (the other tasks move to
/// other workers meanwhile), or, on a simulation's single thread, where there are no
/// other workers, simply in place (`cathedral_consensus::blocking`).
fn in_place<T>(f: impl FnOnce() -> T) -> T {
    if cathedral_consensus::blocking::inline_here() {
        f()
    } else {
        tokio::task::block_in_place(f)
    }
}
