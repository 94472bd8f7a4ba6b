//! One Cathedral node: its Raft instance over the data directory, its identity, and the
//! paths every write and membership change takes.
//!
//! ```text
//!  API call ──▶ Node::propose ──(leader)──▶ check against applied state ──▶ batcher ──▶ client_write
//!                    │
//!                    └─(follower)──▶ Peer.Forward on the leader ──▶ the same, remotely
//!                    then: wait until this node applied the entry (read your writes)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cathedral_consensus::raft::{
    AppliedHandle, CommittedHandle, LogStore, StateMachine, TypeConfig,
};
use cathedral_consensus::requests::RequestId;
use cathedral_consensus::{
    Capacity, Command, Invalid, NodeInfo, NodeStatus, Response, Role as NodeRole,
};
use cathedral_storage::{Log, Options, SnapshotOptions, SnapshotStore};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};

use crate::api::internal::{JoinReply, JoinRequest};
use crate::config::{Config, Role};
use crate::error::{Result, ServerError};
use crate::gossip::{GossipError, Membership, Published};
use crate::identity::{new_cluster_id, Identity};
use crate::tags::TagOverlay;
use crate::transport::{Network, Peers};

/// Largest log entry record a write makes: the bytes the log stores (version, log id and
/// the encoded command or batch).
pub const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Largest encoded write (its command, with its request id): what `ENTRY_BYTES_MAX` leaves
/// after an entry's framing, so that every entry the write goes into stays within it.
pub const WRITE_BYTES_MAX: usize =
    ENTRY_BYTES_MAX - cathedral_consensus::raft::ENTRY_FRAMING_BYTES_MAX;
/// How long a Join may take (the new node catches up as a learner first).
pub const JOIN_TIMEOUT_MS: u64 = 120_000;
/// Longest pause before a write that found no leader is tried again (it is tried at once
/// when a new leader becomes known).
const NOT_LEADER_RETRY_MS: u64 = 50;
/// Period of the membership and registration upkeep.
const UPKEEP_INTERVAL_MS: u64 = 500;

/// A write or membership change that only the leader performs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    Write(Command),
    RemoveNode(u64),
}

/// The leader's answer to a forwarded [`Proposal`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposalReply {
    /// Committed and applied at `index`.
    Done {
        index: u64,
        response: Response,
    },
    /// Not the leader (any more); nothing was proposed.
    NotLeader {
        leader: Option<u64>,
    },
    Invalid(Invalid),
    NotFound {
        what: String,
        id: u64,
    },
    Failed(String),
}

/// The running node.
pub struct Node {
    pub id: u64,
    pub config: Config,
    pub raft: Raft<TypeConfig>,
    pub applied: AppliedHandle,
    pub peers: Arc<Peers>,
    pub snapshots: SnapshotStore,
    /// Gossip membership: liveness, tags and load of every node.
    pub gossip: Arc<Membership>,
    /// Run-time tag changes, persisted in the data directory.
    tag_overlay: tokio::sync::Mutex<TagOverlay>,
    identity: Mutex<Identity>,
    log: Mutex<Option<Arc<Log>>>,
    /// The committed index the log store has not persisted yet; saved at shutdown.
    committed: CommittedHandle,
    /// Concurrent writes, batched into entries (used while this node leads).
    batcher: crate::batcher::Batcher,
    /// Writes on their way to the leader, forwarded together (used while another leads).
    forwarder: crate::forwarder::Forwarder,
    /// Notified when an AppendEntries from a leader was taken (see `quiet_start`).
    leader_heard: Arc<tokio::sync::Notify>,
    /// This run of the node, random per start: request ids it assigns never repeat an
    /// earlier run's.
    incarnation: u64,
    /// The next request id's sequence number in this run.
    next_request: std::sync::atomic::AtomicU64,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Standalone => NodeRole::Standalone,
        Role::Coordinator => NodeRole::Coordinator,
        Role::Worker => NodeRole::Worker,
    }
}

