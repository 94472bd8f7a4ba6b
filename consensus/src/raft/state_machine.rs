//! openraft's state machine over [`ClusterState`], with snapshots in the storage crate's
//! [`SnapshotStore`]: built as a stream into a compressed, checksummed file; sent to
//! followers as that file's bytes; installed only after the receiver verified them; and
//! loaded at start-up.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cathedral_storage::{SnapshotMeta as FileMeta, SnapshotStore};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{EventFeed, TypeConfig};
use crate::events::{Event, EventKind};
use crate::state::{ClusterState, Response};

type StorageResult<T> = Result<T, StorageError<u64>>;

/// What a snapshot file's caller metadata holds for Raft.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftSnapshotMeta {
    pub last_log_id: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub snapshot_id: String,
}

impl RaftSnapshotMeta {
    /// Decodes a snapshot file's caller metadata.
    pub fn decode(data: &[u8]) -> io::Result<RaftSnapshotMeta> {
        postcard::from_bytes(data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot metadata: {e}"),
            )
        })
    }
}

/// Reads the snapshot file at `path` (whole-file checksum verified first): its Raft
/// metadata and the state it holds. For the state machine and the offline tools.
pub fn read_snapshot(
    path: &std::path::Path,
) -> Result<(RaftSnapshotMeta, ClusterState), cathedral_storage::Error> {
    let mut reader = cathedral_storage::SnapshotReader::open(path)?;
    let bad = |reason: String| cathedral_storage::Error::Corruption {
        file: path.to_path_buf(),
        offset: 0,
        reason,
    };
    let meta = RaftSnapshotMeta::decode(&reader.info.meta.data).map_err(|e| bad(e.to_string()))?;
    let mut body = Vec::with_capacity(reader.info.body_bytes as usize);
    reader
        .read_to_end(&mut body)
        .map_err(|e| cathedral_storage::Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source: std::sync::Arc::new(e),
        })?;
    let state = ClusterState::from_snapshot(&body).map_err(|e| bad(e.to_string()))?;
    Ok((meta, state))
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

/// The replicated state with what Raft needs beside it.
pub struct StateMachine {
    applied: Arc<RwLock<Applied>>,
    /// Where the jobs collections remove are kept (a server's data directory); none for
    /// a state machine without one.
    archive: Option<Arc<crate::archive::Archive>>,
    /// The events of what is applied, for watchers.
    events: Arc<EventFeed>,
    snapshots: SnapshotStore,
    receiving: Option<PathBuf>,
}

/// The applied state, shared with readers (queries, the scheduler) through
/// [`StateMachine::handle`].
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub state: ClusterState,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
}

/// A read handle on the applied state; it stays valid after the state machine moves into Raft.
pub type AppliedHandle = Arc<RwLock<Applied>>;

impl StateMachine {
    /// Archives the jobs collections remove into `archive` from now on.
    pub fn set_archive(&mut self, archive: Arc<crate::archive::Archive>) {
        self.applied.write().unwrap().state.keep_collected(true);
        self.archive = Some(archive);
    }

    /// Opens the state machine, loading the latest snapshot in `snapshots` if there is one.
    pub fn open(snapshots: SnapshotStore) -> StorageResult<StateMachine> {
        let mut sm = StateMachine {
            applied: Arc::new(RwLock::new(Applied::default())),
            archive: None,
            events: Arc::new(EventFeed::default()),
            snapshots,
            receiving: None,
        };
        if let Some(info) = sm
            .snapshots
            .latest()
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
        {
            sm.load(&info.path)?;
        }
        Ok(sm)
    }

    /// A read handle on the applied state.
    pub fn handle(&self) -> AppliedHandle {
        self.applied.clone()
    }

    /// The events of the entries applied (see [`EventFeed`]).
    pub fn events(&self) -> Arc<EventFeed> {
        self.events.clone()
    }

    /// Replaces the state with the snapshot file at `path` (verified first).
    fn load(&mut self, path: &std::path::Path) -> StorageResult<RaftSnapshotMeta> {
        let (meta, state) = read_snapshot(path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        *self.applied.write().unwrap() = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.membership.clone(),
        };
        // After the state is replaced: a watcher woken by the reset reads the new state.
        self.events.reset(meta.last_log_id.map_or(0, |l| l.index));
        Ok(meta)
    }
}

/// An entry whose apply takes longer, or a wait for the state's lock that does, is
/// logged: every write behind it waits as long (what a stall in the write path is).
pub const APPLY_SLOW: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes a snapshot of a copy of the state.
pub struct SnapshotBuilder {
    state: ClusterState,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshots: SnapshotStore,
}

