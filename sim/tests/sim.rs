//! ClusterSim runs: `CATHEDRAL_SIM_SEED=S` replays one seed with logs;
//! `CATHEDRAL_SIM_RUNS=N` runs N seeds (default: a few, within the suite's budget); the
//! seeds that found bugs run in every suite.

use std::time::Duration;

// mimalloc: a run allocates and frees at a high rate (HTTP/2 frames, gossip, log records);
// glibc's allocator was ~10 % of a run's CPU, and a run's results do not depend on it
// (the same seeds give the same log hashes with either).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cathedral_sim::{run, EngineFile, Event, Plan};

/// The run's plan: `CATHEDRAL_SIM_NODES` nodes (default 3).
fn plan(seed: u64) -> Plan {
    let mut p = Plan::new(seed);
    if let Some(n) = std::env::var("CATHEDRAL_SIM_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        p.nodes = n;
    }
    if let Some(ms) = std::env::var("CATHEDRAL_SIM_TICK_MS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        p.tick = std::time::Duration::from_millis(ms);
    }
    if let Some(secs) = std::env::var("CATHEDRAL_SIM_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        p.at_least = std::time::Duration::from_secs(secs);
    }
    p
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("CATHEDRAL_SIM_SEED") {
        return vec![s.parse().expect("CATHEDRAL_SIM_SEED is a u64")];
    }
    if let Ok(list) = std::env::var("CATHEDRAL_SIM_SEEDS") {
        return list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("CATHEDRAL_SIM_SEEDS is a list of u64s")
            })
            .collect();
    }
    let runs: u64 = std::env::var("CATHEDRAL_SIM_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let base: u64 = std::env::var("CATHEDRAL_SIM_BASE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    (base..base + runs).collect()
}