impl Node {
    /// Opens the data directory (locking it), the log, snapshots and identity, and starts
    /// Raft. Does not initialise or join a cluster: see [`bootstrap`](Self::bootstrap).
    pub async fn open(mut config: Config) -> Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::io("create", &config.data_dir, e))?;
        // Absolute from here on: sandboxes bind paths under it.
        config.data_dir = std::fs::canonicalize(&config.data_dir)
            .map_err(|e| ServerError::io("resolve", &config.data_dir, e))?;
        let dir = &config.data_dir;
        // The log takes the directory's LOCK: a second server on it fails here.
        let log = Arc::new(Log::open(dir, Options::default())?);
        let identity = Identity::load_or_create(dir)?;
        let snapshots = SnapshotStore::open(dir.join("snapshots"), SnapshotOptions::default())?;
        check_snapshots(dir, &snapshots, log.purged_through())?;
        let sm = StateMachine::open(snapshots.clone())
            .map_err(|e| ServerError::Raft(format!("open state machine: {e}")))?;
        let applied = sm.handle();
        let store = LogStore::new(log.clone())
            .map_err(|e| ServerError::Raft(format!("open log store: {e}")))?;
        let committed = store.committed_handle();
        let overlay = TagOverlay::load(dir)?;
        let published = Published {
            node_id: identity.node_id,
            grpc: config.advertise.clone(),
            role: config.role.name().to_string(),
            tags: overlay.apply(&config.tags),
            slots: config.slots,
            cpu_millis: cpu_millis(),
            memory_bytes: memory_total_bytes(),
        };
        let mut gossip_settings = config.gossip.clone();
        // Peers this node gossiped with before a restart are seeds too.
        for p in read_known_peers(dir) {
            if !gossip_settings.seeds.contains(&p) {
                gossip_settings.seeds.push(p);
            }
        }
        let gossip = Membership::start(gossip_settings, published)
            .await
            .map_err(|e| ServerError::Config(e.to_string()))?;
        if let Some(c) = identity.cluster_id.as_deref() {
            gossip.set_cluster(c).await;
        }
        let peers = Peers::new(identity.node_id);
        let raft_config = config
            .raft
            .openraft_config("cathedral")
            .map_err(ServerError::Config)?;
        let raft = Raft::new(
            identity.node_id,
            raft_config,
            Network {
                peers: peers.clone(),
            },
            store,
            sm,
        )
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;
        let leader_heard = Arc::new(tokio::sync::Notify::new());
        quiet_start(&raft, &config.raft, leader_heard.clone());
        let batcher = crate::batcher::Batcher::start(
            raft.clone(),
            Duration::from_millis(config.write_timeout_ms),
        );
        let forwarder = crate::forwarder::Forwarder::start(
            peers.clone(),
            identity.node_id,
            raft.metrics(),
            Duration::from_millis(config.write_timeout_ms),
        );
        Ok(Arc::new(Node {
            incarnation: rand::random(),
            next_request: std::sync::atomic::AtomicU64::new(1),
            leader_heard,
            batcher,
            forwarder,
            id: identity.node_id,
            config,
            raft,
            applied,
            peers,
            snapshots,
            gossip,
            tag_overlay: tokio::sync::Mutex::new(overlay),
            identity: Mutex::new(identity),
            log: Mutex::new(Some(log)),
            committed,
        }))
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.data_dir
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.identity.lock().unwrap().cluster_id.clone()
    }

    async fn set_cluster(&self, cluster_id: &str) -> Result<()> {
        self.identity
            .lock()
            .unwrap()
            .set_cluster(&self.config.data_dir, cluster_id)?;
        self.gossip.set_cluster(cluster_id).await;
        Ok(())
    }

    /// Changes this node's operator tags: persisted first, then gossiped. Nothing changes
    /// when a tag is invalid.
    pub async fn set_tags(
        &self,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<BTreeMap<String, String>> {
        for k in unset {
            if k == "role" {
                return Err(ServerError::invalid("tag", "`role` cannot be removed"));
            }
        }
        let mut overlay = self.tag_overlay.lock().await;
        let mut next = overlay.clone();
        next.change(set, unset);
        let tags = next.apply(&self.config.tags);
        crate::gossip::check_tags(&tags).map_err(gossip_error)?;
        next.save(&self.config.data_dir)?;
        *overlay = next;
        self.gossip.set_tags(set, unset).await.map_err(gossip_error)
    }

    /// Unavailable while gossip says this node is on the minority side of a partition.
    pub fn refuse_if_partitioned(&self) -> Result<()> {
        let v = self.gossip.view();
        if v.health == crate::gossip::Health::Partitioned {
            return Err(ServerError::Unavailable(format!(
                "this node is partitioned from the cluster ({} of {} known nodes reachable); send the request to another node",
                v.alive, v.known
            )));
        }
        Ok(())
    }

    /// Every node in the job state or in gossip, with both views of it.
    pub fn list_nodes(&self) -> crate::api::v1::ListNodesResponse {
        use crate::api::v1 as pb;
        let view = self.gossip.view();
        let a = self.applied.read().unwrap();
        let state = &a.state;
        let mut ids: BTreeSet<u64> = state.nodes().map(|n| n.info.id).collect();
        ids.extend(view.members.keys().copied());
        let mut running: BTreeMap<u64, u32> = BTreeMap::new();
        for j in state.active_jobs() {
            if let Some(at) = j.current_attempt() {
                *running.entry(at.node).or_default() += 1;
            }
        }
        let nodes = ids
            .into_iter()
            .map(|id| {
                let n = state.node(id);
                let g = view.member(id);
                pb::NodeView {
                    id,
                    address: n
                        .map(|n| n.info.address.clone())
                        .or_else(|| g.map(|g| g.grpc.clone()))
                        .unwrap_or_default(),
                    role: n
                        .map(|n| format!("{:?}", n.info.role).to_lowercase())
                        .or_else(|| g.map(|g| g.role.clone()))
                        .unwrap_or_default(),
                    state: n
                        .map_or("unregistered", |n| match n.status {
                            NodeStatus::Alive => "alive",
                            NodeStatus::Failed => "failed",
                            NodeStatus::Retired => "retired",
                        })
                        .to_string(),
                    gossip_state: g.map_or("unknown", |g| g.liveness.name()).to_string(),
                    phi: g.and_then(|g| g.phi),
                    tags: g
                        .map(|g| g.tags.clone())
                        .or_else(|| n.map(|n| n.info.tags.clone()))
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    running: running.get(&id).copied().unwrap_or(0),
                    slots: n.map_or(0, |n| n.info.capacity.slots),
                    gossip_address: g.map(|g| g.gossip.to_string()).unwrap_or_default(),
                    version: g.map(|g| g.version.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let c = self.gossip.counters();
        pb::ListNodesResponse {
            node_id: self.id,
            nodes,
            health: view.health.name().to_string(),
            alive: view.alive as u32,
            known: view.known as u32,
            gossip: Some(pb::GossipCounters {
                datagrams_sent: c.datagrams_sent,
                bytes_sent: c.bytes_sent,
                datagrams_received: c.datagrams_received,
                bytes_received: c.bytes_received,
                rejected_mac: c.rejected_mac,
                malformed: c.malformed,
                events_dropped: self.gossip.events_dropped(),
            }),
            join_error: self.gossip.join_error().unwrap_or_default(),
        }
    }

    /// This node's gossip address and its live peers'.
    pub fn gossip_seeds(&self) -> Vec<String> {
        let view = self.gossip.view();
        let mut seeds = vec![self.gossip.gossip_addr().to_string()];
        seeds.extend(
            view.members
                .values()
                .filter(|m| m.id != self.id && m.liveness == crate::gossip::Liveness::Alive)
                .map(|m| m.gossip.to_string()),
        );
        seeds
    }

    /// Asks the member at `addr` (gRPC) for gossip seeds.
    pub async fn fetch_gossip_seeds(&self, addr: &str) -> std::result::Result<Vec<String>, String> {
        let mut client = crate::transport::peer_client(crate::transport::channel(addr)?);
        let mut req = tonic::Request::new(crate::api::internal::GossipSeedsRequest {});
        req.set_timeout(Duration::from_secs(5));
        client
            .gossip_seeds(req)
            .await
            .map(|r| r.into_inner().seeds)
            .map_err(|s| s.message().to_string())
    }

    /// Changes the operator tags of node `id`: here, or on that node through its peer
    /// service.
    pub async fn set_node_tags(
        &self,
        id: u64,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<BTreeMap<String, String>> {
        if id == self.id {
            return self.set_tags(set, unset).await;
        }
        let addr = self
            .gossip
            .view()
            .member(id)
            .filter(|m| m.liveness == crate::gossip::Liveness::Alive)
            .map(|m| m.grpc.clone())
            .or_else(|| {
                self.applied
                    .read()
                    .unwrap()
                    .state
                    .node(id)
                    .map(|n| n.info.address.clone())
            })
            .ok_or(ServerError::NotFound { what: "node", id })?;
        let mut client = self
            .peers
            .client(id, &addr)
            .map_err(ServerError::Unavailable)?;
        let mut req = tonic::Request::new(crate::api::internal::SetTagsRequest {
            target: id,
            set: set.clone().into_iter().collect(),
            unset: unset.to_vec(),
        });
        req.set_timeout(Duration::from_secs(10));
        match client.set_tags(req).await {
            Ok(r) => Ok(r.into_inner().tags.into_iter().collect()),
            Err(s) if s.code() == tonic::Code::InvalidArgument => Err(ServerError::Invalid {
                field: "tag".into(),
                reason: s
                    .message()
                    .strip_prefix("invalid tag: ")
                    .unwrap_or(s.message())
                    .to_string(),
            }),
            Err(s) => Err(ServerError::Unavailable(format!(
                "node {id} at {addr}: {}",
                s.message()
            ))),
        }
    }

    /// Remembers the gossip addresses of the live peers, seeds for the next start.
    pub fn save_known_peers(&self, peers: &[String]) {
        let path = self.config.data_dir.join(KNOWN_PEERS_FILE);
        let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
        if let Err(e) = cathedral_storage::replace_atomically(&path, text.as_bytes()) {
            tracing::warn!("saving {}: {e}", path.display());
        }
    }

    pub fn metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Why this node cannot serve writes yet, or `None` when it can: it belongs to a
    /// cluster, is a member, and a leader is known.
    pub fn not_ready(&self) -> Option<String> {
        if self.cluster_id().is_none() {
            return Some("not part of a cluster yet (joining)".into());
        }
        let m = self.metrics();
        if m.membership_config
            .membership()
            .get_node(&self.id)
            .is_none()
        {
            return Some("not a member of the cluster".into());
        }
        if m.current_leader.is_none() {
            return Some("no leader".into());
        }
        None
    }

    /// The commit index as this node knows it: on the leader, the highest index a majority
    /// of voters holds; elsewhere the larger of the applied index and the persisted one.
    pub fn committed_index(&self) -> u64 {
        let m = self.metrics();
        let applied = m.last_applied.map_or(0, |l| l.index);
        if let Some(r) = m.replication.as_ref() {
            let membership = m.membership_config.membership();
            let mut matched: Vec<u64> = membership
                .voter_ids()
                .map(|v| {
                    if v == self.id {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        r.get(&v).cloned().flatten().map_or(0, |l| l.index)
                    }
                })
                .collect();
            if !matched.is_empty() {
                matched.sort_unstable_by(|a, b| b.cmp(a));
                return matched[matched.len() / 2].max(applied);
            }
        }
        let persisted = self
            .log
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|l| l.metadata().committed)
            .and_then(|b| postcard::from_bytes::<Option<openraft::LogId<u64>>>(&b).ok())
            .flatten()
            .map_or(0, |l| l.index);
        persisted.max(applied)
    }

    /// Initialises a new cluster (standalone, or a coordinator without `--join`) on first
    /// start, or joins the one `--join` names; a node that already belongs to a cluster
    /// does neither. Joining retries until it succeeds or the node shuts down.
    pub async fn bootstrap(self: &Arc<Self>) -> Result<()> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        let join = self.config.join.clone();
        match join {
            None if !initialized => {
                let mut members = BTreeMap::new();
                members.insert(self.id, BasicNode::new(&self.config.advertise));
                self.raft
                    .initialize(members)
                    .await
                    .map_err(|e| ServerError::Raft(format!("initialise: {e}")))?;
                self.set_cluster(&new_cluster_id()).await?;
                tracing::info!(node = self.id, "initialised a new cluster");
            }
            None => {}
            Some(addr) if self.cluster_id().is_none() || !initialized => {
                let node = self.clone();
                tokio::spawn(async move { node.join_until_done(&addr).await });
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn join_until_done(&self, addr: &str) {
        let mut logged = false;
        loop {
            match self.try_join(addr).await {
                Ok(reply) => {
                    if let Err(e) = self.set_cluster(&reply.cluster_id).await {
                        tracing::error!("{e}");
                    }
                    tracing::info!(via = addr, leader = reply.leader_id, "joined the cluster");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(via = addr, "cannot join yet, retrying: {e}");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_join(&self, addr: &str) -> std::result::Result<JoinReply, String> {
        let mut client = crate::transport::peer_client(crate::transport::channel(addr)?);
        let mut req = tonic::Request::new(JoinRequest {
            node_id: self.id,
            address: self.config.advertise.clone(),
            role: self.config.role.name().to_string(),
            slots: self.config.slots,
        });
        req.set_timeout(Duration::from_millis(JOIN_TIMEOUT_MS));
        client
            .join(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    }

    /// Handles a Join: the leader adds the node as a learner (waiting until it caught up)
    /// and promotes a coordinator while voters are fewer than `--voters`; any other node
    /// passes the request to the leader.
    pub async fn join(&self, req: JoinRequest) -> Result<JoinReply> {
        let role = Role::parse(&req.role)
            .filter(|r| *r != Role::Standalone)
            .ok_or_else(|| {
                ServerError::invalid("role", format!("{:?}: coordinator or worker", req.role))
            })?;
        if req.node_id == 0 {
            return Err(ServerError::invalid("node_id", "0 is reserved"));
        }
        if req.address.is_empty() {
            return Err(ServerError::invalid("address", "empty"));
        }
        let leader = self.leader_or_unavailable().await?;
        if leader != self.id {
            let addr = self.address_of(leader).ok_or_else(|| {
                ServerError::Unavailable(format!("leader {leader} has no known address"))
            })?;
            let mut client = self
                .peers
                .client(leader, &addr)
                .map_err(ServerError::Unavailable)?;
            let mut r = tonic::Request::new(req);
            r.set_timeout(Duration::from_millis(JOIN_TIMEOUT_MS));
            return client.join(r).await.map(|r| r.into_inner()).map_err(|s| {
                ServerError::Unavailable(format!("via leader {leader}: {}", s.message()))
            });
        }
        let cluster_id = self
            .cluster_id()
            .ok_or_else(|| ServerError::Unavailable("this node has no cluster id yet".into()))?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let known = membership.get_node(&req.node_id).cloned();
        match known {
            Some(n) if n.addr != req.address => {
                return Err(ServerError::invalid(
                    "address",
                    format!(
                        "node {} is a member at {}; remove it before it rejoins at {}",
                        req.node_id, n.addr, req.address
                    ),
                ))
            }
            Some(_) => {}
            None => {
                tracing::info!(node = req.node_id, addr = %req.address, role = role.name(), "adding a learner");
                self.raft
                    .add_learner(req.node_id, BasicNode::new(&req.address), true)
                    .await
                    .map_err(|e| raft_write_error("add learner", e))?;
            }
        }
        if role == Role::Coordinator {
            self.promote_if_wanted(req.node_id).await?;
        }
        Ok(JoinReply {
            cluster_id,
            leader_id: self.id,
        })
    }

    /// Makes learner `id` a voter if voters are fewer than wanted.
    async fn promote_if_wanted(&self, id: u64) -> Result<()> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&id) || voters.len() as u32 >= self.config.voters {
            return Ok(());
        }
        tracing::info!(node = id, voters = voters.len(), "promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(|e| raft_write_error("promote", e))?;
        Ok(())
    }

    /// The leader's id, or Unavailable after waiting up to the write timeout for one.
    pub async fn leader_or_unavailable(&self) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_millis(self.config.write_timeout_ms);
        loop {
            if let Some(l) = self.raft.current_leader().await {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(ServerError::Unavailable(format!(
                    "no leader elected within {} ms; a majority of voters may be down",
                    self.config.write_timeout_ms
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The advertised address of member `id`.
    pub fn address_of(&self, id: u64) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// A request id no other write of any run of any node carries.
    pub fn new_request_id(&self) -> RequestId {
        RequestId::Node {
            node: self.id,
            incarnation: self.incarnation,
            seq: self
                .next_request
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Commits `proposal` through the leader, wherever it is, and waits until this node
    /// applied it, within the write timeout.
    ///
    /// Every write goes as a request (the caller's id, or one this node assigns), which
    /// the state applies at most once; so when the outcome of a try is unknown — the leader
    /// it was forwarded to was replaced or stopped answering, a leader lost its office
    /// mid-write — the same request is sent again to whoever leads now, at once. Only a
    /// membership change (`RemoveNode`) is not resent after an unknown outcome.
    pub async fn propose(&self, proposal: Proposal) -> Result<(u64, Response)> {
        let proposal = match proposal {
            Proposal::Write(cmd) if cmd.batchable() => {
                Proposal::Write(cmd.once(self.new_request_id()))
            }
            other => other,
        };
        let resendable = matches!(&proposal, Proposal::Write(Command::Request { .. }));
        let bytes = match &proposal {
            Proposal::Write(cmd) => cmd.encoded_len(),
            Proposal::RemoveNode(_) => 16,
        };
        if bytes > WRITE_BYTES_MAX {
            return Err(ServerError::invalid(
                "request",
                format!(
                    "encodes to {bytes} bytes; WRITE_BYTES_MAX is {WRITE_BYTES_MAX} (ENTRY_BYTES_MAX {ENTRY_BYTES_MAX} less an entry's framing)"
                ),
            ));
        }
        // A repeat of an accepted request is answered from this node's state: no log entry,
        // the original ids (a key found here is committed).
        if let Proposal::Write(cmd) = &proposal {
            if let Some(answer) = self.answer_repeat(cmd) {
                return Ok(answer);
            }
        }
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        loop {
            let asked = self.raft.current_leader().await;
            let tried = match asked {
                Some(l) if l == self.id => Ok(self.execute(&proposal).await),
                Some(l) => match self.address_of(l) {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        self.forwarder
                            .forward(l, addr, proposal.clone(), bytes, left)
                            .await
                    }
                    None => Ok(ProposalReply::NotLeader { leader: None }),
                },
                None => Ok(ProposalReply::NotLeader { leader: None }),
            };
            let reply = match tried {
                Ok(ProposalReply::Failed(m)) | Err(ServerError::Unavailable(m)) => {
                    // The outcome is unknown. A request is sent again (to the new leader as
                    // soon as one is known); anything else reports it.
                    if resendable && Instant::now() < deadline {
                        tracing::debug!(leader = ?asked, "resending a write: {m}");
                        self.leader_change(asked, Duration::from_millis(NOT_LEADER_RETRY_MS))
                            .await;
                        continue;
                    }
                    return Err(ServerError::Unavailable(m));
                }
                Err(e) => return Err(e),
                Ok(r) => r,
            };
            match reply {
                ProposalReply::Done { index, response } => {
                    // Read your writes: this node's answers include the entry from now on.
                    if self.applied_index() < index {
                        let _ = self
                            .raft
                            .wait(Some(deadline.saturating_duration_since(Instant::now())))
                            .applied_index_at_least(Some(index), "read your write")
                            .await;
                    }
                    return match response {
                        Response::Rejected(e) => Err(e.into()),
                        r => Ok((index, r)),
                    };
                }
                ProposalReply::NotLeader { .. } if Instant::now() < deadline => {
                    // Nothing was proposed: try again as soon as this node sees another
                    // leader (an election ending), or after a short pause.
                    self.leader_change(asked, Duration::from_millis(NOT_LEADER_RETRY_MS))
                        .await;
                }
                ProposalReply::NotLeader { .. } => {
                    return Err(ServerError::Unavailable(format!(
                        "no leader took the write within {} ms; a majority of voters may be down",
                        self.config.write_timeout_ms
                    )))
                }
                ProposalReply::Invalid(e) => return Err(e.into()),
                ProposalReply::NotFound { what, id } => {
                    return Err(ServerError::NotFound {
                        what: if what == "node" { "node" } else { "job" },
                        id,
                    })
                }
                ProposalReply::Failed(m) => return Err(ServerError::Unavailable(m)),
            }
        }
    }

    /// Waits until this node knows a leader other than `was`, at most `max`.
    async fn leader_change(&self, was: Option<u64>, max: Duration) {
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(max, async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.current_leader.is_some() && m.current_leader != was {
                        return;
                    }
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// An AppendEntries from a leader was taken: this node may campaign from now on.
    pub fn heard_leader(&self) {
        self.leader_heard.notify_one();
    }

    /// The index of the last entry this node applied.
    pub fn applied_index(&self) -> u64 {
        self.applied
            .read()
            .unwrap()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// The answer to `cmd` when it repeats a request the applied state holds, with the
    /// applied index it was read at.
    fn answer_repeat(&self, cmd: &Command) -> Option<(u64, Response)> {
        let a = self.applied.read().unwrap();
        a.state
            .repeat(cmd)
            .map(|r| (a.last_applied.map_or(0, |l| l.index), r))
    }

    /// Performs `proposal` on this node, which believes it leads.
    pub async fn execute(&self, proposal: &Proposal) -> ProposalReply {
        match proposal {
            Proposal::Write(cmd) => {
                if let Some((index, response)) = self.answer_repeat(cmd) {
                    return ProposalReply::Done { index, response };
                }
                // Bad input never takes a log entry: check against the applied state first
                // (jobs are never removed, so what passes here passes when applied).
                if let Err(e) = self.applied.read().unwrap().state.check(cmd) {
                    return ProposalReply::Invalid(e);
                }
                self.batcher.write(cmd.clone(), cmd.encoded_len()).await
            }
            Proposal::RemoveNode(id) => self.remove_node(*id).await,
        }
    }

    async fn client_write(&self, cmd: Command) -> ProposalReply {
        // A leader cut off from its quorum keeps waiting for a commit that does not come;
        // the caller hears of it after the write timeout.
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let Ok(written) = tokio::time::timeout(timeout, self.raft.client_write(cmd)).await else {
            return ProposalReply::Failed(format!(
                "not committed within {} ms; a majority of voters may be down (the write may still be applied once they return)",
                self.config.write_timeout_ms
            ));
        };
        match written {
            Ok(r) => ProposalReply::Done {
                index: r.log_id.index,
                response: r.data,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                ProposalReply::NotLeader {
                    leader: f.leader_id,
                }
            }
            Err(e) => ProposalReply::Failed(e.to_string()),
        }
    }

    async fn remove_node(&self, id: u64) -> ProposalReply {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if membership.get_node(&id).is_none() {
            return ProposalReply::NotFound {
                what: "node".into(),
                id,
            };
        }
        if is_voter && membership.voter_ids().count() == 1 {
            return ProposalReply::Invalid(Invalid::new(
                "node_id",
                format!("{id} is the only voter; a cluster needs one"),
            ));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        if let Err(e) = self.raft.change_membership(change, false).await {
            return match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ProposalReply::NotLeader {
                        leader: f.leader_id,
                    }
                }
                e => ProposalReply::Failed(format!("remove node {id}: {e}")),
            };
        }
        tracing::info!(node = id, "removed from the cluster");
        // The node leaves the job state too, if it registered.
        let registered = self.applied.read().unwrap().state.node(id).is_some();
        if registered {
            self.client_write(Command::NodeRetired {
                at_ms: now_ms(),
                node: id,
            })
            .await
        } else {
            ProposalReply::Done {
                index: self.metrics().last_applied.map_or(0, |l| l.index),
                response: Response::Done,
            }
        }
    }

    /// Background upkeep, every `UPKEEP_INTERVAL_MS` until shutdown: this node registers
    /// itself in the job state once it belongs to a cluster; the leader promotes
    /// coordinator learners while voters are fewer than wanted.
    pub async fn upkeep(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(UPKEEP_INTERVAL_MS)) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.register_self().await {
                tracing::debug!("registration pending: {e}");
            }
            if self.metrics().state == ServerState::Leader {
                self.promote_coordinators().await;
            }
        }
    }

    async fn register_self(&self) -> Result<()> {
        let m = self.metrics();
        if self.cluster_id().is_none()
            || m.membership_config
                .membership()
                .get_node(&self.id)
                .is_none()
        {
            return Ok(());
        }
        let wanted = NodeInfo {
            id: self.id,
            address: self.config.advertise.clone(),
            role: node_role(self.config.role),
            tags: self.gossip.tags(),
            capacity: capacity(self.config.slots),
        };
        let current = self
            .applied
            .read()
            .unwrap()
            .state
            .node(self.id)
            .map(|n| (n.info.clone(), n.status));
        match current {
            Some((info, NodeStatus::Alive)) if info == wanted => Ok(()),
            // Only the leader brings a failed node back (node-recovered, once gossip sees
            // it alive); registering would revive it behind the detector's back.
            Some((_, NodeStatus::Retired | NodeStatus::Failed)) => Ok(()),
            _ => {
                self.propose(Proposal::Write(Command::NodeRegistered {
                    at_ms: now_ms(),
                    node: wanted,
                }))
                .await?;
                tracing::info!(node = self.id, "registered");
                Ok(())
            }
        }
    }

    async fn promote_coordinators(&self) {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let learners: Vec<u64> = membership.learner_ids().collect();
        for id in learners {
            let coordinator = self
                .applied
                .read()
                .unwrap()
                .state
                .node(id)
                .is_some_and(|n| n.info.role == NodeRole::Coordinator);
            if coordinator {
                if let Err(e) = self.promote_if_wanted(id).await {
                    tracing::warn!(node = id, "promotion failed: {e}");
                }
            }
        }
    }

    /// Stops Raft and closes the log cleanly (sealing its last segment).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        let log = self.log.lock().unwrap().take();
        if let Some(log) = log {
            if let Some(bytes) = self.committed.take_unsaved() {
                if let Err(e) = log.save_committed(bytes) {
                    tracing::warn!("saving the committed index: {e}");
                }
            }
            match Arc::try_unwrap(log) {
                Ok(log) => {
                    if let Err(e) = log.close() {
                        tracing::error!("closing the log: {e}");
                    }
                }
                // Raft's tasks still hold it; dropping it stops the writer after
                // everything acknowledged is durable, only the seal is skipped.
                Err(_) => tracing::debug!("log still shared at shutdown; not sealed"),
            }
        }
    }
}

/// Checks every snapshot (whole-file checksums) before Raft reads any. A damaged snapshot
/// the node needs — the log was compacted past everything the valid ones hold — stops the
/// start with what is damaged and how to restore; one it does not need is set aside as
/// `*.snap.damaged` (kept, reported by `cathedral-log verify`) and logged, so Raft never
/// reads or sends it.
fn check_snapshots(
    dir: &std::path::Path,
    snapshots: &SnapshotStore,
    purged_through: Option<u64>,
) -> Result<()> {
    let survey = snapshots.survey(true)?;
    if let Some(gap) = survey.gap(purged_through) {
        return Err(ServerError::DataDir {
            dir: dir.to_path_buf(),
            reason: format!(
                "{gap}. This node cannot rebuild its state. Restore it from a peer (move the directory aside and start the node again with --join ADDR of a member: the leader sends it a snapshot), or from an export (`cathedral-log --data-dir NEW snapshot import FILE`, then start on NEW). `cathedral-log --data-dir {} verify` lists every damaged file.",
                dir.display()
            ),
        });
    }
    for d in survey.damaged.iter().filter(|d| !d.set_aside) {
        let to = snapshots.set_aside(&d.finding.file)?;
        tracing::error!(
            file = %d.finding.file.display(),
            offset = d.finding.offset,
            reason = %d.finding.reason,
            moved_to = %to.display(),
            "damaged snapshot set aside; the state is rebuilt from the valid snapshots and the log"
        );
    }
    for d in survey.damaged.iter().filter(|d| d.set_aside) {
        tracing::warn!(file = %d.finding.file.display(), "a damaged snapshot set aside earlier is still here; remove it once looked at");
    }
    for p in &survey.unknown {
        tracing::warn!(file = %p.display(), "not a snapshot file, in the snapshot directory");
    }
    Ok(())
}

/// A restarted member of a multi-voter cluster does not campaign until it has heard from
/// a leader (or `QUIET_START_MS` passed with none): its log is likely behind, so its votes
/// would be refused, and openraft 0.9 then remembers having seen a greater log and delays
/// this node's next election by twice the maximum election timeout — in the next failover,
/// perhaps long after. A lone voter campaigns at once.
fn quiet_start(
    raft: &Raft<TypeConfig>,
    settings: &cathedral_consensus::raft::RaftSettings,
    leader_heard: Arc<tokio::sync::Notify>,
) {
    let voters = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters < 2 {
        return;
    }
    raft.runtime_config().elect(false);
    let (raft, quiet) = (
        raft.clone(),
        Duration::from_millis(QUIET_START_MS.max(4 * settings.election_timeout_max_ms)),
    );
    tokio::spawn(async move {
        // (A leader's vote restored from disk is no news of a live leader: wait for one to
        // send entries.)
        let _ = tokio::time::timeout(quiet, leader_heard.notified()).await;
        raft.runtime_config().elect(true);
    });
}

/// Longest a restarted member waits to hear a leader before it may campaign itself.
const QUIET_START_MS: u64 = 1000;

/// What this node offers: `slots` attempts at once, its CPUs, and its memory.
fn capacity(slots: u32) -> Capacity {
    Capacity {
        slots,
        cpu_millis: cpu_millis(),
        memory_bytes: memory_total_bytes(),
    }
}

fn cpu_millis() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as u32 * 1000
}

/// Where the gossip addresses of the last live peers are kept, one per line.
const KNOWN_PEERS_FILE: &str = "gossip-peers";

fn read_known_peers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(KNOWN_PEERS_FILE))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn gossip_error(e: GossipError) -> ServerError {
    match e {
        GossipError::InvalidTag { field, reason } => ServerError::Invalid { field, reason },
        e => ServerError::Unavailable(e.to_string()),
    }
}

/// Physical memory from /proc/meminfo (0, "not accounted", where unreadable).
fn memory_total_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn raft_write_error(
    what: &str,
    e: RaftError<u64, ClientWriteError<u64, BasicNode>>,
) -> ServerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ServerError::Unavailable(format!("{what}: leadership moved; retry"))
        }
        e => ServerError::Raft(format!("{what}: {e}")),
    }
}
