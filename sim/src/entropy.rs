//! The operating system's entropy, from the run's seed on a simulation's thread.
//!
//! Some libraries draw from the OS generator themselves: chitchat picks the peers it
//! gossips with through rand's `ThreadRng`, which seeds itself from `getrandom(2)`. No
//! seam reaches it, so the simulation answers `getrandom` itself: this crate defines the
//! C symbol (exported from the test binaries, see `build.rs`, so the `dlsym` lookup of the
//! `getrandom` crate finds it before libc's), and on a thread whose run set a seed
//! ([`seed_thread`]) fills the buffer from that seed; everywhere else it is the system
//! call. Each run takes a fresh thread, so `ThreadRng` seeds itself anew from the run's
//! seed. (The approach is the one mad-turmoil takes for `getrandom`.)

use std::cell::Cell;

thread_local! {
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// From now on, `getrandom` on this thread answers from `seed` (`None`: the kernel's).
pub fn seed_thread(seed: Option<u64>) {
    STATE.with(|s| s.set(seed));
}

/// splitmix64: the next value from `state` (the run's own choices use it too).
pub(crate) fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix(*state)
}

/// [`next`] on a state shared between handles (the gossip link's loss).
pub fn next_shared(state: &std::sync::atomic::AtomicU64) -> u64 {
    const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
    mix(state
        .fetch_add(STEP, std::sync::atomic::Ordering::Relaxed)
        .wrapping_add(STEP))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `getrandom(2)`, answered from the thread's seed where a run set one.
///
/// # Safety
/// As `getrandom(2)`: `buf` must be valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, flags: u32) -> isize {
    let seeded = STATE.try_with(Cell::get).ok().flatten();
    match seeded {
        Some(mut state) => {
            let out = std::slice::from_raw_parts_mut(buf, len);
            for chunk in out.chunks_mut(8) {
                let v = next(&mut state).to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            STATE.with(|s| s.set(Some(state)));
            len as isize
        }
        None => libc::syscall(libc::SYS_getrandom, buf, len, flags) as isize,
    }
}
