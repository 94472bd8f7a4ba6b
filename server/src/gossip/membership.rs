//! The running membership: chitchat started over the authenticated transport, what this
//! node publishes (and changes to it), joining through the seeds, leaving, and the monitor
//! that turns chitchat's state into a [`View`] every tick (the decisions are in `rules`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    NodeState, ProtocolVersion,
};
use rand::Rng;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::rules::{check_tags, diff, invalid_tag, judge_health, significant};
use super::transport::{AuthenticatedUdp, ClusterKey, Counters, CountersSnapshot};
use super::view::{Event, Events, Health, Liveness, Member, View};
use super::*;

/// What only this node decides about what it publishes.
struct Local {
    published: Published,
    cluster: String,
    partitioned: bool,
    leaving: bool,
    load: u64,
}

impl Local {
    /// The key-values this node gossips.
    fn key_values(&self) -> Vec<(String, String)> {
        let p = &self.published;
        let mut kv = vec![
            ("id".to_string(), p.node_id.to_string()),
            ("grpc".to_string(), p.grpc.clone()),
            ("role".to_string(), p.role.clone()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            (
                "capacity".to_string(),
                format!("{}/{}/{}", p.slots, p.cpu_millis, p.memory_bytes),
            ),
            ("load".to_string(), self.load.to_string()),
            ("cluster".to_string(), self.cluster.clone()),
            ("leaving".to_string(), self.leaving.to_string()),
        ];
        for (k, v) in self.tags() {
            kv.push((format!("{TAG_PREFIX}{k}"), v));
        }
        kv
    }

    /// Every tag this node advertises.
    fn tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.published.tags.clone();
        let operator = tags.get("available").is_none_or(|v| v == "true");
        let available = operator && !self.partitioned && !self.leaving;
        tags.insert("available".into(), available.to_string());
        tags.insert("role".into(), self.published.role.clone());
        tags
    }
}

/// Per chitchat node: when its heartbeat last advanced, and its last detection timeout.
struct Sample {
    heartbeat: u64,
    at: Instant,
    timeout: Option<Duration>,
}

/// The monitor's memory between ticks.
struct Tracker {
    samples: HashMap<ChitchatId, Sample>,
    /// Nodes (generations) seen alive at least once.
    ever_alive: HashSet<ChitchatId>,
    /// When the alive fraction first fell below the quorum fraction (this stretch).
    below_since: Option<Instant>,
    /// Whether any other node has been seen alive (ends `Health::Unknown`).
    contacted: bool,
}

/// A running gossip membership.
pub struct Membership {
    id: u64,
    settings: GossipSettings,
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    counters: Arc<Counters>,
    #[cfg(test)]
    faults: Arc<super::faults::Faults>,
    events: broadcast::Sender<Event>,
    dropped: Arc<AtomicU64>,
    view: watch::Sender<Arc<View>>,
    local: Mutex<Local>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    join_error: Mutex<Option<String>>,
}

fn generation_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a node gives its gossip beside the settings (see `edges::Edges`).
#[derive(Default, Clone)]
pub struct GossipEdges {
    /// chitchat's transport; `None`: authenticated UDP on the host.
    pub transport: Option<Arc<dyn chitchat::transport::Transport>>,
    /// When this run started by the node's clock: its gossip generation (a restarted
    /// node's is later, so peers take its state as new); `None`: the wall clock.
    pub started_ms: Option<u64>,
}

