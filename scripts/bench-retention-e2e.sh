#!/usr/bin/env bash
# Retention end to end on one node: `--slots 64 --job-retention 30s`, 64 clients running
# trivial jobs at full rate (cathedral-bench --wait) for MINUTES (default 10); every
# minute a snapshot is taken and the RSS, the snapshot's size and the jobs held printed.
# With retention, minute 10 should be within 10 % of minute 2.
#
#   scripts/bench-retention-e2e.sh [MINUTES] [SERVER_BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
BIN=${2:-target/release/cathedral-server}
CLI=target/release/cathedral
BENCH=target/release/cathedral-bench
ADDR=127.0.0.1:58151
HTTP=127.0.0.1:58181
dir=$(mktemp -d)
"$BIN" --data-dir "$dir/d" --slots 64 --job-retention 30s --bind $ADDR --http $HTTP \
    --gossip-bind $ADDR >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
until curl -fs "http://$HTTP/readyz" >/dev/null 2>&1; do sleep 0.1; done
$BENCH --server $ADDR --clients 64 --wait --duration "$((MINUTES * 60))s" --warmup 0s \
    >"$dir/bench" 2>&1 &
bench=$!
printf '%6s %10s %10s %10s %14s %8s %8s %8s\n' minute "jobs ever" "jobs held" archived "snapshot B" "RSS MB" "anon MB" "file MB"
for m in $(seq 1 "$MINUTES"); do
    sleep 60
    $CLI --server $ADDR snapshot trigger >/dev/null
    snap=$(ls -t "$dir"/d/snapshots/*.snap 2>/dev/null | head -1)
    size=$(stat -c %s "$snap")
    held=$($CLI --server $ADDR cluster status | awk '/^jobs/ {print $2}')
    ever=$($CLI --server $ADDR list --newest-first --limit 1 --json | grep -o '"id": *"[0-9]*"' | head -1 | grep -o '[0-9]*')
    archived=$(cat "$dir"/d/archive/*.jsonl.zst 2>/dev/null | wc -c)
    rss=$(awk '/VmRSS/ {printf "%d", $2/1024}' /proc/$pid/status)
    # Anonymous memory (the heap) and mapped files' pages (log segments read through
    # mmap) apart: only the first is the state's.
    anon=$(awk '/RssAnon/ {printf "%d", $2/1024}' /proc/$pid/status)
    file=$(awk '/RssFile/ {printf "%d", $2/1024}' /proc/$pid/status)
    printf '%6s %10s %10s %10s %14s %8s %8s %8s\n' "$m" "${ever:-0}" "$held" "$archived" "$size" "$rss" "$anon" "$file"
done
wait $bench || true
tail -2 "$dir/bench"
