//! Cathedral benchmarks: see `benches/compare.rs` (side-by-side) and `benches/log.rs` (criterion).
