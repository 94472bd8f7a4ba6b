//! One Cathedral node: its Raft instance over the data directory, its identity, and the
//! paths every write and membership change takes.
//!
//! ```text
//!  API call ──▶ Node::propose ──(leader)──▶ check against applied state ──▶ batcher ──▶ client_write
//!                    │
//!                    └─(follower)──▶ forwarder: ForwardBatch to the leader ──▶ the same
//!                    then: wait until this node applied the entry (read your writes);
//!                    an unknown outcome (leader replaced or gone): the same request again
//! ```
//!
//! # Layout
//!
//! - `mod.rs`: the `Node` and its start (`Node::open`: data directory, stores, gossip,
//!   Raft, in that order), its status and shutdown.
//! - `open`: the stores a start opens — the log, snapshots checked, the state machine and
//!   archive — the address check, gossip's start and the quiet start after a restart.
//! - `write`: the write path — request ids, `propose`, `execute` on the leader, resends.
//! - `membership`: bootstrap, join, promotion, removal, registration upkeep.
//! - `gossip_side`: tags, the partition check, the node list, gossip seeds, known peers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use cathedral_consensus::raft::{
    AppliedHandle, CommittedHandle, EventFeed, LogStore, StateMachine, TypeConfig,
};
use cathedral_consensus::requests::RequestId;
use cathedral_consensus::{Capacity, Command, NodeInfo, NodeStatus, Response, Role};
use cathedral_storage::{Log, Options, SnapshotOptions, SnapshotStore};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};

use crate::api::internal::{JoinReply, JoinRequest};
use crate::config::Config;
use crate::data_dir::DataDir;
use crate::error::{Result, ServerError};
use crate::gossip::{GossipError, Membership, Published};
use crate::identity::{new_cluster_id, Identity};
pub use crate::proposal::{Outcome, Proposal, ENTRY_BYTES_MAX, WRITE_BYTES_MAX};
use crate::security::Security;
use crate::tags::TagOverlay;
use crate::transport::{Network, Peers};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a Join may take (the new node catches up as a learner first).
pub const JOIN_TIMEOUT_MS: u64 = 120_000;
/// Longest pause before a write that found no leader is tried again (it is tried at once
/// when a new leader becomes known).
const NOT_LEADER_RETRY_MS: u64 = 50;
/// How often [`Node::failed`] looks at the log for a failure its threads met.
pub const LOG_FAILURE_CHECK: Duration = Duration::from_secs(1);

/// How long shutdown waits for the node's own tasks (writes on their way) before it stops
/// Raft under them.
pub const SHUTDOWN_TASKS_WAIT: Duration = Duration::from_secs(5);
/// Period of the membership and registration upkeep.
const UPKEEP_INTERVAL_MS: u64 = 500;

/// The running node.
pub struct Node {
    pub id: u64,
    pub config: Config,
    /// Every path in the data directory.
    pub data: DataDir,
    /// TLS and node credentials.
    pub security: Security,
    /// Every task a request or the node starts beside the loops `start` owns: shutdown
    /// cancels `stopping`, then waits for them (see [`Node::spawn_owned`]).
    tasks: TaskTracker,
    stopping: CancellationToken,
    pub raft: Raft<TypeConfig>,
    /// The applied state, read through [`Node::state`].
    applied: StateView,
    /// The events of what is applied, for `WatchEvents` and `/v1/events`.
    pub events: Arc<EventFeed>,
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
    /// The highest log index of a write this node answered before it applied it itself
    /// (a submit forwarded to the leader, see [`Node::propose_submit`]; any write not
    /// applied here by its deadline); every call that
    /// reads this node's state waits until it applied it ([`Node::caught_up`]), so a
    /// client reads its writes wherever it wrote them.
    answered_through: std::sync::atomic::AtomicU64,
    /// What keeps this node from campaigning (a quiet start, entries it owes).
    holds: Arc<ElectionHolds>,
    /// The jobs retention collected, kept in the data directory.
    pub archive: Arc<cathedral_consensus::archive::Archive>,
    /// The clock this node's commands carry (`Edges::clock`).
    clock: Arc<dyn crate::edges::Clock>,
    /// What this node offers (slots, CPUs, memory), as read at its start.
    capacity: Capacity,
    /// Held by every membership change this node makes (see `membership::one_change`).
    membership_changes: tokio::sync::Mutex<()>,
}

