//! Raft over gRPC, client side: openraft's network factory, one cached channel per peer.
//!
//! ```text
//!  openraft ──▶ PeerConn::append_entries ──▶ Peer.AppendEntriesStream (one per replication
//!           │                                  stream; a read-index check's are short-lived)
//!           └─▶ PeerConn::vote ──▶ Peer.Vote
//!           └─▶ PeerConn::full_snapshot ── ChunkSender ──▶ Peer.InstallSnapshot (stream)
//! ```
//!
//! openraft's messages travel postcard-encoded inside `bytes` fields (compact, and the same
//! serde encoding the log uses). Every request names its target node; the receiver refuses
//! one meant for another id, which reaches openraft as "unreachable", as does any failure
//! to connect.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use cathedral_consensus::raft::TypeConfig;
use cathedral_storage::ChunkSender;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::api::internal::peer_client::PeerClient;
use crate::api::internal::{RaftRequest, SnapshotChunk, SnapshotHeader};
use crate::security::Security;
use tonic::service::interceptor::InterceptedService;

/// Largest message between nodes: up to `max_entries_per_append` entries of up to
/// `ENTRY_BYTES_MAX` each, with room to spare.
pub const PEER_MESSAGE_BYTES_MAX: usize = 512 << 20;
/// Snapshot bytes per InstallSnapshot stream message.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// A peer connection is sent an HTTP/2 PING this often, even idle...
pub const PEER_KEEPALIVE_INTERVAL_MS: u64 = 2_000;
/// ...and is closed (the next call opens another) when the PING is not answered within
/// this: a connection whose other end is gone without a word — a host that lost power, a
/// middlebox that dropped its state, a partition that outlived it — is replaced within
/// about 7 s (etcd's peer streams time out after 5 s, `ConnReadTimeout`), instead of
/// every call on it timing out until TCP gives up; a peer too busy to answer a PING for
/// 5 s is rare enough that its calls are retried on a new connection. (ClusterSim found
/// a cluster stalled 30 s after a partition healed: its network drops what a partition
/// cuts, and the old 10 s + 20 s keep-alive was all that noticed.)
pub const PEER_KEEPALIVE_TIMEOUT_MS: u64 = 5_000;

/// Encodes an openraft message for a `bytes` field.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("openraft messages encode")
}

/// Decodes an openraft message from a `bytes` field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable message: {e}"))
}

/// A client of a peer's internal service: every call carries this node's credential.
pub type Client = PeerClient<InterceptedService<Channel, Credential>>;

/// Adds the node credential (see `security`) to every peer call.
#[derive(Clone)]
pub struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(c) = &self.0 {
            req.metadata_mut()
                .insert(crate::security::NODE_CREDENTIAL_HEADER, c.clone());
        }
        Ok(req)
    }
}

/// Cached channels to peers, and when each last answered.
pub struct Peers {
    pub self_id: u64,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    contact: Mutex<HashMap<u64, Instant>>,
    /// TLS towards peers, and this node's credential.
    security: Security,
    /// The network the node was given (`edges::Network`); `None`: the host's TCP.
    network: Option<Arc<dyn crate::edges::Network>>,
}

impl Peers {
    pub fn new(
        self_id: u64,
        security: Security,
        network: Option<Arc<dyn crate::edges::Network>>,
    ) -> Arc<Peers> {
        Arc::new(Peers {
            self_id,
            channels: Mutex::new(HashMap::new()),
            contact: Mutex::new(HashMap::new()),
            security,
            network,
        })
    }

