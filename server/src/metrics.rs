//! `/metrics` on the HTTP port: Prometheus's text format, rendered by the `metrics` crate's
//! Prometheus exporter (no hand formatting). Names follow Prometheus's conventions: the
//! `cathedral_` prefix, base units (seconds, bytes), `_total` for counters.
//!
//! Two kinds of series: those counted where they happen (API calls and their latency,
//! proposals and their latency), and those read from the node at each scrape (Raft, the
//! storage engine's counters, the applied state, gossip) — the sources already keep them,
//! so a scrape costs one pass and the write path nothing more.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds (seconds) of the latency histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Bucket bounds (seconds) of job times (queue wait, run time): 1 ms to 1 hour.
pub const JOB_TIME_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Bucket bounds of the assignments one scheduler pass makes.
pub const PLACEMENT_BUCKETS: [f64; 9] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0];

/// How often histogram samples are folded into their buckets between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's recorder: installed once (a process runs one node; in-process tests share
/// it), described once.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS_SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("cathedral_scheduler_placements_per_pass".into()),
                    &PLACEMENT_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_wait_seconds".into()),
                    &JOB_TIME_BUCKETS_SECONDS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("cathedral_attempt_run_seconds".into()),
                    &JOB_TIME_BUCKETS_SECONDS,
                )
            })
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was installed before; /metrics shows only what this one sees"
            );
        }
        describe();
        // Histogram samples wait in the recorder until a render or an upkeep folds them
        // into their buckets: without a scrape they would pile up. One thread folds them
        // every UPKEEP_INTERVAL for the life of the process.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!("metrics upkeep thread: {e}; histograms fold only at scrapes");
        }
        handle
    })
}

/// Installs the recorder (before the node counts anything).
pub fn install() {
    handle();
}

