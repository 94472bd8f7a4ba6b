//! The random source every node's choices draw from: the thread's own generator
//! (`rand::thread_rng`), unless a simulation has seeded the thread.
//!
//! A node draws randomness for openraft's election timeouts (through [`Runtime`]'s
//! `thread_rng`), its run's incarnation, gossip's join jitter and its generated names. A
//! simulation runs every node of a cluster on one thread, on simulated time: seeding that
//! thread with [`seed_thread`] makes every draw, in every node, follow from the run's seed,
//! so a run can be repeated bit for bit. Nothing seeds a thread in production.
//!
//! (rand's `ThreadRng` cannot be seeded; a thread-local `StdRng` consulted first is the
//! smallest seam that keeps openraft's and our call sites unchanged.)
//!
//! [`Runtime`]: crate::raft::Runtime

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on this thread's draws come from a generator seeded with `seed` (`None`: from
/// the thread's own generator again).
pub fn seed_thread(seed: Option<u64>) {
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// Whether this thread's draws are seeded (a simulation runs on it).
pub fn seeded() -> bool {
    SEEDED.with(|s| s.borrow().is_some())
}

/// A handle on this thread's random source (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rng;

impl Rng {
    fn with<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        SEEDED.with(|s| match s.borrow_mut().as_mut() {
            Some(r) => f(r),
            None => f(&mut rand::thread_rng()),
        })
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        Rng::with(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        Rng::with(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        Rng::with(|r| r.fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        Rng::with(|r| r.try_fill_bytes(dest))
    }
}

/// A random value from this thread's source (`rand::random`, seedable).
pub fn random<T>() -> T
where
    rand::distributions::Standard: rand::distributions::Distribution<T>,
{
    use rand::Rng as _;
    Rng.gen()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    #[test]
    fn a_seeded_thread_draws_the_same_sequence_and_an_unseeded_one_does_not() {
        let draw = || (0..8).map(|_| random::<u64>()).collect::<Vec<_>>();
        seed_thread(Some(7));
        assert!(seeded());
        let a = draw();
        let range: Vec<u64> = (0..8).map(|_| Rng.gen_range(150..300)).collect();
        seed_thread(Some(7));
        assert_eq!(draw(), a);
        assert_eq!(
            (0..8)
                .map(|_| Rng.gen_range(150..300))
                .collect::<Vec<u64>>(),
            range
        );
        seed_thread(Some(8));
        assert_ne!(draw(), a);
        seed_thread(None);
        assert!(!seeded());
        // Unseeded: the thread's own generator (64-bit draws do not repeat).
        assert_ne!(draw(), draw());
        // Another thread is not seeded by this one.
        seed_thread(Some(7));
        std::thread::spawn(|| assert!(!seeded())).join().unwrap();
        seed_thread(None);
    }
}
