//! Tunables and bounds of the log. Every bound is a named field with its unit last.

use crate::error::{Error, Result};

/// Smallest allowed `segment_bytes_max`.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest allowed `segment_bytes_max`; keeps every in-segment offset within a `u32`
/// together with one record past the bound and the footer.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;
/// Largest allowed `record_bytes_max` (a record must fit a `u32` offset beside a full segment).
pub const RECORD_BYTES_LIMIT: u64 = 256 << 20;

/// How an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after `write` and `fdatasync`: survives kill -9 and power loss.
    Durable,
    /// Acknowledged after `write` only: survives kill -9, not power loss, until the next
    /// durable append or [`Log::sync`](crate::Log::sync).
    Buffered,
}

/// What open does with damage found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn tail (damage past everything acknowledged, in the last segment); refuse
    /// acknowledged entries damaged ([`Error::AcknowledgedDamaged`]) and corruption.
    #[default]
    Strict,
    /// For a member of a multi-node cluster, which can fetch what it lost from its peers:
    /// as `Strict`, but acknowledged entries damaged at the log's tail are copied to
    /// `salvage/`, cut, and recorded as owed ([`Log::owed`](crate::Log::owed)) until the
    /// log holds them again. Corruption anywhere else is still refused.
    Refetch,
    /// Keep the longest valid prefix and drop everything after the first damage, reporting
    /// what was dropped and recording acknowledged entries dropped as an accepted loss
    /// ([`Log::losses`](crate::Log::losses)). For operators repairing a damaged directory.
    Salvage,
}

/// Options for [`Log::open`](crate::Log::open).
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is sealed and a new one started once the next record would take it past
    /// this size. A single record larger than this gets a segment of its own.
    pub segment_bytes_max: u64,
    /// Largest payload of one record, before compression.
    pub record_bytes_max: u64,
    /// Most records in one append call.
    pub batch_records_max: u64,
    /// Most payload bytes in one append call.
    pub batch_bytes_max: u64,
    /// Appenders block while the group-commit queue holds more than this many encoded bytes.
    pub queue_bytes_max: u64,
    /// Payloads of at least this many bytes are compressed with zstd when that makes them
    /// smaller. `None` disables compression.
    pub compress_threshold_bytes: Option<u64>,
    /// zstd level for compressed payloads.
    pub compression_level: i32,
    /// Group commit: before starting a round, the writer waits up to this long for as many
    /// requests as the previous round carried (appenders woken by the previous round's
    /// completion are still on their way back). Only waits when the previous round had more
    /// than one durable request, so a lone appender never waits. 0 disables the wait.
    pub group_commit_wait_us: u64,
    /// Drop-behind: synced bytes of the active segment further than this behind the write
    /// position are dropped from the page cache, so the cache stays small and its pages are
    /// reused for new writes instead of growing (on the virtual machines measured in
    /// BENCHMARKS.md this raised large durable appends from ~25% to ~80% of raw disk
    /// bandwidth). The recent tail — what followers and readers usually want — stays cached;
    /// older records are read from disk. `None` leaves the cache alone.
    pub cache_behind_bytes: Option<u64>,
    /// Preallocate the next segment's space ahead of need (fallocate, in the background).
    pub preallocate: bool,
    /// What open does with damage.
    pub recovery_mode: RecoveryMode,
    /// Check every record of every sealed segment at open, not only their footers. Slower
    /// (it reads the whole log); for operators and tools that want damage found before
    /// serving. Without it, sealed records are checked on every read.
    pub verify_on_open: bool,
    /// Called by the writer thread after every segment fdatasync with its duration (a
    /// metrics histogram, say); keep it cheap, it runs on the write path. `None`: nothing.
    pub on_sync: Option<SyncObserver>,
    /// Run the writer on the calling thread: no writer, acknowledgment-sync or
    /// preallocation threads; every append, sync, truncate and purge is written (and, as
    /// its durability asks, synced) before the call returns, its callback called on the
    /// caller's thread, with the writer held (a callback must not call the log). Appenders
    /// then share no syncs (no group commit). A log dropped
    /// without [`Log::close`](crate::Log::close) is abandoned as a killed process leaves
    /// it (nothing sealed or synced). For a simulation that runs whole nodes on one thread
    /// and must not be woken by another; a server uses the threads.
    pub inline_writer: bool,
}

/// A function the writer calls after every fdatasync, with how long it took.
#[derive(Clone)]
pub struct SyncObserver(pub std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            batch_records_max: 65_536,
            batch_bytes_max: 64 << 20,
            queue_bytes_max: 256 << 20,
            compress_threshold_bytes: Some(8192),
            compression_level: 1,
            group_commit_wait_us: 100,
            cache_behind_bytes: Some(4 << 20),
            preallocate: true,
            recovery_mode: RecoveryMode::Strict,
            verify_on_open: false,
            on_sync: None,
            inline_writer: false,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let check = |name: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(Error::InvalidArgument(format!(
                    "option {name} = {value} is outside [{min}, {max}]"
                )))
            } else {
                Ok(())
            }
        };
        check(
            "segment_bytes_max",
            self.segment_bytes_max,
            SEGMENT_BYTES_MIN,
            SEGMENT_BYTES_LIMIT,
        )?;
        check(
            "record_bytes_max",
            self.record_bytes_max,
            1,
            RECORD_BYTES_LIMIT,
        )?;
        check(
            "batch_records_max",
            self.batch_records_max,
            1,
            u32::MAX as u64,
        )?;
        check("batch_bytes_max", self.batch_bytes_max, 1, u64::MAX)?;
        check("queue_bytes_max", self.queue_bytes_max, 1, u64::MAX)?;
        check(
            "group_commit_wait_us",
            self.group_commit_wait_us,
            0,
            100_000,
        )?;
        if !(1..=22).contains(&self.compression_level) {
            return Err(Error::InvalidArgument(format!(
                "option compression_level = {} is outside [1, 22]",
                self.compression_level
            )));
        }
        Ok(())
    }
}
