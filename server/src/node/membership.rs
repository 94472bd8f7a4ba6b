//! Membership: bootstrap or join, promotion of coordinators to voters, node removal, and
//! the upkeep that registers this node in the job state.

use super::*;

impl Node {
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
                self.spawn_until_stop(async move { node.join_until_done(&addr).await });
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Joins through `addr` (`--join`), and, while that fails, through every other member
    /// gossip knows alive in turn: the member `--join` names may have left the cluster, or
    /// be down, before this node got in (found by ClusterSim: a node whose `--join`
    /// member was removed retried it for ever).
    pub(super) async fn join_until_done(&self, addr: &str) {
        let mut logged = false;
        for attempt in 0usize.. {
            let via = self.join_candidates(addr);
            let via = &via[attempt % via.len()];
            tracing::debug!(via, attempt, "joining");
            match self.try_join(via).await {
                Ok(reply) => {
                    if let Err(e) = self.set_cluster(&reply.cluster_id).await {
                        tracing::error!("{e}");
                    }
                    tracing::info!(via, leader = reply.leader_id, "joined the cluster");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(via, "cannot join yet, retrying: {e}");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Where a join may go: the `--join` address first, then the gRPC address of every
    /// other node gossip knows alive in the same cluster, in id order. A node publishes its
    /// cluster's id once it belongs to one (one still joining, like this one, could only
    /// wait for a leader it does not know); the cluster is the `--join` member's when
    /// gossip knows it, else the only one gossip shows — never a guess between two.
    fn join_candidates(&self, given: &str) -> Vec<String> {
        let mut out = vec![given.to_string()];
        let view = self.gossip.view();
        let alive = || {
            view.members.values().filter(|m| {
                m.id != self.id
                    && m.liveness == crate::gossip::Liveness::Alive
                    && !m.cluster.is_empty()
            })
        };
        let clusters: BTreeSet<&str> = alive().map(|m| m.cluster.as_str()).collect();
        let cluster = view
            .members
            .values()
            .find(|m| m.grpc == given && !m.cluster.is_empty())
            .map(|m| m.cluster.as_str())
            .or_else(|| (clusters.len() == 1).then(|| *clusters.first().expect("one")));
        let Some(cluster) = cluster else {
            return out;
        };
        for m in alive().filter(|m| m.cluster == cluster && !m.grpc.is_empty()) {
            if !out.contains(&m.grpc) {
                out.push(m.grpc.clone());
            }
        }
        out
    }

    pub(super) async fn try_join(&self, addr: &str) -> std::result::Result<JoinReply, String> {
        let mut client = self.peers.connect(addr)?;
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
            return client
                .join(r)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| ServerError::from_peer(&s, &format!("via leader {leader}")));
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
            Some(_) => self.membership_committed_with(req.node_id).await?,
            None => {
                let added = {
                    let _one = self.one_change().await;
                    self.still_a_voter()?;
                    tracing::info!(node = req.node_id, addr = %req.address, role = role.name(), "adding a learner");
                    // Not openraft's blocking add: the wait for the learner to catch up
                    // (below) must not hold other membership changes back.
                    self.raft
                        .add_learner(req.node_id, BasicNode::new(&req.address), false)
                        .await
                        .map_err(|e| raft_write_error("add learner", e))?
                };
                self.learner_caught_up(req.node_id, added.log_id.index)
                    .await?;
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

    /// On the leader: Ok once a quorum confirmed it still leads and the membership naming
    /// node `id` is applied here (so committed). The membership a leader reads is the
    /// newest in its own log: a leader cut off from the majority still names nodes it added
    /// that the cluster will overwrite, and a node told it joined from such an entry never
    /// joined (found by ClusterSim: it restarted, rejoined through the stale leader, and
    /// stayed outside the cluster for good). The read index alone is not enough: a new
    /// leader's may be its own first entry, not yet committed. Unavailable otherwise: the
    /// joiner tries again.
    async fn membership_committed_with(&self, id: u64) -> Result<()> {
        let wait = Duration::from_millis(READ_CONFIRM_TIMEOUT_MS);
        let read = tokio::time::timeout(wait, self.leader_read_index())
            .await
            .map_err(|_| {
                ServerError::Unavailable(format!(
                    "node {} could not confirm with a quorum within {wait:?} that it leads",
                    self.id
                ))
            })??;
        let at = self
            .metrics()
            .membership_config
            .log_id()
            .map_or(0, |l| l.index);
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(read.max(at)), "a joiner's membership applied")
            .await
            .map_err(|e| {
                ServerError::Unavailable(format!(
                    "the membership naming node {id} (log index {at}) is not committed yet: {e}; try again"
                ))
            })?;
        let m = self.metrics();
        let at = m.membership_config.log_id().map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        if m.membership_config.membership().get_node(&id).is_none() || at > applied {
            return Err(ServerError::Unavailable(format!(
                "the membership naming node {id} (log index {at}) is not applied yet \
                 (applied index {applied}); try again"
            )));
        }
        Ok(())
    }

    /// Ok while the newest membership this node holds names it a voter. A leader that a
    /// membership removed leads on for a moment (openraft 0.9 steps it down at its next
    /// tick, after the removal is committed) and must not change the membership again:
    /// openraft appends it anyway (debug builds stop on an assertion, found by ClusterSim:
    /// a removed leader's upkeep promoted a learner 11 ms after its own removal).
    /// Unavailable then: the caller tries the next leader.
    fn still_a_voter(&self) -> Result<()> {
        let m = self.metrics();
        if m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id)
        {
            return Ok(());
        }
        Err(ServerError::Unavailable(format!(
            "node {} is no longer a voter (it was removed) and is handing over; try again",
            self.id
        )))
    }

    /// Waits until the leader replicated to learner `id` through `index` (the membership
    /// that added it) — what openraft's blocking `add_learner` waits for, near enough (it
    /// waits until the learner is within its lag threshold of the last entry): a joiner is
    /// told it joined once it holds the membership naming it. Unavailable when this node
    /// stops leading, or `id` is removed, first.
    async fn learner_caught_up(&self, id: u64, index: u64) -> Result<()> {
        let caught_up = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            m.replication.as_ref().is_some_and(|r| {
                r.get(&id)
                    .is_some_and(|matched| matched.is_some_and(|l| l.index >= index))
            })
        };
        let m = self
            .raft
            .wait(None)
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.membership_config.membership().get_node(&id).is_none()
                        || caught_up(m)
                },
                "a new learner caught up",
            )
            .await
            .map_err(|e| ServerError::Unavailable(format!("waiting for node {id}: {e}")))?;
        if !caught_up(&m) {
            return Err(ServerError::Unavailable(format!(
                "node {} stopped leading, or node {id} was removed, while it caught up; try again",
                self.id
            )));
        }
        Ok(())
    }

