//! An in-process network for Raft clusters in tests and benchmarks: a [`Router`] delivers
//! RPCs between nodes of one process and can partition them, drop a share of messages and
//! delay them; [`start_node`] opens a node on real files in a directory.
//!
//! It never touches a socket; the server's gRPC transport is the real network.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cathedral_storage::{Log, Options, SnapshotOptions, SnapshotStore};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use rand::Rng;

use crate::raft::{AppliedHandle, LogStore, RaftSettings, StateMachine, TypeConfig};

/// Delivers RPCs between the nodes registered in it.
#[derive(Default)]
pub struct Router {
    /// The running nodes.
    pub nodes: Mutex<BTreeMap<u64, Raft<TypeConfig>>>,
    /// Node → partition group; messages flow only within a group (absent: group 0).
    pub groups: Mutex<BTreeMap<u64, u32>>,
    /// Share of messages dropped, in percent.
    pub drop_percent: AtomicU32,
    /// Delay before each message is delivered.
    pub delay_ms: AtomicU64,
    /// The generator deciding drops; set it (seeded) before setting `drop_percent`.
    pub rng: Mutex<Option<rand::rngs::StdRng>>,
}

impl Router {
    fn reach(&self, from: u64, to: u64) -> Result<Raft<TypeConfig>, io::Error> {
        let groups = self.groups.lock().unwrap();
        if groups.get(&from).copied().unwrap_or(0) != groups.get(&to).copied().unwrap_or(0) {
            return Err(io::Error::other(format!("{from} -> {to}: partitioned")));
        }
        drop(groups);
        let pct = self.drop_percent.load(Ordering::Relaxed);
        if pct > 0 {
            let mut rng = self.rng.lock().unwrap();
            let rng = rng.get_or_insert_with(|| rand::SeedableRng::seed_from_u64(0));
            if rng.gen_range(0..100) < pct {
                return Err(io::Error::other(format!("{from} -> {to}: dropped")));
            }
        }
        self.nodes
            .lock()
            .unwrap()
            .get(&to)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("{to} is down")))
    }

    async fn delay(&self) {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// openraft's network factory for one node of a [`Router`].
#[derive(Clone)]
pub struct Net {
    pub router: Arc<Router>,
    pub from: u64,
}

/// A connection from one node to another through the router.
pub struct Conn {
    router: Arc<Router>,
    from: u64,
    to: u64,
}

impl RaftNetworkFactory<TypeConfig> for Net {
    type Network = Conn;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

fn unreachable<E: std::error::Error>(e: io::Error) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.router.delay().await;
        let raft = self.router.reach(self.from, self.to).map_err(unreachable)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.router.delay().await;
        let raft = self.router.reach(self.from, self.to).map_err(unreachable)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.router.delay().await;
        let raft = self.router.reach(self.from, self.to).map_err(unreachable)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

/// Opens node `id` on the data in `dir` (log in `dir/raft`, snapshots in
/// `dir/snapshots`), registers it with `router` and returns it with a read handle on its
/// applied state.
pub async fn start_node(
    router: &Arc<Router>,
    id: u64,
    dir: &Path,
    settings: &RaftSettings,
) -> Result<(Raft<TypeConfig>, AppliedHandle), String> {
    let log = Log::open(dir.join("raft"), Options::default()).map_err(|e| e.to_string())?;
    let snapshots = SnapshotStore::open(
        cathedral_storage::snapshots_dir(dir),
        SnapshotOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let sm = StateMachine::open(snapshots).map_err(|e| e.to_string())?;
    let handle = sm.handle();
    let config = settings.openraft_config("local")?;
    let net = Net {
        router: router.clone(),
        from: id,
    };
    let store = LogStore::new(Arc::new(log)).map_err(|e| e.to_string())?;
    let raft = Raft::new(id, config, net, store, sm)
        .await
        .map_err(|e| e.to_string())?;
    router.nodes.lock().unwrap().insert(id, raft.clone());
    Ok((raft, handle))
}
