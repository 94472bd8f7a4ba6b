#!/usr/bin/env bash
# A large state on one node: fills a standalone server (--slots 0, nothing collected)
# with jobs from cathedral-bench, then measures what a snapshot and a restart cost:
# the RSS, the committed submits' p999 without and during a snapshot (same run),
# `cathedral snapshot trigger`'s time, and SIGKILL-to-/readyz.
#
#   scripts/bench-snapshot-stall.sh [FILL_SECS] [SERVER_BIN...]
#
# FILL_SECS (default 60) of 64 clients submitting 200-byte jobs; each SERVER_BIN (default
# target/release/cathedral-server) is measured in turn, on the same load, for ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
FILL=${1:-60}
shift || true
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/cathedral-server)
CLI=target/release/cathedral
BENCH=target/release/cathedral-bench
ADDR=127.0.0.1:58051
HTTP=127.0.0.1:58081

rss_mb() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status"; }
p999() { sed -n 's/.*p999 \([0-9.]*\) ms.*/\1/p'; }
ready_ms() {
    local t0; t0=$(date +%s%N)
    until curl -fs "http://$HTTP/readyz" >/dev/null 2>&1; do sleep 0.01; done
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

printf '%-40s %8s %8s %10s %12s %12s %10s %10s\n' server jobs "RSS MB" "snap ms" "p999 ms" "p999 snap" "ready ms" "RSS after"
for bin in "${BINS[@]}"; do
    dir=$(mktemp -d)
    args=(--data-dir "$dir/d" --slots 0 --bind $ADDR --http $HTTP --gossip-bind $ADDR)
    "$bin" --help | grep -q -- --job-retention && args+=(--job-retention 0)
    "$bin" "${args[@]}" >"$dir/log" 2>&1 &
    pid=$!
    ready_ms >/dev/null
    $BENCH --server $ADDR --clients 64 --duration "${FILL}s" --payload-bytes 200 >"$dir/fill" 2>&1
    jobs=$($CLI --server $ADDR cluster status | awk '/^jobs/ {print $2}')
    rss=$(rss_mb $pid)
    base=$($BENCH --server $ADDR --clients 64 --duration 10s --payload-bytes 200 2>&1 | p999)
    # The same load while snapshots are written, one after another, the whole time.
    ( end=$((SECONDS + 11)); while [ $SECONDS -lt $end ]; do $CLI --server $ADDR snapshot trigger >/dev/null 2>&1 || true; done ) &
    snapper=$!
    during=$($BENCH --server $ADDR --clients 64 --duration 10s --payload-bytes 200 2>&1 | p999)
    wait $snapper
    t0=$(date +%s%N)
    $CLI --server $ADDR snapshot trigger >/dev/null
    snap=$(( ($(date +%s%N) - t0) / 1000000 ))
    kill -9 $pid; wait $pid 2>/dev/null || true
    "$bin" "${args[@]}" >>"$dir/log" 2>&1 &
    pid=$!
    ready=$(ready_ms)
    after=$(rss_mb $pid)
    kill -9 $pid; wait $pid 2>/dev/null || true
    printf '%-40s %8s %8s %10s %12s %12s %10s %10s\n' "$bin" "$jobs" "$rss" "$snap" "$base" "$during" "$ready" "$after"
    rm -rf "$dir"
done
