//! The events of the entries this node applied, held in memory for watchers.
//!
//! The state machine pushes each applied entry's events here. After a restart the node
//! applies the log again from its snapshot, so the feed holds the events of every entry
//! the log holds past the snapshot (up to [`EVENTS_RETAINED`] events and
//! [`EVENTS_RETAINED_BYTES`] bytes, whichever is reached first), then the live ones. A
//! watcher reads from a position `(index, seq)` and waits for more; a position older than
//! what is held is refused with the first one that is, never skipped silently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::events::{Event, EventKind};

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

// A bit per kind in `Kinds`.
const _: () = assert!(EventKind::ALL.len() <= 32);

/// A set of event kinds, for a watcher that wakes only for some (see
/// [`EventFeed::subscribe_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u32);

impl Kinds {
    pub const NONE: Kinds = Kinds(0);

    /// The set of `kinds`.
    pub const fn of(kinds: &[EventKind]) -> Kinds {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i] as u32;
            i += 1;
        }
        Kinds(bits)
    }

    /// Every kind but `kinds`.
    pub const fn all_but(kinds: &[EventKind]) -> Kinds {
        Kinds(Kinds::of(&EventKind::ALL).0 & !Kinds::of(kinds).0)
    }

    pub const fn has(self, kind: EventKind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    const fn meets(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    const fn with(self, kind: EventKind) -> Kinds {
        Kinds(self.0 | 1 << kind as u32)
    }
}

/// What [`EventFeed::read_only`] found.
#[derive(Debug, PartialEq)]
pub struct Only {
    /// The events of the kinds asked for.
    pub events: Vec<Event>,
    /// Where the next read starts: after the last event looked at.
    pub next: Position,
    /// The read looked at every event held: nothing after `next` was applied yet.
    pub to_the_end: bool,
}

pub struct EventFeed {
    inner: Mutex<Inner>,
    /// Moves on every applied batch (see [`announce`](Self::announce)): watchers wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// Watchers of some kinds only: each moves on a batch with an event of its kinds.
    interests: Mutex<Vec<(Kinds, tokio::sync::watch::Sender<u64>)>>,
    /// Watchers of one job each, by job.
    jobs: Arc<JobWatchers>,
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
    /// The kinds of the events recorded since the last announcement.
    unannounced: Kinds,
    /// The jobs watched that had events since the last announcement.
    watched_moved: Vec<u64>,
}

/// Watchers of one job each ([`EventFeed::watch_job`]).
#[derive(Default)]
struct JobWatchers {
    by_job: Mutex<HashMap<u64, Vec<Weak<Notify>>>>,
    /// How many are registered: recording looks up events' jobs only while some are.
    count: AtomicUsize,
}

/// Woken once a batch applied holds an event of its job ([`EventFeed::watch_job`]).
pub struct JobWatch {
    job: u64,
    notify: Arc<Notify>,
    watchers: Arc<JobWatchers>,
}

impl JobWatch {
    /// Resolves at the first announcement, since the last call, of a batch with an event
    /// of the job (or of a jump to a snapshot) — at once when one came meanwhile.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut by_job = self
            .watchers
            .by_job
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(list) = by_job.get_mut(&self.job) {
            let me = Arc::downgrade(&self.notify);
            list.retain(|w| !w.ptr_eq(&me));
            if list.is_empty() {
                by_job.remove(&self.job);
            }
        }
        self.watchers.count.fetch_sub(1, Ordering::Relaxed);
    }
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
                unannounced: Kinds::NONE,
                watched_moved: Vec::new(),
            }),
            applied: tokio::sync::watch::channel(0).0,
            interests: Mutex::new(Vec::new()),
            jobs: Arc::default(),
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
        let watching = self.jobs.count.load(Ordering::Relaxed) > 0;
        {
            let mut g = self.lock();
            for e in events {
                if watching {
                    if let Some(job) = e.job {
                        g.watched_moved.push(job);
                    }
                }
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
                g.unannounced = g.unannounced.with(e.kind);
                g.events.push_back(e);
            }
            g.last_index = index;
        }
    }

    /// Tells the watchers the entries recorded so far were applied.
    pub fn announce(&self) {
        let (last, kinds, jobs) = {
            let mut g = self.lock();
            let jobs = std::mem::take(&mut g.watched_moved);
            (g.last_index, std::mem::take(&mut g.unannounced), jobs)
        };
        if !jobs.is_empty() {
            let by_job = self.jobs.by_job.lock().unwrap_or_else(|e| e.into_inner());
            for job in jobs {
                for w in by_job.get(&job).into_iter().flatten() {
                    if let Some(n) = w.upgrade() {
                        n.notify_one();
                    }
                }
            }
        }
        self.applied.send_if_modified(|seen| {
            let moved = *seen != last;
            *seen = last;
            moved
        });
        if kinds != Kinds::NONE {
            let mut interests = self.interests.lock().unwrap_or_else(|e| e.into_inner());
            interests.retain(|(_, tx)| !tx.is_closed());
            for (wanted, tx) in interests.iter() {
                if wanted.meets(kinds) {
                    tx.send_replace(last);
                }
            }
        }
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
            g.unannounced = Kinds::NONE;
            g.watched_moved.clear();
        }
        self.applied.send_replace(last_index);
        // Anything may have happened in between.
        for (_, tx) in self
            .interests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            tx.send_replace(last_index);
        }
        let by_job = self.jobs.by_job.lock().unwrap_or_else(|e| e.into_inner());
        for n in by_job.values().flatten().filter_map(Weak::upgrade) {
            n.notify_one();
        }
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

    /// The events of `kinds` only among up to `max` from `from` on, in order: a watcher
    /// of a few kinds copies none of the others.
    pub fn read_only(&self, from: Position, max: usize, kinds: Kinds) -> Result<Only, Compacted> {
        let g = self.lock();
        if from < g.floor {
            return Err(Compacted { earliest: g.floor });
        }
        let start = g.events.partition_point(|e| (e.index, e.seq) < from);
        let mut only = Only {
            events: Vec::new(),
            next: from,
            to_the_end: start + max >= g.events.len(),
        };
        for e in g.events.range(start..).take(max) {
            only.next = e.next_position();
            if kinds.has(e.kind) {
                only.events.push(e.clone());
            }
        }
        Ok(only)
    }

    /// Changes whenever entries were applied (once per batch the state machine applies),
    /// holding the last index applied.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// A watch on `job`: woken by the batches with an event of it, not by others. For a
    /// watcher of one job (a client waiting for its job to end), which, woken by every
    /// batch, would cost every write a wake-up per watcher.
    pub fn watch_job(&self, job: u64) -> JobWatch {
        let notify = Arc::new(Notify::new());
        self.jobs
            .by_job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job)
            .or_default()
            .push(Arc::downgrade(&notify));
        self.jobs.count.fetch_add(1, Ordering::Relaxed);
        JobWatch {
            job,
            notify,
            watchers: self.jobs.clone(),
        }
    }

    /// Changes when a batch applied holds an event of `kinds` (or the state jumped to a
    /// snapshot), holding the last index applied then. For a loop that acts on a few
    /// kinds only: at one write per batch, a loop woken by every batch costs every write
    /// a task wake-up (measured: 7–10 % of the CPU per write for two such loops).
    pub fn subscribe_to(&self, kinds: Kinds) -> tokio::sync::watch::Receiver<u64> {
        // Registered under the list's lock with the index read under it: an announcement
        // (which takes the list's lock after the feed's, never both) comes before, and is
        // in the index, or after, and tells it.
        let mut interests = self.interests.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = tokio::sync::watch::channel(self.lock().last_index);
        interests.push((kinds, tx));
        rx
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

    /// `Kinds::all_but` builds on `EventKind::ALL`: a kind missing from it would never wake
    /// the loops that want every kind but a few.
    #[test]
    fn every_kind_is_listed() {
        use EventKind::*;
        // Exhaustive: a kind added fails to compile here until it is added to `every`.
        let _ = |k: EventKind| match k {
            JobSubmitted | JobAssigned | JobStarted | JobFinished | JobRetried | JobCancelled
            | NodeJoined | NodeFailed | NodeRecovered | NodeLeft | LeaderChanged | Checkpoint => {}
        };
        let every = [
            JobSubmitted,
            JobAssigned,
            JobStarted,
            JobFinished,
            JobRetried,
            JobCancelled,
            NodeJoined,
            NodeFailed,
            NodeRecovered,
            NodeLeft,
            LeaderChanged,
            Checkpoint,
        ];
        assert_eq!(Kinds::of(&every), Kinds::of(&EventKind::ALL));
    }

    #[test]
    fn a_watcher_of_some_kinds_wakes_for_them_only_and_reads_only_them() {
        use EventKind::*;
        let of = |index: u64, seq: u32, kind: EventKind| {
            let mut e = Event::new(kind);
            e.index = index;
            e.seq = seq;
            e
        };
        let feed = EventFeed::with_capacity(64);
        let ended = Kinds::of(&[JobFinished]);
        let mut finished = feed.subscribe_to(ended);
        let all = feed.subscribe();
        feed.push(1, vec![of(1, 0, JobSubmitted), of(1, 1, JobSubmitted)]);
        assert!(all.has_changed().unwrap());
        assert!(!finished.has_changed().unwrap(), "woken by submissions");
        feed.push(2, vec![of(2, 0, JobSubmitted), of(2, 1, JobFinished)]);
        assert!(finished.has_changed().unwrap());
        assert_eq!(*finished.borrow_and_update(), 2);
        let only = feed.read_only((1, 0), 10, ended).unwrap();
        assert_eq!(positions(&only.events), vec![(2, 1)]);
        assert_eq!((only.next, only.to_the_end), ((2, 2), true));
        // At most `max` looked at: the next read goes on from where this one stopped.
        let only = feed.read_only((1, 0), 2, ended).unwrap();
        assert!(only.events.is_empty());
        assert_eq!((only.next, only.to_the_end), ((1, 2), false));
        let only = feed.read_only(only.next, 2, ended).unwrap();
        assert_eq!(positions(&only.events), vec![(2, 1)]);
        assert_eq!((only.next, only.to_the_end), ((2, 2), true));
        let only = feed.read_only((2, 2), 10, ended).unwrap();
        assert_eq!(
            (only.events.len(), only.next, only.to_the_end),
            (0, (2, 2), true)
        );
        // Told once the batch is announced, not while it is recorded.
        feed.record(3, vec![of(3, 0, JobFinished)]);
        assert!(!finished.has_changed().unwrap());
        feed.announce();
        assert_eq!(*finished.borrow_and_update(), 3);
        // A jump to a snapshot tells every watcher.
        feed.reset(10);
        assert_eq!(*finished.borrow_and_update(), 10);
        // A watcher gone is forgotten at the next announcement.
        drop(finished);
        feed.push(11, vec![of(11, 0, JobFinished)]);
        assert!(feed.interests.lock().unwrap().is_empty());
        let worker = Kinds::all_but(&[JobSubmitted, Checkpoint]);
        assert!(!worker.has(JobSubmitted) && !worker.has(Checkpoint));
        assert!(EventKind::ALL
            .iter()
            .filter(|k| !matches!(k, JobSubmitted | Checkpoint))
            .all(|k| worker.has(*k)));
    }

    /// Whether `w` was woken (its wait ends at once).
    async fn woken(w: &JobWatch) -> bool {
        // A timeout polls its future before its clock.
        tokio::time::timeout(std::time::Duration::ZERO, w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_job_watch_wakes_for_its_job_only_and_leaves_nothing_behind() {
        let of = |index: u64, job: u64| {
            let mut e = Event::new(EventKind::JobAssigned);
            e.index = index;
            e.job = Some(job);
            e
        };
        let feed = EventFeed::with_capacity(64);
        let seven = feed.watch_job(7);
        let also_seven = feed.watch_job(7);
        let eight = feed.watch_job(8);
        feed.push(1, vec![of(1, 9)]);
        assert!(
            !woken(&seven).await && !woken(&eight).await,
            "another job's event"
        );
        // Recorded, not yet announced: nobody is told.
        feed.record(2, vec![of(2, 7)]);
        assert!(!woken(&seven).await);
        feed.announce();
        assert!(woken(&seven).await && woken(&also_seven).await && !woken(&eight).await);
        // Told while not waiting: the next wait ends at once, once.
        feed.push(3, vec![of(3, 8)]);
        assert!(woken(&eight).await);
        assert!(!woken(&eight).await, "once");
        feed.reset(10);
        assert!(
            woken(&seven).await && woken(&eight).await,
            "a jump to a snapshot tells every watch"
        );
        drop((seven, also_seven, eight));
        assert!(feed.jobs.by_job.lock().unwrap().is_empty());
        assert_eq!(feed.jobs.count.load(Ordering::Relaxed), 0);
        feed.push(11, vec![of(11, 7)]);
        assert!(
            feed.lock().watched_moved.is_empty(),
            "nothing kept for no watcher"
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