    /// A lazily connecting channel to `addr` (`host:port`), over TLS when this node has
    /// a certificate.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let scheme = if self.security.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut e = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(PEER_KEEPALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(PEER_KEEPALIVE_TIMEOUT_MS))
            .keep_alive_while_idle(true);
        if let Some(network) = &self.network {
            // A given network carries no TLS: its connections are made by it.
            let network = network.clone();
            let target = addr.to_string();
            return Ok(e.connect_with_connector_lazy(tower::service_fn(
                move |_: tonic::transport::Uri| {
                    let connecting = network.connect(target.clone());
                    async move { connecting.await.map(hyper_util::rt::TokioIo::new) }
                },
            )));
        }
        if let Some(tls) = &self.security.client_tls {
            e = e
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS towards {addr}: {e}"))?;
        }
        Ok(e.connect_lazy())
    }

    /// A client of `addr` that is not (yet) a member: a join, a seed request.
    pub fn connect(&self, addr: &str) -> Result<Client, String> {
        Ok(self.peer_client(self.channel(addr)?))
    }

    fn peer_client(&self, ch: Channel) -> Client {
        PeerClient::with_interceptor(ch, Credential(self.security.node_credential.clone()))
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }

    /// The client for node `id` at `addr`; the channel is kept until the address changes.
    pub fn client(&self, id: u64, addr: &str) -> Result<Client, String> {
        let mut channels = self.channels.lock().unwrap();
        if let Some((a, ch)) = channels.get(&id) {
            if a == addr {
                return Ok(self.peer_client(ch.clone()));
            }
        }
        let ch = self.channel(addr)?;
        channels.insert(id, (addr.to_string(), ch.clone()));
        Ok(self.peer_client(ch))
    }

    fn contacted(&self, id: u64) {
        self.contact.lock().unwrap().insert(id, Instant::now());
    }

    /// Time since node `id` last answered an RPC of this node.
    pub fn since_contact(&self, id: u64) -> Option<Duration> {
        self.contact.lock().unwrap().get(&id).map(|t| t.elapsed())
    }
}

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConn {
        PeerConn {
            peers: self.peers.clone(),
            target,
            addr: node.addr.clone(),
            appends: None,
            unary_only: false,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerConn {
    peers: Arc<Peers>,
    target: u64,
    addr: String,
    /// The open `Peer.AppendEntriesStream`, between calls. A call takes it out and puts it
    /// back only after its reply: a call openraft drops mid-way (its timeout) drops the
    /// stream with it, so no reply is ever read for the wrong request.
    appends: Option<AppendStream>,
    /// The peer does not know the stream (an older version): unary calls.
    unary_only: bool,
}

/// One `Peer.AppendEntriesStream`: requests in, replies out in the same order.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<RaftRequest>,
    replies: tonic::Streaming<crate::api::internal::RaftReply>,
}

/// How a failed call reaches openraft: connection trouble and a wrong node are
/// "unreachable" (openraft backs off), anything else a network error.
enum CallError {
    Unreachable(String),
    Network(String),
}

impl CallError {
    fn from_status(s: tonic::Status) -> CallError {
        use tonic::Code;
        match s.code() {
            Code::Unavailable | Code::FailedPrecondition | Code::DeadlineExceeded => {
                CallError::Unreachable(s.to_string())
            }
            _ => CallError::Network(s.to_string()),
        }
    }

    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, E> {
        match self {
            CallError::Unreachable(m) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m)))
            }
            CallError::Network(m) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
            }
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig, Fatal<u64>> {
        match self {
            CallError::Unreachable(m) => {
                StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(m)))
            }
            CallError::Network(m) => {
                StreamingError::Network(NetworkError::new(&std::io::Error::other(m)))
            }
        }
    }
}

impl PeerConn {
    fn client(&self) -> Result<Client, CallError> {
        self.peers
            .client(self.target, &self.addr)
            .map_err(CallError::Unreachable)
    }

    fn request<T: Serialize>(&self, body: &T, ttl: Duration) -> tonic::Request<RaftRequest> {
        let mut req = tonic::Request::new(RaftRequest {
            target: self.target,
            from: self.peers.self_id,
            body: encode(body),
        });
        req.set_timeout(ttl);
        req
    }

