//! `cathedral events`: the cluster's event stream, and with `--follow` its resumption at
//! the next server, from the last event printed, when a server goes away.

use std::io::Write;
use std::time::{Duration, Instant};

use cathedral_api::v1 as pb;
use cathedral_api::v1::cluster_service_client::ClusterServiceClient;
use cathedral_api::v1::job_service_client::JobServiceClient;
use tokio_stream::StreamExt;

use crate::client::{self, exit, CliError, Client, WRITE_RETRY_PAUSE_MS};
use crate::render;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Start at this log index (INDEX, or INDEX.SEQ to resume inside an entry; 0: the
    /// earliest the node holds). Default: every event the node holds; with --follow,
    /// only events applied from now on.
    #[arg(long, value_name = "INDEX[.SEQ]")]
    from: Option<String>,
    /// Keep printing events as they are applied; when the server goes away, go on at
    /// the next --server from the last event printed (no gap, no repeat), for up to
    /// --write-retry without one answering. Without it: stop at the events applied now.
    #[arg(long, short)]
    follow: bool,
    /// Only these kinds (comma-separated: job_submitted, job_finished, node_failed, …).
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    kind: Vec<String>,
    /// Only this job's events.
    #[arg(long)]
    job: Option<u64>,
    /// Only this workflow's events.
    #[arg(long)]
    workflow: Option<u64>,
    /// Only this node's events.
    #[arg(long)]
    node: Option<u64>,
    /// One JSON object per line (the API's JSON mapping).
    #[arg(long)]
    json: bool,
}

/// `cathedral events`. Following, it looks for a server to go on at for up to the
/// client's write retry without an event.
pub async fn run(client: &Client, a: EventsArgs) -> Result<u8, CliError> {
    let from = a.from.as_deref().map(parse_position).transpose()?;
    let req = pb::WatchEventsRequest {
        kinds: a.kind,
        job_id: a.job,
        workflow_id: a.workflow,
        node_id: a.node,
        stop_at_applied: !a.follow,
        // --namespace: job events of that namespace only (none given: every namespace).
        namespace: client.namespace().into(),
        ..Default::default()
    };
    stream(client, req, from, a.follow, a.json).await
}

/// `INDEX` or `INDEX.SEQ`.
fn parse_position(s: &str) -> Result<(u64, u32), CliError> {
    let bad = || CliError::invalid(format!("--from {s:?}: expected INDEX or INDEX.SEQ"));
    match s.split_once('.') {
        None => Ok((s.parse().map_err(|_| bad())?, 0)),
        Some((i, q)) => Ok((i.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?)),
    }
}

/// Reads the event stream from `from` (the events applied from now on when `None` and
/// following); with `follow`, resumes it at the next server after the last event printed
/// when a server goes away.
async fn stream(
    client: &Client,
    req: pb::WatchEventsRequest,
    from: Option<(u64, u32)>,
    follow: bool,
    json: bool,
) -> Result<u8, CliError> {
    let servers = client.servers();
    let retry_for = client.write_retry();
    if servers.is_empty() {
        return Err(client::no_server());
    }
    let mut from = from;
    let mut tries = 0usize;
    let mut failing_since: Option<Instant> = None;
    loop {
        let addr = &servers[tries % servers.len()];
        let failed: CliError = match client.connect(addr).await {
            Err(e) => e,
            Ok(ch) => {
                // Following from "now": pin "now" to an index first, so a resumed stream
                // starts where this one did.
                if from.is_none() && follow {
                    match ClusterServiceClient::new(ch.clone())
                        .status(pb::StatusRequest {})
                        .await
                    {
                        Ok(s) => from = Some((s.into_inner().applied_index + 1, 0)),
                        Err(s) if client::outcome_unknown(&s) => {
                            tries += 1;
                            pause(
                                &mut failing_since,
                                retry_for,
                                tries,
                                servers.len(),
                                s.into(),
                            )
                            .await?;
                            continue;
                        }
                        Err(s) => return Err(s.into()),
                    }
                }
                let mut r = req.clone();
                r.from_index = Some(from.map_or(0, |p| p.0));
                r.from_seq = from.map_or(0, |p| p.1);
                match JobServiceClient::new(ch).watch_events(r).await {
                    Err(s) if follow && client::outcome_unknown(&s) => s.into(),
                    Err(s) => return Err(s.into()),
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        let ended = loop {
                            match stream.next().await {
                                None => break None,
                                Some(Err(s)) => break Some(s),
                                Some(Ok(ev)) => {
                                    failing_since = None;
                                    from = Some((ev.index, ev.seq + 1));
                                    print_event(&ev, json)?;
                                }
                            }
                        };
                        match ended {
                            None if !follow => return Ok(0),
                            None => {
                                CliError::new(exit::UNAVAILABLE, format!("{addr} ended the stream"))
                            }
                            Some(s) if follow && client::outcome_unknown(&s) => s.into(),
                            Some(s) => return Err(s.into()),
                        }
                    }
                }
            }
        };
        if !follow {
            return Err(failed);
        }
        tries += 1;
        pause(&mut failing_since, retry_for, tries, servers.len(), failed).await?;
    }
}

/// Between tries of `events`: gives up with `failed` once `retry_for` passed without an
/// event; pauses after each round of the servers.
async fn pause(
    failing_since: &mut Option<Instant>,
    retry_for: Duration,
    tries: usize,
    servers: usize,
    failed: CliError,
) -> Result<(), CliError> {
    let since = *failing_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= retry_for {
        return Err(failed);
    }
    if tries.is_multiple_of(servers) {
        tokio::time::sleep(Duration::from_millis(WRITE_RETRY_PAUSE_MS)).await;
    }
    Ok(())
}

fn print_event(ev: &pb::ClusterEvent, json: bool) -> Result<(), CliError> {
    let line = if json {
        serde_json::to_string(ev).map_err(|e| CliError::new(exit::FAILED, e.to_string()))?
    } else {
        render::cluster_event_text(ev)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| CliError::new(exit::FAILED, format!("stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(parse_position("12").unwrap(), (12, 0));
        assert_eq!(parse_position("12.3").unwrap(), (12, 3));
        for bad in ["", "x", "1.", ".2", "1.x", "1.2.3"] {
            let e = parse_position(bad).unwrap_err();
            assert_eq!(e.code, exit::INVALID);
            assert_eq!(
                e.message,
                format!("--from {bad:?}: expected INDEX or INDEX.SEQ")
            );
        }
    }
}