    /// One membership change at a time from this node. openraft 0.9 changes voters in two
    /// steps — a joint configuration, then the new one — and refuses the second step when
    /// another change was appended between them, leaving the cluster in the joint
    /// configuration. Found by ClusterSim (seed 92, five nodes, 1 ms steps): a learner
    /// added between a promotion's two steps left {n0, n3} ∧ {n0, n3, n4}; `n0` was then
    /// removed and stopped, and the joint configuration, which needs `n0` for a quorum of
    /// its first half, elected no leader again.
    async fn one_change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.membership_changes.lock().await
    }

    /// On the leader: a committed joint configuration with no change on its way is one
    /// whose second step never ran — the leader that began it failed or stopped leading
    /// between the steps, or its second step was refused — and no other change would
    /// finish it (openraft 0.9 does not). Finishes it: the voters become the joint
    /// configuration's new half, and a voter it drops leaves the cluster (only a removal
    /// drops one; a promotion's new half holds the old).
    pub(super) async fn finish_joint(&self) -> Result<()> {
        let _one = self.one_change().await;
        let m = self.metrics();
        let membership = &m.membership_config;
        let configs = membership.membership().get_joint_config();
        let committed = m
            .last_applied
            .is_some_and(|a| Some(a.index) >= membership.log_id().map(|l| l.index));
        if configs.len() < 2 || !committed {
            return Ok(());
        }
        let Some(goal) = configs.last().cloned() else {
            return Ok(());
        };
        self.still_a_voter()?;
        tracing::warn!(voters = ?goal, "finishing a joint configuration a change left unfinished");
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(goal), false)
            .await
            .map_err(|e| raft_write_error("finish a joint configuration", e))?;
        Ok(())
    }

    /// Makes learner `id` a voter if voters are fewer than wanted.
    pub(super) async fn promote_if_wanted(&self, id: u64) -> Result<()> {
        let _one = self.one_change().await;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.contains(&id) || voters.len() as u32 >= self.config.voters {
            return Ok(());
        }
        self.still_a_voter()?;
        tracing::info!(node = id, voters = voters.len(), "promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(|e| raft_write_error("promote", e))?;
        Ok(())
    }

    pub(super) async fn remove_node(&self, id: u64) -> Outcome {
        // Read under the lock: a change just finished (a joint configuration finished, a
        // promotion) decides whether `id` is a voter.
        let one = self.one_change().await;
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if membership.get_node(&id).is_none() {
            return Err(ServerError::not_found("node", id));
        }
        if is_voter && membership.voter_ids().count() == 1 {
            return Err(ServerError::invalid(
                "node_id",
                format!("{id} is the only voter; a cluster needs one"),
            ));
        }
        self.still_a_voter()?;
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| match ServerError::from_raft_write(e) {
                ServerError::Unavailable(m) => {
                    ServerError::Unavailable(format!("remove node {id}: {m}"))
                }
                other => other,
            })?;
        tracing::info!(node = id, "removed from the cluster");
        drop(one);
        // The node leaves the job state too, if it registered.
        let registered = self.state().read().state.node(id).is_some();
        if registered {
            self.client_write(Command::NodeRetired {
                at_ms: self.now_ms(),
                node: id,
            })
            .await
        } else {
            Ok((
                self.metrics().last_applied.map_or(0, |l| l.index),
                Response::Done,
            ))
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
                if let Err(e) = self.finish_joint().await {
                    tracing::warn!("{e}");
                }
                self.promote_coordinators().await;
            }
        }
    }

    pub(super) async fn register_self(&self) -> Result<()> {
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
            role: self.config.role,
            tags: self.gossip.tags(),
            capacity: self.capacity.clone(),
        };
        let current = self
            .state()
            .read()
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
                    at_ms: self.now_ms(),
                    node: wanted,
                }))
                .await?;
                tracing::info!(node = self.id, "registered");
                Ok(())
            }
        }
    }

    pub(super) async fn promote_coordinators(&self) {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let learners: Vec<u64> = membership.learner_ids().collect();
        for id in learners {
            let coordinator = self
                .state()
                .read()
                .state
                .node(id)
                .is_some_and(|n| n.info.role == Role::Coordinator);
            if coordinator {
                if let Err(e) = self.promote_if_wanted(id).await {
                    tracing::warn!(node = id, "promotion failed: {e}");
                }
            }
        }
    }
}

/// What this node offers: `slots` attempts at once, its CPUs, and its memory.
pub(super) fn capacity(slots: u32) -> Capacity {
    Capacity {
        slots,
        cpu_millis: cpu_millis(),
        memory_bytes: memory_total_bytes(),
    }
}

pub(super) fn cpu_millis() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as u32 * 1000
}

/// Physical memory from /proc/meminfo (0, "not accounted", where unreadable).
pub(super) fn memory_total_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
