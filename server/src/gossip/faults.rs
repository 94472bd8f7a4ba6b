//! Loss and partitions injected on gossip's sending side, for the crate's in-process
//! tests: a seeded drop rate and blocked destinations. Compiled into tests only; the
//! transport of a build for use has no hook on its send path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Loss and partitions injected on the sending side.
pub struct Faults {
    /// Probability of dropping a datagram, in millionths.
    drop_ppm: AtomicU64,
    rng: Mutex<StdRng>,
    blocked: Mutex<HashSet<SocketAddr>>,
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            drop_ppm: AtomicU64::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            blocked: Mutex::new(HashSet::new()),
        }
    }

    /// Drops each datagram sent with probability `p` (0.0..=1.0).
    pub fn set_drop_rate(&self, p: f64) {
        let ppm = (p.clamp(0.0, 1.0) * 1e6).round() as u64;
        self.drop_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Datagrams to `to` are dropped until [`heal`](Self::heal).
    pub fn block(&self, to: SocketAddr) {
        self.blocked.lock().unwrap().insert(to);
    }

    pub fn heal(&self) {
        self.blocked.lock().unwrap().clear();
    }

    pub(super) fn drops(&self, to: SocketAddr) -> bool {
        if self.blocked.lock().unwrap().contains(&to) {
            return true;
        }
        let ppm = self.drop_ppm.load(Ordering::Relaxed);
        ppm > 0 && self.rng.lock().unwrap().gen_range(0..1_000_000) < ppm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_drop_at_about_the_rate_asked_and_block_destinations() {
        let f = Faults::new(7);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!(0..1000).any(|_| f.drops(a)));
        f.set_drop_rate(0.2);
        let dropped = (0..10_000).filter(|_| f.drops(a)).count();
        assert!((1_700..2_300).contains(&dropped), "{dropped}");
        f.set_drop_rate(0.0);
        f.block(a);
        assert!(f.drops(a));
        assert!(!f.drops("127.0.0.1:2".parse().unwrap()));
        f.heal();
        assert!(!f.drops(a));
    }
}
