//! What gossip tells the rest of the node: each member as seen ([`Member`], its
//! [`Liveness`]), this node's own standing ([`Health`]), the whole [`View`] at one moment,
//! and the [`Event`]s between two views (with the subscription that receives them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

use tokio::sync::broadcast;

/// Whether a node is up, as gossip sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard of, but its heartbeats have not yet been sampled enough to judge.
    Joining,
    Alive,
    /// Its phi went past the threshold.
    Dead,
    /// It announced it was shutting down.
    Left,
}

impl Liveness {
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Joining => "joining",
            Liveness::Alive => "alive",
            Liveness::Dead => "failed",
            Liveness::Left => "left",
        }
    }
}

/// This node's own standing in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Seeds are configured and none has answered yet.
    Unknown,
    Healthy,
    /// Fewer than the quorum fraction of known nodes alive, within the grace period.
    Suspect,
    /// Past the grace period: this node is on the minority side; it takes no work.
    Partitioned,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Suspect => "suspect",
            Health::Partitioned => "partitioned",
        }
    }
}

/// One node as gossip sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: u64,
    pub generation: u64,
    pub gossip: SocketAddr,
    pub grpc: String,
    pub role: String,
    pub version: String,
    pub cluster: String,
    /// Every tag, `role` and `available` included.
    pub tags: BTreeMap<String, String>,
    pub capacity: String,
    /// Attempts running on it, as it last published.
    pub load: u64,
    pub liveness: Liveness,
    /// Suspicion: the time since its heartbeat last advanced over chitchat's timeout at the
    /// threshold, times the threshold (so `phi > threshold` is chitchat's "dead"). `None`
    /// before it has been sampled.
    pub phi: Option<f64>,
    /// When `liveness` last changed, as this node saw it.
    pub since: Instant,
}

impl Member {
    /// Alive and advertising `available=true`: may be given work.
    pub fn available(&self) -> bool {
        self.liveness == Liveness::Alive && self.tags.get("available").is_some_and(|v| v == "true")
    }
}

/// The cluster as this node sees it at one moment.
#[derive(Debug, Clone)]
pub struct View {
    pub me: u64,
    pub health: Health,
    /// Known nodes alive (this one included) and known nodes (not left, not still joining).
    pub alive: usize,
    pub known: usize,
    pub members: BTreeMap<u64, Member>,
}

impl View {
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Joined {
        node: u64,
    },
    Left {
        node: u64,
    },
    Failed {
        node: u64,
    },
    Recovered {
        node: u64,
    },
    TagsUpdated {
        node: u64,
        tags: BTreeMap<String, String>,
    },
    PartitionDetected {
        alive: usize,
        known: usize,
    },
    PartitionHealed {
        alive: usize,
        known: usize,
    },
}

/// What a subscriber receives: an event, or how many it missed by falling behind.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Event(Event),
    Missed(u64),
}

/// A subscription to [`Event`]s.
pub struct Events {
    pub(super) rx: broadcast::Receiver<Event>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Events {
    /// The next event, or how many were missed; `None` once membership stopped.
    pub async fn next(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.dropped.fetch_add(n, Ordering::Relaxed);
                Some(Received::Missed(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                self.dropped.fetch_add(n, Ordering::Relaxed);
                Some(Received::Missed(n))
            }
            Err(_) => None,
        }
    }
}
