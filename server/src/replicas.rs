//! Output that outlives its node: every finished attempt's output is copied to one other
//! node — a voter chosen by [`replica_holder`], a pure function of the voters and the
//! attempt, so every node knows where the copy is without asking — and the executing
//! node deletes its own file only once that copy is confirmed ([`confirmed`]).
//!
//! ```text
//!  applied JobFinished / JobRetried (event feed) ─▶ replica_holder == me?
//!      └─ yes: FetchOutput from the node that ran it ─▶ <data>/outputs/<job>-<attempt>.log
//!  GetJobOutput: the node that ran it ─(unreachable)─▶ a local copy ─▶ the holder
//!  retention on the executing node: delete only what the holder confirms it has
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cathedral_consensus::events::EventKind;
use cathedral_consensus::raft::Kinds;
use cathedral_consensus::NodeId;
use cathedral_executor::output_path;
use tokio_stream::StreamExt;

use crate::api::internal::FetchOutputRequest;
use crate::node::Node;

/// How often the replicator looks for attempts to copy (and retries failed copies).
pub const REPLICATE_INTERVAL: Duration = Duration::from_secs(1);
/// Copies waiting for a retry at most (the oldest are dropped past it, with a warning).
pub const REPLICATION_BACKLOG_MAX: usize = 10_000;
/// Events looked at per read of the feed (under its lock).
const EVENTS_PER_PASS: usize = 4096;
/// The events that name an attempt's end: the copies of its output follow them.
const ENDED: Kinds = Kinds::of(&[
    EventKind::JobFinished,
    EventKind::JobRetried,
    EventKind::JobCancelled,
]);

/// The node that keeps the copy of `attempt` of `job`, which ran on `ran_on`: one of the
/// voters other than `ran_on`, spread by job and attempt. `None` when there is no other.
pub fn replica_holder(voters: &[NodeId], job: u64, attempt: u32, ran_on: NodeId) -> Option<NodeId> {
    let mut others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != ran_on).collect();
    others.sort_unstable();
    others.dedup();
    if others.is_empty() {
        return None;
    }
    let spread = job
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(attempt as u64);
    Some(others[(spread % others.len() as u64) as usize])
}

/// The voters of the current membership.
pub fn voters(node: &Node) -> Vec<NodeId> {
    let m = node.raft.metrics();
    let m = m.borrow();
    m.membership_config.membership().voter_ids().collect()
}

