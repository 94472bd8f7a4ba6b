//! `/metrics` as a scrape reads it: the series read from the node at that moment
//! ([`render`]: Raft, storage, the data directory, the state and gossip), and the event
//! counters fed by following the cluster's events ([`follow_events`]). The recorder,
//! the descriptions and the counting calls the rest of the server makes are in `metrics`.

use std::time::Duration;

use cathedral_consensus::{Exit, JobState};
use metrics::{counter, gauge, histogram};

use crate::gossip::Liveness;
use crate::metrics::handle;
use crate::node::Node;

/// Counts the cluster's events as this node applies them (from when it started): events
/// by kind, leader changes, retries, and the time jobs waited to start and ran.
pub async fn follow_events(node: std::sync::Arc<Node>) {
    use cathedral_consensus::events::EventKind;
    let Ok(mut rx) = crate::events::watch(&node, crate::events::Watch::default()) else {
        return;
    };
    // Handles made once: an event costs an increment, not a registry lookup.
    let by_kind: Vec<metrics::Counter> = EventKind::ALL
        .iter()
        .map(|k| counter!("cathedral_events_total", "kind" => k.name()))
        .collect();
    let leader_changes = counter!("cathedral_raft_leader_changes_total");
    let retries = counter!("cathedral_job_retries_total");
    let queue_wait = histogram!("cathedral_job_queue_wait_seconds");
    let run_time = histogram!("cathedral_attempt_run_seconds");
    while let Some(Ok(e)) = rx.recv().await {
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == e.kind) {
            by_kind[i].increment(1);
        }
        match e.kind {
            EventKind::LeaderChanged => leader_changes.increment(1),
            EventKind::JobRetried => retries.increment(1),
            _ => {}
        }
        // Only these need the job (its times); the others take no lock.
        if !matches!(
            e.kind,
            EventKind::JobStarted | EventKind::JobFinished | EventKind::JobRetried
        ) {
            continue;
        }
        let Some(id) = e.job else { continue };
        let a = node.state().read();
        let Some(job) = a.state.job(id) else { continue };
        let attempt = e
            .attempt
            .and_then(|n| job.attempts.iter().find(|x| x.number == n));
        match (e.kind, attempt) {
            (EventKind::JobStarted, Some(at)) => {
                // From when the job could run (submission, or a retry's backoff end).
                let ready = job.not_before_ms.max(job.submitted_at_ms);
                let waited = at.started_at_ms.unwrap_or(e.at_ms).saturating_sub(ready);
                queue_wait.record(waited as f64 / 1000.0);
                // By namespace too (at most NAMESPACES_MAX + 1 series).
                histogram!(
                    "cathedral_namespace_queue_wait_seconds",
                    "namespace" => a.state.namespace_of(id).to_string()
                )
                .record(waited as f64 / 1000.0);
                crate::history::job_started(waited);
            }
            (EventKind::JobFinished | EventKind::JobRetried, Some(at)) => {
                if let Some(o) = &at.outcome {
                    run_time.record(o.duration_ms as f64 / 1000.0);
                }
                crate::history::job_finished();
            }
            _ => {}
        }
    }
}

/// (free to unprivileged users, total) bytes of the filesystem holding `dir`.
fn filesystem_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is a valid value; `path` is NUL-terminated and outlives
    // the call, which only writes `st`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// The text of a scrape: the series read from `node` now, and everything counted.