/// The applied state, read-only: what every reader beside apply gets (the scheduler, the
/// services, metrics, the worker). A read holds the state's lock and apply waits for it:
/// read what is needed and let the guard go (it is not `Send`, so it cannot be held
/// across an await).
#[derive(Clone)]
pub struct StateView(AppliedHandle);

impl StateView {
    /// The applied state with the log id it was applied through and the membership.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, cathedral_consensus::raft::Applied> {
        // Poisoned only if apply panicked while writing: the state may be half applied
        // and Raft has stopped; no reader should answer from it.
        self.0
            .read()
            .expect("the applied state: apply panicked while changing it")
    }
}

/// How often a repairing node checks whether it holds what it owes again.
const OWED_CHECK_MS: u64 = 250;

/// One reason a node may not campaign now.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// A restarted member waits to hear a leader first (`quiet_start`).
    Quiet,
    /// The log owes acknowledged entries it lost to disk damage.
    Owed,
}

/// The reasons a node may not campaign; elections are on when none holds.
#[derive(Debug, Default)]
pub(crate) struct ElectionHolds {
    /// (quiet, owed). One lock around the change and the `elect` call, so two holds
    /// changed at once cannot leave elections set from a stale pair.
    holds: std::sync::Mutex<(bool, bool)>,
}

impl ElectionHolds {
    fn set(&self, raft: &Raft<TypeConfig>, hold: Hold, on: bool) {
        let mut h = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        match hold {
            Hold::Quiet => h.0 = on,
            Hold::Owed => h.1 = on,
        }
        raft.runtime_config().elect(!h.0 && !h.1);
    }
}

mod gossip_side;
mod membership;
mod open;
mod write;

use gossip_side::*;
use membership::*;
use open::*;
use write::*;

impl Node {
    /// Opens the data directory (locking it), the log, snapshots and identity, and starts
    /// Raft. Does not initialise or join a cluster: see [`bootstrap`](Self::bootstrap).
    ///
    /// Long on purpose: the node's composition, each part opened after what it needs
    /// (directory, security, log, snapshots, state, Raft) — the order is the point.
    pub async fn open(config: Config, edges: crate::edges::Edges) -> Result<Arc<Node>> {
        let data = DataDir::create(&config.data_dir)?;
        let security = Security::load(config.tls.as_ref(), &config.gossip.cluster_keys)?;
        if config.metrics {
            crate::metrics::install();
        }
        // The log takes the directory's LOCK (a second server on it fails here), before
        // anything is written in the directory.
        let Stores {
            log,
            snapshots,
            mut sm,
            archive,
        } = open_stores(&config, &data, edges.inline_storage)?;
        let identity = Identity::load_or_create(&data.identity_file())?;
        sm.set_archive(archive.clone());
        let applied = sm.handle();
        let events = sm.events();
        let store = LogStore::new(log.clone())
            .map_err(|e| ServerError::Raft(format!("open log store: {e}")))?;
        let committed = store.committed_handle();
        let overlay = TagOverlay::load(&data.tags_file())?;
        let gossip_edges = crate::gossip::GossipEdges {
            transport: edges.gossip.clone(),
            started_ms: Some(edges.clock.now_ms()),
        };
        // Read once: the machine's CPUs (through its cgroups) and memory cost a few file
        // reads, and a node re-registers its capacity on every upkeep tick.
        let capacity = capacity(config.slots);
        let gossip =
            start_gossip(&config, &data, &identity, &overlay, &capacity, gossip_edges).await?;
        let peers = Peers::new(identity.node_id, security.clone(), edges.network.clone());
        let raft_config = config
            .raft
            .openraft_config("cathedral")
            .map_err(ServerError::Config)?;
        let phase = std::time::Instant::now();
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
        tracing::info!(ms = phase.elapsed().as_millis() as u64, "raft started");
        tokio::spawn(address_check(
            raft.clone(),
            identity.node_id,
            config.advertise.clone(),
            config.data_dir.clone(),
        ));
        let leader_heard = Arc::new(tokio::sync::Notify::new());
        let holds = Arc::new(ElectionHolds::default());
        quiet_start(&raft, &holds, &config.raft, leader_heard.clone());
        if let Some(owed) = log.owed() {
            tracing::warn!(
                through = owed.index,
                term = owed.term,
                "repairing: this node owes acknowledged entries it lost to disk damage; it fetches them from the leader and neither campaigns nor votes for a candidate behind them until then"
            );
            holds.set(&raft, Hold::Owed, true);
        }
        let batcher = crate::batcher::Batcher::start(
            raft.clone(),
            Duration::from_millis(config.write_timeout_ms),
        );
        let forwarder = crate::forwarder::Forwarder::start(
            peers.clone(),
            identity.node_id,
            raft.server_metrics(),
            Duration::from_millis(config.write_timeout_ms),
        );
        let node = Arc::new(Node {
            holds,
            data,
            security,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            incarnation: cathedral_consensus::rng::random(),
            next_request: std::sync::atomic::AtomicU64::new(1),
            answered_through: std::sync::atomic::AtomicU64::new(0),
            leader_heard,
            batcher,
            forwarder,
            id: identity.node_id,
            config,
            raft,
            applied: StateView(applied),
            archive,
            events,
            peers,
            snapshots,
            gossip,
            tag_overlay: tokio::sync::Mutex::new(overlay),
            membership_changes: tokio::sync::Mutex::new(()),
            identity: Mutex::new(identity),
            log: Mutex::new(Some(log)),
            committed,
            clock: edges.clock,
            capacity,
        });
        node.watch_owed();
        Ok(node)
    }