/// Opens a snapshot file for Raft. The open is blocking work (`crate::blocking`): tokio's
/// own `tokio::fs::File::open` would hand it to the blocking pool, whose answer comes at a
/// real-time moment a simulation cannot repeat.
async fn open_snapshot(path: &std::path::Path) -> StorageResult<Box<tokio::fs::File>> {
    let path = path.to_path_buf();
    let f = crate::blocking::run(move || std::fs::File::open(path))
        .await
        .map_err(|e| snap_err(ErrorVerb::Read, io::Error::other(e)))?
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok(Box::new(tokio::fs::File::from_std(f)))
}

/// The nice value a snapshot is built at.
pub const SNAPSHOT_BUILD_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`SNAPSHOT_BUILD_NICE`] (on Linux the nice
/// value is the thread's own; threads it starts, such as zstd's compression worker,
/// inherit it). A snapshot of a large state takes most of a core for a second or more;
/// at nice 10 the scheduler gives the threads that apply entries and answer writes ~10×
/// its share when they compete, so the write path does not queue behind it, and it uses
/// what they leave. Its own thread, because a thread cannot raise its priority back
/// without privilege (a blocking-pool thread would stay lowered for later work). Best
/// effort: where the call fails the snapshot is built at the normal priority.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, getpriority and setpriority have no memory effects; `who` is
        // this thread. Only ever lowered: a process already niced past it stays there.
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if now >= SNAPSHOT_BUILD_NICE {
                return;
            }
            libc::setpriority(libc::PRIO_PROCESS, tid, SNAPSHOT_BUILD_NICE)
        };
        if rc != 0 {
            tracing::debug!(
                error = %io::Error::last_os_error(),
                "snapshot build at the normal priority"
            );
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Term, index and when it was built: two builds at one index hold the same state.
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{created_ms}", l.leader_id.term, l.index),
            None => "initial".to_string(),
        };
        let meta = RaftSnapshotMeta {
            last_log_id: self.last_applied,
            membership: self.membership.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let file_meta = FileMeta {
            last: self.last_applied.map(|l| (l.index, l.leader_id.term)),
            data: postcard::to_stdvec(&meta).expect("metadata encodes"),
            created_ms,
        };
        // The builder owns its copy of the state: stream its encoding into the file, on a
        // thread of its own at a low CPU priority (see [`lower_this_threads_priority`]).
        let state = std::mem::take(&mut self.state);
        let store = self.snapshots.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let build = move || {
            let built = store.writer(file_meta).and_then(|mut w| {
                let path = w.path().to_path_buf();
                state
                    .write_snapshot(&mut w)
                    .map_err(|e| cathedral_storage::Error::io("write", path, e))?;
                w.finish()
            });
            let _ = tx.send(built);
        };
        if crate::blocking::inline_here() {
            // A simulation's thread: built in place (see `crate::blocking`).
            build();
        } else {
            std::thread::Builder::new()
                .name("snapshot-build".into())
                .spawn(move || {
                    lower_this_threads_priority();
                    build();
                })
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        }
        let info = rx
            .await
            .map_err(|_| snap_err(ErrorVerb::Write, io::Error::other("snapshot thread ended")))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            snapshot: open_snapshot(&info.path).await?,
        })
    }
}

