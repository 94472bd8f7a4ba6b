//! The events of the entries this node applied, held in memory for watchers.
//!
//! The state machine pushes each applied entry's events here. After a restart the node
//! applies the log again from its snapshot, so the feed holds the events of every entry
//! the log holds past the snapshot (up to [`EVENTS_RETAINED`] events and
//! [`EVENTS_RETAINED_BYTES`] bytes, whichever is reached first), then the live ones. A
//! watcher reads from a position `(index, seq)` and waits for more; a position older than
//! what is held is refused with the first one that is, never skipped silently.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::events::Event;

/// Most events held in memory; the oldest leave first.
pub const EVENTS_RETAINED: usize = 262_144;

/// Most bytes the held events take (each counted as its struct plus its detail text's
/// allocation); the oldest leave first. A memory budget stated in bytes, like a watch
/// cache's: at four events per job some 25,000 jobs' worth — at a few hundred jobs a
/// second a minute or two of history for a watcher to resume in, after which it is told
/// the first position held (and lists again) rather than skipped.
pub const EVENTS_RETAINED_BYTES: usize = 16 << 20;

/// What one held event counts against [`EVENTS_RETAINED_BYTES`].
fn held_bytes(e: &Event) -> usize {
    std::mem::size_of::<Event>() + e.detail.capacity()
}

/// A position in the event order: a log index and the event's place in its entry.
pub type Position = (u64, u32);

/// A read that starts before what the feed holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The first position the feed can serve.
    pub earliest: Position,
}

pub struct EventFeed {
    inner: Mutex<Inner>,
    /// Moves on every applied batch (see [`announce`](Self::announce)): watchers wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    capacity: usize,
    max_bytes: usize,
}

struct Inner {
    events: VecDeque<Event>,
    /// Every event at or after this position that was applied is in `events`.
    floor: Position,
    /// The index of the last entry applied.
    last_index: u64,
    /// What the held events count against the byte bound ([`held_bytes`]).
    bytes: usize,
}

impl Default for EventFeed {
    fn default() -> Self {
        EventFeed::with_bounds(EVENTS_RETAINED, EVENTS_RETAINED_BYTES)
    }
}

impl EventFeed {
    /// A feed bounded by events alone.
    pub fn with_capacity(capacity: usize) -> EventFeed {
        EventFeed::with_bounds(capacity, usize::MAX)
    }

    /// A feed holding at most `capacity` events and `max_bytes` bytes of them (always
    /// at least the newest event).
    pub fn with_bounds(capacity: usize, max_bytes: usize) -> EventFeed {
        EventFeed {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                floor: (0, 0),
                last_index: 0,
                bytes: 0,
            }),
            applied: tokio::sync::watch::channel(0).0,
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry at `index` was applied with these events (numbered already); watchers
    /// are told at once.
    pub fn push(&self, index: u64, events: Vec<Event>) {
        self.record(index, events);
        self.announce();
    }

    /// [`push`](Self::push) without telling the watchers: the state machine records each
    /// entry of a batch while it holds the state's lock, and [`announce`](Self::announce)s
    /// the batch once the lock is released — a watcher woken at each entry would only wait
    /// for that lock (and wake again at the next entry).
    pub fn record(&self, index: u64, events: Vec<Event>) {
        {
            let mut g = self.lock();
            for e in events {
                debug_assert!(e.index == index);
                // The oldest leave before the newest comes in: the buffer never holds
                // more than `capacity` (pushing first would double it once, for good).
                let size = held_bytes(&e);
                while g.events.len() >= self.capacity
                    || (!g.events.is_empty() && g.bytes + size > self.max_bytes)
                {
                    let gone = g.events.pop_front().expect("checked not empty");
                    g.bytes -= held_bytes(&gone);
                    g.floor = gone.next_position();
                }
                g.bytes += size;
                g.events.push_back(e);
            }
            g.last_index = index;
        }
    }

    /// Tells the watchers the entries recorded so far were applied.
    pub fn announce(&self) {
        let last = self.lock().last_index;
        self.applied.send_if_modified(|seen| {
            let moved = *seen != last;
            *seen = last;
            moved
        });
    }

    /// The state jumped to a snapshot ending at `last_index`: the events before it were
    /// never derived here.
    pub fn reset(&self, last_index: u64) {
        {
            let mut g = self.lock();
            g.events.clear();
            g.bytes = 0;
            g.floor = (last_index + 1, 0);
            g.last_index = last_index;
        }
        self.applied.send_replace(last_index);
    }

    /// Where a watcher that wants only what comes next starts.
    pub fn next_position(&self) -> Position {
        (self.lock().last_index + 1, 0)
    }

    /// The first position held.
    pub fn earliest(&self) -> Position {
        let g = self.lock();
        g.events
            .front()
            .map_or(g.floor, |e| (e.index, e.seq).max(g.floor))
    }

