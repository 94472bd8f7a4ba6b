//! In-process gossip tests: real chitchat instances over loopback UDP, with loss and
//! partitions injected by [`Faults`](super::faults::Faults).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::rules::{diff, judge_health, significant};
use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// Gossip period in these tests: fast, with room for a loaded machine (chitchat's timeout
/// at phi 8 is about 8 periods).
const INTERVAL: Duration = Duration::from_millis(200);
const CONVERGE: Duration = Duration::from_secs(30);

// The black-box tests' port picker: ports outside the ephemeral range, which no outgoing
// socket can take between the pick and the node's bind.
#[path = "../../../tests/src/ports.rs"]
mod ports;

fn free_udp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

fn settings(addr: SocketAddr, seeds: &[SocketAddr]) -> GossipSettings {
    let mut s = GossipSettings::new(addr);
    s.seeds = seeds.iter().map(|a| a.to_string()).collect();
    s.interval = INTERVAL;
    s.partition_grace = Duration::from_secs(1);
    s.cluster_keys = vec!["test-key".into()];
    s
}

fn published(id: u64) -> Published {
    Published {
        node_id: id,
        grpc: format!("127.0.0.1:{}", 10_000 + id),
        role: "worker".into(),
        tags: BTreeMap::from([("zone".to_string(), format!("z{}", id % 2))]),
        slots: 2,
        cpu_millis: 2000,
        memory_bytes: 1 << 30,
    }
}

/// `n` nodes, ids 1..=n; every one but the first seeded with the first.
async fn cluster(n: u64, tweak: impl Fn(&mut GossipSettings)) -> Vec<Arc<Membership>> {
    let mut nodes = vec![first_node(&tweak).await];
    grow(&mut nodes, n, tweak).await;
    nodes
}

async fn first_node(tweak: impl Fn(&mut GossipSettings)) -> Arc<Membership> {
    let mut s = settings(free_udp(), &[]);
    tweak(&mut s);
    Membership::start(s, published(1), Default::default())
        .await
        .expect("start")
}

/// Adds nodes seeded with the first until there are `n`.
async fn grow(nodes: &mut Vec<Arc<Membership>>, n: u64, tweak: impl Fn(&mut GossipSettings)) {
    let first = nodes[0].gossip_addr();
    for id in nodes.len() as u64 + 1..=n {
        let mut s = settings(free_udp(), &[first]);
        tweak(&mut s);
        nodes.push(
            Membership::start(s, published(id), Default::default())
                .await
                .expect("start"),
        );
    }
}

async fn until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive_ids(m: &Membership) -> Vec<u64> {
    m.view()
        .members
        .values()
        .filter(|x| x.liveness == Liveness::Alive)
        .map(|x| x.id)
        .collect()
}

