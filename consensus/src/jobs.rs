//! The jobs of the state, held compactly.
//!
//! A job that may still change is held as a value (`Cell::Live`, shared with snapshot
//! copies and copied on write); a job that ended — most of what a cluster holds, for its
//! retention — is held as its encoding (`Cell::Ended`: the postcard bytes of the job,
//! about a fifth of the memory of the value with its allocations). The bytes are what the
//! job's digest hashes and what a snapshot writes, so neither encodes an ended job again;
//! reading one decodes it (a `Cow`). A job changed after it ended (a rerun, a dependent
//! added or collected) becomes a value again until the command that changed it ends.
//!
//! The map is persistent (`imbl::OrdMap`, structurally shared): a copy is O(1), so a
//! snapshot's copy is taken under the state's lock without stopping apply.

use std::borrow::Cow;
use std::ops::RangeBounds;
use std::sync::Arc;

use crate::command::JobId;
use crate::state::{Job, JobState};

#[derive(Clone)]
enum Cell {
    Live(Arc<Job>),
    Ended { state: JobState, bytes: Arc<[u8]> },
}

impl Cell {
    fn job(&self) -> Cow<'_, Job> {
        match self {
            Cell::Live(j) => Cow::Borrowed(j),
            Cell::Ended { bytes, .. } => Cow::Owned(decode(bytes)),
        }
    }

    fn state(&self) -> JobState {
        match self {
            Cell::Live(j) => j.state,
            Cell::Ended { state, .. } => *state,
        }
    }

    /// The job's encoding: the bytes held, or the value encoded.
    fn bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Cell::Live(j) => Cow::Owned(encode(j)),
            Cell::Ended { bytes, .. } => Cow::Borrowed(bytes),
        }
    }
}

fn encode(j: &Job) -> Vec<u8> {
    postcard::to_stdvec(j).expect("jobs always encode")
}

fn decode(bytes: &[u8]) -> Job {
    postcard::from_bytes(bytes).expect("a held job's encoding decodes")
}

