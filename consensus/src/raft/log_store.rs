//! openraft's log storage over Cathedral's log engine.
//!
//! One openraft entry is one record: index and term from the entry's log id, the payload a
//! versioned postcard envelope of the whole entry. Appends return at once; the engine's
//! group-commit thread completes openraft's `LogFlushed` callback after fdatasync (with
//! the error, too). Vote and purge point go through the engine's atomically replaced
//! metadata file.
//!
//! What the metadata says is checked against the log: a vote older than the log's last
//! entry is a rolled-back metadata file ([`check_vote`], refused before Raft starts: it
//! could let this node vote twice in a term); a committed index past the log's end
//! (entries a refetch open cut, owed to the cluster) is read as the log's last entry —
//! Raft learns the rest again.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: simulated time in a simulation (the persist interval then follows it).
use tokio::time::Instant;

use cathedral_storage::{Durability, Log};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;

/// Version byte leading every entry record.
pub const ENTRY_VERSION: u8 = 1;
/// The committed log id is persisted at most this often; it only speeds up a restart.
const COMMITTED_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The most bytes a log entry record adds around its command: the version byte, the log
/// id (term, leader node and index, varints of up to 10 bytes each), the payload's tag, and
/// a batch's own header (variant, timestamp, length). A command of `n` encoded bytes, alone
/// or in a batch of commands summing to `n`, makes a record of at most
/// `n + ENTRY_FRAMING_BYTES_MAX` bytes (a test pins it).
pub const ENTRY_FRAMING_BYTES_MAX: usize = 64;

/// Encodes an entry as its log record payload.
// Format: [ENTRY_VERSION u8][postcard(openraft Entry)].
pub fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let mut out = vec![ENTRY_VERSION];
    out.extend(postcard::to_stdvec(entry).expect("entries always encode"));
    out
}

/// Decodes a log record payload, refusing unknown versions.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, String> {
    match bytes.split_first() {
        Some((&ENTRY_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!(
            "entry version {v} is not supported (this build reads {ENTRY_VERSION})"
        )),
        None => Err("empty entry record".into()),
    }
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn decode_err(subject: ErrorSubject<u64>, reason: String) -> StorageError<u64> {
    io_err(
        subject,
        ErrorVerb::Read,
        io::Error::new(io::ErrorKind::InvalidData, reason),
    )
}

fn decode_meta<T: DeserializeOwned>(
    bytes: Option<Vec<u8>>,
    subject: ErrorSubject<u64>,
) -> StorageResult<Option<T>> {
    bytes
        .map(|b| postcard::from_bytes(&b).map_err(|e| decode_err(subject.clone(), e.to_string())))
        .transpose()
}

fn encode_meta<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("metadata always encodes")
}

/// What `log` owes its cluster ([`Log::owed`]) as a Raft log id: a vote request from a
/// candidate whose last log id is below it must not be granted — the candidate may lack
/// entries this node acknowledged, and so a majority may have counted on.
///
/// The engine keeps the owed entry's index and term, not its leader: the node id is taken
/// from the stored vote when that is of the same term (every entry of a term is accepted
/// under a vote of that term, and a vote only grows), else from the last entry still held
/// of that term, else the largest node id (no candidate of that term is enough: the node
/// waits for one of a later term).
pub fn owed_log_id(log: &Log) -> Option<LogId<u64>> {
    let owed = log.owed()?;
    let vote: Option<Vote<u64>> = log
        .metadata()
        .vote
        .and_then(|b| postcard::from_bytes(&b).ok());
    let node = match vote {
        Some(v) if v.leader_id().term == owed.term => v.leader_id().voted_for(),
        _ => None,
    }
    .or_else(|| {
        let last = log.last_index()?;
        let rec = log.get(last).ok()??;
        let e = decode_entry(&rec.payload).ok()?;
        (e.log_id.leader_id.term == owed.term).then_some(e.log_id.leader_id.node_id)
    })
    .unwrap_or(u64::MAX);
    Some(LogId::new(
        CommittedLeaderId::new(owed.term, node),
        owed.index,
    ))
}