    /// Up to `max` events from `from` on, in order.
    pub fn read(&self, from: Position, max: usize) -> Result<Vec<Event>, Compacted> {
        let g = self.lock();
        if from < g.floor {
            return Err(Compacted { earliest: g.floor });
        }
        let start = g.events.partition_point(|e| (e.index, e.seq) < from);
        Ok(g.events.range(start..).take(max).cloned().collect())
    }

    /// Changes whenever entries were applied (once per batch the state machine applies),
    /// holding the last index applied.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn ev(index: u64, seq: u32) -> Event {
        let mut e = Event::new(EventKind::Checkpoint);
        e.index = index;
        e.seq = seq;
        e
    }

    #[test]
    fn the_buffer_stays_within_its_capacity() {
        let feed = EventFeed::with_capacity(64);
        for index in 1..=1000 {
            feed.push(index, vec![ev(index, 0), ev(index, 1)]);
        }
        let g = feed.lock();
        assert_eq!(g.events.len(), 64);
        assert!(
            g.events.capacity() < 128,
            "the buffer grew to {} slots for 64 events",
            g.events.capacity()
        );
        assert_eq!(g.floor, (968, 2), "after the last event that left");
    }

    #[test]
    fn the_oldest_leave_once_the_held_bytes_would_pass_the_byte_bound() {
        let each = std::mem::size_of::<Event>() + 100;
        let feed = EventFeed::with_bounds(1_000, 10 * each);
        for index in 1..=50u64 {
            let mut e = ev(index, 0);
            e.detail = "x".repeat(100);
            e.detail.shrink_to_fit();
            feed.push(index, vec![e]);
        }
        let g = feed.lock();
        assert_eq!(g.events.len(), 10, "ten events of {each} bytes fit");
        assert_eq!(g.bytes, 10 * each);
        assert_eq!(g.floor, (40, 1), "after the last event that left");
        drop(g);
        assert_eq!(feed.read((40, 0), 10), Err(Compacted { earliest: (40, 1) }));
        assert_eq!(feed.read((40, 1), 1).unwrap()[0].index, 41);
        // One event larger than the whole budget is still held, alone.
        let mut big = ev(51, 0);
        big.detail = "y".repeat(20 * each);
        feed.push(51, vec![big]);
        assert_eq!(positions(&feed.read((51, 0), 10).unwrap()), vec![(51, 0)]);
        assert_eq!(feed.earliest(), (51, 0));
        feed.reset(60);
        assert_eq!(feed.lock().bytes, 0);
    }

    fn positions(v: &[Event]) -> Vec<Position> {
        v.iter().map(|e| (e.index, e.seq)).collect()
    }

    #[test]
    fn reads_resume_inside_an_entry_and_the_oldest_leave_with_a_clear_floor() {
        let feed = EventFeed::with_capacity(4);
        feed.push(1, vec![ev(1, 0), ev(1, 1)]);
        feed.push(2, vec![]);
        feed.push(3, vec![ev(3, 0)]);
        assert_eq!(feed.next_position(), (4, 0));
        assert_eq!(
            positions(&feed.read((1, 1), 10).unwrap()),
            vec![(1, 1), (3, 0)]
        );
        assert_eq!(positions(&feed.read((2, 0), 10).unwrap()), vec![(3, 0)]);
        assert!(feed.read((4, 0), 10).unwrap().is_empty());
        feed.push(4, vec![ev(4, 0), ev(4, 1)]);
        // Five events, four held: (1, 0) left.
        assert_eq!(feed.read((1, 0), 10), Err(Compacted { earliest: (1, 1) }));
        assert_eq!(feed.earliest(), (1, 1));
        assert_eq!(
            positions(&feed.read((1, 1), 2).unwrap()),
            vec![(1, 1), (3, 0)]
        );
    }

    #[test]
    fn a_batch_recorded_is_readable_at_once_and_announced_once() {
        let feed = EventFeed::with_capacity(16);
        let mut applied = feed.subscribe();
        feed.record(1, vec![ev(1, 0)]);
        feed.record(2, vec![ev(2, 0)]);
        // Recorded: readable (the state machine records under the state's lock), but no
        // watcher was woken yet.
        assert_eq!(
            positions(&feed.read((1, 0), 10).unwrap()),
            vec![(1, 0), (2, 0)]
        );
        assert!(!applied.has_changed().unwrap());
        feed.announce();
        assert!(applied.has_changed().unwrap());
        assert_eq!(*applied.borrow_and_update(), 2);
        // Nothing new: announcing again wakes no one.
        feed.announce();
        assert!(!applied.has_changed().unwrap());
        feed.push(3, vec![]);
        assert_eq!(*applied.borrow_and_update(), 3);
    }

    #[test]
    fn a_snapshot_install_refuses_what_it_skipped() {
        let feed = EventFeed::with_capacity(16);
        feed.push(1, vec![ev(1, 0)]);
        feed.reset(10);
        assert_eq!(feed.read((2, 0), 10), Err(Compacted { earliest: (11, 0) }));
        assert_eq!(feed.next_position(), (11, 0));
        feed.push(11, vec![ev(11, 0)]);
        assert_eq!(positions(&feed.read((11, 0), 10).unwrap()), vec![(11, 0)]);
    }
}