/// Every series' help text and unit, once.
///
/// Long on purpose: one line per series, the whole vocabulary of `/metrics` in one place
/// (what the README's table lists), so a new series is described next to its siblings.
fn describe() {
    describe_counter!(
        "cathedral_api_requests_total",
        "gRPC calls, by method and status code."
    );
    describe_histogram!(
        "cathedral_api_request_duration_seconds",
        Unit::Seconds,
        "Time from a gRPC call's arrival to its response headers, by method."
    );
    describe_counter!(
        "cathedral_raft_proposals_total",
        "Writes this node proposed (or forwarded), by outcome."
    );
    describe_histogram!(
        "cathedral_raft_proposal_duration_seconds",
        Unit::Seconds,
        "Time from a write's proposal to its commit and apply on this node."
    );
    describe_gauge!("cathedral_raft_term", "The current Raft term.");
    describe_gauge!("cathedral_raft_leader", "1 while this node is the leader.");
    describe_gauge!(
        "cathedral_raft_has_leader",
        "1 while this node knows a leader."
    );
    describe_gauge!(
        "cathedral_raft_commit_index",
        "The highest log index known committed."
    );
    describe_gauge!(
        "cathedral_raft_applied_index",
        "The highest log index applied to the state."
    );
    describe_gauge!(
        "cathedral_raft_last_log_index",
        "The last log index this node holds."
    );
    describe_gauge!(
        "cathedral_raft_snapshot_index",
        "The index of the latest snapshot."
    );
    describe_gauge!("cathedral_raft_voters", "Voters in the membership.");
    describe_counter!("cathedral_storage_records_total", "Log records appended.");
    describe_counter!(
        "cathedral_storage_written_bytes_total",
        Unit::Bytes,
        "Bytes written to log segments."
    );
    describe_counter!(
        "cathedral_storage_fdatasyncs_total",
        "fdatasync calls on log segments."
    );
    describe_histogram!(
        "cathedral_storage_fdatasync_duration_seconds",
        Unit::Seconds,
        "Time each fdatasync of a log segment took."
    );
    describe_counter!(
        "cathedral_storage_commit_rounds_total",
        "Group-commit rounds of the log writer."
    );
    describe_gauge!("cathedral_jobs", "Jobs in the applied state, by state.");
    describe_gauge!(
        "cathedral_namespace_jobs",
        "Jobs in the applied state, by namespace and state."
    );
    describe_gauge!(
        "cathedral_namespace_use",
        "What a namespace holds now, by resource (pending jobs, attempts in flight and the CPU and memory they reserve)."
    );
    describe_gauge!(
        "cathedral_namespace_quota",
        "A namespace's quota by resource; -1 when unlimited."
    );
    describe_gauge!(
        "cathedral_namespace_weight",
        "A namespace's fair-share weight."
    );
    describe_histogram!(
        "cathedral_namespace_queue_wait_seconds",
        "Time from runnable to started, by namespace."
    );
    describe_gauge!(
        "cathedral_attempts_in_flight",
        "Attempts assigned to or running on this node."
    );
    describe_counter!(
        "cathedral_attempts_total",
        "Attempts ended in the cluster by the entries this node applied since it started, by outcome."
    );
    describe_counter!(
        "cathedral_state_fenced_reports_total",
        "Attempt reports ignored as stale (fencing)."
    );
    describe_counter!(
        "cathedral_state_rejected_commands_total",
        "Commands the state rejected whole."
    );
    describe_counter!(
        "cathedral_state_divergences_total",
        "Checkpoint hashes that differed from the leader's."
    );
    describe_gauge!(
        "cathedral_gossip_members",
        "Members in this node's gossip view, by liveness."
    );
    describe_gauge!(
        "cathedral_gossip_partitioned",
        "1 while this node sees itself on the minority side."
    );
    describe_counter!(
        "cathedral_gossip_datagrams_sent_total",
        "Gossip datagrams sent."
    );
    describe_counter!(
        "cathedral_gossip_datagrams_received_total",
        "Gossip datagrams received."
    );
    describe_counter!(
        "cathedral_gossip_mac_failures_total",
        "Gossip datagrams dropped for a MAC that did not verify."
    );
    describe_gauge!(
        "cathedral_gossip_phi",
        "Suspicion of each member (above the threshold: dead)."
    );
    describe_counter!(
        "cathedral_raft_append_entries_sent_total",
        "AppendEntries calls to peers (heartbeats included), by outcome."
    );
    describe_counter!(
        "cathedral_raft_entries_sent_total",
        "Log entries carried by AppendEntries calls to peers."
    );
    describe_counter!(
        "cathedral_raft_snapshots_sent_total",
        "Snapshots streamed to peers, by outcome."
    );
    describe_counter!(
        "cathedral_raft_snapshot_sent_bytes_total",
        Unit::Bytes,
        "Bytes of the snapshots streamed to peers."
    );
    describe_counter!(
        "cathedral_raft_leader_changes_total",
        "New leaders' terms applied since this node started."
    );
    describe_counter!(
        "cathedral_storage_purges_total",
        "Log compactions (purges) done."
    );
    describe_gauge!("cathedral_storage_segments", "Segment files of the log.");
    describe_gauge!(
        "cathedral_data_dir_free_bytes",
        Unit::Bytes,
        "Bytes free (to this process) on the filesystem holding the data directory."
    );
    describe_gauge!(
        "cathedral_data_dir_capacity_bytes",
        Unit::Bytes,
        "Size of the filesystem holding the data directory."
    );
    describe_counter!(
        "cathedral_snapshot_writes_total",
        "Snapshots this node wrote."
    );
    describe_counter!(
        "cathedral_snapshot_written_bytes_total",
        Unit::Bytes,
        "Bytes of the snapshot files this node wrote."
    );
    describe_counter!(
        "cathedral_events_total",
        "Events of the entries applied since this node started, by kind."
    );
    describe_counter!(
        "cathedral_job_retries_total",
        "Attempts that ended without ending their job (it waits for another)."
    );
    describe_histogram!(
        "cathedral_job_queue_wait_seconds",
        Unit::Seconds,
        "From when a job could run (submitted, or its retry backoff ended) to its attempt's start."
    );
    describe_histogram!(
        "cathedral_attempt_run_seconds",
        Unit::Seconds,
        "How long ended attempts ran."
    );
    describe_histogram!(
        "cathedral_scheduler_pass_duration_seconds",
        Unit::Seconds,
        "One placement pass of the leader's scheduler."
    );
    describe_histogram!(
        "cathedral_scheduler_placements_per_pass",
        "Assignments one scheduler pass made."
    );
    describe_gauge!(
        "cathedral_scheduler_unplaceable_jobs",
        "Runnable jobs the last pass examined and could not place, by reason."
    );
    describe_counter!(
        "cathedral_executor_attempts_started_total",
        "Attempts this node started, by sandbox."
    );
    describe_counter!(
        "cathedral_executor_kills_total",
        "Attempts this node killed, by reason (memory_limit: the cgroup's limit was hit)."
    );
}

/// The label for a gRPC path: `Service/Method` of the services this server has, `other`
/// for anything else (bounded cardinality whatever clients send).
pub fn method_label(path: &str) -> &'static str {
    crate::methods::find(path).map_or("other", crate::methods::Method::label)
}

/// A call's series: its counter and its latency histogram, by (method, code).
type CallSeries =
    std::collections::HashMap<(&'static str, &'static str), (metrics::Counter, metrics::Histogram)>;

thread_local! {
    /// This thread's handles of the per-call series: a handle is looked up in the recorder
    /// (a key built, hashed, found) once per thread and label set, not on every call.
    static API_SERIES: std::cell::RefCell<CallSeries> = Default::default();
}

/// Counts one gRPC call.
pub fn api_call(method: &'static str, code: &'static str, took: Duration) {
    API_SERIES.with(|series| {
        let mut series = series.borrow_mut();
        let (calls, latency) = series.entry((method, code)).or_insert_with(|| {
            (
                counter!("cathedral_api_requests_total", "method" => method, "code" => code),
                histogram!("cathedral_api_request_duration_seconds", "method" => method),
            )
        });
        calls.increment(1);
        latency.record(took.as_secs_f64());
    });
}

/// The storage engine's hook: every fdatasync's duration.
pub fn sync_observer() -> cathedral_storage::SyncObserver {
    let latency = histogram!("cathedral_storage_fdatasync_duration_seconds");
    cathedral_storage::SyncObserver(std::sync::Arc::new(move |took: Duration| {
        latency.record(took.as_secs_f64());
        crate::history::fsync(took);
    }))
}

