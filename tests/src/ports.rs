//! Loopback ports for servers a test starts.
//!
//! A port taken from the kernel with `bind(":0")` and dropped is in the ephemeral range: until
//! the server binds it, any outgoing connection on the host (another test's client, curl, a
//! peer channel) may be given the same port as its local end, and the server then fails with
//! "Address already in use" — seen in CI. Ports handed out here lie outside the kernel's
//! ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), so only listeners can take them;
//! each is checked free for both TCP and UDP and never handed out twice by one process (the
//! tests of a binary run as threads of it). Other test processes pick at random from the same
//! ~20,000 ports, and each candidate is checked free when picked.
//!
//! Shared by the black-box tests and the server crate's own tests (`#[path]`), which cannot
//! depend on this crate.

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

/// Lowest port handed out (below are well-known and registered services, often in use).
const LOWEST: u16 = 10_000;
/// Fewest ports a range outside the ephemeral one must hold to be used.
const MIN_RANGE: u32 = 1_000;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The ports to pick from: below the ephemeral range if there is room there, else above it;
/// `None` when neither holds `MIN_RANGE` ports (then the kernel picks).
fn range() -> Option<(u16, u16)> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if lo >= u32::from(LOWEST) + MIN_RANGE {
        return Some((LOWEST, (lo - 1) as u16));
    }
    if hi + MIN_RANGE <= 65_535 {
        return Some(((hi + 1) as u16, 65_535));
    }
    None
}

/// A seed that differs between processes and calls (no random-number crate needed for this).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1 // xorshift never leaves 0
}

fn free_for_both(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port, free for TCP and UDP right now, outside the ephemeral range.
pub fn free_port() -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if let Some((lo, hi)) = range() {
        let span = u64::from(hi - lo) + 1;
        let mut x = seed();
        for _ in 0..4_096 {
            // xorshift64: a cheap walk over the range from a per-call seed.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = lo + (x % span) as u16;
            if !given.contains(&port) && free_for_both(port) {
                given.insert(port);
                return port;
            }
        }
    }
    // No room outside the ephemeral range (or all of it busy): the kernel's choice.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        if let Some((lo, hi)) = range() {
            for p in &ports {
                assert!((lo..=hi).contains(p), "{p} outside {lo}..={hi}");
            }
            let (elo, ehi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .map(|t| {
                    let v: Vec<u16> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
                    (v[0], v[1])
                })
                .unwrap_or((32_768, 60_999));
            assert!(ports.iter().all(|p| !(elo..=ehi).contains(p)));
        }
        // Each is bindable now (none was left bound by the picker).
        for p in ports.iter().take(20) {
            TcpListener::bind(("127.0.0.1", *p)).expect("free");
        }
    }
}