    /// Sends one unary Raft RPC and decodes the remote `Result`.
    async fn unary<Req, Resp, E, F, Fut>(
        &self,
        rpc: Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(Client, tonic::Request<RaftRequest>) -> Fut,
        Fut: Future<
            Output = Result<tonic::Response<crate::api::internal::RaftReply>, tonic::Status>,
        >,
    {
        let client = self.client().map_err(CallError::into_rpc)?;
        let reply = call(client, self.request(&rpc, option.hard_ttl()))
            .await
            .map_err(|s| CallError::from_status(s).into_rpc())?;
        self.peers.contacted(self.target);
        let result: Result<Resp, E> =
            decode(&reply.get_ref().body).map_err(|m| CallError::Network(m).into_rpc::<E>())?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl PeerConn {
    /// One AppendEntries on the open stream, or on a new one. `Err(None)`: the peer does
    /// not know the stream (from now on this connection sends unary calls).
    async fn streamed_append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Option<RPCError<u64, BasicNode, RaftError<u64>>>> {
        let request = RaftRequest {
            target: self.target,
            from: self.peers.self_id,
            body: encode(rpc),
        };
        let ttl = option.hard_ttl();
        let call = async {
            // The open stream takes the request; when it ended, the request comes back.
            let (open, request) = match self.appends.take() {
                Some(s) => match s.requests.send(request).await {
                    Ok(()) => (Some(s), None),
                    Err(tokio::sync::mpsc::error::SendError(r)) => (None, Some(r)),
                },
                None => (None, Some(request)),
            };
            let mut stream = match (open, request) {
                (Some(s), _) => s,
                // None open, or the open one ended: a new one, the request queued first so
                // that it leaves with the stream's headers.
                (None, request) => {
                    let request = request.expect("a request not sent");
                    let (requests, rx) = tokio::sync::mpsc::channel(1);
                    requests.try_send(request).expect("an empty channel");
                    let mut client = self.client().map_err(CallError::into_rpc)?;
                    let opened = client
                        .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await;
                    match opened {
                        Ok(r) => AppendStream {
                            requests,
                            replies: r.into_inner(),
                        },
                        Err(s) if s.code() == tonic::Code::Unimplemented => {
                            self.unary_only = true;
                            return Ok(None);
                        }
                        Err(s) => return Err(CallError::from_status(s).into_rpc()),
                    }
                }
            };
            let reply = match stream.replies.message().await {
                Ok(Some(reply)) => reply,
                Ok(None) => {
                    return Err(
                        CallError::Unreachable("the peer ended the stream".into()).into_rpc()
                    )
                }
                Err(s) => return Err(CallError::from_status(s).into_rpc()),
            };
            self.appends = Some(stream);
            Ok(Some(reply))
        };
        // A stream carries no deadline per message: a reply not back in time ends the call,
        // and the stream with it. A network error, as a unary call's expired deadline is
        // (tonic reports it cancelled): "unreachable" would make openraft pause its
        // replication to the peer for `UNREACHABLE_RETRY_MS` — heartbeats included — after
        // one slow append.
        let reply = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(Some(reply))) => reply,
            Ok(Ok(None)) => return Err(None),
            Ok(Err(e)) => return Err(Some(e)),
            Err(_) => {
                return Err(Some(
                    CallError::Network(format!("no reply within {ttl:?}")).into_rpc(),
                ))
            }
        };
        self.peers.contacted(self.target);
        let result: Result<AppendEntriesResponse<u64>, RaftError<u64>> =
            decode(&reply.body).map_err(|m| Some(CallError::Network(m).into_rpc()))?;
        result.map_err(|e| Some(RPCError::RemoteError(RemoteError::new(self.target, e))))
    }
}

/// Pause between the leader's tries to reach a peer that did not answer. openraft's
/// default (500 ms) outlasts a follower's election timeout: a node restarting after a crash
/// heard no heartbeat for so long that it campaigned, disrupting the cluster (and, seeing
/// longer logs, delaying its own next election). A refused connection costs next to nothing.
pub const UNREACHABLE_RETRY_MS: u64 = 50;

impl RaftNetwork<TypeConfig> for PeerConn {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(
            UNREACHABLE_RETRY_MS,
        )))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let entries = rpc.entries.len();
        let r = match self.unary_only {
            false => self.streamed_append(&rpc, &option).await,
            true => Err(None),
        };
        let r = match r {
            Ok(r) => Ok(r),
            Err(Some(e)) => Err(e),
            // The peer does not know the stream.
            Err(None) => {
                self.unary(
                    rpc,
                    &option,
                    |mut c, r| async move { c.append_entries(r).await },
                )
                .await
            }
        };
        crate::metrics::append_entries_sent(entries, r.is_ok());
        r
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.unary(rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    /// Never called: [`full_snapshot`](Self::full_snapshot) below replaces openraft's
    /// chunk-per-RPC transfer with one stream. openraft 0.9 still requires the method.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(CallError::Network(
            "snapshots are sent with Peer.InstallSnapshot streams (full_snapshot)".into(),
        )
        .into_rpc())
    }

    /// Streams the snapshot file in CRC-checked chunks (the storage crate's transfer); the
    /// receiver verifies the whole file before Raft installs it.
    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let mut client = self.client().map_err(CallError::into_streaming)?;
        let name = PathBuf::from(format!("snapshot {}", snapshot.meta.snapshot_id));
        let file = snapshot.snapshot.into_std().await;
        let bytes = file.metadata().map_or(0, |m| m.len());
        let mut sender = ChunkSender::from_file(file, &name, SNAPSHOT_CHUNK_BYTES)
            .map_err(|e| CallError::Network(e.to_string()).into_streaming())?;
        let header = SnapshotHeader {
            vote: encode(&vote),
            meta: encode(&snapshot.meta),
        };
        let (target, from) = (self.target, self.peers.self_id);
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        // Reading the file is blocking I/O: a blocking task feeds the stream (on a
        // simulation's thread, a task of the node's own: see `cathedral_consensus::blocking`).
        let mut header = Some(header);
        let mut next = move || -> Result<Option<SnapshotChunk>, String> {
            Ok(sender
                .next_chunk()
                .map_err(|e| e.to_string())?
                .map(|c| SnapshotChunk {
                    target,
                    from,
                    header: header.take(),
                    offset: c.offset,
                    total_bytes: c.total_bytes,
                    data: c.data,
                    crc: c.crc,
                }))
        };
        let producer = if cathedral_consensus::blocking::inline_here() {
            tokio::spawn(async move {
                while let Some(msg) = next()? {
                    if tx.send(msg).await.is_err() {
                        break; // the call ended early; its status says why
                    }
                }
                Ok(())
            })
        } else {
            tokio::task::spawn_blocking(move || {
                while let Some(msg) = next()? {
                    if tx.blocking_send(msg).is_err() {
                        break; // the call ended early; its status says why
                    }
                }
                Ok(())
            })
        };
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        // The whole transfer may take longer than one RPC; give it a generous deadline.
        req.set_timeout(option.hard_ttl().max(Duration::from_secs(600)));
        let reply = tokio::select! {
            r = client.install_snapshot(req) => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let produced = producer
            .await
            .map_err(|e| CallError::Network(e.to_string()).into_streaming())?;
        let sent = reply.is_ok() && produced.is_ok();
        crate::metrics::snapshot_sent(bytes, sent);
        let reply = reply.map_err(|s| CallError::from_status(s).into_streaming())?;
        produced.map_err(|e| CallError::Network(e).into_streaming())?;
        self.peers.contacted(self.target);
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> =
            decode(&reply.get_ref().body).map_err(|m| CallError::Network(m).into_streaming())?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::{CommittedLeaderId, LogId};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::api::internal::peer_server::{Peer, PeerServer};
    use crate::api::internal::{
        FetchOutputRequest, GossipSeedsReply, GossipSeedsRequest, JoinReply, JoinRequest,
        OutputBytes, RaftReply, ReadIndexReply, ReadIndexRequest, SetTagsReply, SetTagsRequest,
    };

    /// A peer that answers every AppendEntries with a higher vote of the request's own term
    /// (so each reply names its request), after `slow_ms` for term 1. Counts what it is
    /// asked. Without `streams`, it knows only the unary call (an older version).
    ///
    /// As a leader it answers every forwarded `RemoveNode(k)` with index `k` (so each
    /// answer names its write), after `slow_ms` for `k` = 1, on `ForwardStream` when it
    /// has `streams`, on `ForwardBatch` always.
    #[derive(Clone, Default)]
    pub(crate) struct FakePeer {
        pub streams: bool,
        pub slow_ms: u64,
        pub opened: Arc<AtomicUsize>,
        pub unary: Arc<AtomicUsize>,
        pub forward_opened: Arc<AtomicUsize>,
        pub forward_unary: Arc<AtomicUsize>,
    }

    type Appended = Result<AppendEntriesResponse<u64>, RaftError<u64>>;

    impl FakePeer {
        async fn answer(&self, req: RaftRequest) -> RaftReply {
            let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.body).unwrap();
            if rpc.vote.leader_id.term == 1 {
                tokio::time::sleep(Duration::from_millis(self.slow_ms)).await;
            }
            let reply: Appended = Ok(AppendEntriesResponse::HigherVote(rpc.vote));
            RaftReply {
                body: encode(&reply),
            }
        }
    }

    impl FakePeer {
        /// The write whose batch a leader's stream fails on (UNAVAILABLE, as a broken
        /// connection does).
        pub const BREAKS: u64 = 99;

        async fn answer_batch(&self, req: RaftRequest) -> Result<RaftReply, Status> {
            let proposals: Vec<crate::proposal::Proposal> = decode(&req.body).unwrap();
            let mut answers: Vec<crate::proposal::Outcome> = Vec::new();
            for p in proposals {
                let crate::proposal::Proposal::RemoveNode(k) = p else {
                    panic!("a write this fake does not answer: {p:?}");
                };
                if k == Self::BREAKS {
                    return Err(Status::unavailable("connection reset"));
                }
                if k == 1 {
                    tokio::time::sleep(Duration::from_millis(self.slow_ms)).await;
                }
                answers.push(Ok((
                    k,
                    cathedral_consensus::Response::Submitted { jobs: vec![] },
                )));
            }
            Ok(RaftReply {
                body: encode(&answers),
            })
        }
    }

    fn unimplemented<T>() -> Result<T, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    #[tonic::async_trait]
    impl Peer for FakePeer {
        async fn append_entries(
            &self,
            req: Request<RaftRequest>,
        ) -> Result<Response<RaftReply>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(self.answer(req.into_inner()).await))
        }

        type AppendEntriesStreamStream =
            std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RaftReply, Status>> + Send>>;

        async fn append_entries_stream(
            &self,
            req: Request<Streaming<RaftRequest>>,
        ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
            use futures_util::StreamExt as S;
            if !self.streams {
                return unimplemented();
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            let me = self.clone();
            let replies = S::then(req.into_inner(), move |r| {
                let me = me.clone();
                async move { Ok(me.answer(r?).await) }
            });
            Ok(Response::new(Box::pin(replies)))
        }

        async fn vote(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
            unimplemented()
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftReply>, Status> {
            unimplemented()
        }

        async fn forward_batch(
            &self,
            req: Request<RaftRequest>,
        ) -> Result<Response<RaftReply>, Status> {
            self.forward_unary.fetch_add(1, Ordering::SeqCst);
            self.answer_batch(req.into_inner()).await.map(Response::new)
        }

        type ForwardStreamStream =
            std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RaftReply, Status>> + Send>>;

        async fn forward_stream(
            &self,
            req: Request<Streaming<RaftRequest>>,
        ) -> Result<Response<Self::ForwardStreamStream>, Status> {
            use futures_util::StreamExt as S;
            self.forward_opened.fetch_add(1, Ordering::SeqCst);
            if !self.streams {
                return unimplemented();
            }
            let me = self.clone();
            let replies = S::map(req.into_inner(), move |r| {
                let me = me.clone();
                async move { me.answer_batch(r?).await }
            });
            Ok(Response::new(Box::pin(S::buffered(replies, 2))))
        }

        async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
            unimplemented()
        }

        type FetchOutputStream =
            tokio_stream::wrappers::ReceiverStream<Result<OutputBytes, Status>>;

        async fn fetch_output(
            &self,
            _: Request<FetchOutputRequest>,
        ) -> Result<Response<Self::FetchOutputStream>, Status> {
            unimplemented()
        }

        async fn gossip_seeds(
            &self,
            _: Request<GossipSeedsRequest>,
        ) -> Result<Response<GossipSeedsReply>, Status> {
            unimplemented()
        }

        async fn set_tags(
            &self,
            _: Request<SetTagsRequest>,
        ) -> Result<Response<SetTagsReply>, Status> {
            unimplemented()
        }

        async fn read_index(
            &self,
            _: Request<ReadIndexRequest>,
        ) -> Result<Response<ReadIndexReply>, Status> {
            unimplemented()
        }
    }

    /// Serves `peer` on a loopback port; its address.
    pub(crate) async fn serve(peer: FakePeer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(peer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Serves `peer` on a loopback port; the connection of node 1 to it (as node 2).
    async fn connect(peer: FakePeer) -> PeerConn {
        let addr = serve(peer).await;
        let mut network = Network {
            peers: Peers::new(1, Security::default(), None),
        };
        network.new_client(2, &BasicNode { addr }).await
    }

    fn append(term: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(term, 1), 7)),
            leader_commit: None,
            entries: vec![],
        }
    }

    /// The term of the higher vote a fake peer answered with: the request's.
    fn answered_term(r: AppendEntriesResponse<u64>) -> u64 {
        match r {
            AppendEntriesResponse::HigherVote(v) => v.leader_id.term,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[tokio::test]
    async fn appends_share_one_stream_and_each_gets_its_own_reply() {
        let peer = FakePeer {
            streams: true,
            ..FakePeer::default()
        };
        let mut conn = connect(peer.clone()).await;
        let option = RPCOption::new(Duration::from_secs(5));
        for term in 2..12 {
            let r = conn.append_entries(append(term), option.clone()).await;
            assert_eq!(answered_term(r.unwrap()), term);
        }
        assert_eq!(peer.opened.load(Ordering::SeqCst), 1, "one stream");
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);
    }

    /// openraft drops a call at its timeout: the reply that comes later must not be taken
    /// for the next call's.
    #[tokio::test]
    async fn a_call_dropped_mid_way_leaves_no_reply_for_the_next() {
        let peer = FakePeer {
            streams: true,
            slow_ms: 300,
            ..FakePeer::default()
        };
        let mut conn = connect(peer.clone()).await;
        let option = RPCOption::new(Duration::from_secs(5));
        assert_eq!(
            answered_term(
                conn.append_entries(append(2), option.clone())
                    .await
                    .unwrap()
            ),
            2
        );
        // Dropped as openraft drops it, and timed out by the call's own deadline.
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            conn.append_entries(append(1), option.clone()),
        )
        .await;
        assert!(dropped.is_err(), "the slow call was dropped");
        // A network error, not "unreachable": openraft would pause its replication to the
        // peer after one slow append.
        let short = RPCOption::new(Duration::from_millis(50));
        let late = conn.append_entries(append(1), short).await;
        assert!(matches!(late, Err(RPCError::Network(_))), "{late:?}");
        for term in 3..6 {
            let r = conn.append_entries(append(term), option.clone()).await;
            assert_eq!(answered_term(r.unwrap()), term);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = conn.append_entries(append(6), option.clone()).await;
        assert_eq!(answered_term(r.unwrap()), 6);
        assert_eq!(
            peer.opened.load(Ordering::SeqCst),
            3,
            "a new stream after each drop"
        );
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_gets_unary_calls() {
        let peer = FakePeer::default();
        let mut conn = connect(peer.clone()).await;
        let option = RPCOption::new(Duration::from_secs(5));
        for term in 2..5 {
            let r = conn.append_entries(append(term), option.clone()).await;
            assert_eq!(answered_term(r.unwrap()), term);
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 3);
        assert_eq!(peer.opened.load(Ordering::SeqCst), 0);
    }
}
