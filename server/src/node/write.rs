//! The write path: every write goes under a request id to the leader — proposed here
//! through the batcher when this node leads, forwarded otherwise — and is sent again to a
//! new leader when its outcome is unknown; then read-your-writes.

use super::*;

/// How long a read barrier waits for the leader's read index and for this node to apply it.
pub const READ_CONFIRM_TIMEOUT_MS: u64 = 5_000;
/// A follower answers a submit before applying it ([`Node::propose_submit`]) only while
/// it applied to within this many entries of it (1–2 as a rule; ~80 ms of entries at
/// 16 clients): one further behind waits to apply it, as every other write does, rather
/// than make every read on it wait.
pub const EARLY_ANSWER_LAG_MAX: u64 = 64;

impl Node {
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

    /// On the leader: the read index (Raft's ReadIndex) — its commit index, once a quorum
    /// confirmed it still leads. Unavailable when it does not, or cannot confirm it.
    pub async fn leader_read_index(&self) -> Result<u64> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index)),
            Err(e) => Err(ServerError::Unavailable(format!(
                "node {} cannot confirm with a quorum that it leads: {e}",
                self.id
            ))),
        }
    }

    /// A read barrier: returns once this node has applied everything the cluster had
    /// committed when it was called (the leader's read index, confirmed by a quorum), so
    /// that a read after it — above all one answering "not found" — is not stale. A node
    /// that knows no leader, or cannot reach it, cannot tell whether it is behind:
    /// Unavailable, never a stale answer.
    pub async fn read_barrier(&self) -> Result<()> {
        let timeout = Duration::from_millis(READ_CONFIRM_TIMEOUT_MS);
        let leader = self.raft.current_leader().await.ok_or_else(|| {
            ServerError::Unavailable(format!(
                "node {} knows no leader, so it cannot confirm it is not behind the cluster; \
                 ask another node, or wait for a leader",
                self.id
            ))
        })?;
        let index = if leader == self.id {
            self.leader_read_index().await?
        } else {
            let addr = self.address_of(leader).ok_or_else(|| {
                ServerError::Unavailable(format!("the leader {leader} has no known address"))
            })?;
            let mut client = self
                .peers
                .client(leader, &addr)
                .map_err(ServerError::Unavailable)?;
            let mut req =
                tonic::Request::new(crate::api::internal::ReadIndexRequest { target: leader });
            req.set_timeout(timeout);
            client
                .read_index(req)
                .await
                .map_err(|s| ServerError::from_peer(&s, &format!("leader {leader} at {addr}")))?
                .into_inner()
                .index
        };
        if !self.applied_through(index, Instant::now() + timeout).await {
            return Err(ServerError::Unavailable(format!(
                "node {} is behind the cluster (it has not applied index {index} within {} ms)",
                self.id,
                timeout.as_millis()
            )));
        }
        Ok(())
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
    /// applied it, within the write timeout (past it, the reads here wait for it instead:
    /// [`Node::caught_up`]).
    ///
    /// Every write goes as a request (the caller's id, or one this node assigns), which
    /// the state applies at most once; so when the outcome of a try is unknown — the leader
    /// it was forwarded to was replaced or stopped answering, a leader lost its office
    /// mid-write — the same request is sent again to whoever leads now, at once. Only a
    /// membership change (`RemoveNode`) is not resent after an unknown outcome.
    pub async fn propose(&self, proposal: Proposal) -> Result<(u64, Response)> {
        self.propose_answered(proposal, Answer::AppliedHere).await
    }

    /// [`Node::propose`] for a submit, answered as soon as the leader applied it — without
    /// waiting for this node to apply it too, while it keeps up (`EARLY_ANSWER_LAG_MAX`).
    /// Read-your-writes holds all the same: every call that reads this node's state first
    /// waits until it applied what it answered ([`Node::caught_up`]). Only for a write whose call reads nothing of this node's
    /// state that another write answered early could have changed: a submit (its ids come
    /// from the leader's apply; its token and grants are changed only by writes answered
    /// the usual way). Saves a forwarded submit the wait for the leader's next message and
    /// this node's apply (a third of them waited, ~0.5 ms each, at 16 clients spread over
    /// three nodes).
    pub async fn propose_submit(&self, proposal: Proposal) -> Result<(u64, Response)> {
        self.propose_answered(proposal, Answer::AppliedByLeader)
            .await
    }

    /// Returns once this node applied every write it answered before applying it (see
    /// [`Node::propose_submit`]; or one it could not apply by the write's deadline):
    /// `false` at once when it had, `true` when it waited. Unavailable when it has not
    /// within `READ_CONFIRM_TIMEOUT_MS` (cut off from the leader since it answered), never
    /// an answer without the caller's own writes.
    pub async fn caught_up(&self) -> Result<bool> {
        let through = self
            .answered_through
            .load(std::sync::atomic::Ordering::Acquire);
        if through == 0 || self.applied_index() >= through {
            return Ok(false);
        }
        let timeout = Duration::from_millis(READ_CONFIRM_TIMEOUT_MS);
        if self
            .applied_through(through, Instant::now() + timeout)
            .await
        {
            return Ok(true);
        }
        Err(ServerError::Unavailable(format!(
            "node {} has not applied index {through}, a write it acknowledged, within {} ms \
             (it may be cut off from the leader); ask another node",
            self.id,
            timeout.as_millis()
        )))
    }

    async fn propose_answered(
        &self,
        proposal: Proposal,
        answer: Answer,
    ) -> Result<(u64, Response)> {
        let started = Instant::now();
        let result = self.propose_timed(proposal, answer).await;
        crate::metrics::proposal(result.is_ok(), started.elapsed());
        result
    }

    async fn propose_timed(&self, proposal: Proposal, answer: Answer) -> Result<(u64, Response)> {
        let proposal = match proposal {
            Proposal::Write(cmd) if cmd.batchable() => {
                Proposal::Write(cmd.once(self.new_request_id()))
            }
            other => other,
        };
        let resendable = matches!(&proposal, Proposal::Write(Command::Request { .. }));
        // Sized once here; the size travels with it (to the batcher, or the forwarder).
        let bytes = proposal.encoded_len();
        check_write_bytes(bytes)?;
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
            let outcome = match asked {
                Some(l) if l == self.id => self.execute(&proposal, bytes).await,
                Some(l) => match self.address_of(l) {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        self.forwarder
                            .forward(l, addr, proposal.clone(), bytes, left)
                            .await
                    }
                    None => Err(ServerError::NotLeader { leader: None }),
                },
                None => Err(ServerError::NotLeader { leader: None }),
            };
            match outcome {
                Ok((index, response)) => {
                    // Read your writes: this node's answers include the entry from now on
                    // — applied here, or every read here waits for it. A submit is answered
                    // early only while this node keeps up (it applied to within
                    // `EARLY_ANSWER_LAG_MAX` entries of it): a node behind the leader
                    // (catching up, a slow disk) waits as before rather than make every
                    // read wait. A write not applied here by the deadline is answered all
                    // the same (it is committed) and kept for the reads too.
                    let applied = self.applied_index();
                    if applied < index {
                        let early = matches!(answer, Answer::AppliedByLeader)
                            && index - applied <= EARLY_ANSWER_LAG_MAX;
                        if early || !self.applied_through(index, deadline).await {
                            self.answered_through
                                .fetch_max(index, std::sync::atomic::Ordering::Release);
                        }
                    }
                    return match response {
                        Response::Rejected(e) => Err(e.into()),
                        r => Ok((index, r)),
                    };
                }
                // The outcome is unknown. A request is sent again (to the new leader as
                // soon as one is known); anything else reports it.
                Err(ServerError::Unavailable(m)) if resendable && Instant::now() < deadline => {
                    tracing::debug!(leader = ?asked, "resending a write: {m}");
                    if !self
                        .leader_change(asked, Duration::from_millis(NOT_LEADER_RETRY_MS))
                        .await
                    {
                        return Err(raft_stopped());
                    }
                }
                // Nothing was proposed: try again as soon as this node sees another leader
                // (an election ending), or after a short pause.
                Err(ServerError::NotLeader { .. }) if Instant::now() < deadline => {
                    if !self
                        .leader_change(asked, Duration::from_millis(NOT_LEADER_RETRY_MS))
                        .await
                    {
                        return Err(raft_stopped());
                    }
                }
                Err(ServerError::NotLeader { .. }) => {
                    return Err(ServerError::Unavailable(format!(
                        "no leader took the write within {} ms; a majority of voters may be down",
                        self.config.write_timeout_ms
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until this node knows a leader other than `was`, at most `max`. False when
    /// Raft has stopped (its metrics ended: a fatal error), so no leader will come: a
    /// resend loop that went on would spin until its deadline.
    pub(super) async fn leader_change(&self, was: Option<u64>, max: Duration) -> bool {
        let mut metrics = self.raft.server_metrics();
        tokio::time::timeout(max, async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.current_leader.is_some() && m.current_leader != was {
                        return true;
                    }
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(true)
    }

    /// An AppendEntries from a leader was taken: this node may campaign from now on.
    pub fn heard_leader(&self) {
        self.leader_heard.notify_one();
    }

    /// The answer to `cmd` when it repeats a request the applied state holds, with the
    /// applied index it was read at.
    pub(super) fn answer_repeat(&self, cmd: &Command) -> Option<(u64, Response)> {
        let a = self.state().read();
        a.state
            .repeat(cmd)
            .map(|r| (a.last_applied.map_or(0, |l| l.index), r))
    }

    /// Performs `proposal`, which encodes to `bytes`, on this node, which believes it
    /// leads.
    pub async fn execute(&self, proposal: &Proposal, bytes: usize) -> Outcome {
        match proposal {
            Proposal::Write(cmd) => {
                check_write_bytes(bytes)?;
                if let Some(answer) = self.answer_repeat(cmd) {
                    return Ok(answer);
                }
                // Bad input never takes a log entry: check against the applied state first
                // (jobs are never removed, so what passes here passes when applied).
                self.state().read().state.check(cmd)?;
                self.batcher.write(cmd.clone(), bytes).await
            }
            Proposal::RemoveNode(id) => self.remove_node(*id).await,
        }
    }

    /// Proposes `cmd` alone, outside the batcher (a command that may not be batched).
    pub(super) async fn client_write(&self, cmd: Command) -> Outcome {
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        crate::batcher::propose(&self.raft, cmd, timeout).await
    }
}

/// When a write is answered (see [`Node::propose_submit`]).
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Once this node applied it.
    AppliedHere,
    /// Once the leader applied it; reads here wait for this node's apply.
    AppliedByLeader,
}

/// A write past `WRITE_BYTES_MAX` is refused before it goes anywhere.
fn check_write_bytes(bytes: usize) -> Result<()> {
    if bytes > WRITE_BYTES_MAX {
        return Err(ServerError::invalid(
            "request",
            format!(
                "encodes to {bytes} bytes; WRITE_BYTES_MAX is {WRITE_BYTES_MAX} (ENTRY_BYTES_MAX {ENTRY_BYTES_MAX} less an entry's framing)"
            ),
        ));
    }
    Ok(())
}

pub(super) fn raft_write_error(
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

/// The answer to a write on a node whose Raft stopped (its log failed, or the node is
/// shutting down): another node can take the write.
fn raft_stopped() -> ServerError {
    ServerError::Unavailable(
        "this node's Raft has stopped (its log failed, or it is shutting down); send the request to another node"
            .into(),
    )
}