impl Membership {
    /// Binds the gossip socket and starts gossiping (with the configured seeds, which
    /// chitchat keeps contacting every round) and the monitor.
    /// `given`: what the node was given beside its settings (a simulation's transport and
    /// clock; by default UDP on the host and the wall clock).
    ///
    /// Long on purpose: chitchat's configuration, the transport chosen and the tasks
    /// started are read in one place, in the order they start.
    pub async fn start(
        settings: GossipSettings,
        published: Published,
        given: GossipEdges,
    ) -> Result<Arc<Membership>, GossipError> {
        let GossipEdges {
            transport: given,
            started_ms,
        } = given;
        check_tags(&published.tags)?;
        if settings.cluster_keys.is_empty() {
            tracing::warn!(
                "no --cluster-key: gossip datagrams are authenticated with the empty key, so anyone who can reach the gossip port can take part"
            );
        }
        let counters = Arc::new(Counters::default());
        #[cfg(test)]
        let faults = Arc::new(super::faults::Faults::new(settings.fault_seed));
        let transport = AuthenticatedUdp {
            key: ClusterKey::ring(&settings.cluster_keys),
            counters: counters.clone(),
            #[cfg(test)]
            faults: faults.clone(),
        };
        let id = published.node_id;
        let local = Local {
            published,
            cluster: String::new(),
            partitioned: false,
            leaving: false,
            load: 0,
        };
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                id.to_string(),
                started_ms.unwrap_or_else(generation_now),
                settings.advertise,
            ),
            cluster_id: CHITCHAT_CLUSTER.to_string(),
            gossip_interval: settings.interval,
            listen_addr: settings.bind,
            // chitchat resolves HOST:PORT seeds itself; `dns:` seeds are resolved by `join`.
            seed_nodes: settings
                .seeds
                .iter()
                .filter_map(|s| {
                    seeds::Seed::parse(s)
                        .ok()?
                        .for_chitchat()
                        .map(str::to_string)
                })
                .collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: settings.phi_threshold,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(10),
                initial_interval: settings.interval,
                dead_node_grace_period: DEAD_NODE_FORGET_AFTER,
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Every node runs this same chitchat version, so the compressed digest is safe.
            protocol_version: ProtocolVersion::V1,
        };
        let spawned = match &given {
            Some(t) => spawn_chitchat(config, local.key_values(), t.as_ref()).await,
            None => spawn_chitchat(config, local.key_values(), &transport).await,
        };
        let handle = spawned.map_err(|e| GossipError::Start(format!("{e:#}")))?;
        let chitchat = handle.chitchat();
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let has_seeds = !settings.seeds.is_empty();
        let view = View {
            me: id,
            health: if has_seeds {
                Health::Unknown
            } else {
                Health::Healthy
            },
            alive: 1,
            known: 1,
            members: BTreeMap::new(),
        };
        let m = Arc::new(Membership {
            id,
            settings,
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat,
            counters,
            #[cfg(test)]
            faults,
            events,
            dropped: Arc::new(AtomicU64::new(0)),
            view: watch::channel(Arc::new(view)).0,
            local: Mutex::new(local),
            monitor: Mutex::new(None),
            join_error: Mutex::new(None),
        });
        let weak = Arc::downgrade(&m);
        let tick = (m.settings.interval / 2).min(Duration::from_millis(100));
        let mut tracker = Tracker {
            samples: HashMap::new(),
            ever_alive: HashSet::new(),
            below_since: None,
            contacted: !has_seeds,
        };
        // The first view (this node alone) before anyone asks.
        m.observe(&mut tracker).await;
        let task = spawn_monitor(weak, tracker, tick);
        *m.monitor.lock().unwrap() = Some(task);
        Ok(m)
    }

    pub fn node_id(&self) -> u64 {
        self.id
    }

    /// The address others gossip with.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.settings.advertise
    }

    pub fn settings(&self) -> &GossipSettings {
        &self.settings
    }

    /// The latest view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> Events {
        Events {
            rx: self.events.subscribe(),
            dropped: self.dropped.clone(),
        }
    }

    /// Events slow subscribers missed, in all.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// The injected faults (loss, blocked destinations).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &super::faults::Faults {
        &self.faults
    }

    /// The last join failure, if the last join failed.
    pub fn join_error(&self) -> Option<String> {
        self.join_error.lock().unwrap().clone()
    }

    /// False while partitioned or leaving: this node takes no new work.
    pub fn accepting_work(&self) -> bool {
        let l = self.local.lock().unwrap();
        !l.partitioned && !l.leaving
    }

    /// The operator's tags on this node.
    pub fn tags(&self) -> BTreeMap<String, String> {
        self.local.lock().unwrap().published.tags.clone()
    }

    /// Records the Raft cluster id; nodes that publish another one are ignored.
    pub async fn set_cluster(&self, cluster: &str) {
        let changed = {
            let mut l = self.local.lock().unwrap();
            let changed = l.cluster != cluster;
            l.cluster = cluster.to_string();
            changed
        };
        if changed {
            self.republish().await;
        }
    }

    /// Publishes the number of attempts running here.
    pub async fn set_load(&self, running: u64) {
        let changed = {
            let mut l = self.local.lock().unwrap();
            let changed = l.load != running;
            l.load = running;
            changed
        };
        if changed {
            self.republish().await;
        }
    }

    /// Sets and removes operator tags; returns the resulting operator tags. Nothing changes
    /// when any of them is invalid.
    pub async fn set_tags(
        &self,
        set: &BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<BTreeMap<String, String>, GossipError> {
        let tags = {
            let mut l = self.local.lock().unwrap();
            let mut tags = l.published.tags.clone();
            for k in unset {
                if k == "role" {
                    return Err(invalid_tag("tag", "`role` cannot be removed"));
                }
                tags.remove(k);
            }
            tags.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            check_tags(&tags)?;
            l.published.tags = tags.clone();
            tags
        };
        self.republish().await;
        Ok(tags)
    }

    /// Writes this node's key-values into chitchat (it gossips only what changed). What
    /// is written is read under chitchat's lock: read before waiting for it, a publication
    /// that waited behind a newer one would put back what that one replaced (a tag set
    /// while the load was being published would be deleted again).
    async fn republish(&self) {
        let mut c = self.chitchat.lock().await;
        let kv = self.local.lock().unwrap().key_values();
        let state = c.self_node_state();
        let stale: Vec<String> = state
            .key_values()
            .filter(|(k, _)| k.starts_with(TAG_PREFIX) && !kv.iter().any(|(n, _)| n == k))
            .map(|(k, _)| k.to_string())
            .collect();
        for k in stale {
            state.delete(&k);
        }
        for (k, v) in kv {
            if state.get(&k) != Some(v.as_str()) {
                state.set(k, v);
            }
        }
    }

    /// Contacts `seeds` until one answers: up to [`JOIN_ATTEMPTS_MAX`] attempts, each
    /// trying every seed, with exponential backoff from [`JOIN_BACKOFF_INITIAL`] to
    /// [`JOIN_BACKOFF_MAX`] and ±[`JOIN_JITTER`] jitter between them. Returns the attempt
    /// that succeeded (0 when there was no seed but this node).
    pub async fn join(&self, seeds: &[String]) -> Result<u32, GossipError> {
        self.join_with(
            seeds,
            JOIN_ATTEMPTS_MAX,
            JOIN_BACKOFF_INITIAL,
            JOIN_BACKOFF_MAX,
        )
        .await
    }

    /// [`join`](Self::join) with another schedule (tests).
    pub async fn join_with(
        &self,
        seeds: &[String],
        attempts: u32,
        initial: Duration,
        max: Duration,
    ) -> Result<u32, GossipError> {
        let me = self.settings.advertise;
        let seeds: Vec<String> = seeds
            .iter()
            .filter(|s| s.parse::<SocketAddr>().ok() != Some(me))
            .cloned()
            .collect();
        if seeds.is_empty() {
            return Ok(0);
        }
        let mut delay = initial;
        for attempt in 1..=attempts {
            // Resolved again at every attempt: a name may gain addresses as peers start.
            let mut addrs = seeds::resolve(&seeds, self.settings.dns_server).await;
            addrs.retain(|a| *a != me);
            {
                let handle = self.handle.lock().await;
                let handle = handle.as_ref().ok_or(GossipError::Stopped)?;
                for a in &addrs {
                    let _ = handle.gossip(*a);
                }
            }
            let jitter = cathedral_consensus::rng::Rng.gen_range(-JOIN_JITTER..=JOIN_JITTER);
            let wait = delay.mul_f64(1.0 + jitter);
            let deadline = Instant::now() + wait;
            loop {
                if self.heard_from_another().await {
                    tracing::info!(attempt, "gossip: joined through the seeds");
                    *self.join_error.lock().unwrap() = None;
                    return Ok(attempt);
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10).min(wait)).await;
            }
            tracing::debug!(attempt, ?wait, "gossip: no seed answered yet");
            delay = (delay * 2).min(max);
        }
        let e = GossipError::NoSeedAnswered { seeds, attempts };
        *self.join_error.lock().unwrap() = Some(e.to_string());
        Err(e)
    }

    /// Whether chitchat holds the state of any node but this one.
    async fn heard_from_another(&self) -> bool {
        let c = self.chitchat.lock().await;
        let me = c.self_chitchat_id().clone();
        c.node_states().keys().any(|id| *id != me)
    }

    /// Announces that this node is leaving, waits (at most [`LEAVE_WAIT_MAX`]) for that to
    /// spread — a few gossip rounds, more for a larger cluster — and stops gossiping.
    pub async fn leave(&self) {
        self.local.lock().unwrap().leaving = true;
        self.republish().await;
        let peers = self
            .view()
            .members
            .values()
            .filter(|m| m.id != self.id && m.liveness == Liveness::Alive)
            .count();
        if peers > 0 {
            // Each round a node gossips with 3 others: the mark reaches everyone in about
            // log3(n) rounds; 3 more cover loss.
            let rounds = 3 + (peers as f64).log(3.0).ceil() as u32;
            let wait = (self.settings.interval * rounds).min(LEAVE_WAIT_MAX);
            tokio::time::sleep(wait).await;
        }
        self.stop().await;
    }

    /// Stops gossip at once, announcing nothing: to the others this node just went silent
    /// (what a crash looks like).
    pub async fn stop(&self) {
        if let Some(task) = self.monitor.lock().unwrap().take() {
            task.abort();
        }
        if let Some(handle) = self.handle.lock().await.take() {
            let _ = handle.shutdown().await;
        }
    }

    /// One monitor tick: reads chitchat (each node's newest generation, [`member_of`]),
    /// builds the view, emits the differences ([`diff`]), decides health
    /// ([`judge_health`]) and wakes the watchers when it matters ([`significant`]).
    async fn observe(&self, tracker: &mut Tracker) {
        let now = Instant::now();
        let previous = self.view();
        let (cluster, published_tags) = {
            let l = self.local.lock().unwrap();
            (l.cluster.clone(), l.tags())
        };
        let threshold = self.settings.phi_threshold;
        // Newest generation per node id, with its liveness and phi.
        let mut newest: BTreeMap<u64, Member> = BTreeMap::new();
        {
            let c = self.chitchat.lock().await;
            let me = c.self_chitchat_id().clone();
            let live: HashSet<&ChitchatId> = c.live_nodes().collect();
            let seen = Seen {
                now,
                threshold,
                me: &me,
                live: &live,
                published_tags: &published_tags,
            };
            for (cid, state) in c.node_states() {
                let Some(id) = state.get("id").and_then(|v| v.parse::<u64>().ok()) else {
                    continue;
                };
                let peer_cluster = state.get("cluster").unwrap_or("");
                if !cluster.is_empty() && !peer_cluster.is_empty() && peer_cluster != cluster {
                    continue;
                }
                if newest
                    .get(&id)
                    .is_some_and(|m| m.generation > cid.generation_id)
                {
                    continue;
                }
                let timeout = c.failure_detection_timeout(cid);
                newest.insert(id, member_of(id, cid, state, timeout, &seen, tracker));
            }
            // Forget samples of states chitchat forgot.
            tracker
                .samples
                .retain(|cid, _| c.node_states().contains_key(cid));
            tracker
                .ever_alive
                .retain(|cid| c.node_states().contains_key(cid));
        }
        let mut events = diff(self.id, &previous.members, &mut newest);
        let (health, alive, known) = judge_health(
            self.id,
            &newest,
            self.settings.quorum_fraction,
            self.settings.partition_grace,
            now,
            &mut tracker.contacted,
            &mut tracker.below_since,
        );
        if health != previous.health {
            if health == Health::Partitioned {
                tracing::warn!(
                    alive,
                    known,
                    "gossip: partitioned (minority side); this node takes no work until it heals"
                );
                events.push(Event::PartitionDetected { alive, known });
            } else if previous.health == Health::Partitioned {
                tracing::info!(alive, known, "gossip: the partition healed");
                events.push(Event::PartitionHealed { alive, known });
            }
        }
        let partitioned = health == Health::Partitioned;
        let republish = {
            let mut l = self.local.lock().unwrap();
            let changed = l.partitioned != partitioned;
            l.partitioned = partitioned;
            changed
        };
        if republish {
            self.republish().await;
        }
        if let Some(me) = newest.get_mut(&self.id) {
            me.tags = self.local.lock().unwrap().tags();
        }
        // Watchers (the leader's loop) wake only for changes that matter to them.
        let significant = significant(&previous, health, &newest);
        let view = Arc::new(View {
            me: self.id,
            health,
            alive,
            known,
            members: newest,
        });
        self.view.send_if_modified(|v| {
            *v = view;
            significant
        });
        for e in events {
            tracing::debug!(?e, "gossip event");
            let _ = self.events.send(e);
        }
    }
}