/// Refuses a stored vote older than the log's last entry. A node saves a vote of term T
/// before it accepts any entry of term T, so such a vote means the metadata was rolled back
/// (both copies: one stale copy is outvoted by its twin in the storage engine) — and the
/// vote it forgot may have been for another candidate of a term this node would then vote
/// in again. Called before Raft starts.
pub fn check_vote(log: &Log) -> Result<(), String> {
    let vote: Option<Vote<u64>> = match log.metadata().vote {
        Some(b) => Some(postcard::from_bytes(&b).map_err(|e| format!("stored vote: {e}"))?),
        None => None,
    };
    let Some((index, term)) = log.last_entry() else {
        return Ok(());
    };
    // Term 0 is `initialize`'s membership entry, appended before the first vote is
    // saved: a crash between the two leaves it without a vote, and nothing was voted yet.
    if term == 0 || vote.is_some_and(|v| v.leader_id().term >= term) {
        return Ok(());
    }
    Err(format!(
        "the stored vote ({}) is older than the log's last entry (index {index}, term {term}): \
         the metadata files ({}/meta, meta.mirror) were rolled back or replaced, and a vote \
         this node cast may be forgotten; it must not vote until an operator restores them, \
         or wipes the node and adds it to the cluster again",
        vote.map_or("none".to_string(), |v| v.to_string()),
        log.dir().display()
    ))
}

/// The newest Raft membership a data directory holds — its newest valid snapshot's, or a
/// later membership entry in the valid part of its log — read offline, without the lock.
/// For a node whose log will not open: does it belong to a cluster that can send back what
/// it lost?
pub fn membership_on_disk(
    dir: &std::path::Path,
) -> Result<Option<openraft::Membership<u64, openraft::BasicNode>>, cathedral_storage::Error> {
    let survey = cathedral_storage::survey_snapshots(&cathedral_storage::snapshots_dir(dir), true)?;
    let mut membership = survey
        .newest()
        .and_then(|s| super::RaftSnapshotMeta::decode(&s.meta.data).ok())
        .map(|m| m.membership.membership().clone());
    let mut visit = |v: cathedral_storage::Visit<'_>| {
        if let Ok(Entry {
            payload: openraft::EntryPayload::Membership(m),
            ..
        }) = decode_entry(v.payload)
        {
            membership = Some(m);
        }
    };
    cathedral_storage::inspect(dir, Some(&mut visit))?;
    Ok(membership)
}

/// openraft's `RaftLogStorage` and `RaftLogReader` over a [`Log`].
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Log>,
    committed: Arc<Mutex<Committed>>,
    /// Index of the last purged entry (`u64::MAX`: none), so appends can drop entries the
    /// purge already covers.
    purged: Arc<AtomicU64>,
    /// The entries appended last, as they were given (shared with the readers openraft
    /// clones: replication streams).
    recent: Arc<Mutex<Recent>>,
}

/// Most entries [`Recent`] holds.
const RECENT_ENTRIES_MAX: usize = 4096;
/// Most bytes (of their records' payloads) [`Recent`] holds.
const RECENT_BYTES_MAX: usize = 16 << 20;

/// The newest entries appended, decoded: apply reads every committed entry back, and a
/// leader's replication reads what it sends — soon after the append, mostly. Served from
/// here they skip the log's read, its CRC check, decompression and decoding (the read-back
/// was 4 % of a node's CPU at 64 clients). Not a second copy of the truth: it holds a
/// suffix of what was appended to the log, cut where the log is truncated or purged, and
/// serves only what the log itself would (written entries, and nothing once the log has
/// failed); anything else is read from the log. (A cache library would not know these
/// rules; this is a bounded deque.)
#[derive(Default)]
struct Recent {
    /// Consecutive entries by index.
    entries: std::collections::VecDeque<(Entry<TypeConfig>, usize)>,
    /// Payload bytes of the entries held.
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// `entry` (whose record payload is `bytes` long) was appended after the others. An
    /// entry that does not follow the last held starts the deque afresh.
    fn push(&mut self, entry: Entry<TypeConfig>, bytes: usize) {
        if self.last().is_some_and(|l| l + 1 != entry.log_id.index) {
            self.clear();
        }
        self.bytes += bytes;
        self.entries.push_back((entry, bytes));
        while self.entries.len() > RECENT_ENTRIES_MAX
            || (self.entries.len() > 1 && self.bytes > RECENT_BYTES_MAX)
        {
            let (_, b) = self.entries.pop_front().expect("not empty");
            self.bytes -= b;
        }
    }

