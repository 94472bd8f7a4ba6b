//! What the node takes from and gives to gossip: tags, the partition check, the node list
//! (job state and gossip view together), gossip seeds and the known-peers file.

use super::*;

impl Node {
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
        next.save(&self.data.tags_file())?;
        *overlay = next;
        self.gossip.set_tags(set, unset).await.map_err(gossip_error)
    }

    /// Unavailable while gossip says this node is on the minority side of a partition,
    /// unless Raft knows better: a leader a majority acknowledged within an election
    /// timeout can most likely commit, whatever gossip (slower to see a node come back)
    /// says yet.
    pub fn refuse_if_partitioned(&self) -> Result<()> {
        let v = self.gossip.view();
        if v.health == crate::gossip::Health::Partitioned && !self.leader_with_fresh_quorum() {
            return Err(ServerError::Unavailable(format!(
                "this node is partitioned from the cluster ({} of {} known nodes reachable); send the request to another node",
                v.alive, v.known
            )));
        }
        Ok(())
    }

    /// Whether this node leads and a majority acknowledged it within about the shortest
    /// election timeout (openraft refreshes the figure each tick, 1.5 heartbeats). Only
    /// decides whether to fail fast: a write let through still needs its majority.
    fn leader_with_fresh_quorum(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == openraft::ServerState::Leader
            && m.millis_since_quorum_ack
                .is_some_and(|ms| ms <= self.raft.config().election_timeout_min)
    }

    /// Every node in the job state or in gossip, with both views of it.
    pub fn list_nodes(&self) -> crate::api::v1::ListNodesResponse {
        use crate::api::v1 as pb;
        let view = self.gossip.view();
        let a = self.state().read();
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
                        .map(|n| n.info.role.name().to_string())
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
        let mut client = self.peers.connect(addr)?;
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
                self.state()
                    .read()
                    .state
                    .node(id)
                    .map(|n| n.info.address.clone())
            })
            .ok_or(ServerError::not_found("node", id))?;
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
            Err(s) => Err(ServerError::from_peer(&s, &format!("node {id} at {addr}"))),
        }
    }

    /// Remembers the gossip addresses of the live peers, seeds for the next start.
    pub fn save_known_peers(&self, peers: &[String]) {
        let path = self.data.known_peers_file();
        let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
        if let Err(e) = cathedral_storage::replace_atomically(&path, text.as_bytes()) {
            tracing::warn!("saving {}: {e}", path.display());
        }
    }
}

/// The gossip addresses of the last live peers, kept in `path` one per line.
pub(super) fn read_known_peers(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn gossip_error(e: GossipError) -> ServerError {
    match e {
        GossipError::InvalidTag { field, reason } => ServerError::Invalid { field, reason },
        e => ServerError::Unavailable(e.to_string()),
    }
}
