//! Watching the cluster's events (`WatchEvents`, `GET /v1/events`): a position, filters,
//! and one task per watcher that reads the node's [`EventFeed`] from that position on and
//! waits for every applied entry. Both surfaces go through [`watch`], so they agree.

use std::collections::BTreeSet;
use std::sync::Arc;

use cathedral_consensus::events::{Event, EventKind};
use cathedral_consensus::raft::Position;
use tokio::sync::mpsc;

use crate::api::v1 as pb;
use crate::error::ServerError;
use crate::node::Node;

/// Events read from the feed at a time by one watcher.
const READ_BATCH: usize = 256;
/// Events queued for a slow watcher before its task waits for it.
const WATCHER_QUEUE: usize = 1024;

/// Which events a watcher wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Empty: every kind.
    pub kinds: BTreeSet<EventKind>,
    pub job: Option<u64>,
    pub workflow: Option<u64>,
    pub node: Option<u64>,
    /// Only job events of this namespace (`None`: any).
    pub namespace: Option<String>,
    /// Only job events of namespaces these grants let read (a token scoped to
    /// namespaces); `None`: any.
    pub readable: Option<Vec<cathedral_consensus::namespace::Grant>>,
}

impl Filter {
    /// Parses kind names; an unknown one is refused with the list of known ones.
    pub fn with_kinds<S: AsRef<str>>(mut self, names: &[S]) -> Result<Filter, ServerError> {
        for n in names {
            let n = n.as_ref().trim();
            if n.is_empty() {
                continue;
            }
            let kind = EventKind::parse(n).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                ServerError::invalid(
                    "kinds",
                    format!("unknown event kind {n:?} (known: {})", known.join(", ")),
                )
            })?;
            self.kinds.insert(kind);
        }
        Ok(self)
    }

    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.job.is_none_or(|j| e.job == Some(j))
            && self.workflow.is_none_or(|w| e.workflow == Some(w))
            && self.node.is_none_or(|n| e.node == Some(n))
            && (e.job.is_none() || {
                let ns = e
                    .namespace
                    .as_deref()
                    .unwrap_or(cathedral_consensus::namespace::DEFAULT_NAMESPACE);
                self.namespace.as_deref().is_none_or(|want| want == ns)
                    && self.readable.as_ref().is_none_or(|grants| {
                        grants
                            .iter()
                            .any(|g| g.allows(cathedral_consensus::namespace::Capability::Read, ns))
                    })
            })
    }
}

/// Starts a watcher: events matching `filter` from `from` (or from what is applied next)
/// on, until the receiver is dropped or the node stops. A position the node no longer
/// holds is refused at once; one that falls out of the feed while the watcher lags ends
/// the stream with the same error.
/// What a watcher asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// `None`: what is applied from now on; `(0, 0)`: the earliest event held.
    pub from: Option<Position>,
    pub filter: Filter,
    /// End after the events applied when the call came.
    pub stop_at_applied: bool,
}

pub fn watch(
    node: &Arc<Node>,
    Watch {
        from,
        filter,
        stop_at_applied,
    }: Watch,
) -> Result<mpsc::Receiver<Result<Event, ServerError>>, ServerError> {
    let feed = node.events.clone();
    let mut applied = feed.subscribe();
    let end = feed.next_position();
    let mut at = match from {
        None => end,
        Some((0, 0)) => feed.earliest(),
        Some(p) => p,
    };
    // Refuse an unheld start before the stream begins, so the caller sees a plain error.
    feed.read(at, 0).map_err(|c| compacted(at, c.earliest))?;
    let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
    node.spawn_until_stop(async move {
        loop {
            applied.borrow_and_update();
            let batch = match feed.read(at, READ_BATCH) {
                Ok(b) => b,
                Err(c) => {
                    let _ = tx.send(Err(compacted(at, c.earliest))).await;
                    return;
                }
            };
            // Empty: everything applied so far was read, which includes all before `end`.
            if stop_at_applied && (at >= end || batch.is_empty()) {
                return;
            }
            if batch.is_empty() {
                // Waits for the next entry, or for the watcher to leave: one whose filter
                // matches nothing more would otherwise live until it next sent.
                tokio::select! {
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
                continue;
            }
            for e in batch {
                if stop_at_applied && (e.index, e.seq) >= end {
                    return;
                }
                at = e.next_position();
                if filter.matches(&e) && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

fn compacted(at: Position, earliest: Position) -> ServerError {
    ServerError::Compacted {
        requested: at.0,
        earliest_index: earliest.0,
        earliest_seq: earliest.1,
    }
}

pub fn to_pb(e: Event) -> pb::ClusterEvent {
    pb::ClusterEvent {
        index: e.index,
        seq: e.seq,
        kind: e.kind.name().to_string(),
        at_ms: e.at_ms,
        job_id: e.job,
        workflow_id: e.workflow,
        node_id: e.node,
        attempt: e.attempt,
        namespace: match (&e.job, e.namespace) {
            (Some(_), ns) => {
                ns.unwrap_or_else(|| cathedral_consensus::namespace::DEFAULT_NAMESPACE.into())
            }
            (None, _) => String::new(),
        },
        detail: e.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_and_unknown_kinds_are_refused() {
        let mut e = Event::new(EventKind::JobStarted);
        e.job = Some(7);
        e.node = Some(2);
        let f = Filter::default();
        assert!(f.matches(&e));
        let f = Filter {
            job: Some(7),
            node: Some(2),
            ..Filter::default()
        }
        .with_kinds(&["job_started", " job_finished"])
        .unwrap();
        assert!(f.matches(&e));
        let f = Filter {
            node: Some(3),
            ..Filter::default()
        };
        assert!(!f.matches(&e));
        let f = Filter::default().with_kinds(&["node_joined"]).unwrap();
        assert!(!f.matches(&e));
        let err = Filter::default().with_kinds(&["job_exploded"]).unwrap_err();
        assert!(err.to_string().contains("job_exploded"), "{err}");
        assert!(err.to_string().contains("job_retried"), "{err}");
    }

    #[test]
    fn job_events_pass_by_namespace_and_grants_and_the_others_always() {
        use cathedral_consensus::namespace::{Capability, Grant};
        let job_in = |ns: Option<&str>| {
            let mut e = Event::new(EventKind::JobStarted);
            e.job = Some(1);
            e.namespace = ns.map(String::from);
            e
        };
        let node_event = Event::new(EventKind::NodeJoined);
        let only_ml = Filter {
            namespace: Some("ml".into()),
            ..Filter::default()
        };
        assert!(only_ml.matches(&job_in(Some("ml"))));
        assert!(!only_ml.matches(&job_in(None)), "None is default's");
        assert!(only_ml.matches(&node_event));
        let scoped = Filter {
            readable: Some(vec![Grant {
                namespaces: "ml-*".into(),
                capabilities: vec![Capability::Read],
            }]),
            ..Filter::default()
        };
        assert!(scoped.matches(&job_in(Some("ml-a"))));
        assert!(!scoped.matches(&job_in(Some("web"))));
        assert!(!scoped.matches(&job_in(None)));
        assert!(scoped.matches(&node_event));
        let submit_only = Filter {
            readable: Some(vec![Grant {
                namespaces: "*".into(),
                capabilities: vec![Capability::Submit],
            }]),
            ..Filter::default()
        };
        assert!(!submit_only.matches(&job_in(Some("ml"))), "read is needed");
    }
}