/// Copies `attempt` of `job` from `from` into this node's outputs directory (whole, then
/// renamed into place). `Ok(false)`: the attempt wrote nothing there is to copy.
pub async fn copy_from(node: &Node, from: NodeId, job: u64, attempt: u32) -> Result<bool, String> {
    let path = output_path(node.data_dir(), job, attempt);
    if path.exists() {
        return Ok(true);
    }
    let (first, mut stream) = match open_remote(node, from, job, attempt, 0, false).await {
        Ok(opened) => opened,
        Err(Open::Empty) => return Ok(false),
        Err(Open::Failed(e)) => return Err(e.message().to_string()),
    };
    let mut data = first.data;
    while let Some(chunk) = stream.next().await {
        let c = chunk.map_err(|e| e.message().to_string())?;
        if c.offset as usize != data.len() {
            return Err(format!("chunk at {} after {} bytes", c.offset, data.len()));
        }
        data.extend_from_slice(&c.data);
    }
    if data.is_empty() {
        return Ok(false);
    }
    let dir = path.parent().expect("outputs dir").to_path_buf();
    cathedral_consensus::blocking::run(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        // The copy is durable before its name says it is there (the holder confirms the
        // copy to the retention that may then drop the original): data, rename, directory.
        let tmp = path.with_extension("log.part");
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &data)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Why a source could not serve an output.
pub enum Open {
    /// It answered: there is no output (the attempt wrote nothing).
    Empty,
    /// It could not be reached, or does not have the output.
    Failed(tonic::Status),
}

/// The output stream of `attempt` of `job` from node `from`, with its first chunk read, so
/// a source that cannot serve it is known before anything is passed on.
pub async fn open_remote(
    node: &Node,
    from: NodeId,
    job: u64,
    attempt: u32,
    offset: u64,
    follow: bool,
) -> Result<
    (
        crate::api::internal::OutputBytes,
        tonic::Streaming<crate::api::internal::OutputBytes>,
    ),
    Open,
> {
    let addr = node.address_of(from).ok_or_else(|| {
        Open::Failed(tonic::Status::unavailable(format!(
            "node {from} is not a member"
        )))
    })?;
    let mut client = node
        .peers
        .client(from, &addr)
        .map_err(|e| Open::Failed(tonic::Status::unavailable(e)))?;
    let mut stream = client
        .fetch_output(FetchOutputRequest {
            target: from,
            job_id: job,
            attempt,
            offset,
            follow,
        })
        .await
        .map_err(Open::Failed)?
        .into_inner();
    match stream.next().await {
        Some(Ok(first)) => Ok((first, stream)),
        Some(Err(e)) => Err(Open::Failed(e)),
        None => Err(Open::Empty),
    }
}

/// Whether `holder` has the first `len` bytes of the output of `attempt` of `job`: it
/// answers the last of them.
pub async fn confirmed(node: &Node, holder: NodeId, job: u64, attempt: u32, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let ask = open_remote(node, holder, job, attempt, len - 1, false);
    // A holder that does not answer (frozen, partitioned) confirms nothing.
    matches!(
        tokio::time::timeout(CONFIRM_TIMEOUT, ask).await,
        Ok(Ok((first, _))) if !first.data.is_empty()
    )
}

/// How long retention waits for a holder to confirm a copy.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the attempt's outcome shows output (an attempt that wrote nothing has no file
/// to copy: no call is made for it).
fn wrote_something(node: &Node, job: u64, attempt: u32) -> bool {
    let a = node.state().read();
    a.state
        .attempt(job, attempt)
        .and_then(|x| x.outcome)
        .is_some_and(|o| !o.output_tail.is_empty())
}

/// Runs until `stop`: copies the attempts this node holds the copy of, as they end.
pub async fn run(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Woken by attempts ending only (every applied batch was a wake-up per write), and
    // reading only those: the others were copied out of the feed at every pass.
    let mut applied = node.events.subscribe_to(ENDED);
    let mut from = node.events.earliest();
    // (job, attempt, ran on) copies that failed, retried every pass.
    let mut backlog: BTreeSet<(u64, u32, NodeId)> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            // Ended only with the state machine (Raft stopped); see the leader loop.
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(REPLICATE_INTERVAL) => {}
        }
        // Every ending since the last pass (the submissions between them may be many more
        // than a pass looks at), EVENTS_PER_PASS at a time under the feed's lock.
        let mut events = Vec::new();
        loop {
            match node.events.read_only(from, EVENTS_PER_PASS, ENDED) {
                Ok(only) => {
                    from = only.next;
                    events.extend(only.events);
                    if only.to_the_end {
                        break;
                    }
                }
                Err(c) => from = c.earliest,
            }
        }
        let voters = voters(&node);
        for e in events {
            let (Some(job), Some(attempt), Some(ran_on)) = (e.job, e.attempt, e.node) else {
                continue;
            };
            if ran_on != node.id
                && replica_holder(&voters, job, attempt, ran_on) == Some(node.id)
                && wrote_something(&node, job, attempt)
            {
                backlog.insert((job, attempt, ran_on));
            }
        }
        while backlog.len() > REPLICATION_BACKLOG_MAX {
            let first = *backlog.iter().next().expect("not empty");
            tracing::warn!(
                job = first.0,
                attempt = first.1,
                "output copy backlog full; dropping the oldest"
            );
            backlog.remove(&first);
        }
        let mut done = Vec::new();
        for &(job, attempt, ran_on) in backlog.iter() {
            match copy_from(&node, ran_on, job, attempt).await {
                Ok(_) => done.push((job, attempt, ran_on)),
                Err(e) => tracing::debug!(job, attempt, from = ran_on, "output copy: {e}"),
            }
            if *stop.borrow() {
                return;
            }
        }
        for d in done {
            backlog.remove(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_another_voter_spread_by_attempt() {
        let voters = [3, 1, 2];
        for job in 0..50 {
            for attempt in 1..3 {
                for ran_on in [1, 2, 3, 9] {
                    let h = replica_holder(&voters, job, attempt, ran_on).unwrap();
                    assert_ne!(h, ran_on);
                    assert!(voters.contains(&h));
                    // Every node computes the same holder, whatever order it lists voters in.
                    assert_eq!(replica_holder(&[2, 3, 1], job, attempt, ran_on), Some(h));
                }
            }
        }
        let spread: BTreeSet<NodeId> = (0..50)
            .filter_map(|j| replica_holder(&voters, j, 1, 9))
            .collect();
        assert_eq!(spread.len(), 3, "copies spread over the voters");
        assert_eq!(
            replica_holder(&[1], 5, 1, 1),
            None,
            "a lone node has no other"
        );
    }
}