/// Counts one proposal.
pub fn proposal(ok: bool, took: Duration) {
    static SERIES: OnceLock<(metrics::Counter, metrics::Counter, metrics::Histogram)> =
        OnceLock::new();
    let (committed, failed, latency) = SERIES.get_or_init(|| {
        (
            counter!("cathedral_raft_proposals_total", "outcome" => "committed"),
            counter!("cathedral_raft_proposals_total", "outcome" => "failed"),
            histogram!("cathedral_raft_proposal_duration_seconds"),
        )
    });
    if ok { committed } else { failed }.increment(1);
    latency.record(took.as_secs_f64());
}

/// Counts one AppendEntries sent to a peer (heartbeats included) and the entries in it.
pub fn append_entries_sent(entries: usize, ok: bool) {
    static SERIES: OnceLock<(metrics::Counter, metrics::Counter, metrics::Counter)> =
        OnceLock::new();
    let (sent, failed, carried) = SERIES.get_or_init(|| {
        (
            counter!("cathedral_raft_append_entries_sent_total", "outcome" => "ok"),
            counter!("cathedral_raft_append_entries_sent_total", "outcome" => "failed"),
            counter!("cathedral_raft_entries_sent_total"),
        )
    });
    if ok { sent } else { failed }.increment(1);
    carried.increment(entries as u64);
}

/// Counts one snapshot sent to a peer, and its bytes.
pub fn snapshot_sent(bytes: u64, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("cathedral_raft_snapshots_sent_total", "outcome" => outcome).increment(1);
    counter!("cathedral_raft_snapshot_sent_bytes_total").increment(bytes);
}

/// Why the scheduler could not place a runnable job: no node has a free slot, or the
/// job's constraints, CPU or memory fit none of those that do, or its namespace is at a
/// quota on what runs.
pub const UNPLACEABLE_REASONS: [&str; 5] = [
    "no_free_slot",
    "constraints",
    "cpu",
    "memory",
    "namespace_quota",
];

/// One scheduler pass: its time, its assignments, and — when it counted them (see
/// `scheduler::place_counting`) — the runnable jobs it could not place, by reason
/// (indexes of [`UNPLACEABLE_REASONS`]).
pub fn scheduler_pass(took: Duration, placed: usize, unplaceable: Option<[u64; 5]>) {
    static SERIES: OnceLock<(metrics::Histogram, metrics::Histogram, [metrics::Gauge; 5])> =
        OnceLock::new();
    let (latency, placements, stuck) = SERIES.get_or_init(|| {
        (
            histogram!("cathedral_scheduler_pass_duration_seconds"),
            histogram!("cathedral_scheduler_placements_per_pass"),
            UNPLACEABLE_REASONS
                .map(|r| gauge!("cathedral_scheduler_unplaceable_jobs", "reason" => r)),
        )
    });
    latency.record(took.as_secs_f64());
    placements.record(placed as f64);
    if let Some(unplaceable) = unplaceable {
        for (g, n) in stuck.iter().zip(unplaceable) {
            g.set(n as f64);
        }
    }
}

/// An attempt this node started, by the sandbox it runs in.
pub fn attempt_started(sandbox: &'static str) {
    counter!("cathedral_executor_attempts_started_total", "sandbox" => sandbox).increment(1);
}

/// An attempt this node killed, by why (`memory_limit`: the cgroup's limit was hit).
pub fn attempt_killed(reason: cathedral_executor::KillReason) {
    use cathedral_executor::KillReason;
    let reason = match reason {
        KillReason::Timeout => "timeout",
        KillReason::Cancelled => "cancelled",
        KillReason::MemoryLimit => "memory_limit",
    };
    counter!("cathedral_executor_kills_total", "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_by_service_and_method_and_strangers_are_other() {
        assert_eq!(
            method_label("/cathedral.v1.JobService/SubmitJob"),
            "JobService/SubmitJob"
        );
        assert_eq!(
            method_label("/cathedral.internal.v1.Peer/Vote"),
            "Peer/Vote"
        );
        assert_eq!(method_label("/cathedral.v1.JobService/Nope"), "other");
        assert_eq!(method_label("/x.y.Evil/SubmitJob"), "other");
        assert_eq!(method_label("garbage"), "other");
    }

    #[test]
    fn counted_series_render_in_prometheus_text_format() {
        install();
        api_call("JobService/GetJob", "OK", Duration::from_millis(2));
        proposal(true, Duration::from_millis(3));
        let text = handle().render();
        assert!(
            text.contains("# TYPE cathedral_api_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("cathedral_api_requests_total{method=\"JobService/GetJob\",code=\"OK\"}"),
            "{text}"
        );
        assert!(text.contains("cathedral_api_request_duration_seconds_bucket{method=\"JobService/GetJob\",le=\"0.0025\"}"), "{text}");
        assert!(
            text.contains("cathedral_raft_proposals_total{outcome=\"committed\"}"),
            "{text}"
        );
    }
}