    /// What this node owes its cluster (acknowledged entries its log lost to disk damage,
    /// see [`open_log`]) as a Raft log id; `None` when nothing (or the log is closed).
    pub fn owed_log_id(&self) -> Option<openraft::LogId<u64>> {
        let log = self.log.lock().unwrap().clone()?;
        cathedral_consensus::raft::owed_log_id(&log)
    }

    /// While the log owes entries, this node does not campaign; once it holds them again
    /// (the leader sent them, or a snapshot covering them), it may.
    fn watch_owed(self: &Arc<Self>) {
        if self.owed_log_id().is_none() {
            return;
        }
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(OWED_CHECK_MS)).await;
                let Some(node) = node.upgrade() else { return };
                let Some(log) = node.log.lock().unwrap().clone() else {
                    return;
                };
                if log.owed().is_none() {
                    tracing::info!(
                        last_index = log.last_index(),
                        "repaired: the acknowledged entries lost to disk damage are held again; this node votes and may campaign"
                    );
                    node.holds.set(&node.raft, Hold::Owed, false);
                    return;
                }
            }
        });
    }

    /// The data directory's root (absolute).
    /// The log engine's counters, while the log is open.
    /// `limit` entries of the log from `from` (0: the last `limit`), with what each
    /// decided in words, the state's checkpoints and the snapshots held.
    pub fn read_log(&self, from: u64, limit: u32) -> Result<crate::api::v1::ReadLogResponse> {
        use crate::api::v1 as pb;
        use openraft::EntryPayload;
        let log = self
            .log
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| ServerError::Unavailable("the log is closed".into()))?;
        let (first, last) = (
            log.first_index().unwrap_or(0),
            log.last_index().unwrap_or(0),
        );
        let start = if from == 0 {
            last.saturating_sub(u64::from(limit) - 1).max(first)
        } else {
            from.max(first)
        };
        let end = start.saturating_add(u64::from(limit)).min(last + 1);
        let records = if start < end && last > 0 {
            log.read(start..end)?
        } else {
            Vec::new()
        };
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            let e = cathedral_consensus::raft::decode_entry(&r.payload)
                .map_err(|e| ServerError::Storage(format!("entry {}: {e}", r.index)))?;
            let (kind, summary) = match &e.payload {
                EntryPayload::Blank => (
                    "blank".to_string(),
                    "a new leader's first entry".to_string(),
                ),
                EntryPayload::Membership(m) => (
                    "membership".to_string(),
                    format!("voters {:?}", m.voter_ids().collect::<Vec<_>>()),
                ),
                EntryPayload::Normal(cmd) => (cmd.kind().to_string(), summarize(cmd)),
            };
            entries.push(pb::LogEntry {
                index: r.index,
                term: r.term,
                leader_id: e.log_id.leader_id.node_id,
                kind,
                summary,
                bytes: r.payload.len() as u32,
            });
        }
        let (checkpoints, divergences) = {
            let a = self.state().read();
            (
                a.state
                    .checkpoints()
                    .iter()
                    .map(|(i, h)| pb::CheckpointView {
                        index: *i,
                        hash: cathedral_consensus::hex(h),
                    })
                    .collect(),
                a.state.counters().divergences,
            )
        };
        let snapshots = self
            .snapshots
            .list()?
            .into_iter()
            .map(|s| pb::SnapshotView {
                index: s.meta.last.map_or(0, |l| l.0),
                term: s.meta.last.map_or(0, |l| l.1),
                file_bytes: s.file_bytes,
            })
            .collect();
        Ok(pb::ReadLogResponse {
            entries,
            first_index: first,
            last_index: last,
            checkpoints,
            snapshots,
            divergences,
        })
    }

    pub fn log_stats(&self) -> Option<cathedral_storage::Stats> {
        self.log.lock().unwrap().as_ref().map(|l| l.stats())
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data.root()
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.identity.lock().unwrap().cluster_id.clone()
    }

    async fn set_cluster(&self, cluster_id: &str) -> Result<()> {
        self.identity
            .lock()
            .unwrap()
            .set_cluster(&self.data.identity_file(), cluster_id)?;
        self.gossip.set_cluster(cluster_id).await;
        Ok(())
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
        if let Some(owed) = self.owed_log_id() {
            let last = self
                .log
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|l| l.last_index());
            return Some(format!(
                "repairing: acknowledged entries through index {} (term {}) were lost to disk damage \
                 and are being fetched again from the leader (this node's log ends at {}); until \
                 then it does not campaign or vote for a candidate behind them",
                owed.index,
                owed.leader_id.term,
                last.map_or("-".into(), |l| l.to_string())
            ));
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

    /// This node's clock: what its commands carry as `at_ms` (milliseconds since the
    /// epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The applied state (see [`StateView`]).
    pub fn state(&self) -> &StateView {
        &self.applied
    }

    /// The index of the last entry this node applied.
    pub fn applied_index(&self) -> u64 {
        self.state().read().last_applied.map_or(0, |l| l.index)
    }

    /// Resolves `true` once this node applied `index`, `false` at `deadline` (or when the
    /// node begins to shut down) if it has not. Wakes once per applied batch (the event
    /// feed's announcement, made after the state's lock is released), not at every turn
    /// of Raft's core loop as openraft's `wait` does — a follower's forwarded writes each
    /// wait here for their own entry, and woke on every metrics change.
    pub async fn applied_through(&self, index: u64, deadline: Instant) -> bool {
        // Subscribed before the first look: nothing applied after it goes unseen.
        let applied = self.events.subscribe();
        tokio::select! {
            reached = wait_applied(applied, || self.applied_index(), index, deadline) => reached,
            // Nothing more is applied once the node stops: no wait holds its shutdown.
            _ = self.stopping() => self.applied_index() >= index,
        }
    }

    /// Stops Raft and closes the log cleanly (sealing its last segment).
    /// Spawns work shutdown must let finish (a write on its way): Raft is stopped only
    /// after it ends, or after `SHUTDOWN_TASKS_WAIT`.
    pub fn spawn_owned<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Spawns work that ends when the node stops (a stream following a job or its output,
    /// a background join); shutdown stops it and waits for it to end.
    pub fn spawn_until_stop<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stopping.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Resolves once the node cannot go on, with the cause: its log failed a write or a
    /// sync, so the engine stopped (fail-stop — after a failed fsync nothing can tell what
    /// reached the disk) and Raft with it at its next log operation; or Raft's core
    /// stopped on a fatal error of its own (a panic included). The node's process exits
    /// and a restart recovers from what is on disk. Never resolves for a stop the node
    /// asked for ([`shutdown`](Self::shutdown)): that publishes `Fatal::Stopped` first.
    ///
    /// Watches Raft's server metrics (role, leader, membership), which close when the core
    /// ends, and reads the full metrics' running state then: the full metrics change at
    /// every turn of the core's loop, several times per write, and this wait runs on the
    /// process's main thread — watching them woke it 2–3 times per write (measured at one
    /// client, `/proc` context switches), each a futex wake from a worker.
    pub async fn failed(&self) -> String {
        use openraft::error::Fatal;
        let mut server = self.raft.server_metrics();
        loop {
            let state = self.raft.metrics().borrow().running_state.clone();
            match state {
                Err(Fatal::Stopped) => return std::future::pending().await,
                Err(fatal) => return fatal.to_string(),
                Ok(()) => {}
            }
            // A failure the log's own threads met reaches Raft only at its next write;
            // an idle node would otherwise go on with a log that refuses everything.
            if let Some(cause) = self.log_failure() {
                return format!("the log stopped: {cause}");
            }
            tokio::select! {
                changed = server.changed() => {
                    if changed.is_err() {
                        // The core ended; it published its fatal error (or the stop asked
                        // for) first, unless it panicked.
                        let state = self.raft.metrics().borrow().running_state.clone();
                        return match state {
                            Err(Fatal::Stopped) => std::future::pending().await,
                            Err(fatal) => fatal.to_string(),
                            Ok(()) => "Raft's core stopped unexpectedly (it panicked; see the log above)".into(),
                        };
                    }
                }
                () = tokio::time::sleep(LOG_FAILURE_CHECK) => {}
            }
        }
    }

    /// The fatal error this node's log stopped on, if it did.
    pub fn log_failure(&self) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.as_ref()?.failure().map(|e| e.to_string())
    }

    /// Resolves once the node begins to shut down (or stops).
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.stopping.clone().cancelled_owned()
    }

    /// Ends the tasks spawned until stop (streams end, so the gRPC server can finish);
    /// owned tasks go on.
    pub fn begin_shutdown(&self) {
        self.stopping.cancel();
    }

    /// Stops the node's tasks (waiting for those that must finish), then Raft, then closes
    /// the log.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TASKS_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "tasks still running after {} s; stopping anyway",
                SHUTDOWN_TASKS_WAIT.as_secs()
            );
        }
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