/// The monitor: a tick every `tick` while the membership lives ([`Membership::observe`]).
/// Each tick runs on a task of its own: a tick that panicked would otherwise end the
/// monitor, and the view (what the leader's failure detection and the node list read)
/// would stop changing without a word. It is logged, and the next tick starts from fresh
/// samples.
fn spawn_monitor(
    weak: std::sync::Weak<Membership>,
    mut tracker: Tracker,
    tick: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(m) = weak.upgrade() else { return };
            let contacted = tracker.contacted;
            let ticked = tokio::spawn(async move {
                m.observe(&mut tracker).await;
                tracker
            });
            tracker = match ticked.await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("gossip: a monitor tick failed: {e}; the next starts afresh");
                    Tracker {
                        samples: HashMap::new(),
                        ever_alive: HashSet::new(),
                        below_since: None,
                        contacted,
                    }
                }
            };
        }
    })
}

/// What one monitor tick knows while it reads each node's state.
struct Seen<'a> {
    now: Instant,
    threshold: f64,
    me: &'a ChitchatId,
    /// The nodes chitchat's detector calls live.
    live: &'a HashSet<&'a ChitchatId>,
    /// This node's tags as it publishes them.
    published_tags: &'a BTreeMap<String, String>,
}

/// Node `id`'s member entry from its chitchat state: its liveness (chitchat's live set, and
/// whether it was ever seen alive), its phi (from the heartbeat samples `tracker` keeps,
/// updated here, and chitchat's current detection `timeout` for it), and what it publishes.
fn member_of(
    id: u64,
    cid: &ChitchatId,
    state: &NodeState,
    timeout: Option<Duration>,
    seen: &Seen<'_>,
    tracker: &mut Tracker,
) -> Member {
    let now = seen.now;
    let heartbeat: u64 = state.heartbeat().into();
    let sample = tracker.samples.entry(cid.clone()).or_insert(Sample {
        heartbeat,
        at: now,
        timeout: None,
    });
    if sample.heartbeat != heartbeat {
        sample.heartbeat = heartbeat;
        sample.at = now;
    }
    if timeout.is_some() {
        sample.timeout = timeout;
    }
    let is_me = cid == seen.me;
    let leaving = state.get("leaving") == Some("true");
    let liveness = if leaving {
        Liveness::Left
    } else if is_me || seen.live.contains(cid) {
        tracker.ever_alive.insert(cid.clone());
        Liveness::Alive
    } else if tracker.ever_alive.contains(cid) {
        // chitchat also calls a node dead until it has sampled two heartbeats; only one
        // seen alive before has failed.
        Liveness::Dead
    } else {
        Liveness::Joining
    };
    let sample = &tracker.samples[cid];
    let phi = if is_me {
        Some(0.0)
    } else {
        sample
            .timeout
            .filter(|t| !t.is_zero())
            .map(|t| seen.threshold * now.duration_since(sample.at).as_secs_f64() / t.as_secs_f64())
    };
    let tags = if is_me {
        seen.published_tags.clone()
    } else {
        state
            .key_values()
            .filter_map(|(k, v)| {
                k.strip_prefix(TAG_PREFIX)
                    .map(|k| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    Member {
        id,
        generation: cid.generation_id,
        gossip: cid.gossip_advertise_addr,
        grpc: state.get("grpc").unwrap_or("").to_string(),
        role: state.get("role").unwrap_or("").to_string(),
        version: state.get("version").unwrap_or("").to_string(),
        cluster: state.get("cluster").unwrap_or("").to_string(),
        tags,
        capacity: state.get("capacity").unwrap_or("").to_string(),
        load: state.get("load").and_then(|v| v.parse().ok()).unwrap_or(0),
        liveness,
        phi,
        since: now,
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.monitor.lock().unwrap().take() {
            task.abort();
        }
        if let Ok(mut h) = self.handle.try_lock() {
            if let Some(h) = h.take() {
                h.abort();
            }
        }
    }
}
