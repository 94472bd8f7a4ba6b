//! Gossip alone at scale, in simulated time: N members, each the real `Membership` (chitchat
//! 0.13 with Cathedral's view, phi-accrual detector and monitor), over chitchat's in-process
//! transport behind a seeded lossy link (`cathedral_sim::lossy`; ClusterSim itself now gossips over turmoil's UDP), on one thread with tokio's paused clock — time
//! jumps to the next timer whenever every member waits, so 500 members' minutes run in
//! seconds, and the figures are simulated time, independent of the machine's speed.
//!
//! For each size: time for every member to see every other alive after all start (seeded
//! with the first); time for a tag set on one member to reach every view (three trials);
//! bytes sent per member per second over a steady window; time for every other member to
//! see a silent member (stopped, as a crash looks) as dead, p50 and p99 over the
//! observers; and, under 5 % and 20 % loss on every datagram, false suspicions — live
//! members some observer declared failed — over a minute, with the tag spread under loss.
//!
//! ```text
//! cargo bench -p cathedral-sim --bench gossip_scale -- [--nodes 10,50,100,250,500]
//!     [--seed 1] [--window-secs 60]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cathedral_server::gossip::{
    Event, GossipEdges, GossipSettings, Liveness, Membership, Published, Received,
};
use cathedral_sim::lossy::Lossy;
use chitchat::transport::ChannelTransport;
use tokio::time::Instant;

/// Longest any phase may take, in simulated time, before the run says it did not end.
const PHASE_MAX: Duration = Duration::from_secs(600);
/// How often the measurements look at the members' views (simulated).
const POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
struct Args {
    nodes: Vec<u64>,
    seed: u64,
    window_secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        nodes: vec![10, 50, 100, 250, 500],
        seed: 1,
        window_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--nodes" => {
                a.nodes = it
                    .next()
                    .expect("--nodes 10,50")
                    .split(',')
                    .map(|n| n.parse().expect("a number"))
                    .collect()
            }
            "--seed" => a.seed = it.next().expect("N").parse().expect("a number"),
            "--window-secs" => a.window_secs = it.next().expect("N").parse().expect("a number"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (id / 256) as u8, (id % 256) as u8)),
        7001,
    )
}

struct Cluster {
    members: Vec<Arc<Membership>>,
    link: Lossy,
}

async fn start(n: u64, seed: u64) -> Cluster {
    let link = Lossy::new(ChannelTransport::default(), 0, seed);
    let lossy = Arc::new(link.clone());
    let mut members = Vec::new();
    for id in 1..=n {
        let mut s = GossipSettings::new(addr(id));
        if id > 1 {
            s.seeds = vec![addr(1).to_string()];
        }
        let p = Published {
            node_id: id,
            grpc: format!("10.1.0.{}:7000", id % 256),
            role: "worker".into(),
            tags: BTreeMap::from([("zone".to_string(), format!("z{}", id % 3))]),
            slots: 4,
            cpu_millis: 4000,
            memory_bytes: 1 << 32,
        };
        let edges = GossipEdges {
            transport: Some(lossy.clone()),
            started_ms: Some(1),
        };
        members.push(Membership::start(s, p, edges).await.expect("start"));
    }
    Cluster { members, link }
}

/// Polls `done` every [`POLL`] of simulated time; the simulated time it took.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PHASE_MAX,
            "{what}: not within {PHASE_MAX:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn all_alive(c: &Cluster, n: u64) -> bool {
    c.members.iter().all(|m| {
        let v = m.view();
        v.members.len() as u64 == n && v.members.values().all(|x| x.liveness == Liveness::Alive)
    })
}

/// Sets tag `bench=value` on member `who` and waits until every view holds it.
async fn spread(c: &Cluster, who: usize, value: &str) -> Duration {
    let m = &c.members[who];
    let set = BTreeMap::from([("bench".to_string(), value.to_string())]);
    let start = Instant::now();
    m.set_tags(&set, &[]).await.expect("set tag");
    let id = m.node_id();
    until("the tag everywhere", || {
        c.members.iter().all(|o| {
            o.view()
                .member(id)
                .is_some_and(|x| x.tags.get("bench").map(String::as_str) == Some(value))
        })
    })
    .await;
    start.elapsed()
}

