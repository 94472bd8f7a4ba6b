//! `ClusterService`: the cluster's status, its nodes, the log read, snapshots.

use super::*;

#[tonic::async_trait]
impl ClusterService for Api {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let leading = m.state == ServerState::Leader;
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let me = *id == self.node.id;
                pb::Member {
                    id: *id,
                    address: n.addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    last_contact_ms: (leading && !me)
                        .then(|| {
                            self.node
                                .peers
                                .since_contact(*id)
                                .map(|d| d.as_millis() as u64)
                        })
                        .flatten()
                        .or((leading && me).then_some(0)),
                    matched_index: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index),
                }
            })
            .collect();
        let (applied_index, state_hash, jobs, jobs_by_state) = {
            let a = self.node.state().read();
            (
                a.last_applied.map_or(0, |l| l.index),
                hex(&a.state.hash()),
                a.state.job_count() as u64,
                cathedral_consensus::JobState::ALL
                    .iter()
                    .map(|s| {
                        (
                            s.name().replace(' ', "_"),
                            a.state.jobs_in(*s).count() as u64,
                        )
                    })
                    .collect(),
            )
        };
        let leader_id = m.current_leader.unwrap_or(0);
        Ok(Response::new(pb::StatusResponse {
            node_id: self.node.id,
            cluster_id: self.node.cluster_id().unwrap_or_default(),
            leader_id,
            leader_address: m
                .current_leader
                .and_then(|l| self.node.address_of(l))
                .unwrap_or_default(),
            term: m.current_term,
            commit_index: self.node.committed_index(),
            applied_index,
            state_hash,
            members,
            server_state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            jobs,
            jobs_by_state,
        }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let id = req.into_inner().node_id;
        self.node.propose(Proposal::RemoveNode(id)).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Ok(Response::new(self.node.list_nodes()))
    }

    async fn set_node_tags(
        &self,
        req: Request<pb::SetNodeTagsRequest>,
    ) -> Result<Response<pb::SetNodeTagsResponse>, Status> {
        let req = req.into_inner();
        if req.set.len() + req.unset.len() > 2 * TAGS_MAX {
            return Err(ServerError::invalid(
                "tag",
                format!(
                    "{} changes in one call, more than 2 × TAGS_MAX ({})",
                    req.set.len() + req.unset.len(),
                    2 * TAGS_MAX
                ),
            )
            .into());
        }
        let set = req.set.into_iter().collect();
        let tags = self
            .node
            .set_node_tags(req.node_id, &set, &req.unset)
            .await?;
        Ok(Response::new(pb::SetNodeTagsResponse {
            tags: tags.into_iter().collect(),
        }))
    }

    async fn read_log(
        &self,
        req: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::ReadLogResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => LOG_READ_LIMIT_DEFAULT,
            n if n > LOG_READ_LIMIT_MAX => {
                return Err(ServerError::invalid(
                    "limit",
                    format!("{n} exceeds LOG_READ_LIMIT_MAX {LOG_READ_LIMIT_MAX}"),
                )
                .into())
            }
            n => n,
        };
        Ok(Response::new(self.node.read_log(req.from_index, limit)?))
    }

    async fn trigger_snapshot(
        &self,
        _req: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        let target = self.node.metrics().last_applied.map_or(0, |l| l.index);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SNAPSHOT_WAIT_MS);
        // openraft ignores a trigger while a snapshot is being built, and that build may
        // end short of `target` (a single trigger then waited the whole SNAPSHOT_WAIT_MS
        // for a build never started). So trigger again every SNAPSHOT_RETRIGGER_MS until a
        // snapshot covers it: a trigger during a build is ignored, one after starts the
        // next.
        let m = loop {
            self.node
                .raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = self
                .node
                .raft
                .wait(Some(left.min(Duration::from_millis(SNAPSHOT_RETRIGGER_MS))))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= target),
                    "snapshot written",
                )
                .await;
            match waited {
                Ok(m) => break m,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Status::deadline_exceeded(format!(
                        "snapshot not written: {e}"
                    )))
                }
                Err(_) => continue,
            }
        };
        Ok(Response::new(pb::TriggerSnapshotResponse {
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
        }))
    }
}
