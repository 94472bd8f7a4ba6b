//! The leader's write pipeline: concurrent writes become one log entry.
//!
//! openraft 0.9 appends one entry at a time and waits for that append's fdatasync before
//! it takes the next client write, so writes proposed one by one each pay a whole
//! fdatasync and a whole replication round. The batcher queues the writes that arrive
//! while earlier entries are on their way and proposes everything queued as one
//! [`Command::Batch`]: one append, one fdatasync, one round trip to the followers for all
//! of them. A lone write goes alone and waits for nothing.
//!
//! ```text
//!  execute ──▶ queue (QUEUE_MAX) ──▶ batcher ──▶ client_write(Batch) ──▶ one reply each
//!                                     one entry in Raft at a time
//! ```
//!
//! Durability is unchanged: a write is answered only once the entry that carries it is
//! committed (durable on a majority) and applied.

use std::time::Duration;

use cathedral_consensus::raft::TypeConfig;
use cathedral_consensus::{Command, Response};
use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use crate::error::ServerError;
use crate::proposal::{Outcome, WRITE_BYTES_MAX};

/// Most commands in one batch.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Most encoded command bytes in one batch: its entry then stays within `ENTRY_BYTES_MAX`.
pub const BATCH_BYTES_MAX: usize = WRITE_BYTES_MAX;
/// Writes waiting for a batch; callers wait for room beyond it.
pub const QUEUE_MAX: usize = 16 * 1024;

struct Queued {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// Handle on the batcher task.
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Starts the batcher over `raft`; a batch not committed within `write_timeout` fails
    /// every write in it (they may still be applied: the caller says so).
    pub fn start(raft: Raft<TypeConfig>, write_timeout: Duration) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(raft, rx, write_timeout));
        Batcher { tx }
    }

    /// Proposes `cmd` (`bytes` encoded) in the next batch and waits for its reply.
    pub async fn write(&self, cmd: Command, bytes: usize) -> Outcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Queued { cmd, bytes, reply }).await.is_err() {
            return Err(ServerError::Unavailable("the node is shutting down".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(ServerError::Unavailable("the node is shutting down".into())))
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::Receiver<Queued>, write_timeout: Duration) {
    // A write that did not fit the previous batch opens the next one.
    let mut held: Option<Queued> = None;
    loop {
        let first = match held.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut batch = vec![first];
        if batch[0].cmd.batchable() {
            let mut bytes = batch[0].bytes;
            while batch.len() < BATCH_COMMANDS_MAX {
                let Ok(q) = rx.try_recv() else { break };
                if !q.cmd.batchable() || bytes + q.bytes > BATCH_BYTES_MAX {
                    held = Some(q);
                    break;
                }
                bytes += q.bytes;
                batch.push(q);
            }
        }
        // One batch in Raft at a time, written here (not in a task of its own, which saves
        // a hand-over on every write's way): the next batch takes everything that queued
        // while this one was written, replicated and applied. Measured against two and four
        // in flight (BENCHMARKS.md): more in flight means smaller batches — openraft still
        // writes them one after another — more fdatasyncs and more CPU per write, for lower
        // throughput.
        write(&raft, batch, write_timeout).await;
    }
}

/// Proposes `cmd` as one entry and waits, at most `timeout`, until it is committed and
/// applied: the log index and the state's response. The one place the write path hands
/// an entry to Raft (the batcher's batches; `Node::client_write` for the writes that go
/// alone).
pub async fn propose(raft: &Raft<TypeConfig>, cmd: Command, timeout: Duration) -> Outcome {
    // A leader cut off from its quorum keeps waiting for a commit that does not come;
    // the caller hears of it after the timeout.
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(ServerError::not_committed(timeout)),
        Ok(Ok(r)) => Ok((r.log_id.index, r.data)),
        Ok(Err(e)) => Err(ServerError::from_raft_write(e)),
    }
}

/// Proposes `batch` as one entry and answers each of its writes.
async fn write(raft: &Raft<TypeConfig>, batch: Vec<Queued>, write_timeout: Duration) {
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|q| (q.cmd, q.reply)).unzip();
    let n = cmds.len();
    let cmd = if n == 1 {
        cmds.into_iter().next().expect("one")
    } else {
        // The batch's time is its latest command's (each carries its proposer's clock):
        // the batcher reads no clock of its own.
        Command::Batch {
            at_ms: cmds.iter().map(Command::at_ms).max().unwrap_or(0),
            commands: cmds,
        }
    };
    let answers: Vec<Outcome> = match propose(raft, cmd, write_timeout).await {
        Err(e) => vec![Err(e); n],
        Ok((index, response)) => match (n, response) {
            (1, response) => vec![Ok((index, response))],
            (_, Response::Batch(rs)) if rs.len() == n => rs
                .into_iter()
                .map(|response| Ok((index, response)))
                .collect(),
            (_, other) => vec![
                Err(ServerError::Unavailable(format!(
                    "a batch of {n} writes was answered with {other:?}"
                )));
                n
            ],
        },
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use cathedral_consensus::raft::RaftSettings;
    use cathedral_consensus::testkit::{start_node, Router};
    use cathedral_consensus::JobSpec;
    use openraft::BasicNode;

    use super::*;

    fn submit(name: &str) -> Command {
        Command::SubmitJobs {
            at_ms: 1,
            jobs: vec![JobSpec::new(name, &["true"])],
        }
    }

    async fn one_node(dir: &std::path::Path) -> Raft<TypeConfig> {
        let router = Arc::new(Router::default());
        let (raft, _) = start_node(&router, 1, dir, &RaftSettings::default())
            .await
            .unwrap();
        let members = BTreeMap::from([(1, BasicNode::new("node-1"))]);
        raft.initialize(members).await.unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leader")
            .await
            .unwrap();
        raft
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_write_takes_its_own_entry_and_concurrent_writes_share_entries() {
        let dir = tempfile::tempdir().unwrap();
        let raft = one_node(dir.path()).await;
        let batcher = Arc::new(Batcher::start(raft.clone(), Duration::from_secs(10)));

        // Alone: its own entry, answered with its own response (not a batch's).
        let (before, _) = batcher.write(submit("a"), 10).await.unwrap();
        let (index, response) = batcher.write(submit("b"), 10).await.unwrap();
        assert!(
            matches!(response, Response::Submitted { .. }),
            "{response:?}"
        );
        assert_eq!(index, before + 1);

        // Many at once: every one answered, in fewer entries than writes.
        let writes: Vec<_> = (0..200)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.write(submit(&format!("c{i}")), 10).await })
            })
            .collect();
        let (mut indexes, mut jobs) = (BTreeSet::new(), BTreeSet::new());
        for w in writes {
            let (i, response) = w.await.unwrap().unwrap();
            let Response::Submitted { jobs: mine } = response else {
                panic!("{response:?}");
            };
            indexes.insert(i);
            jobs.extend(mine);
        }
        assert!(
            indexes.len() < 200,
            "200 writes took {} entries",
            indexes.len()
        );
        // Each write was answered with its own job, not a neighbour's.
        assert_eq!(jobs.len(), 200);
        raft.shutdown().await.unwrap();
    }
}