/// Members some observer declared failed over `window` (none failed for real), the
/// failure events, and events the feeds missed (then the figures are lower bounds).
async fn false_suspicions(c: &Cluster, window: Duration) -> (usize, usize, u64) {
    let mut feeds: Vec<_> = c.members.iter().map(|m| m.subscribe()).collect();
    let mut suspected: BTreeSet<u64> = BTreeSet::new();
    let (mut events, mut missed) = (0, 0);
    let end = Instant::now() + window;
    while Instant::now() < end {
        tokio::time::sleep(POLL).await;
        for f in &mut feeds {
            while let Some(r) = f.try_next() {
                match r {
                    Received::Event(Event::Failed { node }) => {
                        suspected.insert(node);
                        events += 1;
                    }
                    Received::Missed(n) => missed += n,
                    Received::Event(_) => {}
                }
            }
        }
    }
    (suspected.len(), events, missed)
}

async fn size(n: u64, a: &Args) {
    let c = start(n, a.seed).await;
    let converge = until("convergence", || all_alive(&c, n)).await;
    let mut tags: Vec<Duration> = Vec::new();
    for t in 0..3 {
        tags.push(spread(&c, (t * 7) % c.members.len(), &format!("v{t}")).await);
    }
    tags.sort();
    // Steady traffic.
    let before = c.link.inner().statistics();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let after = c.link.inner().statistics();
    let bytes =
        (after.num_bytes_total - before.num_bytes_total) as f64 / n as f64 / window.as_secs_f64();
    // Under loss: false suspicions over the window, and a tag's spread.
    let mut lossy = Vec::new();
    for permille in [50, 200] {
        c.link.set_loss_permille(permille);
        let (suspected, events, missed) =
            false_suspicions(&c, Duration::from_secs(a.window_secs)).await;
        if missed > 0 {
            eprintln!("{n} members, {permille}‰ loss: the feeds missed {missed} events");
        }
        let tag = spread(&c, 1, &format!("loss{permille}")).await;
        lossy.push((permille, suspected, events, tag));
        c.link.set_loss_permille(0);
        until("recovery after loss", || all_alive(&c, n)).await;
    }
    // A member goes silent (as a crash looks): when does each other member see it dead?
    let victim = c.members.last().expect("members").clone();
    let id = victim.node_id();
    victim.stop().await;
    let start = Instant::now();
    let observers = &c.members[..c.members.len() - 1];
    let mut seen: Vec<Option<Duration>> = vec![None; observers.len()];
    until("every member to see the silent one dead", || {
        for (i, o) in observers.iter().enumerate() {
            if seen[i].is_none()
                && o.view()
                    .member(id)
                    .is_some_and(|x| x.liveness == Liveness::Dead)
            {
                seen[i] = Some(start.elapsed());
            }
        }
        seen.iter().all(Option::is_some)
    })
    .await;
    let mut detect: Vec<Duration> = seen.into_iter().flatten().collect();
    detect.sort();
    println!(
        "| {n} | {} | {} / {} | {:.0} | {} / {} | {} ({} events), tag {} | {} ({} events), tag {} |",
        ms(converge),
        ms(percentile(&tags, 0.5)),
        ms(*tags.last().expect("trials")),
        bytes,
        ms(percentile(&detect, 0.5)),
        ms(percentile(&detect, 0.99)),
        lossy[0].1,
        lossy[0].2,
        ms(lossy[0].3),
        lossy[1].1,
        lossy[1].2,
        ms(lossy[1].3),
    );
    for m in &c.members {
        m.stop().await;
    }
}

fn main() {
    let a = args();
    println!(
        "## gossip alone in simulated time (500 ms rounds, 3 peers a round, phi 8), seed {}\n",
        a.seed
    );
    println!("| members | converge | tag p50 / max | bytes / member / s | detect p50 / p99 | 5 % loss: falsely failed | 20 % loss: falsely failed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &a.nodes {
        let wall = std::time::Instant::now();
        // Each size on a thread of its own whose OS entropy is the seed's: chitchat picks
        // its gossip targets through rand's thread generator, seeded from `getrandom`
        // (`cathedral_sim::entropy`), so one seed and one list of sizes give the same
        // figures every time. (A size's figures still depend on the sizes run before it in
        // the process: something process-wide, not found.)
        let a = a.clone();
        std::thread::spawn(move || {
            cathedral_sim::entropy::seed_thread(Some(a.seed ^ n));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a runtime");
            rt.block_on(size(n, &a));
        })
        .join()
        .expect("a size's run");
        eprintln!(
            "{n} members: {:.1} s of wall time",
            wall.elapsed().as_secs_f64()
        );
    }
}