/// Runs every seed in `CATHEDRAL_SIM_PROCS` processes at once (default 1: here, one after
/// another). A process runs one seed at a time (see `cathedral_sim::run`), so runs in
/// parallel are this test binary started again, each with its share of the seeds
/// (`CATHEDRAL_SIM_SEEDS`), its output passed through; the test fails if one of them does.
/// Returns whether the seeds ran here (`false`: in the processes started).
fn run_here_or_in_processes() -> bool {
    let procs: usize = std::env::var("CATHEDRAL_SIM_PROCS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let seeds = seeds();
    if procs == 1 || seeds.len() < 2 {
        return true;
    }
    let exe = std::env::current_exe().expect("this test binary");
    let children: Vec<(String, std::process::Child)> = (0..procs.min(seeds.len()))
        .map(|k| {
            let share: Vec<String> = seeds
                .iter()
                .skip(k)
                .step_by(procs)
                .map(u64::to_string)
                .collect();
            let share = share.join(",");
            let child = std::process::Command::new(&exe)
                .args([
                    "clusters_from_seeds_lose_nothing_and_agree",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CATHEDRAL_SIM_PROCS", "1")
                .env("CATHEDRAL_SIM_SEEDS", &share)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a process for a share of the seeds");
            (share, child)
        })
        .collect();
    // Each process's lines passed on whole (written straight through, two processes'
    // long lines would interleave), and its seeds counted: a process that ran fewer than
    // its share (a test filter that matched nothing) fails the run too.
    let relays: Vec<_> = children
        .into_iter()
        .map(|(share, mut child)| {
            let err = child.stderr.take().expect("the process's stderr");
            let relay = std::thread::spawn(move || {
                use std::io::BufRead;
                let mut reader = std::io::BufReader::new(err);
                let mut line = Vec::new();
                let mut ran = 0usize;
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches('\n');
                    if text.starts_with("seed ") && text.contains(": ") {
                        ran += 1;
                    }
                    eprintln!("{text}");
                    line.clear();
                }
                ran
            });
            (share, child, relay)
        })
        .collect();
    let failed: Vec<String> = relays
        .into_iter()
        .filter_map(|(share, mut child, relay)| {
            let status = child.wait().expect("wait for a process of seeds");
            let ran = relay.join().unwrap_or(0);
            let wanted = share.split(',').count();
            if !status.success() {
                Some(format!("seeds {share}: {status}"))
            } else if ran < wanted {
                Some(format!("seeds {share}: {ran} of {wanted} ran"))
            } else {
                None
            }
        })
        .collect();
    assert!(
        failed.is_empty(),
        "some seeds failed (their output is above): {failed:?}"
    );
    false
}

#[test]
fn clusters_from_seeds_lose_nothing_and_agree() {
    if std::env::var("CATHEDRAL_SIM_SEED").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .try_init();
    }
    if !run_here_or_in_processes() {
        return;
    }
    let mut failed = Vec::new();
    for seed in seeds() {
        let started = std::time::Instant::now();
        let report = run(&plan(seed));
        let took = started.elapsed();
        eprintln!(
            "seed {seed}: {} jobs acknowledged, {} checkpoints compared, {} replays matched, {} event streams compared, {} terms with two leaders, {} cron fires, {} fail-stops, {} unsynced writes lost ({} torn), log {}, {:?} simulated in {:?}, states {:?}, faults {:?}",
            report.acked.len(),
            report.checkpoints,
            report.replayed,
            report.streams,
            report.shared_terms,
            report.cron_fires,
            report.fail_stops,
            report.lost_writes,
            report.torn_writes,
            report.log_hash.map_or("-".to_string(), |h| h[..6].iter().map(|b| format!("{b:02x}")).collect()),
            report.simulated,
            took,
            report
                .states
                .iter()
                .map(|(k, (i, _))| format!("{k}@{i}"))
                .collect::<Vec<_>>(),
            report.faults
        );
        if !report.violations.is_empty() {
            eprintln!(
                "seed {seed} failed: {:#?}\nreplay: {}CATHEDRAL_SIM_SEED={seed} cargo test -p cathedral-sim --test sim -- --nocapture",
                report.violations,
                settings()
            );
            failed.push(seed);
        }
    }
    // Every seed runs (a long run reports all its failures), then the test fails.
    assert!(
        failed.is_empty(),
        "seeds that failed (each with its replay above): {failed:?}"
    );
}

/// The settings a replay needs besides the seed, as they were given.
fn settings() -> String {
    [
        "CATHEDRAL_SIM_NODES",
        "CATHEDRAL_SIM_TICK_MS",
        "CATHEDRAL_SIM_SECS",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
    .collect()
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let seed = std::env::var("CATHEDRAL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    // The second run comes after the first in one process: nothing the first left behind
    // may change it (tokio's task ids, caches, the allocator's state).
    let a = run(&plan(seed));
    let b = run(&plan(seed));
    assert!(a.violations.is_empty(), "{:#?}", a.violations);
    if let Some(k) = (0..a.log.len().max(b.log.len())).find(|k| a.log.get(*k) != b.log.get(*k)) {
        eprintln!(
            "first difference at line {k}:\n  first:  {:?}\n  second: {:?}",
            a.log.get(k),
            b.log.get(k)
        );
    }
    assert_eq!(
        (a.log_hash, &a.states, &a.acked),
        (b.log_hash, &b.states, &b.acked),
        "seed {seed} ran differently the second time"
    );
}

// Seeds that found bugs, run by every suite, each still drawing what it found (each its
// own test, so one that regresses does not hide another).

/// Seed 15: a node whose log failed a sync resent its client's write for ever on Raft's
/// ended metrics (a hot loop; here no simulated time passed and the run hung) — it must
/// now stop itself and be restarted.
#[test]
fn seed_15_a_node_whose_disk_failed_stops_and_is_restarted() {
    let r = run(&Plan::new(15));
    assert!(r.violations.is_empty(), "seed 15: {:#?}", r.violations);
    assert!(
        r.fail_stops >= 1,
        "seed 15 no longer draws a fail-stop: pick another seed that does ({:?})",
        r.faults
    );
}

/// Seed 299 (found as seed 56, then 45, 72, 64 and 207, as seed 56 again, then as seed
/// 299, as the runs changed around it; its faults are pinned): a failed fsync left a write
/// half on disk; the restart lost it, torn at a sector, and recovered.
#[test]
fn seed_299_a_write_torn_at_a_crash_is_recovered() {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(299);
    p.schedule = Some(vec![
        (at(2_086), Event::Join { node: 3, via: 0 }),
        (at(4_844), Event::Remove(2)),
        (at(7_988), Event::Hold(0, 1)),
        (at(9_627), Event::Release(0, 1)),
        (at(10_717), Event::Isolate(2)),
        (at(13_541), Event::Heal),
        (at(14_685), Event::Isolate(2)),
        (at(15_247), Event::Heal),
        (at(16_404), Event::Isolate(0)),
        (at(18_005), Event::Heal),
        (
            at(19_012),
            Event::DiskFault {
                node: 1,
                sync: true,
                on: EngineFile::Segment,
            },
        ),
        (at(20_712), Event::Recover(1)),
        (at(21_952), Event::Heal),
    ]);
    let r = run(&p);
    assert!(r.violations.is_empty(), "seed 299: {:#?}", r.violations);
    assert!(
        r.torn_writes >= 1,
        "seed 299's schedule no longer tears a write ({:?})",
        r.faults
    );
}

/// Seed 64, with the faults it was pinned to for a torn write: the leader removed itself
/// and, 11 ms after the removal committed (openraft 0.9 lets a removed leader lead until
/// its next tick), its upkeep promoted the learner that had just joined — a membership
/// change from a leader the membership no longer names, which a debug build of openraft
/// stops on (`append_membership`'s assertion). A removed leader now changes the
/// membership no more.
#[test]
fn seed_64_a_removed_leader_changes_the_membership_no_more() {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(64);
    p.schedule = Some(vec![
        (at(1_732), Event::Crash(1)),
        (at(3_430), Event::Restart(1)),
        (at(3_840), Event::Isolate(0)),
        (at(4_217), Event::Heal),
        (at(5_708), Event::Crash(0)),
        (at(7_759), Event::Restart(0)),
        (at(8_771), Event::OneWay { from: 0, to: 1 }),
        (at(9_694), Event::Heal),
        (at(9_945), Event::Isolate(0)),
        (at(13_057), Event::Heal),
        (
            at(14_618),
            Event::DiskFault {
                node: 0,
                sync: true,
                on: EngineFile::Segment,
            },
        ),
        (at(18_715), Event::Recover(0)),
        (at(19_001), Event::Join { node: 3, via: 2 }),
        (at(20_250), Event::Remove(1)),
        (at(25_151), Event::Heal),
    ]);
    let r = run(&p);
    assert!(r.violations.is_empty(), "seed 64: {:#?}", r.violations);
    assert!(
        r.faults.iter().any(|f| f.contains("removed n1")),
        "seed 64's schedule no longer removes its leader n1 ({:?})",
        r.faults
    );
}

/// Seed 102: the old leader was isolated while it held an entry the others lacked; after
/// the heal its peer connections were dead (turmoil drops what a partition cuts) and every
/// call on them timed out until HTTP/2's keep-alive gave up 30 s later, longer than the run
/// allows to settle (peer connections now answer a PING within 5 s or are replaced).
#[test]
fn seed_102_dead_peer_connections_are_replaced_after_a_partition() {
    let r = run(&seed_102());
    assert!(r.violations.is_empty(), "seed 102: {:#?}", r.violations);
}

/// Seed 2 with five nodes and 2 ms steps: a split left the old leader leading a minority;
/// a node that restarted rejoined through it and was told it had joined from a membership
/// entry the cluster later overwrote, so it stayed outside the cluster for good (the
/// leader now answers a join only from a committed membership, confirmed by a quorum).
/// Since peer connections are replaced within seconds the old leader no longer stays
/// stale until the restart, so this run passes without that fix too: it is kept as the
/// scenario; `a_join_is_answered_only_from_a_committed_membership` is the fix's test.
#[test]
fn seed_2_a_node_never_joins_through_a_stale_leader() {
    let r = run(&seed_2_five_nodes());
    assert!(
        r.violations.is_empty(),
        "seed 2, five nodes, 2 ms steps: {:#?}",
        r.violations
    );
}

/// A join answered from an uncommitted membership, made to happen: the leader `n0` is
/// cut off from the other voters, a new node joins through it (`n0` appends the
/// membership naming it and cannot commit it), the new node crashes and, restarted,
/// joins through `n0` again — which knows it, from that uncommitted entry. Told "joined",
/// it would set its cluster and never ask again while the other voters overwrite the
/// entry: it must be told to retry until the membership naming it is committed.
#[test]
fn a_join_is_answered_only_from_a_committed_membership() {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(7);
    p.schedule = Some(vec![
        (at(2_000), Event::Isolate(0)),
        (at(2_500), Event::Join { node: 3, via: 0 }),
        (at(4_000), Event::Crash(3)),
        (at(5_000), Event::Restart(3)),
        (at(12_000), Event::Heal),
    ]);
    let r = run(&p);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert!(
        r.states.contains_key("n3"),
        "the node that joined is in the cluster at the end ({:?})",
        r.states
    );
}

/// Seed 92 with five nodes and 2 ms steps: the member every node joins through (`n0`) was
/// removed before one of them got in, and that node retried it for ever (a join now
/// tries the other members gossip knows as well).
#[test]
fn seed_92_a_node_joins_through_another_member_when_its_own_left() {
    let r = run(&seed_92());
    assert!(
        r.violations.is_empty(),
        "seed 92, five nodes, 2 ms steps: {:#?}",
        r.violations
    );
}

/// Seed 92 with the faults it drew when it found a joiner retrying a removed member.
fn seed_92() -> Plan {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(92);
    p.nodes = 5;
    p.tick = Duration::from_millis(2);
    p.schedule = Some(vec![
        (at(1_513), Event::Join { node: 5, via: 1 }),
        (at(1_903), Event::Remove(0)),
        (at(6_272), Event::Isolate(3)),
        (at(7_788), Event::Heal),
        (at(8_032), Event::OneWay { from: 3, to: 1 }),
        (at(10_669), Event::Heal),
        (at(11_117), Event::OneWay { from: 2, to: 0 }),
        (at(15_197), Event::Heal),
        (at(16_571), Event::Isolate(3)),
        (at(19_101), Event::Heal),
        (at(20_464), Event::Heal),
    ]);
    p
}

/// Seed 92's schedule with 1 ms steps: a node added as a learner between the two steps of
/// a promotion made openraft refuse the second step, leaving {n0, n3} ∧ {n0, n3, n4};
/// `n0` was then removed and stopped, and the joint configuration, which needs `n0` in its
/// first half, elected no leader again (the run never finished; two joiners never got
/// in). Membership changes now go one at a time, and a leader finishes a joint
/// configuration left behind.
#[test]
fn seed_92_a_learner_added_between_a_promotions_steps_leaves_no_joint_configuration() {
    let mut p = seed_92();
    p.tick = Duration::from_millis(1);
    let r = run(&p);
    assert!(
        r.violations.is_empty(),
        "seed 92, five nodes, 1 ms steps: {:#?}",
        r.violations
    );
}

/// A write or sync failing on each file of the engine in turn — a segment, the spare
/// segment as it becomes the next one, the acknowledgment file, the metadata and its mirror
/// copy (a failure between the two copies): each node stops itself, restarts from what it
/// made durable, and nothing acknowledged is lost.
#[test]
fn a_failure_on_each_engine_file_stops_the_node_and_it_recovers() {
    let at = |ms: u64| Duration::from_millis(ms);
    let fault = |node, sync, on| Event::DiskFault { node, sync, on };
    let mut p = Plan::new(7);
    p.schedule = Some(vec![
        // The spare becomes a segment only at a roll-over: its fault waits longest.
        (at(1_000), fault(2, false, EngineFile::Spare)),
        (at(1_500), fault(0, false, EngineFile::Meta)),
        (at(4_000), Event::Recover(0)),
        (at(4_500), fault(1, true, EngineFile::MetaMirror)),
        (at(7_000), Event::Recover(1)),
        (at(7_500), fault(0, true, EngineFile::Acked)),
        (at(10_000), Event::Recover(0)),
        (at(10_500), fault(1, false, EngineFile::MetaMirror)),
        (at(13_000), Event::Recover(1)),
        (at(18_000), Event::Recover(2)),
        (at(18_500), fault(2, true, EngineFile::Segment)),
        (at(21_000), Event::Recover(2)),
        (at(21_500), Event::Heal),
    ]);
    let r = run(&p);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    let stopped: Vec<&String> = r
        .faults
        .iter()
        .filter(|f| f.contains("had stopped"))
        .collect();
    for (op, file) in [
        ("write", "/meta.tmp"),
        ("fsync", "/meta.mirror.tmp"),
        ("write", "/meta.mirror.tmp"),
        ("write", "/prealloc.tmp"),
        ("fdatasync", "/acked"),
        ("fdatasync", ".seg"),
    ] {
        assert!(
            stopped
                .iter()
                .any(|f| f.contains(&format!("{op} ")) && f.contains(&format!("{file}:"))),
            "no stop on a failed {op} of {file}: {stopped:#?}"
        );
    }
}

/// Seed 2, five nodes, 2 ms steps, with the faults it drew when it found the stale join.
fn seed_2_five_nodes() -> Plan {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(2);
    p.nodes = 5;
    p.tick = Duration::from_millis(2);
    p.schedule = Some(vec![
        (at(1_630), Event::Split(vec![1, 2])),
        (at(5_473), Event::Heal),
        (at(6_160), Event::Hold(0, 4)),
        (at(8_203), Event::Release(0, 4)),
        (at(9_212), Event::Crash(3)),
        (at(12_565), Event::Restart(3)),
        (at(12_906), Event::Join { node: 5, via: 2 }),
        (at(15_459), Event::Remove(1)),
        (at(19_740), Event::Isolate(3)),
        (at(21_471), Event::Heal),
        (at(22_552), Event::Heal),
    ]);
    p
}

/// Seed 102 with the faults it drew when it found the stall (the drawing has changed
/// since): the old leader, holding an entry the others lack, isolated at 16.955 s.
fn seed_102() -> Plan {
    let at = |ms: u64| Duration::from_millis(ms);
    let mut p = Plan::new(102);
    p.schedule = Some(vec![
        (
            at(2_181),
            Event::DiskFault {
                node: 0,
                sync: false,
                on: EngineFile::Segment,
            },
        ),
        (at(2_931), Event::Recover(0)),
        (at(4_499), Event::Hold(0, 1)),
        (at(7_335), Event::Release(0, 1)),
        (
            at(7_733),
            Event::DiskFault {
                node: 2,
                sync: false,
                on: EngineFile::Segment,
            },
        ),
        (at(8_825), Event::Recover(2)),
        (at(9_779), Event::Isolate(0)),
        (at(13_106), Event::Heal),
        (at(14_473), Event::Crash(2)),
        (at(15_142), Event::Restart(2)),
        (at(16_955), Event::Isolate(2)),
        (at(19_192), Event::Heal),
        (at(19_471), Event::Join { node: 3, via: 0 }),
        (at(22_989), Event::Remove(2)),
        (at(27_703), Event::Heal),
    ]);
    p
}