/// Places a received snapshot file: usually its bytes are in the file
/// `begin_receiving_snapshot` handed out (`receiving`), but any file may come back, so the
/// inodes are compared and another file is copied to a new incoming file first. Then the store
/// verifies it (checksum, version) and installs it.
fn place_received(
    mut given: std::fs::File,
    receiving: Option<PathBuf>,
    store: &SnapshotStore,
) -> io::Result<cathedral_storage::SnapshotInfo> {
    use std::io::{Seek, Write};
    use std::os::unix::fs::MetadataExt;
    given.flush()?;
    let given_ino = given.metadata()?.ino();
    let path = match receiving {
        Some(p) if std::fs::metadata(&p).is_ok_and(|m| m.ino() == given_ino) => {
            given.sync_all()?;
            p
        }
        other => {
            if let Some(p) = other {
                let _ = std::fs::remove_file(p);
            }
            let incoming = store.incoming_path();
            let copied = std::fs::File::create(&incoming).and_then(|mut copy| {
                given.seek(io::SeekFrom::Start(0))?;
                io::copy(&mut given, &mut copy)?;
                copy.sync_all()
            });
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&incoming);
                return Err(e);
            }
            incoming
        }
    };
    drop(given);
    store.install_incoming(&path).map_err(io::Error::other)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let a = self.applied.read().unwrap();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut out = Vec::new();
        let waited = std::time::Instant::now();
        let mut a = self.applied.write().unwrap();
        if waited.elapsed() > APPLY_SLOW {
            tracing::warn!(
                waited_ms = waited.elapsed().as_millis() as u64,
                "apply waited for the state's lock (a reader held it)"
            );
        }
        // (A state loaded from a snapshot since starts without the flag.)
        a.state.keep_collected(self.archive.is_some());
        for e in entries {
            a.last_applied = Some(e.log_id);
            let index = e.log_id.index;
            let (response, events) = match e.payload {
                // A leader's first entry of its term.
                EntryPayload::Blank => {
                    let mut ev = Event::new(EventKind::LeaderChanged);
                    ev.index = index;
                    ev.node = Some(e.log_id.leader_id.node_id);
                    ev.detail = format!("term {}", e.log_id.leader_id.term);
                    (Response::Done, vec![ev])
                }
                EntryPayload::Normal(cmd) => {
                    let started = std::time::Instant::now();
                    let applied = a.state.apply_recording(index, &cmd);
                    if let Some(archive) = &self.archive {
                        let collected = a.state.take_collected();
                        if let Err(e) = archive.append(index, cmd.at_ms(), collected) {
                            tracing::error!(
                                index,
                                "archive: {e}; the jobs this entry collected are not archived"
                            );
                        }
                    }
                    if started.elapsed() > APPLY_SLOW {
                        tracing::warn!(
                            index,
                            kind = cmd.kind(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "one entry held apply (and every write behind it)"
                        );
                    }
                    applied
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(e.log_id), m);
                    (Response::Done, Vec::new())
                }
            };
            self.events.record(index, events);
            out.push(response);
        }
        drop(a);
        self.events.announce();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let a = self.applied.read().unwrap();
        // Apply waits while the copy is taken (it holds the state's lock): every part is
        // a persistent map or small, so this is O(1) in the jobs; nothing is hashed here.
        let started = std::time::Instant::now();
        let state = a.state.snapshot_copy();
        let took = started.elapsed();
        if took > std::time::Duration::from_millis(20) {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                "the snapshot's copy of the state held apply"
            );
        }
        SnapshotBuilder {
            // O(1) (persistent maps, shared): apply is not held up for the state's size.
            state,
            last_applied: a.last_applied,
            membership: a.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<tokio::fs::File>> {
        let path = self.snapshots.incoming_path();
        let open = path.clone();
        let f = crate::blocking::run(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(open)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, io::Error::other(e)))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        if let Some(old) = self.receiving.replace(path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> StorageResult<()> {
        let w = |e: io::Error| snap_err(ErrorVerb::Write, e);
        // Waits for a write still in flight, then the file is a plain one: the rest is
        // blocking work in one piece (`crate::blocking`), not one pool hop per call.
        let given = snapshot.into_std().await;
        let receiving = self.receiving.take();
        let store = self.snapshots.clone();
        let info = crate::blocking::run(move || place_received(given, receiving, &store))
            .await
            .map_err(|e| w(io::Error::other(e)))?
            .map_err(w)?;
        let loaded = self.load(&info.path)?;
        if loaded.last_log_id != meta.last_log_id {
            return Err(sm_err(
                ErrorVerb::Write,
                io::Error::other(format!(
                    "received snapshot holds {:?}, Raft announced {:?}",
                    loaded.last_log_id, meta.last_log_id
                )),
            ));
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(info) = self
            .snapshots
            .latest()
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let meta =
            RaftSnapshotMeta::decode(&info.meta.data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: meta.last_log_id,
                last_membership: meta.membership,
                snapshot_id: meta.snapshot_id,
            },
            snapshot: open_snapshot(&info.path).await?,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_snapshot_thread_lowers_its_own_priority_and_no_other() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let inside = std::thread::spawn(|| {
            super::lower_this_threads_priority();
            // A thread it starts inherits the lowered priority (zstd's worker does).
            let child = std::thread::spawn(|| unsafe {
                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
            })
            .join()
            .unwrap();
            let own =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            (own, child)
        })
        .join()
        .unwrap();
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let want = super::SNAPSHOT_BUILD_NICE.max(before);
        assert_eq!(inside, (want, want));
        assert_eq!(after, before, "the calling thread keeps its priority");
    }
}
