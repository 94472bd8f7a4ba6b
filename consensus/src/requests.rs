//! At-most-once writes: the answered-request table (client sessions, Raft dissertation
//! §6.3).
//!
//! A write that may reach the log twice — a follower resending it to a new leader while
//! the first copy may still commit, a client retrying at another node — travels as
//! [`Command::Request`](crate::Command::Request) with a request id. Apply looks the id up
//! here first: an id already answered is not applied again, and the copy gets the first
//! copy's answer. The table is part of the replicated state (snapshotted, in the state
//! hash), so every node and every replay dedupes the same copies.
//!
//! The table is bounded: it remembers the last [`REQUESTS_REMEMBERED_MAX`] answered ids, and
//! none older than [`REQUEST_RETENTION_MS`] (counted on the latest proposer time apply has
//! seen, the only clock apply knows).
//! A copy arriving later than that is applied as new, so a retry must come within the
//! retention; a server's own resends come within its write timeout, far inside it.
//!
//! Under `Feature::NodeRequestIdsKeptAMinute` (which a leader turns on) two rules change:
//!
//! - **the count bound never forgets an answer younger than [`REQUEST_KEPT_MIN_MS`]** (a
//!   minute): at a write rate where [`REQUESTS_REMEMBERED_MAX`] answers span less than a
//!   node's write timeout, a resend could otherwise find its first answer forgotten and
//!   apply twice. The table is then bounded by the write rate times a minute, and never
//!   holds more than [`REQUESTS_HELD_MAX`] answers.
//!
//! Ages are counted on the table's clock, the latest proposer time seen: a proposer whose
//! clock runs ahead ages every answer by its lead. A node's resend (within its write
//! timeout, at most 30 s) finds its answer while the nodes' clocks are within 30 s of each
//! other.
//! - **an id a node assigned is forgotten [`REQUEST_KEPT_MIN_MS`] after it was answered**
//!   (a client's keeps [`REQUEST_RETENTION_MS`]): a node resends its own ids only within
//!   its write timeout (at most `WRITE_TIMEOUT_MS_MAX`, 30 s), while a client may retry
//!   later. Ids leave in the order they were answered, so a node's id behind a client's
//!   older one waits for it; a table of node ids alone (clients that name no request)
//!   holds a minute of writes, reached a minute after the load starts — before, it took
//!   ~3 minutes of a 256-jobs/s load to fill to the count bound.
//!
//! An id names one request: a copy whose command differs from the first (other than in its
//! timestamp) is refused, not answered with another request's result.

use serde::{Deserialize, Serialize};

use crate::command::{Command, Feature};
use crate::error::Invalid;
use crate::state::Response;

/// Longest request id, in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Answered request ids remembered at most; the oldest is forgotten first.
pub const REQUESTS_REMEMBERED_MAX: usize = 100_000;
/// How long an answered request id is remembered (proposer time), at most.
pub const REQUEST_RETENTION_MS: u64 = 10 * 60 * 1000;
/// Under `Feature::NodeRequestIdsKeptAMinute`: how long every answer is kept whatever the
/// count (up to [`REQUESTS_HELD_MAX`]), and how long an id a node assigned is kept at most
/// (see the module docs).
pub const REQUEST_KEPT_MIN_MS: u64 = 60 * 1000;
/// Under `Feature::NodeRequestIdsKeptAMinute`: answers held at most, however young — the
/// hard bound (ten times [`REQUESTS_REMEMBERED_MAX`], ~230 MB). The minute rule needs the
/// table's clock to move; a proposer whose clock jumped ahead freezes it (every later
/// answer gets the jumped time), and without this bound the table would then grow with
/// every write until real time caught up.
pub const REQUESTS_HELD_MAX: usize = 10 * REQUESTS_REMEMBERED_MAX;

/// Names one request. A client names its own (its retries carry the same); a node names
/// the writes that arrive without one (its resends carry the same), so the two never
/// collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RequestId {
    /// Chosen by a client: 1..=[`REQUEST_ID_BYTES_MAX`] bytes, no control characters.
    Client(String),
    /// Assigned by node `node` in its run `incarnation` (random per start), `seq`-th.
    Node {
        node: u64,
        incarnation: u64,
        seq: u64,
    },
}

