//! `cathedral-server`: see `cathedral-server --help`.

use tracing_subscriber::EnvFilter;

/// jemalloc serves the node's Rust allocations (its thread caches take the write path's
/// many small allocations off glibc's arena locks). Measured build against build
/// (BENCHMARKS.md, issue 35): one node at 64 clients 1.07× the writes and 0.90× the CPU per
/// write, three nodes spread 1.07× and 0.93×, 16 clients even, tails as good or better,
/// the same RSS. (mimalloc was tried first and not taken: worse tails in every row.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Log filter unless `CATHEDRAL_LOG` says otherwise. openraft reports every failed
/// replication attempt to a down peer several times a second; `cluster status` shows
/// the same (last contact, matched index) without flooding the log.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off";

/// glibc malloc arenas a node may use (its default is eight per core). It serves the C
/// libraries (zstd's contexts) now, and served everything before jemalloc: every thread that
/// allocates while the others hold theirs gets an arena of its own, and the blocking pool
/// (an executor start, an archive write, a snapshot) brings new threads again and again:
/// measured, a node under a steady load grew ~45 MB a minute in up to 16 arenas of ~10 MB
/// each while its replicated state stayed flat. `MALLOC_ARENA_MAX` in the environment
/// still wins (glibc reads it before this runs).
const MALLOC_ARENAS_MAX: i32 = 2;

/// The exit code when the node stopped itself because it cannot go on (its log's disk
/// failed); 2 is a bad configuration, 1 a failed start.
const EXIT_FAILED: u8 = 3;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's settings; called before any thread
        // of ours starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS_MAX);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CATHEDRAL_LOG")
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match cathedral_server::Config::from_process() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cathedral-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads as usize)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cathedral-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match cathedral_server::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cathedral-server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        tokio::select! {
            () = wait_for_signal() => {
                tracing::info!("signal received; shutting down");
                running.shutdown().await;
                std::process::ExitCode::SUCCESS
            }
            cause = running.failed() => {
                // Fail-stop: the log is unusable until a restart recovers it from disk.
                tracing::error!("the node cannot go on: {cause}; stopping (a restart recovers from the data directory)");
                eprintln!("cathedral-server: stopped: {cause}");
                running.shutdown().await;
                std::process::ExitCode::from(EXIT_FAILED)
            }
        }
    })
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
