//! Job output files on the node that ran the attempt (where the executor writes them,
//! `<data-dir>/outputs/<job>-<attempt>.log`, or `<job>/<attempt>.log` from earlier
//! versions), read from an offset, optionally following the file until the attempt ends.
//! The executor creates the file at the first byte of output, so an attempt that wrote
//! nothing has none: its output is empty.
//!
//! Where an attempt's output is read from is decided here ([`stream_attempt`]): this
//! node's file when it ran the attempt, else the node that ran it, else the copy its
//! replica holder keeps (see `replicas`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use cathedral_executor::{legacy_output_path, output_path};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub(crate) mod settings;

use crate::api::internal::OutputBytes;
use crate::node::Node;

/// Bytes per output message.
pub const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;
/// How often a follower of an output file looks for new bytes.
const FOLLOW_POLL_MS: u64 = 200;

/// Whether `attempt` of `job` has ended in the applied state (or the job is gone).
fn attempt_ended(node: &Node, job: u64, attempt: u32) -> bool {
    let a = node.state().read();
    match a.state.job(job) {
        Some(j) => {
            j.attempts
                .iter()
                .find(|x| x.number == attempt)
                .is_none_or(|x| x.finished_at_ms.is_some())
                || j.state.is_final()
        }
        None => true,
    }
}

/// `: ` and what became of the attempt, in words (an attempt that could not start wrote no
/// output file, and its reason is there), or nothing when the state does not know it.
fn what_became_of(node: &Node, job: u64, attempt: u32) -> String {
    let a = node.state().read();
    a.state
        .attempt(job, attempt)
        .and_then(|x| x.outcome)
        .map_or(String::new(), |o| {
            format!(": {}", cathedral_consensus::words::outcome(&o))
        })
}

/// Whether a missing output file means "no output (yet)": the attempt is running, or it
/// ended having written nothing (its outcome's tail is empty). Otherwise the file was
/// there and is gone (output retention).
fn nothing_written(node: &Node, job: u64, attempt: u32) -> bool {
    let a = node.state().read();
    a.state
        .attempt(job, attempt)
        .is_some_and(|x| x.outcome.as_ref().is_none_or(|o| o.output_tail.is_empty()))
}

/// One attempt whose output is asked for, as the state (or the archive) records it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub job: u64,
    pub attempt: u32,
    /// The node that ran it.
    pub ran_on: u64,
    /// Whether it has ended.
    pub ended: bool,
}

/// Streams `a`'s output into `tx` from wherever it is (with `follow`, until it ends).
///
/// This node reads its own file when it ran the attempt and has it, or may yet (the
/// attempt runs), or no copy is known elsewhere; a file retention removed once its copy
/// was confirmed is read from the copy, as any other node does. Otherwise the node that
/// ran it is asked, and if it cannot answer (gone, removed, down), the attempt's replica
/// holder — which may be this node.
pub async fn stream_attempt(
    node: Arc<Node>,
    a: Attempt,
    follow: bool,
    tx: mpsc::Sender<Result<OutputBytes, tonic::Status>>,
) {
    let holder = crate::replicas::replica_holder(
        &crate::replicas::voters(&node),
        a.job,
        a.attempt,
        a.ran_on,
    );
    let here_file = || output_path(node.data_dir(), a.job, a.attempt).exists();
    if a.ran_on == node.id && (!a.ended || here_file() || holder.is_none()) {
        stream_local(node.clone(), a.job, a.attempt, 0, follow, tx).await;
        return;
    }
    let mut last = None;
    for source in [Some(a.ran_on), holder].into_iter().flatten() {
        if source == node.id {
            if here_file() {
                stream_local(node.clone(), a.job, a.attempt, 0, follow, tx).await;
                return;
            }
            continue;
        }
        match crate::replicas::open_remote(&node, source, a.job, a.attempt, 0, follow).await {
            Ok((first, mut stream)) => {
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                use tokio_stream::StreamExt;
                while let Some(item) = stream.next().await {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Err(crate::replicas::Open::Empty) => return,
            Err(crate::replicas::Open::Failed(e)) => last = Some(e),
        }
    }
    let _ = tx
        .send(Err(last.unwrap_or_else(|| {
            tonic::Status::unavailable(format!(
                "node {}, which ran the attempt, is not a member and no copy is known",
                a.ran_on
            ))
        })))
        .await;
}

/// Streams the local output file from `offset` into `tx`; with `follow`, keeps reading
/// until the attempt has ended and every byte was sent. A missing file is an error unless
/// following (the attempt may not have written yet).
pub async fn stream_local(
    node: Arc<Node>,
    job: u64,
    attempt: u32,
    mut offset: u64,
    follow: bool,
    tx: mpsc::Sender<Result<OutputBytes, tonic::Status>>,
) {
    let mut path = output_path(node.data_dir(), job, attempt);
    // Written by an earlier version: its layout.
    let legacy = legacy_output_path(node.data_dir(), job, attempt);
    if !path.exists() && legacy.exists() {
        path = legacy;
    }
    loop {
        // Checked before reading, so bytes written before the end are never missed.
        let ended = attempt_ended(&node, job, attempt);
        let p = path.clone();
        let read = cathedral_consensus::blocking::run(move || read_from(&p, offset)).await;
        let chunks = match read {
            Ok(Ok(chunks)) => chunks,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound && follow && !ended => {
                Vec::new()
            }
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::NotFound
                    && nothing_written(&node, job, attempt) =>
            {
                if ended || !follow {
                    return;
                }
                Vec::new()
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = tx
                    .send(Err(tonic::Status::not_found(format!(
                        "no output for job {job} attempt {attempt} on node {}{}",
                        node.id,
                        what_became_of(&node, job, attempt)
                    ))))
                    .await;
                return;
            }
            Ok(Err(e)) => {
                let _ = tx
                    .send(Err(tonic::Status::internal(format!(
                        "read {}: {e}",
                        path.display()
                    ))))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                return;
            }
        };
        let got_some = !chunks.is_empty();
        for data in chunks {
            let len = data.len() as u64;
            if tx.send(Ok(OutputBytes { offset, data })).await.is_err() {
                return;
            }
            offset += len;
        }
        if !follow || (ended && !got_some) {
            return;
        }
        if !got_some {
            tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_MS)).await;
        }
    }
}

/// Everything in the file after `offset`, in chunks.
fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<Vec<u8>>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    loop {
        let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        buf.truncate(n);
        out.push(buf);
    }
}