async fn converged(nodes: &[Arc<Membership>], ids: &[u64]) {
    until(
        "every view to hold exactly the live nodes",
        CONVERGE,
        || nodes.iter().all(|m| alive_ids(m) == ids).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_join_and_converge_with_what_each_publishes() {
    let mut nodes = vec![first_node(|_| {}).await];
    let mut events = nodes[0].subscribe();
    grow(&mut nodes, 5, |_| {}).await;
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    for m in &nodes {
        let v = m.view();
        assert_eq!(v.health, Health::Healthy, "node {}", m.node_id());
        assert_eq!((v.alive, v.known), (5, 5));
        for id in 1..=5u64 {
            let x = v.member(id).unwrap();
            assert_eq!(x.grpc, format!("127.0.0.1:{}", 10_000 + id));
            assert_eq!(x.role, "worker");
            assert_eq!(x.capacity, format!("2/2000/{}", 1u64 << 30));
            assert_eq!(x.tags["zone"], format!("z{}", id % 2));
            assert_eq!(x.tags["role"], "worker");
            assert_eq!(x.tags["available"], "true");
            assert!(x.available());
        }
    }
    let mut joined = Vec::new();
    while let Some(Received::Event(e)) = events.try_next() {
        if let Event::Joined { node } = e {
            joined.push(node);
        }
    }
    joined.sort();
    assert_eq!(joined, vec![2, 3, 4, 5], "node 1 saw every other node join");
    // Load travels too.
    nodes[2].set_load(2).await;
    until("node 3's load everywhere", CONVERGE, || {
        nodes
            .iter()
            .all(|m| m.view().member(3).is_some_and(|x| x.load == 2))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_is_declared_failed_within_the_detectors_bound() {
    let nodes = cluster(5, |_| {}).await;
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    // Let the detector sample a few intervals past its prior.
    tokio::time::sleep(INTERVAL * 10).await;
    let mut subs: Vec<Events> = nodes[..4].iter().map(|m| m.subscribe()).collect();
    // The detector's bound as each survivor sees node 5 now: chitchat's timeout at the
    // threshold, plus a gossip round for the liveness update and a monitor tick.
    let phi_before: Vec<f64> = nodes[..4]
        .iter()
        .map(|m| m.view().member(5).unwrap().phi.unwrap())
        .collect();
    assert!(
        phi_before.iter().all(|p| *p < PHI_THRESHOLD_DEFAULT),
        "{phi_before:?}"
    );
    let killed = Instant::now();
    nodes[4].stop().await;
    let mut took = Vec::new();
    for (i, m) in nodes[..4].iter().enumerate() {
        until("node 5 failed", CONVERGE, || {
            (m.view().member(5).unwrap().liveness == Liveness::Dead).then_some(())
        })
        .await;
        took.push((i, killed.elapsed()));
    }
    // The bound: threshold × mean interval (the mean is near INTERVAL; the prior and jitter
    // can push it up) plus a round and a tick; generous for a loaded machine.
    let bound =
        INTERVAL.mul_f64(PHI_THRESHOLD_DEFAULT * 2.0) + INTERVAL * 2 + Duration::from_secs(2);
    for (i, t) in &took {
        assert!(*t <= bound, "node {} took {t:?} (bound {bound:?})", i + 1);
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let mut failed = Vec::new();
        while let Some(r) = s.try_next() {
            if let Received::Event(Event::Failed { node }) = r {
                failed.push(node);
            }
        }
        assert_eq!(failed, vec![5], "node {} saw only node 5 fail", i + 1);
    }
    for m in &nodes[..4] {
        assert_eq!(
            m.view().health,
            Health::Healthy,
            "4 of 5 alive is a majority"
        );
        assert!(m.view().member(5).unwrap().phi.unwrap() > PHI_THRESHOLD_DEFAULT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_two_partition_leaves_the_two_partitioned_and_the_three_working() {
    let nodes = cluster(5, |_| {}).await;
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    let (big, small) = nodes.split_at(3);
    let mut small_events: Vec<Events> = small.iter().map(|m| m.subscribe()).collect();
    for a in big {
        for b in small {
            a.faults().block(b.gossip_addr());
            b.faults().block(a.gossip_addr());
        }
    }
    until(
        "the two-node side to report itself partitioned",
        CONVERGE,
        || {
            small
                .iter()
                .all(|m| m.view().health == Health::Partitioned)
                .then_some(())
        },
    )
    .await;
    for m in small {
        assert!(!m.accepting_work(), "a partitioned node takes no work");
        let v = m.view();
        assert_eq!((v.alive, v.known), (2, 5));
        assert_eq!(v.member(m.node_id()).unwrap().tags["available"], "false");
    }
    for s in small_events.iter_mut() {
        let mut detected = false;
        while let Some(r) = s.try_next() {
            detected |= matches!(
                r,
                Received::Event(Event::PartitionDetected { alive: 2, known: 5 })
            );
        }
        assert!(detected, "PartitionDetected was emitted");
    }
    for m in big {
        let v = m.view();
        assert_eq!(v.health, Health::Healthy, "node {}", m.node_id());
        assert!(m.accepting_work());
        assert_eq!(alive_ids(m), vec![1, 2, 3]);
        assert_eq!(v.member(4).unwrap().liveness, Liveness::Dead);
    }
    for m in &nodes {
        m.faults().heal();
    }
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    until("the partition to heal", CONVERGE, || {
        nodes
            .iter()
            .all(|m| m.view().health == Health::Healthy && m.accepting_work())
            .then_some(())
    })
    .await;
    until("4 and 5 available again everywhere", CONVERGE, || {
        nodes
            .iter()
            .all(|m| m.view().members.values().all(|x| x.available()))
            .then_some(())
    })
    .await;
    for s in small_events.iter_mut() {
        let mut healed = false;
        while let Some(r) = s.try_next() {
            healed |= matches!(r, Received::Event(Event::PartitionHealed { .. }));
        }
        assert!(healed, "PartitionHealed was emitted");
    }
}

/// The lossy window, in seconds (`CATHEDRAL_GOSSIP_LOSS_SECS`, default 60).
fn loss_window() -> Duration {
    Duration::from_secs(
        std::env::var("CATHEDRAL_GOSSIP_LOSS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_fifth_of_datagrams_dropped_membership_converges_and_nobody_is_failed() {
    let seed: u64 = std::env::var("CATHEDRAL_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (CATHEDRAL_TEST_SEED={seed} repeats it)");
    let nodes = cluster(5, |s| s.fault_seed = seed ^ s.bind.port() as u64).await;
    for m in &nodes {
        m.faults().set_drop_rate(0.2);
    }
    let mut subs: Vec<Events> = nodes.iter().map(|m| m.subscribe()).collect();
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    let window = loss_window();
    let start = Instant::now();
    while start.elapsed() < window {
        for m in &nodes {
            assert_eq!(alive_ids(m), vec![1, 2, 3, 4, 5], "seed {seed}");
            assert_eq!(m.view().health, Health::Healthy, "seed {seed}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut dropped = 0;
    for (i, m) in nodes.iter().enumerate() {
        while let Some(r) = subs[i].try_next() {
            assert!(
                !matches!(r, Received::Event(Event::Failed { .. })),
                "node {} saw {r:?} (seed {seed})",
                i + 1
            );
        }
        dropped += m.counters().dropped_by_faults;
    }
    let sent: u64 = nodes.iter().map(|m| m.counters().datagrams_sent).sum();
    let share = dropped as f64 / (dropped + sent) as f64;
    assert!(
        (0.15..0.25).contains(&share),
        "dropped {share} (seed {seed})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_seeds_are_retried_with_backoff_until_one_appears() {
    let seed_addr = free_udp();
    let a = Membership::start(
        settings(free_udp(), &[seed_addr]),
        published(1),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(a.view().health, Health::Unknown);
    // Nobody answers: every attempt fails, with the backoff between them.
    let started = Instant::now();
    let e = a
        .join_with(
            &[seed_addr.to_string()],
            3,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(((100 + 200 + 400) as f64 * 0.75) as u64),
        "{waited:?}"
    );
    assert!(
        e.to_string()
            .contains("none of the seeds answered after 3 attempts")
            && e.to_string().contains(&seed_addr.to_string()),
        "{e}"
    );
    assert!(a.join_error().is_some());
    // The seed appears a second and a half into the next join.
    let b = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Membership::start(settings(seed_addr, &[]), published(2), Default::default())
            .await
            .unwrap()
    });
    let attempt = a.join(&[seed_addr.to_string()]).await.unwrap();
    assert!(attempt > 1, "joined at attempt {attempt}");
    assert!(a.join_error().is_none());
    let b = b.await.unwrap();
    converged(&[a.clone(), b.clone()], &[1, 2]).await;
    assert_eq!(a.view().health, Health::Healthy);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tag_updates_converge_to_one_view() {
    let nodes = cluster(5, |_| {}).await;
    converged(&nodes, &[1, 2, 3, 4, 5]).await;
    let mut tasks = Vec::new();
    for (i, m) in nodes.iter().enumerate().take(4) {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                let set = BTreeMap::from([
                    ("gpu".to_string(), format!("{}", (i + round) % 3)),
                    (format!("k{round}"), format!("v{i}")),
                ]);
                let unset = vec![format!("k{}", round.max(1) - 1)];
                m.set_tags(&set, &unset).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    nodes[0]
        .set_tags(&BTreeMap::from([("available".into(), "false".into())]), &[])
        .await
        .unwrap();
    let expected = |m: &Membership| -> BTreeMap<u64, BTreeMap<String, String>> {
        m.view()
            .members
            .values()
            .map(|x| (x.id, x.tags.clone()))
            .collect()
    };
    let view = until("every node to hold the same final tags", CONVERGE, || {
        let first = expected(&nodes[0]);
        let done = first[&1].get("available").is_some_and(|v| v == "false")
            && (0..4u64).all(|i| first[&(i + 1)].get("k19") == Some(&format!("v{i}")));
        (done && nodes.iter().all(|m| expected(m) == first)).then_some(first)
    })
    .await;
    for i in 0..4u64 {
        let t = &view[&(i + 1)];
        assert_eq!(t["gpu"], format!("{}", (i + 19) % 3));
        assert_eq!(t["k19"], format!("v{i}"));
        assert!(!t.contains_key("k18"), "{t:?}");
    }
    assert_eq!(view[&1]["available"], "false");
    assert!(!nodes[2].view().member(1).unwrap().available());
    assert!(nodes[2].view().member(2).unwrap().available());
}

#[tokio::test(flavor = "multi_thread")]
async fn datagrams_without_the_cluster_key_are_dropped_and_counted() {
    let a_addr = free_udp();
    let a = Membership::start(settings(a_addr, &[]), published(1), Default::default())
        .await
        .unwrap();
    let mut other = settings(free_udp(), &[a_addr]);
    other.cluster_keys = vec!["another-key".into()];
    let b = Membership::start(other, published(2), Default::default())
        .await
        .unwrap();
    let e = b
        .join_with(
            &[a_addr.to_string()],
            3,
            Duration::from_millis(50),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, GossipError::NoSeedAnswered { .. }), "{e}");
    assert!(a.counters().rejected_mac > 0, "{:?}", a.counters());
    assert_eq!(alive_ids(&a), vec![1]);
    // Junk on the port is dropped the same way.
    let before = a.counters().rejected_mac;
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(
        b"not a gossip datagram at all, certainly not with a MAC",
        a_addr,
    )
    .unwrap();
    until("the junk datagram to be counted", CONVERGE, || {
        (a.counters().rejected_mac > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaving_node_is_seen_as_left_not_failed() {
    let nodes = cluster(3, |_| {}).await;
    converged(&nodes, &[1, 2, 3]).await;
    let mut subs: Vec<Events> = nodes[..2].iter().map(|m| m.subscribe()).collect();
    let started = Instant::now();
    nodes[2].leave().await;
    assert!(started.elapsed() <= LEAVE_WAIT_MAX + Duration::from_millis(500));
    for m in &nodes[..2] {
        until("node 3 left", CONVERGE, || {
            (m.view().member(3).unwrap().liveness == Liveness::Left).then_some(())
        })
        .await;
    }
    // Long enough for the detector to have failed it, were it not marked left.
    tokio::time::sleep(INTERVAL * 20).await;
    for (i, s) in subs.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while let Some(Received::Event(e)) = s.try_next() {
            seen.push(e);
        }
        assert!(seen.contains(&Event::Left { node: 3 }), "{seen:?}");
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Failed { .. })),
            "node {} saw {seen:?}",
            i + 1
        );
        let v = nodes[i].view();
        assert_eq!(v.member(3).unwrap().liveness, Liveness::Left);
        assert_eq!((v.alive, v.known), (2, 2), "a left node is not counted");
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_told_how_many_events_it_missed() {
    let (tx, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut slow = Events {
        rx: tx.subscribe(),
        dropped: dropped.clone(),
    };
    for node in 0..1_500u64 {
        tx.send(Event::Joined { node }).unwrap();
    }
    // tokio rounds the capacity up to a power of two.
    let kept = EVENT_CHANNEL_CAPACITY.next_power_of_two() as u64;
    let missed = 1_500 - kept;
    assert_eq!(slow.next().await, Some(Received::Missed(missed)));
    assert_eq!(
        slow.next().await,
        Some(Received::Event(Event::Joined { node: missed }))
    );
    assert_eq!(dropped.load(Ordering::Relaxed), missed);
}

#[test]
fn tags_are_checked_against_their_bounds() {
    assert!(check_tag("zone", "eu-1").is_ok());
    assert!(check_tag("available", "false").is_ok());
    for (k, v, why) in [
        ("", "x", "1..=64"),
        (&"k".repeat(65) as &str, "x", "TAG_KEY_BYTES_MAX"),
        ("a b", "x", "letters, digits"),
        ("role", "x", "--role"),
        ("available", "maybe", "true or false"),
        ("zone", &"v".repeat(257), "TAG_VALUE_BYTES_MAX"),
    ] {
        let e = check_tag(k, v).unwrap_err().to_string();
        assert!(e.contains(why), "{k:?}: {e}");
    }
    let many: BTreeMap<String, String> = (0..=TAGS_MAX)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    assert!(check_tags(&many)
        .unwrap_err()
        .to_string()
        .contains("TAGS_MAX"));
}

// ---------------------------------------------------------------------------------------
// The pure parts of a monitor tick: the view diff, health, significance.

fn member(id: u64, liveness: Liveness, tags: &[(&str, &str)], since: Instant) -> Member {
    Member {
        id,
        generation: 1,
        gossip: "127.0.0.1:1".parse().unwrap(),
        grpc: format!("127.0.0.1:{}", 5000 + id),
        role: "coordinator".into(),
        version: "0".into(),
        cluster: String::new(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        capacity: String::new(),
        load: 0,
        liveness,
        phi: Some(0.0),
        since,
    }
}

fn members(ms: Vec<Member>) -> BTreeMap<u64, Member> {
    ms.into_iter().map(|m| (m.id, m)).collect()
}

#[test]
fn the_diff_names_every_transition_of_the_other_nodes() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let before = members(vec![
        member(1, Liveness::Alive, &[], t0), // me
        member(2, Liveness::Joining, &[], t0),
        member(3, Liveness::Alive, &[], t0),
        member(4, Liveness::Dead, &[], t0),
        member(5, Liveness::Alive, &[], t0),
        member(6, Liveness::Alive, &[("zone", "a")], t0),
    ]);
    let mut now = members(vec![
        member(1, Liveness::Dead, &[], t1),
        member(2, Liveness::Alive, &[], t1),
        member(3, Liveness::Dead, &[], t1),
        member(4, Liveness::Alive, &[], t1),
        member(5, Liveness::Left, &[], t1),
        member(6, Liveness::Alive, &[("zone", "b")], t1),
        member(7, Liveness::Alive, &[], t1),
    ]);
    let events = diff(1, &before, &mut now);
    assert_eq!(
        events,
        vec![
            Event::Joined { node: 2 },
            Event::Failed { node: 3 },
            Event::Recovered { node: 4 },
            Event::Left { node: 5 },
            Event::TagsUpdated {
                node: 6,
                tags: [("zone".to_string(), "b".to_string())].into()
            },
            Event::Joined { node: 7 },
        ]
    );
    // `since` is kept while the liveness stays, and moves when it changes.
    assert_eq!(now[&6].since, t0);
    assert_eq!(now[&3].since, t1);
}

#[test]
fn a_new_generation_still_joining_keeps_the_standing_the_node_had() {
    let t0 = Instant::now();
    let before = members(vec![member(2, Liveness::Alive, &[], t0)]);
    let mut now = members(vec![member(
        2,
        Liveness::Joining,
        &[],
        t0 + Duration::from_secs(1),
    )]);
    assert!(diff(1, &before, &mut now).is_empty());
    assert_eq!(now[&2].liveness, Liveness::Alive);
    assert_eq!(now[&2].since, t0);
}

#[test]
fn health_is_suspect_below_the_quorum_then_partitioned_after_the_grace() {
    let t0 = Instant::now();
    let grace = Duration::from_secs(30);
    let (mut contacted, mut below) = (false, Default::default());
    let alone = members(vec![member(1, Liveness::Alive, &[], t0)]);
    let h = judge_health(1, &alone, 0.5, grace, t0, &mut contacted, &mut below);
    assert_eq!(h, (Health::Unknown, 1, 1), "nobody seen yet");
    let two_of_three = members(vec![
        member(1, Liveness::Alive, &[], t0),
        member(2, Liveness::Alive, &[], t0),
        member(3, Liveness::Dead, &[], t0),
        member(4, Liveness::Joining, &[], t0),
        member(5, Liveness::Left, &[], t0),
    ]);
    let h = judge_health(1, &two_of_three, 0.5, grace, t0, &mut contacted, &mut below);
    assert_eq!(
        h,
        (Health::Healthy, 2, 3),
        "joining and left nodes do not count"
    );
    let one_of_three = members(vec![
        member(1, Liveness::Alive, &[], t0),
        member(2, Liveness::Dead, &[], t0),
        member(3, Liveness::Dead, &[], t0),
    ]);
    let h = judge_health(1, &one_of_three, 0.5, grace, t0, &mut contacted, &mut below);
    assert_eq!(h.0, Health::Suspect);
    let later = t0 + grace;
    let h = judge_health(
        1,
        &one_of_three,
        0.5,
        grace,
        later,
        &mut contacted,
        &mut below,
    );
    assert_eq!(h, (Health::Partitioned, 1, 3));
    let h = judge_health(
        1,
        &two_of_three,
        0.5,
        grace,
        later,
        &mut contacted,
        &mut below,
    );
    assert_eq!(h.0, Health::Healthy, "healed");
    assert_eq!(below, Default::default());
}

#[test]
fn only_changes_that_matter_wake_the_watchers() {
    let t0 = Instant::now();
    let previous = View {
        me: 1,
        health: Health::Healthy,
        alive: 2,
        known: 2,
        members: members(vec![
            member(1, Liveness::Alive, &[], t0),
            member(2, Liveness::Alive, &[], t0),
        ]),
    };
    let mut same = previous.members.clone();
    same.get_mut(&2).unwrap().phi = Some(3.5);
    assert!(!significant(&previous, Health::Healthy, &same), "phi alone");
    assert!(significant(&previous, Health::Suspect, &same), "health");
    let mut loaded = previous.members.clone();
    loaded.get_mut(&2).unwrap().load = 3;
    assert!(significant(&previous, Health::Healthy, &loaded), "load");
    let mut tagged = previous.members.clone();
    tagged
        .get_mut(&2)
        .unwrap()
        .tags
        .insert("k".into(), "v".into());
    assert!(significant(&previous, Health::Healthy, &tagged), "tags");
    let mut fewer = previous.members.clone();
    fewer.remove(&2);
    assert!(
        significant(&previous, Health::Healthy, &fewer),
        "membership"
    );
}