/// What a command decided, in words (`words::command`, cut at `SUMMARY_CHARS_MAX`).
fn summarize(cmd: &Command) -> String {
    const SUMMARY_CHARS_MAX: usize = 300;
    let text = cathedral_consensus::words::command(cmd);
    match text.char_indices().nth(SUMMARY_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// Resolves `true` once `current()` (the index applied) reaches `index`, looking again at
/// each change of `applied` (subscribed before the call); `false` at `deadline`, or when
/// `applied`'s sender is gone, if it has not.
async fn wait_applied(
    mut applied: tokio::sync::watch::Receiver<u64>,
    current: impl Fn() -> u64,
    index: u64,
    deadline: Instant,
) -> bool {
    loop {
        if current() >= index {
            return true;
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return current() >= index },
            _ = tokio::time::sleep_until(deadline) => return current() >= index,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_wait_for_an_index_ends_when_it_is_applied_and_not_before() {
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let applied = Arc::new(AtomicU64::new(3));
        let current = {
            let a = applied.clone();
            move || a.load(Ordering::SeqCst)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Applied already.
        assert!(wait_applied(tx.subscribe(), current.clone(), 3, deadline).await);
        // Applied later, in two batches: the wait ends with the second, not before.
        let waiting = tokio::spawn(wait_applied(rx, current.clone(), 7, deadline));
        tokio::time::sleep(Duration::from_millis(100)).await;
        applied.store(5, Ordering::SeqCst);
        tx.send_replace(5);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "ended before index 7 was applied");
        applied.store(7, Ordering::SeqCst);
        tx.send_replace(7);
        assert!(waiting.await.unwrap());
        // Never applied: false at the deadline, not before it.
        let short = Instant::now() + Duration::from_millis(200);
        assert!(!wait_applied(tx.subscribe(), current, 9, short).await);
        assert!(Instant::now() >= short);
    }
}