pub fn render(node: &Node) -> String {
    let handle = handle();
    let m = node.metrics();
    gauge!("cathedral_raft_term").set(m.current_term as f64);
    gauge!("cathedral_raft_leader").set(f64::from(u8::from(m.current_leader == Some(node.id))));
    gauge!("cathedral_raft_has_leader").set(f64::from(u8::from(m.current_leader.is_some())));
    gauge!("cathedral_raft_commit_index").set(node.committed_index() as f64);
    gauge!("cathedral_raft_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
    gauge!("cathedral_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    gauge!("cathedral_raft_snapshot_index").set(m.snapshot.map_or(0, |l| l.index) as f64);
    gauge!("cathedral_raft_voters")
        .set(m.membership_config.membership().voter_ids().count() as f64);
    if let Some(s) = node.log_stats() {
        counter!("cathedral_storage_records_total").absolute(s.records);
        counter!("cathedral_storage_written_bytes_total").absolute(s.bytes);
        counter!("cathedral_storage_fdatasyncs_total").absolute(s.syncs);
        counter!("cathedral_storage_commit_rounds_total").absolute(s.rounds);
        counter!("cathedral_storage_purges_total").absolute(s.purges);
        gauge!("cathedral_storage_segments").set(s.segments as f64);
    }
    if let Some((free, capacity)) = filesystem_space(node.data_dir()) {
        gauge!("cathedral_data_dir_free_bytes").set(free as f64);
        gauge!("cathedral_data_dir_capacity_bytes").set(capacity as f64);
    }
    let snaps = node.snapshots.stats();
    counter!("cathedral_snapshot_writes_total").absolute(snaps.writes);
    counter!("cathedral_snapshot_written_bytes_total").absolute(snaps.written_bytes);
    {
        let a = node.state().read();
        // Counts the state keeps as it applies: O(1) under the lock apply waits for.
        let counts = a.state.job_counts();
        for st in JobState::ALL {
            gauge!("cathedral_jobs", "state" => st.name().replace(' ', "_"))
                .set(counts[st as usize] as f64);
        }
        gauge!("cathedral_attempts_in_flight").set(a.state.running_on(node.id).len() as f64);
        for (label, n) in Exit::KINDS.iter().zip(a.state.attempts_ended()) {
            counter!("cathedral_attempts_total", "outcome" => *label).absolute(n);
        }
        // Per namespace (bounded: NAMESPACES_MAX + `default`): its jobs by state, what it
        // uses now and its quotas. O(namespaces) from the index's counts.
        for (name, ns) in a.state.namespaces().all() {
            let counts = a.state.namespace_counts(&name);
            for st in JobState::ALL {
                gauge!(
                    "cathedral_namespace_jobs",
                    "namespace" => name.clone(),
                    "state" => st.name().replace(' ', "_")
                )
                .set(counts[st as usize] as f64);
            }
            let u = a.state.namespace_usage(&name);
            let l = ns.limits();
            for (what, used, max) in [
                ("pending_jobs", u.pending, l.pending_jobs_max),
                ("running", u.running, l.running_max),
                ("cpu_millis", u.cpu_millis, l.cpu_millis_max),
                ("memory_bytes", u.memory_bytes, l.memory_bytes_max),
            ] {
                gauge!("cathedral_namespace_use", "namespace" => name.clone(), "resource" => what)
                    .set(used as f64);
                // -1: unlimited.
                gauge!("cathedral_namespace_quota", "namespace" => name.clone(), "resource" => what)
                    .set(max.map_or(-1.0, |m| m as f64));
            }
            gauge!("cathedral_namespace_weight", "namespace" => name.clone())
                .set(f64::from(l.weight));
        }
        let c = a.state.counters();
        counter!("cathedral_state_fenced_reports_total").absolute(c.fenced_reports);
        counter!("cathedral_state_rejected_commands_total").absolute(c.rejected_commands);
        counter!("cathedral_state_divergences_total").absolute(c.divergences);
    }
    let view = node.gossip.view();
    for l in [
        Liveness::Joining,
        Liveness::Alive,
        Liveness::Dead,
        Liveness::Left,
    ] {
        let n = view.members.values().filter(|m| m.liveness == l).count();
        gauge!("cathedral_gossip_members", "liveness" => l.name()).set(n as f64);
    }
    for (id, m) in &view.members {
        if let Some(phi) = m.phi {
            gauge!("cathedral_gossip_phi", "node" => id.to_string()).set(phi);
        }
    }
    gauge!("cathedral_gossip_partitioned").set(f64::from(u8::from(
        view.health == crate::gossip::Health::Partitioned,
    )));
    let g = node.gossip.counters();
    counter!("cathedral_gossip_datagrams_sent_total").absolute(g.datagrams_sent);
    counter!("cathedral_gossip_datagrams_received_total").absolute(g.datagrams_received);
    counter!("cathedral_gossip_mac_failures_total").absolute(g.rejected_mac);
    handle.render()
}

/// Samples the dashboard's history (`history`) every `HISTORY_SAMPLE_MS`, for as long as
/// the node runs: the counts its hooks gathered, and what it reads here of the node.
pub async fn sample_history(node: std::sync::Arc<Node>) {
    use crate::history::{NodeLoad, Reading, HISTORY_SAMPLE_MS};
    let period = Duration::from_millis(HISTORY_SAMPLE_MS);
    let mut last_commit = node.committed_index();
    let mut last_at = std::time::Instant::now();
    // The first sample a second in, so a fresh node's charts are not empty for long.
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        wait = period;
        let secs = last_at.elapsed().as_secs_f64();
        last_at = std::time::Instant::now();
        let committed = node.committed_index();
        let (queue_depth, nodes) = {
            let a = node.state().read();
            // From the index's counts: walking the jobs held the state's lock (and every
            // write) ~0.1 s at 400,000 pending jobs, every sample.
            let pending = a.state.job_counts()[JobState::Pending as usize];
            let nodes = a
                .state
                .nodes()
                .filter(|n| n.status == cathedral_consensus::NodeStatus::Alive)
                .map(|n| NodeLoad {
                    id: n.info.id.to_string(),
                    address: n.info.address.clone(),
                    running: a.state.running_on(n.info.id).len() as u64,
                    slots: u64::from(n.info.capacity.slots),
                })
                .collect();
            (pending, nodes)
        };
        crate::history::take_sample(
            secs,
            last_commit,
            Reading {
                committed,
                queue_depth,
                nodes,
            },
        );
        last_commit = committed;
    }
}
