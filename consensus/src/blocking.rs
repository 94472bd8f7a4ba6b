//! Blocking work off the async threads: `tokio::task::spawn_blocking`, unless this thread
//! runs a simulation ([`run_inline_here`]), where it runs in place.
//!
//! A simulation runs every node of a cluster on one thread on simulated time; work done
//! on another thread would finish at a real-time moment the simulation cannot repeat, and
//! with it the order of everything after. In place, the work takes no simulated time and
//! finishes in the same order every run. Nothing sets this in production.

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocking work started on this thread runs in place (`true`), or on
/// tokio's blocking pool again (`false`).
pub fn run_inline_here(on: bool) {
    INLINE.with(|i| i.set(on));
}

/// Whether blocking work started on this thread runs in place.
pub fn inline_here() -> bool {
    INLINE.with(Cell::get)
}

/// Runs `f` on tokio's blocking pool (in place on a simulation's thread); `Err` when it
/// panicked or was cancelled (with tokio's words).
pub async fn run<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if inline_here() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_place_on_a_simulations_thread_and_on_the_pool_otherwise() {
        let here = std::thread::current().id();
        let on_pool = run(move || std::thread::current().id() != here)
            .await
            .unwrap();
        assert!(on_pool);
        run_inline_here(true);
        let in_place = run(move || std::thread::current().id() == here)
            .await
            .unwrap();
        run_inline_here(false);
        assert!(in_place);
        assert!(run(|| panic!("boom")).await.unwrap_err().contains("panic"));
    }
}
