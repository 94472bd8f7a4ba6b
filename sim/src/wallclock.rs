//! The wall clock (`CLOCK_REALTIME`), from simulated time on a simulation's thread.
//!
//! The nodes read time through their `Clock` edge, but libraries read the wall clock
//! themselves: hyper stamps every HTTP/2 response with a `date` header from
//! `SystemTime::now()`, and HPACK then sends it as a new literal or as an index into the
//! connection's table depending on whether the real second changed since the previous
//! response — so the bytes on the simulated wire, and with them a run, followed the real
//! clock (a seed ran differently after another run in the same process, or beside one).
//! No seam reaches those reads, so, as [`crate::entropy`] does for `getrandom`, this crate
//! defines the C function `clock_gettime`: on a thread whose run set a time ([`set`]),
//! `CLOCK_REALTIME` (and its coarse variant) answers it; every other clock, and every
//! other thread, gets the C library's own answer. The run sets the time after each step,
//! so within a step every host reads the same wall time (the step's resolution, 1 ms).
//!
//! Monotonic clocks are left alone: tokio's paused clocks only take a base from them, and
//! timed waits (futexes) compute absolute deadlines from the real monotonic clock.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

thread_local! {
    static NOW: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// From now on, the wall clock on this thread reads `since_epoch` after the Unix epoch
/// (`None`: the real wall clock again).
pub fn set(since_epoch: Option<Duration>) {
    NOW.with(|n| n.set(since_epoch));
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// The C library's `clock_gettime` (through the vDSO: no system call), found once.
fn real() -> ClockGettime {
    static REAL: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());
    let mut f = REAL.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT skips this definition.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_gettime".as_ptr()) };
        assert!(!f.is_null(), "the C library has no clock_gettime");
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: the symbol is the C library's clock_gettime, of this signature.
    unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(f) }
}

/// `clock_gettime(2)`, answered from simulated time for the wall clock where a run set it.
///
/// # Safety
/// As `clock_gettime(2)`: `tp` must be valid for writing a `timespec`.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(
    clock: libc::clockid_t,
    tp: *mut libc::timespec,
) -> libc::c_int {
    if clock == libc::CLOCK_REALTIME || clock == libc::CLOCK_REALTIME_COARSE {
        if let Some(t) = NOW.try_with(Cell::get).ok().flatten() {
            (*tp).tv_sec = t.as_secs() as libc::time_t;
            (*tp).tv_nsec = libc::c_long::from(t.subsec_nanos() as i32);
            return 0;
        }
    }
    real()(clock, tp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_with_a_time_reads_it_others_read_the_real_clock() {
        let real = std::time::SystemTime::now();
        std::thread::spawn(move || {
            set(Some(Duration::from_millis(1_704_067_200_123)));
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            assert_eq!(t, Duration::from_millis(1_704_067_200_123));
            // The monotonic clock still moves.
            let a = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(2));
            assert!(a.elapsed() >= Duration::from_millis(2));
            set(None);
            assert!(std::time::SystemTime::now() >= real);
        })
        .join()
        .unwrap();
        assert!(std::time::SystemTime::now() >= real);
    }
}