/// A job as the map holds it (see [`Jobs::held`]).
pub(crate) enum Held<'a> {
    Encoded(&'a [u8]),
    Value(&'a Job),
}

/// The jobs by id. See the module docs.
#[derive(Clone, Default)]
pub(crate) struct Jobs {
    map: imbl::OrdMap<JobId, Cell>,
}

impl Jobs {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains_key(&self, id: &JobId) -> bool {
        self.map.contains_key(id)
    }

    pub fn get(&self, id: &JobId) -> Option<Cow<'_, Job>> {
        self.map.get(id).map(Cell::job)
    }

    /// Job `id`'s state, without decoding it.
    pub fn state(&self, id: &JobId) -> Option<JobState> {
        self.map.get(id).map(Cell::state)
    }

    /// A job that has not ended (the indexes name only those).
    pub fn live(&self, id: &JobId) -> &Job {
        match self.map.get(id) {
            Some(Cell::Live(j)) => j,
            Some(Cell::Ended { .. }) => panic!("job {id} is indexed as in flight but ended"),
            None => panic!("job {id} is indexed but absent"),
        }
    }

    /// Job `id` to change: held as a value from here until [`settle`](Self::settle).
    pub fn get_mut(&mut self, id: &JobId) -> Option<&mut Job> {
        let cell = self.map.get_mut(id)?;
        if let Cell::Ended { bytes, .. } = cell {
            *cell = Cell::Live(Arc::new(decode(bytes)));
        }
        match cell {
            Cell::Live(j) => Some(Arc::make_mut(j)),
            Cell::Ended { .. } => unreachable!("made live above"),
        }
    }

    pub fn insert(&mut self, id: JobId, job: Job) {
        self.map.insert(id, Cell::Live(Arc::new(job)));
    }

    pub fn remove(&mut self, id: &JobId) -> Option<Job> {
        self.map.remove(id).map(|c| c.job().into_owned())
    }

    /// Holds job `id` as its encoding if it has ended.
    pub fn settle(&mut self, id: &JobId) {
        if let Some(cell) = self.map.get_mut(id) {
            if let Cell::Live(j) = cell {
                if j.state.is_final() {
                    *cell = Cell::Ended {
                        state: j.state,
                        bytes: encode(j).into(),
                    };
                }
            }
        }
    }

    /// Job `id`'s encoding (what its digest hashes).
    pub fn bytes(&self, id: &JobId) -> Option<Cow<'_, [u8]>> {
        self.map.get(id).map(Cell::bytes)
    }

    pub fn values(&self) -> impl Iterator<Item = Cow<'_, Job>> {
        self.map.values().map(Cell::job)
    }

    /// Every job's id and encoding, in id order.
    pub fn encoded(&self) -> impl Iterator<Item = (JobId, JobState, Cow<'_, [u8]>)> {
        self.map.iter().map(|(id, c)| (*id, c.state(), c.bytes()))
    }

    pub fn range<R: RangeBounds<JobId>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = Cow<'_, Job>> {
        self.map.range(range).map(|(_, c)| c.job())
    }

    /// The jobs with ids in `range` that `keep` accepts by id and state, in id order: a
    /// job `keep` refuses is never decoded (a listing filtered by state or namespace
    /// skips the ended jobs it does not show at the cost of a map step each).
    pub fn range_where<'a, R: RangeBounds<JobId>>(
        &'a self,
        range: R,
        keep: impl Fn(JobId, JobState) -> bool + 'a,
    ) -> impl DoubleEndedIterator<Item = Cow<'a, Job>> + 'a {
        self.map
            .range(range)
            .filter(move |(id, c)| keep(**id, c.state()))
            .map(|(_, c)| c.job())
    }

    /// Every job as held, in id order: an ended one as its encoding, any other as its
    /// value (what a snapshot writes, without encoding either again).
    pub fn held(&self) -> impl Iterator<Item = (JobId, JobState, Held<'_>)> {
        self.map.iter().map(|(id, c)| match c {
            Cell::Live(j) => (*id, j.state, Held::Value(j)),
            Cell::Ended { state, bytes } => (*id, *state, Held::Encoded(bytes)),
        })
    }

    /// Every job's state in id order, with the job if it is held as a value (one that has
    /// not ended, or is changing): what the indexes are rebuilt from, without a lookup.
    pub fn cells(&self) -> impl Iterator<Item = (JobState, Option<&Job>)> {
        self.map.iter().map(|(_, c)| match c {
            Cell::Live(j) => (j.state, Some(&**j)),
            Cell::Ended { state, .. } => (*state, None),
        })
    }

    /// Ids and states in id order, without decoding.
    pub fn states(&self) -> impl Iterator<Item = (JobId, JobState)> + '_ {
        self.map.iter().map(|(id, c)| (*id, c.state()))
    }

    /// The jobs of a snapshot, from its entries in id order.
    ///
    /// Decoding the jobs that have not ended (each an allocation per string and list) was
    /// most of a restart's time: with over [`LOAD_PARALLEL_MIN`] entries, chunks of
    /// [`LOAD_CHUNK`] are decoded on up to [`LOAD_THREADS_MAX`] threads while this one puts
    /// the decoded chunks in the map as they come (in any order: the map sorts).
    pub fn load(mut entries: Vec<(JobId, Loaded<'_>)>) -> Result<Jobs, String> {
        let mut jobs = Jobs::default();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(LOAD_THREADS_MAX);
        if entries.len() < LOAD_PARALLEL_MIN || threads < 2 {
            for (id, loaded) in entries {
                jobs.map.insert(id, loaded.cell(id)?);
            }
            return Ok(jobs);
        }
        let queue = std::sync::Mutex::new(entries.chunks_mut(LOAD_CHUNK));
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<(JobId, Cell)>, String>>();
            for _ in 0..threads {
                let (tx, queue, failed) = (tx.clone(), &queue, &failed);
                scope.spawn(move || loop {
                    let Some(chunk) = queue.lock().unwrap().next() else {
                        return;
                    };
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let cells = chunk
                        .iter_mut()
                        .map(|(id, l)| Ok((*id, std::mem::take(l).cell(*id)?)))
                        .collect::<Result<Vec<_>, String>>();
                    if cells.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if tx.send(cells).is_err() {
                        return;
                    }
                });
            }
            drop(tx);
            for cells in rx {
                for (id, cell) in cells? {
                    jobs.map.insert(id, cell);
                }
            }
            Ok(jobs)
        })
    }
}

/// A job as a snapshot holds it, before [`Jobs::load`] puts it in the map.
#[derive(Default)]
pub(crate) enum Loaded<'a> {
    /// Its state and encoding: kept as it is if the job ended, decoded if not.
    Encoded(JobState, &'a [u8]),
    /// Decoded already (snapshots written before every job was written as its encoding).
    Value(Box<Job>),
    /// Taken by the thread decoding it.
    #[default]
    Taken,
}