impl RequestId {
    /// Whether the id is well formed (a client's within its bounds).
    pub fn check(&self) -> Result<(), Invalid> {
        let RequestId::Client(id) = self else {
            return Ok(());
        };
        if id.is_empty() || id.len() > REQUEST_ID_BYTES_MAX {
            return Err(Invalid::new(
                "request_id",
                format!("must hold 1..={REQUEST_ID_BYTES_MAX} bytes (REQUEST_ID_BYTES_MAX)"),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Invalid::new(
                "request_id",
                "must not contain control characters",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Client(id) => write!(f, "{id:?}"),
            RequestId::Node {
                node,
                incarnation,
                seq,
            } => write!(f, "node {node} run {incarnation:016x} #{seq}"),
        }
    }
}

/// A request id's first answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// When the first copy was applied: the latest proposer time seen by then.
    pub at_ms: u64,
    /// The log index of the entry that applied it.
    pub index: u64,
    /// What the command is, without its timestamp (see [`fingerprint`]).
    pub fingerprint: [u8; 16],
    pub response: Response,
}

/// The answered-request table. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RequestsEncoded")]
pub struct Requests {
    /// Persistent maps (structurally shared, as the jobs are): a snapshot's copy of the
    /// table, taken under the state's lock, is O(1) — a `BTreeMap` of 100,000 answers
    /// took 40–80 ms to copy, and apply waited for it. Encoded as the `BTreeMap` and
    /// `VecDeque` were (a map, a sequence): snapshots and hashes are unchanged.
    answered: imbl::OrdMap<RequestId, Answered>,
    /// Ids in the order they were answered, for eviction.
    order: imbl::Vector<RequestId>,
    /// The latest proposer time seen; retention counts back from it.
    clock_ms: u64,
    /// Copies answered from the table instead of applied.
    repeats: u64,
    /// Copies refused because their id named another request.
    conflicts: u64,
    remembered_max: usize,
    retention_ms: u64,
    /// Prints skip the timestamp of a command a wrapper holds too (under
    /// `Feature::RequestPrintsSkipEveryTimestamp`; see [`print`]). Follows the state's
    /// features: not encoded.
    #[serde(skip)]
    every_timestamp: bool,
    /// Answers younger than [`REQUEST_KEPT_MIN_MS`] outlive the count bound, and a node's
    /// ids are kept that long at most (`Feature::NodeRequestIdsKeptAMinute`). Follows the
    /// state's features: not encoded.
    #[serde(skip)]
    node_ids_kept_a_minute: bool,
    /// The sum (256-bit, wrapping) of every remembered answer's digest
    /// ([`answer_digest`]), kept as answers come and go: under
    /// `Feature::RequestTableSummed` the state hash covers the table by it, in O(1),
    /// instead of encoding up to a minute of writes' answers at every checkpoint (60–70 ms
    /// of apply at 64 clients). Not encoded: worked out when a table is decoded.
    #[serde(skip)]
    sum: [u64; 4],
}

/// The table as encoded (every field but those derived): decoding goes through it, so a
/// decoded table's [`Requests::sum`] is always worked out.
#[derive(Deserialize)]
struct RequestsEncoded {
    answered: imbl::OrdMap<RequestId, Answered>,
    order: imbl::Vector<RequestId>,
    clock_ms: u64,
    repeats: u64,
    conflicts: u64,
    remembered_max: usize,
    retention_ms: u64,
}

impl From<RequestsEncoded> for Requests {
    fn from(e: RequestsEncoded) -> Requests {
        let mut sum = [0u64; 4];
        for (id, a) in e.answered.iter() {
            crate::state::wide_add(&mut sum, &answer_digest(id, a), false);
        }
        Requests {
            answered: e.answered,
            order: e.order,
            clock_ms: e.clock_ms,
            repeats: e.repeats,
            conflicts: e.conflicts,
            remembered_max: e.remembered_max,
            retention_ms: e.retention_ms,
            every_timestamp: false,
            node_ids_kept_a_minute: false,
            sum,
        }
    }
}

/// One remembered answer's digest: BLAKE3 of its id and answer as encoded.
fn answer_digest(id: &RequestId, a: &Answered) -> [u8; 32] {
    *blake3::hash(&postcard::to_stdvec(&(id, a)).expect("answers always encode")).as_bytes()
}

/// What the state hash covers of the table under `Feature::RequestTableSummed`: its
/// scalars, its length and the sum of its answers' digests.
#[derive(Serialize)]
pub(crate) struct RequestsSummed {
    len: u64,
    sum: [u64; 4],
    clock_ms: u64,
    repeats: u64,
    conflicts: u64,
    remembered_max: u64,
    retention_ms: u64,
}

impl Default for Requests {
    fn default() -> Self {
        Requests::with_bounds(REQUESTS_REMEMBERED_MAX, REQUEST_RETENTION_MS)
    }
}

/// What the table says of a copy of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not answered yet (or forgotten): apply it.
    New,
    /// Answered: this is the first copy's answer.
    Answered(&'a Answered),
    /// The id was answered for a different command.
    Conflict(Invalid),
}

impl Requests {
    /// A table with other bounds (tests); every node of a cluster must use the same.
    pub fn with_bounds(remembered_max: usize, retention_ms: u64) -> Requests {
        Requests {
            answered: imbl::OrdMap::new(),
            order: imbl::Vector::new(),
            clock_ms: 0,
            repeats: 0,
            conflicts: 0,
            remembered_max,
            retention_ms,
            every_timestamp: false,
            node_ids_kept_a_minute: false,
            sum: [0; 4],
        }
    }

    /// The table as the state hash covers it under `Feature::RequestTableSummed`.
    pub(crate) fn summed(&self) -> RequestsSummed {
        RequestsSummed {
            len: self.answered.len() as u64,
            sum: self.sum,
            clock_ms: self.clock_ms,
            repeats: self.repeats,
            conflicts: self.conflicts,
            remembered_max: self.remembered_max as u64,
            retention_ms: self.retention_ms,
        }
    }

    /// Follows the state's `features`: how requests are printed and kept from here on.
    pub(crate) fn follow(&mut self, features: &std::collections::BTreeSet<Feature>) {
        self.every_timestamp = features.contains(&Feature::RequestPrintsSkipEveryTimestamp);
        self.node_ids_kept_a_minute = features.contains(&Feature::NodeRequestIdsKeptAMinute);
    }

    fn print(&self, command: &Command) -> [u8; 16] {
        print(command, self.every_timestamp)
    }

    /// What the table knows of a copy of `command` under `id`.
    pub fn lookup(&self, id: &RequestId, command: &Command) -> Lookup<'_> {
        match self.answered.get(id) {
            None => Lookup::New,
            Some(a) if a.fingerprint == self.print(command) => Lookup::Answered(a),
            Some(a) => Lookup::Conflict(Invalid::new(
                "request_id",
                format!(
                    "{id} already names another request (answered at log index {}); use a new id for a new request",
                    a.index
                ),
            )),
        }
    }

    /// Counts a copy answered from the table.
    pub(crate) fn count_repeat(&mut self) {
        self.repeats += 1;
    }

    /// Counts a copy refused for naming another request.
    pub(crate) fn count_conflict(&mut self) {
        self.conflicts += 1;
    }

    /// Remembers `id`'s first answer, then forgets what is past the bounds.
    pub(crate) fn remember(
        &mut self,
        id: &RequestId,
        command: &Command,
        index: u64,
        response: Response,
    ) {
        // Time only moves forward here: a proposer whose clock is behind the others' gets
        // the table's time, so its ids are kept for the whole retention too.
        self.clock_ms = self.clock_ms.max(command.at_ms());
        let answered = Answered {
            at_ms: self.clock_ms,
            index,
            fingerprint: self.print(command),
            response,
        };
        crate::state::wide_add(&mut self.sum, &answer_digest(id, &answered), false);
        match self.answered.insert(id.clone(), answered) {
            None => self.order.push_back(id.clone()),
            Some(old) => crate::state::wide_add(&mut self.sum, &answer_digest(id, &old), true),
        }
        self.evict();
    }

    fn evict(&mut self) {
        let horizon = self.clock_ms.saturating_sub(self.retention_ms);
        let minute = self.clock_ms.saturating_sub(REQUEST_KEPT_MIN_MS);
        while let Some(oldest) = self.order.front() {
            let at_ms = self.answered.get(oldest).map(|a| a.at_ms);
            let expired = at_ms.is_none_or(|t| t < horizon);
            let over_count = self.order.len() > self.remembered_max;
            let (expired, over_count) = if self.node_ids_kept_a_minute {
                let past_minute = at_ms.is_none_or(|t| t < minute);
                let node_id = matches!(oldest, RequestId::Node { .. });
                (
                    expired || (node_id && past_minute),
                    (over_count && past_minute) || self.order.len() > REQUESTS_HELD_MAX,
                )
            } else {
                (expired, over_count)
            };
            if !over_count && !expired {
                break;
            }
            let id = self.order.pop_front().expect("a front");
            if let Some(old) = self.answered.remove(&id) {
                crate::state::wide_add(&mut self.sum, &answer_digest(&id, &old), true);
            }
        }
    }

    /// Answered ids remembered now.
    pub fn len(&self) -> usize {
        self.answered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answered.is_empty()
    }

    /// Copies answered from the table so far.
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// Copies refused for naming another request so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Whether the table is as a fresh state has it (nothing answered, nothing counted):
    /// then it adds nothing to the state hash, so logs written before request ids existed
    /// hash as they always did.
    pub(crate) fn is_pristine(&self) -> bool {
        self.answered.is_empty() && self.repeats == 0 && self.conflicts == 0
    }
}

/// The print a request is remembered by: [`fingerprint`], or with `every_timestamp`
/// (`Feature::RequestPrintsSkipEveryTimestamp`) one that also skips the timestamp of the
/// command an `Authored` wraps — so a client's retry under access control, which carries
/// a new timestamp, is the same request (without it, it was refused as another).
pub fn print(command: &Command, every_timestamp: bool) -> [u8; 16] {
    match command {
        Command::Authored { accessor, command } if every_timestamp => wrapper_print(
            b"authored",
            &postcard::to_stdvec(accessor).expect("strings always encode"),
            print(command, true),
        ),
        // (`WithJobOptions` wraps only submissions: `fingerprint` already skips theirs.)
        other => fingerprint(other),
    }
}

/// The print of a wrapper whose first field is not the timestamp: its tag, its own
/// fields' encoding, then the print of what it wraps.
fn wrapper_print(tag: &[u8], fields: &[u8], inner: [u8; 16]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(tag);
    h.update(fields);
    h.update(&inner);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// 16 bytes of BLAKE3 over the command's encoding without its timestamp: a resend or a
/// client's retry carries a new timestamp but is the same request.
///
/// Every command's postcard encoding is its variant index, then its `at_ms` (the first
/// field of every variant; both varints), then the rest; the fingerprint skips the
/// `at_ms` bytes rather than clone the command to zero it (this runs on every node for
/// every write). A test pins the layout for every variant. (`Authored` is the exception
/// the layout misses: its accessor comes first, so its print covers the timestamp of the
/// command it wraps.)
pub fn fingerprint(command: &Command) -> [u8; 16] {
    // A wrapper whose first field is not the timestamp: its own fields, then the print of
    // what it wraps (so the wrapped command's timestamp is skipped too).
    if let Command::WithJobOptions { options, command } = command {
        return wrapper_print(
            b"with_job_options",
            &postcard::to_stdvec(options).expect("options always encode"),
            fingerprint(command),
        );
    }
    if let Command::InNamespace { namespace, command } = command {
        return wrapper_print(
            b"in_namespace",
            &postcard::to_stdvec(namespace).expect("strings always encode"),
            fingerprint(command),
        );
    }
    let bytes = postcard::to_stdvec(command).expect("commands always encode");
    let skip = |b: &[u8]| -> Option<(usize, usize)> {
        let (_, after_variant) = postcard::take_from_bytes::<u32>(b).ok()?;
        let (_, after_time) = postcard::take_from_bytes::<u64>(after_variant).ok()?;
        Some((b.len() - after_variant.len(), b.len() - after_time.len()))
    };
    let mut h = blake3::Hasher::new();
    match skip(&bytes) {
        Some((variant_end, time_end)) => {
            h.update(&bytes[..variant_end]);
            h.update(&bytes[time_end..]);
        }
        None => {
            h.update(&bytes);
        }
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::JobSpec;

    fn submit(at_ms: u64, name: &str) -> Command {
        Command::SubmitJobs {
            at_ms,
            jobs: vec![JobSpec::new(name, &["true"])],
        }
    }

    fn c(id: &str) -> RequestId {
        RequestId::Client(id.into())
    }

    fn answered(jobs: Vec<u64>) -> Response {
        Response::Submitted { jobs }
    }

    #[test]
    fn a_copy_gets_the_first_answer_and_a_different_command_is_refused() {
        let mut t = Requests::default();
        assert_eq!(t.lookup(&c("r1"), &submit(1, "a")), Lookup::New);
        t.remember(&c("r1"), &submit(1, "a"), 7, answered(vec![1]));
        // The same request later (a resend has a new timestamp).
        match t.lookup(&c("r1"), &submit(99, "a")) {
            Lookup::Answered(a) => {
                assert_eq!(a.index, 7);
                assert_eq!(a.response, answered(vec![1]));
            }
            other => panic!("expected the first answer, got {other:?}"),
        }
        match t.lookup(&c("r1"), &submit(1, "b")) {
            Lookup::Conflict(e) => assert!(e.to_string().contains("another request"), "{e}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(t.lookup(&c("r2"), &submit(1, "a")), Lookup::New);
    }

    #[test]
    fn the_table_encodes_as_the_std_collections_did() {
        // Snapshots and state hashes written before the table was persistent hold a
        // `BTreeMap` and a `VecDeque` here: the bytes must not change.
        #[derive(Serialize)]
        struct Before {
            answered: std::collections::BTreeMap<RequestId, Answered>,
            order: std::collections::VecDeque<RequestId>,
            clock_ms: u64,
            repeats: u64,
            conflicts: u64,
            remembered_max: usize,
            retention_ms: u64,
        }
        let mut t = Requests::with_bounds(3, u64::MAX);
        for i in 0..5u64 {
            t.remember(&c(&format!("r{i}")), &submit(i, "a"), i, answered(vec![i]));
        }
        let before = Before {
            answered: t
                .answered
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            order: t.order.iter().cloned().collect(),
            clock_ms: t.clock_ms,
            repeats: t.repeats,
            conflicts: t.conflicts,
            remembered_max: t.remembered_max,
            retention_ms: t.retention_ms,
        };
        let bytes = postcard::to_stdvec(&t).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&before).unwrap());
        let back: Requests = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn the_sum_follows_answers_in_and_out_and_a_decoded_table_has_it() {
        let recount = |t: &Requests| {
            let mut sum = [0u64; 4];
            for (id, a) in t.answered.iter() {
                crate::state::wide_add(&mut sum, &answer_digest(id, a), false);
            }
            sum
        };
        let mut t = Requests::with_bounds(5, 1_000_000);
        assert_eq!(t.sum, [0; 4]);
        for n in 0..12u64 {
            t.remember(&c(&format!("r{n}")), &submit(n, "a"), n, answered(vec![n]));
            assert_eq!(t.sum, recount(&t), "after {n}");
        }
        assert_eq!(t.len(), 5, "evicted past the bound");
        // The same id again (a second answer replaces the first): still the recount.
        t.remember(&c("r11"), &submit(20, "a"), 20, answered(vec![20]));
        assert_eq!(t.sum, recount(&t));
        let before = t.summed().sum;
        let back: Requests = postcard::from_bytes(&postcard::to_stdvec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.summed().sum, before);
        // Two tables with the same answers and different scalars sum differently in the
        // hash's view (the scalars are in it).
        let mut other = t.clone();
        other.count_repeat();
        assert_ne!(
            postcard::to_stdvec(&other.summed()).unwrap(),
            postcard::to_stdvec(&t.summed()).unwrap()
        );
    }

    #[test]
    fn the_oldest_ids_are_forgotten_at_the_bound() {
        let mut t = Requests::with_bounds(3, u64::MAX);
        for i in 0..5u64 {
            t.remember(&c(&format!("r{i}")), &submit(i, "a"), i, answered(vec![i]));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(&c("r0"), &submit(0, "a")), Lookup::New);
        assert_eq!(t.lookup(&c("r1"), &submit(1, "a")), Lookup::New);
        assert!(matches!(
            t.lookup(&c("r2"), &submit(2, "a")),
            Lookup::Answered(_)
        ));
        assert!(matches!(
            t.lookup(&c("r4"), &submit(4, "a")),
            Lookup::Answered(_)
        ));
        // The named bound holds for the default table too.
        let mut d = Requests::default();
        for i in 0..(REQUESTS_REMEMBERED_MAX as u64 + 10) {
            d.remember(&c(&i.to_string()), &submit(5, "a"), i, Response::Done);
        }
        assert_eq!(d.len(), REQUESTS_REMEMBERED_MAX);
        assert_eq!(d.lookup(&c("9"), &submit(5, "a")), Lookup::New);
        assert!(matches!(
            d.lookup(&c("10"), &submit(5, "a")),
            Lookup::Answered(_)
        ));
    }

    #[test]
    fn ids_older_than_the_retention_are_forgotten() {
        let mut t = Requests::with_bounds(100, 1_000);
        t.remember(&c("old"), &submit(10_000, "a"), 1, Response::Done);
        t.remember(&c("mid"), &submit(10_500, "a"), 2, Response::Done);
        assert_eq!(t.len(), 2);
        // 11,001 - 1,000 > 10,000: "old" is past the retention, "mid" is not.
        t.remember(&c("new"), &submit(11_001, "a"), 3, Response::Done);
        assert_eq!(t.lookup(&c("old"), &submit(0, "a")), Lookup::New);
        assert!(matches!(
            t.lookup(&c("mid"), &submit(0, "a")),
            Lookup::Answered(_)
        ));
        // A proposer whose clock is behind does not bring time back: its id is kept from
        // the table's time, as long as any other.
        t.remember(&c("late"), &submit(5, "a"), 4, Response::Done);
        assert!(matches!(
            t.lookup(&c("late"), &submit(0, "a")),
            Lookup::Answered(_)
        ));
        t.remember(&c("next"), &submit(11_600, "a"), 5, Response::Done);
        assert_eq!(t.lookup(&c("mid"), &submit(0, "a")), Lookup::New);
        assert!(matches!(
            t.lookup(&c("late"), &submit(0, "a")),
            Lookup::Answered(_)
        ));
    }

    fn node(seq: u64) -> RequestId {
        RequestId::Node {
            node: 1,
            incarnation: 9,
            seq,
        }
    }

    fn kept(t: &Requests, id: &RequestId) -> bool {
        matches!(t.lookup(id, &submit(0, "a")), Lookup::Answered(_))
    }

    #[test]
    fn under_the_feature_the_count_bound_spares_the_last_minute() {
        let minute = REQUEST_KEPT_MIN_MS;
        let mut t = Requests::with_bounds(3, 10 * minute);
        t.follow(&[Feature::NodeRequestIdsKeptAMinute].into());
        // Six answers within a minute: twice the count bound, all kept (a resend of any
        // of them must still find its answer).
        for i in 0..6u64 {
            t.remember(
                &c(&format!("r{i}")),
                &submit(1_000 + i, "a"),
                i,
                Response::Done,
            );
        }
        assert_eq!(t.len(), 6);
        assert!((0..6).all(|i| kept(&t, &c(&format!("r{i}")))));
        // A minute later the count bound holds again, oldest first.
        t.remember(&c("late"), &submit(1_006 + minute, "a"), 7, Response::Done);
        assert_eq!(t.len(), 3);
        assert!(!kept(&t, &c("r3")));
        assert!(kept(&t, &c("r4")) && kept(&t, &c("r5")) && kept(&t, &c("late")));
        // Without the feature the same sequence keeps three all along.
        let mut before = Requests::with_bounds(3, 10 * minute);
        for i in 0..6u64 {
            before.remember(
                &c(&format!("r{i}")),
                &submit(1_000 + i, "a"),
                i,
                Response::Done,
            );
        }
        assert_eq!(before.len(), 3);
        assert!(!kept(&before, &c("r2")));
    }

    #[test]
    fn under_the_feature_a_frozen_clock_still_holds_the_table_to_its_hard_bound() {
        let mut t = Requests::default();
        t.follow(&[Feature::NodeRequestIdsKeptAMinute].into());
        // One proposer an hour ahead: every later answer gets its time, none ages.
        t.remember(&node(0), &submit(3_600_000, "a"), 0, Response::Done);
        for i in 1..(REQUESTS_HELD_MAX as u64 + 10) {
            t.remember(&node(i), &submit(1_000, "a"), i, Response::Done);
        }
        assert_eq!(t.len(), REQUESTS_HELD_MAX);
        assert!(!kept(&t, &node(9)) && kept(&t, &node(10)));
    }

    #[test]
    fn under_the_feature_a_nodes_ids_leave_after_a_minute_and_a_clients_stay() {
        let minute = REQUEST_KEPT_MIN_MS;
        let on = [Feature::NodeRequestIdsKeptAMinute].into();
        let mut t = Requests::default();
        t.follow(&on);
        t.remember(&node(1), &submit(1_000, "a"), 1, Response::Done);
        t.remember(&c("client"), &submit(1_001, "a"), 2, Response::Done);
        t.remember(&node(2), &submit(1_002, "a"), 3, Response::Done);
        // Just under a minute: everything kept.
        t.remember(&node(3), &submit(1_000 + minute, "a"), 4, Response::Done);
        assert!(kept(&t, &node(1)) && kept(&t, &node(2)));
        // Past it: the node's first id goes; the client's stays for the full retention,
        // and the node id answered after it waits behind it (ids leave in order).
        t.remember(&node(4), &submit(1_003 + minute, "a"), 5, Response::Done);
        assert!(!kept(&t, &node(1)));
        assert!(kept(&t, &c("client")) && kept(&t, &node(2)));
        // Once the client's id leaves (its retention past), the node's behind it follow.
        t.remember(
            &node(5),
            &submit(1_002 + REQUEST_RETENTION_MS, "a"),
            6,
            Response::Done,
        );
        assert!(!kept(&t, &c("client")) && !kept(&t, &node(2)) && !kept(&t, &node(3)));
        assert!(kept(&t, &node(5)));
        // Without the feature a node's id is kept as long as a client's.
        let mut before = Requests::default();
        before.remember(&node(1), &submit(1_000, "a"), 1, Response::Done);
        before.remember(
            &node(2),
            &submit(1_000 + 2 * minute, "a"),
            2,
            Response::Done,
        );
        assert!(kept(&before, &node(1)));
    }

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(c("a").check().is_ok());
        assert!(c(&"x".repeat(REQUEST_ID_BYTES_MAX)).check().is_ok());
        assert!(c(&"x".repeat(REQUEST_ID_BYTES_MAX + 1)).check().is_err());
        assert!(c("").check().is_err());
        assert!(c("a\nb").check().is_err());
        let node = RequestId::Node {
            node: 1,
            incarnation: 2,
            seq: 3,
        };
        assert!(node.check().is_ok());
        // A client cannot name a node's request.
        assert_ne!(c(&node.to_string()), node);
    }

    #[test]
    fn the_fingerprint_ignores_only_the_timestamp() {
        use crate::command::{Assignment, Exit, Outcome};
        // Every variant: the timestamp (any size of varint) does not count, the rest does.
        let every = |at_ms: u64| {
            vec![
                submit(at_ms, "a"),
                Command::SubmitWorkflow {
                    at_ms,
                    name: "w".into(),
                    jobs: vec![],
                },
                Command::AssignTasks {
                    at_ms,
                    assignments: vec![Assignment {
                        job: 1,
                        attempt: 1,
                        node: 2,
                    }],
                },
                Command::TaskStarted {
                    at_ms,
                    job: 1,
                    attempt: 1,
                    node: 2,
                },
                Command::TaskFinished {
                    at_ms,
                    job: 1,
                    attempt: 1,
                    node: 2,
                    outcome: Outcome {
                        exit: Exit::Code(0),
                        duration_ms: 3,
                        output_tail: vec![],
                    },
                },
                Command::CancelJob {
                    at_ms,
                    job: 1,
                    reason: "r".into(),
                },
                Command::NodeRegistered {
                    at_ms,
                    node: crate::command::NodeInfo {
                        id: 1,
                        address: "a".into(),
                        role: crate::command::Role::Worker,
                        tags: Default::default(),
                        capacity: crate::command::Capacity {
                            slots: 1,
                            cpu_millis: 1,
                            memory_bytes: 1,
                        },
                    },
                },
                Command::NodeFailed { at_ms, node: 1 },
                Command::NodeRetired { at_ms, node: 1 },
                Command::NodeRecovered { at_ms, node: 1 },
                Command::Checkpoint { at_ms },
                Command::CheckpointHash {
                    at_ms,
                    index: 1,
                    hash: [0; 32],
                },
                Command::Batch {
                    at_ms,
                    commands: vec![],
                },
                Command::Namespace {
                    at_ms,
                    op: crate::namespace::NamespaceOp::Delete { name: "ml".into() },
                },
            ]
        };
        let prints: Vec<[u8; 16]> = every(1).iter().map(fingerprint).collect();
        for later in [2, 300, 1 << 40, u64::MAX] {
            let again: Vec<[u8; 16]> = every(later).iter().map(fingerprint).collect();
            assert_eq!(prints, again, "at_ms {later}");
        }
        let distinct: std::collections::BTreeSet<_> = prints.iter().collect();
        assert_eq!(
            distinct.len(),
            prints.len(),
            "every variant prints differently"
        );
        // The at_ms bytes are exactly what is skipped: the encoding with at_ms 0.
        for c in every(0) {
            let mut h = blake3::Hasher::new();
            let bytes = postcard::to_stdvec(&c).unwrap();
            let (_, rest) = postcard::take_from_bytes::<u32>(&bytes).unwrap();
            let variant_len = bytes.len() - rest.len();
            h.update(&bytes[..variant_len]);
            h.update(&bytes[variant_len + 1..]);
            assert_eq!(fingerprint(&c)[..], h.finalize().as_bytes()[..16]);
        }
        assert_ne!(fingerprint(&submit(1, "a")), fingerprint(&submit(1, "b")));
        let cancel = |job| Command::CancelJob {
            at_ms: 1,
            job,
            reason: "r".into(),
        };
        assert_ne!(fingerprint(&cancel(1)), fingerprint(&cancel(2)));
        // Job options: the wrapped submission's timestamp does not count, the options do.
        let with = |at_ms, retain| Command::WithJobOptions {
            options: vec![vec![crate::command::JobOption::RetainMs(retain)]],
            command: Box::new(submit(at_ms, "a")),
        };
        assert_eq!(fingerprint(&with(1, 5)), fingerprint(&with(1 << 40, 5)));
        assert_ne!(fingerprint(&with(1, 5)), fingerprint(&with(1, 6)));
        assert_ne!(fingerprint(&with(1, 5)), fingerprint(&submit(1, "a")));
        // A namespace: likewise, and the namespace counts.
        let in_ns = |at_ms, ns: &str| Command::InNamespace {
            namespace: ns.into(),
            command: Box::new(submit(at_ms, "a")),
        };
        assert_eq!(
            fingerprint(&in_ns(1, "ml")),
            fingerprint(&in_ns(1 << 40, "ml"))
        );
        assert_ne!(fingerprint(&in_ns(1, "ml")), fingerprint(&in_ns(1, "mk")));
        assert_ne!(fingerprint(&in_ns(1, "ml")), fingerprint(&submit(1, "a")));
    }

    #[test]
    fn under_the_feature_a_retry_under_a_token_is_the_same_request() {
        let authored = |at_ms, name: &str| Command::Authored {
            accessor: "acc".into(),
            command: Box::new(Command::WithJobOptions {
                options: vec![vec![crate::command::JobOption::RetainMs(5)]],
                command: Box::new(submit(at_ms, name)),
            }),
        };
        // As logs written before the feature have it: the wrapped timestamp counts.
        assert_ne!(
            print(&authored(1, "a"), false),
            print(&authored(2, "a"), false)
        );
        assert_eq!(
            print(&authored(1, "a"), false),
            fingerprint(&authored(1, "a"))
        );
        // Under it: it does not; the accessor and the command still do.
        assert_eq!(
            print(&authored(1, "a"), true),
            print(&authored(1 << 40, "a"), true)
        );
        assert_ne!(
            print(&authored(1, "a"), true),
            print(&authored(1, "b"), true)
        );
        let other = Command::Authored {
            accessor: "other".into(),
            command: Box::new(submit(1, "a")),
        };
        let mine = Command::Authored {
            accessor: "acc".into(),
            command: Box::new(submit(1, "a")),
        };
        assert_ne!(print(&other, true), print(&mine, true));
        let mut t = Requests::default();
        t.follow(&[Feature::RequestPrintsSkipEveryTimestamp].into());
        t.remember(&c("r1"), &authored(1, "a"), 7, answered(vec![1]));
        assert!(matches!(
            t.lookup(&c("r1"), &authored(99, "a")),
            Lookup::Answered(_)
        ));
        assert!(matches!(
            t.lookup(&c("r1"), &authored(99, "b")),
            Lookup::Conflict(_)
        ));
    }
}
