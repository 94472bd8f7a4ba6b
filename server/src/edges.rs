//! What a node takes from its surroundings, given to it as values: the clock its entries
//! carry (`at_ms`), and (see `Edges`) whatever else a simulation replaces.
//!
//! A production node is given the system's ([`Edges::system`]); a test that runs a
//! whole cluster in one process on simulated time gives each node its own — a clock on
//! the simulation's time, skewed per node as the run's seed says. Randomness is the other
//! edge; it is the thread's (`cathedral_consensus::rng`), which a simulation seeds.

use std::fmt::Debug;
use std::sync::Arc;

/// The proposer's clock: what a node's commands carry as `at_ms` (apply never reads a
/// clock; it reads these).
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::proposal::now_ms()
    }
}

/// A clock `offset_ms` ahead of (or, negative, behind) another: a node whose clock is off.
#[derive(Debug, Clone)]
pub struct Skewed<C> {
    pub base: C,
    pub offset_ms: i64,
}

impl<C: Clock> Clock for Skewed<C> {
    fn now_ms(&self) -> u64 {
        self.base.now_ms().saturating_add_signed(self.offset_ms)
    }
}

/// The edges a node is given (see the module docs).
#[derive(Debug, Clone)]
pub struct Edges {
    pub clock: Arc<dyn Clock>,
}

impl Edges {
    /// A production node's: the system's clock.
    pub fn system() -> Edges {
        Edges {
            clock: Arc::new(SystemClock),
        }
    }
}

impl Default for Edges {
    fn default() -> Self {
        Edges::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_skewed_clock_is_off_by_its_offset_and_never_before_the_epoch() {
        assert_eq!(
            Skewed {
                base: Fixed(10_000),
                offset_ms: 2_500
            }
            .now_ms(),
            12_500
        );
        assert_eq!(
            Skewed {
                base: Fixed(10_000),
                offset_ms: -2_500
            }
            .now_ms(),
            7_500
        );
        assert_eq!(
            Skewed {
                base: Fixed(10),
                offset_ms: -2_500
            }
            .now_ms(),
            0
        );
        let wall = SystemClock.now_ms();
        assert!(wall > 1_600_000_000_000, "{wall}");
    }
}
