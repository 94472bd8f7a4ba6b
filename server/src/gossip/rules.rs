//! The decisions gossip makes, as pure functions of what it read: which tags an operator
//! may set, what changed between two views ([`diff`]), this node's health
//! ([`judge_health`]) and whether a new view is worth waking watchers for
//! ([`significant`]). The monitor in `membership` calls them every tick.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use cathedral_consensus::tags;

use super::view::{Event, Health, Liveness, Member, View};
use super::{GossipError, TAGS_MAX};

pub(super) fn invalid_tag(field: &str, reason: impl Into<String>) -> GossipError {
    GossipError::InvalidTag {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Checks one operator tag: the tag rule every node and job constraint follows
/// (`cathedral_consensus::tags`), then the keys reserved for the node itself.
pub fn check_tag(key: &str, value: &str) -> Result<(), GossipError> {
    tags::check_key(key)
        .and_then(|()| tags::check_value(key, value))
        .map_err(|reason| invalid_tag("tag", reason))?;
    if key == "role" {
        return Err(invalid_tag(
            "tag",
            "`role` is set by the node's --role and cannot be changed",
        ));
    }
    if key == "available" && value != "true" && value != "false" {
        return Err(invalid_tag(
            "tag",
            format!("`available` is true or false, not {value:?}"),
        ));
    }
    Ok(())
}

/// Checks a whole set of operator tags.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), GossipError> {
    for (k, v) in tags {
        check_tag(k, v)?;
    }
    let counted = tags.keys().filter(|k| *k != "available").count();
    if counted > TAGS_MAX {
        return Err(invalid_tag(
            "tag",
            format!("{counted} tags, more than TAGS_MAX ({TAGS_MAX})"),
        ));
    }
    Ok(())
}

/// The events between two views of the members (pure): joins, failures, recoveries,
/// departures and tag changes of the other nodes. Also settles `newest` against
/// `previous`: a new generation still being sampled (joining) keeps the standing the node
/// had, and `since` is kept while the liveness is unchanged.
pub(super) fn diff(
    me: u64,
    previous: &BTreeMap<u64, Member>,
    newest: &mut BTreeMap<u64, Member>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, m) in newest.iter_mut() {
        let before = previous.get(id);
        if m.liveness == Liveness::Joining {
            if let Some(b) = before.filter(|b| b.liveness != Liveness::Joining) {
                m.liveness = b.liveness;
            }
        }
        match before {
            Some(b) if b.liveness == m.liveness => m.since = b.since,
            _ => {}
        }
        if *id == me {
            continue;
        }
        let was = before.map(|b| b.liveness);
        match (was, m.liveness) {
            (None | Some(Liveness::Joining), Liveness::Alive) => {
                events.push(Event::Joined { node: *id })
            }
            (Some(Liveness::Dead), Liveness::Alive) => events.push(Event::Recovered { node: *id }),
            (Some(Liveness::Left), Liveness::Alive) => events.push(Event::Joined { node: *id }),
            (Some(Liveness::Alive), Liveness::Dead) => events.push(Event::Failed { node: *id }),
            (Some(a), Liveness::Left) if a != Liveness::Left => {
                events.push(Event::Left { node: *id })
            }
            _ => {}
        }
        if let Some(b) = before {
            if b.tags != m.tags && m.liveness != Liveness::Left {
                events.push(Event::TagsUpdated {
                    node: *id,
                    tags: m.tags.clone(),
                });
            }
        }
    }
    events
}

/// This node's health from the members it knows (pure but for the two pieces of memory it
/// keeps): counted are this node and the others alive or failed (not left, not joining);
/// below `quorum_fraction` alive it is suspect, and partitioned once that lasted `grace`;
/// otherwise healthy once any other node was seen alive, unknown before. Returns the health
/// and the alive and known counts.
pub(super) fn judge_health(
    me: u64,
    members: &BTreeMap<u64, Member>,
    quorum_fraction: f64,
    grace: Duration,
    now: Instant,
    contacted: &mut bool,
    below_since: &mut Option<Instant>,
) -> (Health, usize, usize) {
    let others = members
        .values()
        .filter(|m| m.id != me)
        .filter(|m| matches!(m.liveness, Liveness::Alive | Liveness::Dead));
    let (mut alive, mut known) = (1usize, 1usize);
    for m in others {
        known += 1;
        if m.liveness == Liveness::Alive {
            alive += 1;
            *contacted = true;
        }
    }
    let below = (alive as f64) < quorum_fraction * known as f64;
    let health = if below {
        let since = *below_since.get_or_insert(now);
        if now.duration_since(since) >= grace {
            Health::Partitioned
        } else {
            Health::Suspect
        }
    } else {
        *below_since = None;
        if *contacted {
            Health::Healthy
        } else {
            Health::Unknown
        }
    };
    (health, alive, known)
}

/// Whether a new view matters to watchers: health, membership, liveness, tags, load,
/// generation or address changed. Phi and heartbeat timing change every tick; they are
/// read from `view()` when asked.
pub(super) fn significant(previous: &View, health: Health, newest: &BTreeMap<u64, Member>) -> bool {
    health != previous.health
        || newest.len() != previous.members.len()
        || newest.iter().any(|(id, m)| {
            previous.members.get(id).is_none_or(|b| {
                b.liveness != m.liveness
                    || b.tags != m.tags
                    || b.load != m.load
                    || b.generation != m.generation
                    || b.grpc != m.grpc
            })
        })
}