    /// The log drops every entry from `index` on.
    fn truncate(&mut self, index: u64) {
        while self.last().is_some_and(|l| l >= index) {
            let (_, b) = self.entries.pop_back().expect("not empty");
            self.bytes -= b;
        }
    }

    /// The log drops every entry up to `index`.
    fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|f| f <= index) {
            let (_, b) = self.entries.pop_front().expect("not empty");
            self.bytes -= b;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries `start..end` when every one of them is held; `None` sends the read to
    /// the log.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first()?;
        let last = self.last()?;
        if start < first || end > last + 1 {
            return None;
        }
        if start >= end {
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        Some(
            self.entries
                .range(from..from + (end - start) as usize)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

const NOT_PURGED: u64 = u64::MAX;

struct Committed {
    value: Option<LogId<u64>>,
    persisted_at: Option<Instant>,
    /// `value` is newer than what the metadata holds.
    unsaved: bool,
}

/// The committed log id the store has not persisted yet (it persists at most every
/// `COMMITTED_PERSIST_INTERVAL`); a shutdown saves it so offline tools and the next start
/// see the real committed index.
#[derive(Clone)]
pub struct CommittedHandle(Arc<Mutex<Committed>>);

impl CommittedHandle {
    /// The metadata bytes to save, when the persisted value is behind; clears the mark.
    pub fn take_unsaved(&self) -> Option<Vec<u8>> {
        let mut c = self.0.lock().unwrap();
        std::mem::take(&mut c.unsaved).then(|| encode_meta(&c.value))
    }
}

impl LogStore {
    /// Wraps `log`. Fails when the log's metadata does not decode.
    pub fn new(log: Arc<Log>) -> StorageResult<LogStore> {
        let purged: Option<LogId<u64>> = decode_meta(log.metadata().purged, ErrorSubject::Store)?;
        Ok(LogStore {
            log,
            committed: Arc::new(Mutex::new(Committed {
                value: None,
                persisted_at: None,
                unsaved: false,
            })),
            purged: Arc::new(AtomicU64::new(purged.map_or(NOT_PURGED, |p| p.index))),
            recent: Arc::default(),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle on the committed log id not yet persisted.
    pub fn committed_handle(&self) -> CommittedHandle {
        CommittedHandle(self.committed.clone())
    }

    /// The underlying log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Runs a blocking engine call off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> cathedral_storage::Result<T> + Send + 'static,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> StorageResult<T> {
        let log = self.log.clone();
        crate::blocking::run(move || f(&log))
            .await
            .map_err(|e| io_err(subject.clone(), verb, io::Error::other(e)))?
            .map_err(|e| io_err(subject, verb, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x + 1,
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        // What the log would serve: written entries (not those still queued), and none
        // once it failed (the read below then reports the failure). The written end is
        // read under the deque's lock: a truncate cuts the deque before the log, and an
        // append pushes after the log queued it, so the two agree while it is held.
        {
            let recent = self.recent();
            if self.log.failure().is_none() {
                if let Some(last) = self.log.last_index() {
                    if let Some(held) = recent.get(start, end.min(last + 1)) {
                        return Ok(held);
                    }
                }
            }
        }
        let Some(first) = self.log.first_index() else {
            return Ok(Vec::new());
        };
        let records = self
            .log
            .read(start.max(first)..end)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        records
            .iter()
            .map(|r| {
                decode_entry(&r.payload)
                    .map_err(|e| decode_err(ErrorSubject::Logs, format!("record {}: {e}", r.index)))
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> =
            decode_meta(self.log.metadata().purged, ErrorSubject::Store)?;
        let last_log_id = match self.log.last_index() {
            Some(i) => {
                let rec = self
                    .log
                    .get(i)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
                    .expect("last index is readable");
                let entry =
                    decode_entry(&rec.payload).map_err(|e| decode_err(ErrorSubject::Logs, e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let bytes = encode_meta(vote);
        self.blocking(
            move |log| log.save_vote(bytes),
            ErrorSubject::Vote,
            ErrorVerb::Write,
        )
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        decode_meta(self.log.metadata().vote, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let persist = {
            let mut c = self.committed.lock().unwrap();
            c.value = committed;
            let due = c
                .persisted_at
                .is_none_or(|t| t.elapsed() >= COMMITTED_PERSIST_INTERVAL);
            if due {
                c.persisted_at = Some(Instant::now());
            }
            c.unsaved = !due;
            due
        };
        if persist {
            let bytes = encode_meta(&committed);
            self.blocking(
                move |log| log.save_committed(bytes),
                ErrorSubject::Store,
                ErrorVerb::Write,
            )
            .await?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        if let Some(v) = self.committed.lock().unwrap().value {
            return Ok(Some(v));
        }
        let saved =
            decode_meta::<Option<LogId<u64>>>(self.log.metadata().committed, ErrorSubject::Store)?
                .flatten();
        // Past the log's end (a refetch open cut acknowledged entries): the log's last
        // entry instead — openraft would otherwise re-apply entries that are not there.
        match (saved, self.log.last_index()) {
            (Some(c), Some(last)) if c.index > last => {
                let state = self.get_log_state().await?;
                tracing::warn!(
                    committed = c.index,
                    last,
                    "the saved committed index is past the log's end; reading it as the last entry"
                );
                Ok(state.last_log_id)
            }
            (saved, _) => Ok(saved),
        }
    }

    /// Queues `entries` and returns; `callback` completes once they are durable (and so
    /// readable: the log serves no queued entry). openraft 0.9's core awaits that callback
    /// before it runs anything else (`RaftCore::append_to_log`), so the commit and apply that
    /// follow a follower's append read entries the log already serves. An openraft that
    /// commits before the flush would need queued entries served here.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        // Entries at or below the purge point are covered by a snapshot already (openraft
        // purges up to the applied index when the log lags the state machine); drop them.
        let purged = self.purged.load(Ordering::Acquire);
        let payloads: Vec<(Entry<TypeConfig>, Vec<u8>)> = entries
            .into_iter()
            .filter(|e| purged == NOT_PURGED || e.log_id.index > purged)
            .map(|e| {
                let p = encode_entry(&e);
                (e, p)
            })
            .collect();
        if payloads.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let records: Vec<cathedral_storage::Entry<'_>> = payloads
            .iter()
            .map(|(e, p)| cathedral_storage::Entry {
                index: e.log_id.index,
                term: e.log_id.leader_id.term,
                payload: p,
            })
            .collect();
        let appended = self
            .log
            .append_with(&records, Durability::Durable, move |r| {
                callback.log_io_completed(r.map_err(io::Error::other))
            })
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        drop(records);
        let mut recent = self.recent();
        match appended {
            Ok(()) => {
                for (e, p) in payloads {
                    recent.push(e, p.len());
                }
            }
            // Refused: the log holds none of them (a failed log, or entries it could not
            // take); the deque starts afresh.
            Err(_) => recent.clear(),
        }
        appended
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Cut first: no read is served from here what the log no longer holds.
        self.recent().truncate(log_id.index);
        self.blocking(
            move |log| log.truncate(log_id.index),
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let bytes = encode_meta(&log_id);
        self.recent().purge(log_id.index);
        self.blocking(
            move |log| log.purge(log_id.index, Some(bytes)),
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )
        .await?;
        let purged = &self.purged;
        let _ = purged.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
            (p == NOT_PURGED || p < log_id.index).then_some(log_id.index)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, JobSpec};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(term: u64, node: u64, index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, node), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    #[test]
    fn a_vote_older_than_the_last_entry_is_refused_but_a_fresh_initialize_is_not() {
        use cathedral_storage::{Durability, Entry as Rec, Log, Options};
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), Options::default()).unwrap();
        assert!(check_vote(&log).is_ok(), "an empty log");
        // `initialize` appends its membership entry at term 0 before the first vote.
        log.append(
            &[Rec {
                index: 0,
                term: 0,
                payload: b"m",
            }],
            Durability::Durable,
        )
        .unwrap();
        assert!(check_vote(&log).is_ok(), "a term-0 entry and no vote yet");
        log.append(
            &[Rec {
                index: 1,
                term: 2,
                payload: b"x",
            }],
            Durability::Durable,
        )
        .unwrap();
        let err = check_vote(&log).unwrap_err();
        assert!(err.contains("older than the log's last entry"), "{err}");
        let vote = |term| postcard::to_stdvec(&Vote::<u64>::new(term, 1)).unwrap();
        log.save_vote(vote(1)).unwrap();
        assert!(check_vote(&log).is_err(), "vote term 1 < entry term 2");
        log.save_vote(vote(2)).unwrap();
        assert!(check_vote(&log).is_ok());
    }

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_serve_only_a_range_they_hold_whole() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(0, 1)), None, "nothing held");
        for i in 5..10 {
            r.push(blank(i), 10);
        }
        assert_eq!(indexes(r.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(r.get(9, 9)), Some(vec![]));
        assert_eq!(indexes(r.get(4, 8)), None, "starts before the first held");
        assert_eq!(indexes(r.get(8, 11)), None, "ends past the last held");
        // The log cut from 8 on, then appended a new 8: the old 8 and 9 are gone.
        r.truncate(8);
        assert_eq!(indexes(r.get(8, 10)), None);
        r.push(blank(8), 10);
        assert_eq!(indexes(r.get(5, 9)), Some(vec![5, 6, 7, 8]));
        r.purge(6);
        assert_eq!(indexes(r.get(6, 9)), None, "purged");
        assert_eq!(indexes(r.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(r.bytes, 20);
        // An entry that does not follow the last starts afresh (never a gap inside).
        r.push(blank(20), 10);
        assert_eq!(indexes(r.get(7, 9)), None);
        assert_eq!(indexes(r.get(20, 21)), Some(vec![20]));
        assert_eq!(r.bytes, 10);
    }

    #[test]
    fn recent_entries_keep_within_their_bounds() {
        let mut r = Recent::default();
        for i in 0..(RECENT_ENTRIES_MAX as u64 + 10) {
            r.push(blank(i), 1);
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(r.first(), Some(10));
        let mut r = Recent::default();
        for i in 0..4 {
            r.push(blank(i), RECENT_BYTES_MAX / 2);
        }
        assert_eq!(r.entries.len(), 2, "bytes bound");
        assert_eq!(r.bytes, RECENT_BYTES_MAX);
        // One entry over the bound alone is still held (the newest is always there).
        r.push(blank(4), RECENT_BYTES_MAX * 2);
        assert_eq!(indexes(r.get(4, 5)), Some(vec![4]));
    }

    #[test]
    fn entries_round_trip_and_unknown_versions_are_refused() {
        let e = entry(
            3,
            1,
            9,
            Command::SubmitJobs {
                at_ms: 5,
                jobs: vec![JobSpec::new("hello", &["echo", "hello"])],
            },
        );
        let bytes = encode_entry(&e);
        assert_eq!(bytes[0], ENTRY_VERSION);
        let back = decode_entry(&bytes).unwrap();
        assert_eq!(back.log_id, e.log_id);
        assert!(
            matches!(back.payload, EntryPayload::Normal(ref c) if matches!(e.payload, EntryPayload::Normal(ref d) if c == d))
        );
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode_entry(&other).unwrap_err().contains("version 9"));
        assert!(decode_entry(&[]).is_err());
    }

    #[test]
    fn the_framing_of_an_entry_stays_within_its_bound() {
        // The largest ids and timestamp there are, around a command alone and in a batch.
        let cmd = Command::SubmitJobs {
            at_ms: u64::MAX,
            jobs: vec![JobSpec::new(&"n".repeat(300), &["echo", &"x".repeat(5000)])],
        };
        let n = cmd.encoded_len();
        let alone = encode_entry(&entry(u64::MAX, u64::MAX, u64::MAX, cmd.clone()));
        assert!(
            alone.len() <= n + ENTRY_FRAMING_BYTES_MAX,
            "{} > {n} + framing",
            alone.len()
        );
        let commands = vec![cmd; 200];
        let sum: usize = commands.iter().map(Command::encoded_len).sum();
        let batch = Command::Batch {
            at_ms: u64::MAX,
            commands,
        };
        let batched = encode_entry(&entry(u64::MAX, u64::MAX, u64::MAX, batch));
        assert!(
            batched.len() <= sum + ENTRY_FRAMING_BYTES_MAX,
            "{} > {sum} + framing",
            batched.len()
        );
    }
}