impl Loaded<'_> {
    fn cell(self, id: JobId) -> Result<Cell, String> {
        match self {
            Loaded::Encoded(state, bytes) if state.is_final() => Ok(Cell::Ended {
                state,
                bytes: bytes.into(),
            }),
            Loaded::Encoded(state, bytes) => {
                let job: Job = postcard::from_bytes(bytes)
                    .map_err(|e| format!("job {id}: its encoding does not decode: {e}"))?;
                if job.state != state {
                    return Err(format!(
                        "job {id}: listed as {state:?} but its encoding says {:?}",
                        job.state
                    ));
                }
                Ok(Cell::Live(Arc::new(job)))
            }
            Loaded::Value(job) if job.state.is_final() => Ok(Cell::Ended {
                state: job.state,
                bytes: encode(&job).into(),
            }),
            Loaded::Value(job) => Ok(Cell::Live(Arc::from(job))),
            Loaded::Taken => Err(format!("job {id}: loaded twice")),
        }
    }
}

/// Fewest jobs a snapshot load decodes on more than one thread.
pub const LOAD_PARALLEL_MIN: usize = 16_384;
/// Jobs a loading thread decodes at a time.
pub const LOAD_CHUNK: usize = 4096;
/// Most threads a snapshot load decodes jobs on.
pub const LOAD_THREADS_MAX: usize = 4;

impl PartialEq for Jobs {
    /// Equal jobs, however each is held.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .map
                .iter()
                .zip(other.map.iter())
                .all(|((a, x), (b, y))| a == b && x.bytes() == y.bytes())
    }
}

impl Eq for Jobs {}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.map.iter().map(|(id, c)| (id, c.job())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::JobSpec;

    fn job(id: JobId, state: JobState) -> Job {
        Job {
            id,
            spec: JobSpec::new("j", &["sh", "-c", "echo hello"]),
            state,
            reason: None,
            submitted_at_ms: 1,
            not_before_ms: 1,
            attempts: Vec::new(),
            workflow: None,
            dependents: Vec::new(),
        }
    }

    #[test]
    fn an_ended_job_is_held_as_its_encoding_and_reads_back_the_same() {
        let mut jobs = Jobs::default();
        jobs.insert(1, job(1, JobState::Succeeded));
        jobs.insert(2, job(2, JobState::Pending));
        let before = jobs.clone();
        jobs.settle(&1);
        jobs.settle(&2);
        assert!(matches!(jobs.map.get(&1), Some(Cell::Ended { .. })));
        assert!(matches!(jobs.map.get(&2), Some(Cell::Live(_))));
        assert_eq!(jobs, before, "equal however held");
        assert_eq!(*jobs.get(&1).unwrap(), job(1, JobState::Succeeded));
        assert_eq!(jobs.state(&1), Some(JobState::Succeeded));
        assert_eq!(
            jobs.bytes(&1).unwrap(),
            before.bytes(&1).unwrap(),
            "the digest's bytes do not depend on how it is held"
        );
        // Changed after it ended: a value again, the copy taken before untouched.
        let copy = jobs.clone();
        jobs.get_mut(&1).unwrap().dependents.push(9);
        assert!(matches!(jobs.map.get(&1), Some(Cell::Live(_))));
        assert_eq!(jobs.get(&1).unwrap().dependents, vec![9]);
        assert!(copy.get(&1).unwrap().dependents.is_empty());
        jobs.settle(&1);
        assert_eq!(jobs.get(&1).unwrap().dependents, vec![9]);
        // Loaded from its encoding.
        let encoded: Vec<_> = jobs.encoded().collect();
        let loaded = Jobs::load(
            encoded
                .iter()
                .map(|(id, state, bytes)| (*id, Loaded::Encoded(*state, bytes)))
                .collect(),
        )
        .unwrap();
        assert_eq!(loaded, jobs);
        assert_eq!(jobs.remove(&1).unwrap().dependents, vec![9]);
        assert_eq!(jobs.live(&2).state, JobState::Pending);
    }

    #[test]
    fn a_filtered_range_is_the_range_filtered_both_ways() {
        let mut jobs = Jobs::default();
        let states = [JobState::Succeeded, JobState::Pending, JobState::Failed];
        for id in 1..=30 {
            jobs.insert(id, job(id, states[id as usize % 3]));
            jobs.settle(&id);
        }
        let keep = |id: JobId, s: JobState| id.is_multiple_of(2) && s != JobState::Pending;
        let ids = |it: &mut dyn Iterator<Item = Cow<'_, Job>>| it.map(|j| j.id).collect::<Vec<_>>();
        let want = ids(&mut jobs.range(5..).filter(|j| keep(j.id, j.state)));
        assert_eq!(ids(&mut jobs.range_where(5.., keep)), want);
        assert!(!want.is_empty());
        let mut down = ids(&mut jobs.range_where(..=20, keep).rev());
        down.reverse();
        assert_eq!(
            down,
            ids(&mut jobs.range(..=20).filter(|j| keep(j.id, j.state)))
        );
    }
}
