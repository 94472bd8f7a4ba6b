//! The last hour of this node's own measurements, for the dashboard's charts — what an
//! operator would otherwise build in Grafana, without any external service: one sample
//! every `HISTORY_SAMPLE_MS`, `HISTORY_SAMPLES` kept (`GET /v1/dashboard/history`).
//!
//! The hooks are fed where the Prometheus series are (`scrape::follow_events`, the
//! storage engine's fdatasync observer); the sampler reads the rest from the applied
//! state and Raft (`scrape::sample_history`).

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::proposal::now_ms;

/// Time between two samples.
pub const HISTORY_SAMPLE_MS: u64 = 10_000;
/// Samples kept: an hour.
pub const HISTORY_SAMPLES: usize = 360;
/// Queue waits and fdatasync times kept per interval for its percentiles; past it, the
/// rest of the interval is counted but not kept.
pub const INTERVAL_VALUES_MAX: usize = 10_000;

/// What happened since the last sample.
#[derive(Default)]
struct Interval {
    started: u64,
    finished: u64,
    queue_wait_ms: Vec<u64>,
    fsync_us: Vec<u64>,
    fsyncs: u64,
}

/// One sample: rates over the interval before `at_ms`, and levels at `at_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub jobs_started_per_s: f64,
    pub jobs_finished_per_s: f64,
    /// Jobs pending (queued) at the sample.
    pub queue_depth: u64,
    pub queue_wait_p50_ms: Option<u64>,
    pub queue_wait_p99_ms: Option<u64>,
    /// Entries committed per second (the commit index's growth).
    pub committed_per_s: f64,
    pub fsyncs_per_s: f64,
    pub fsync_p99_us: Option<u64>,
    /// Per node: attempts running and slots, as the applied state has them.
    pub nodes: Vec<NodeLoad>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeLoad {
    /// A string, as every id in JSON.
    pub id: String,
    pub address: String,
    pub running: u64,
    pub slots: u64,
}

struct History {
    interval: Mutex<Interval>,
    samples: Mutex<VecDeque<Sample>>,
}

fn history() -> &'static History {
    static H: OnceLock<History> = OnceLock::new();
    H.get_or_init(|| History {
        interval: Mutex::new(Interval::default()),
        samples: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES)),
    })
}

fn keep(values: &mut Vec<u64>, v: u64) {
    if values.len() < INTERVAL_VALUES_MAX {
        values.push(v);
    }
}

/// A job started after waiting `waited_ms` to.
pub fn job_started(waited_ms: u64) {
    let mut i = history().interval.lock().unwrap();
    i.started += 1;
    keep(&mut i.queue_wait_ms, waited_ms);
}

/// An attempt ended (finished, or retried).
pub fn job_finished() {
    history().interval.lock().unwrap().finished += 1;
}

/// One fdatasync of the log took `took`.
pub fn fsync(took: Duration) {
    let mut i = history().interval.lock().unwrap();
    i.fsyncs += 1;
    keep(&mut i.fsync_us, took.as_micros() as u64);
}

/// The `p`-th percentile (0..=100) of `values` (sorted here); `None` when empty.
fn percentile(values: &mut [u64], p: u64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((values.len() as u64 * p).div_ceil(100)).max(1) as usize;
    Some(values[rank - 1])
}

/// The samples kept, oldest first.
pub fn samples() -> Vec<Sample> {
    history().samples.lock().unwrap().iter().cloned().collect()
}

/// What the sampler reads from the node for one sample (see `scrape::sample_history`).
pub struct Reading {
    /// The committed index now.
    pub committed: u64,
    /// Jobs pending now.
    pub queue_depth: u64,
    pub nodes: Vec<NodeLoad>,
}

/// Takes one sample: what was counted since the previous one, `secs` ago (when the
/// committed index was `last_commit`), with `now` read from the node.
pub fn take_sample(secs: f64, last_commit: u64, now: Reading) {
    let secs = secs.max(0.001);
    let mut i = std::mem::take(&mut *history().interval.lock().unwrap());
    let sample = Sample {
        at_ms: now_ms(),
        jobs_started_per_s: i.started as f64 / secs,
        jobs_finished_per_s: i.finished as f64 / secs,
        queue_depth: now.queue_depth,
        queue_wait_p50_ms: percentile(&mut i.queue_wait_ms, 50),
        queue_wait_p99_ms: percentile(&mut i.queue_wait_ms, 99),
        committed_per_s: now.committed.saturating_sub(last_commit) as f64 / secs,
        fsyncs_per_s: i.fsyncs as f64 / secs,
        fsync_p99_us: percentile(&mut i.fsync_us, 99),
        nodes: now.nodes,
    };
    let mut s = history().samples.lock().unwrap();
    if s.len() == HISTORY_SAMPLES {
        s.pop_front();
    }
    s.push_back(sample);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&mut [], 99), None);
        assert_eq!(percentile(&mut [5], 50), Some(5));
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 99), Some(99));
        assert_eq!(percentile(&mut v, 100), Some(100));
    }

    #[test]
    fn an_interval_keeps_a_bounded_number_of_values() {
        let mut v = Vec::new();
        for k in 0..(INTERVAL_VALUES_MAX as u64 + 5) {
            keep(&mut v, k);
        }
        assert_eq!(v.len(), INTERVAL_VALUES_MAX);
    }
}
