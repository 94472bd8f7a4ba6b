#!/usr/bin/env bash
# Two builds of cathedral-server against each other on trivial jobs: one node, --slots 64,
# 64 clients each submitting `true` (plain process) and watching it to success
# (`cathedral-bench --wait`), the builds alternating for ROUNDS rounds on fresh data
# directories. Each run prints jobs/s, the latency from submit to success, the CPU time
# per job (user + system from /proc) of the server, of the jobs' own processes (its
# children) and of the load generator, and the share of jobs whose start and end were
# recorded in one log entry (from `cathedral-log dump` once the server stopped).
#
#   scripts/jobs-ab.sh A_SERVER_BIN B_SERVER_BIN [ROUNDS] [SECONDS]   (defaults 2 and 10)
#
# e.g. keep the release binary of the commit before a change, then:
#   cp target/release/cathedral-server /tmp/before      # (before the change)
#   cargo build --release --bins && scripts/jobs-ab.sh /tmp/before target/release/cathedral-server
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-2}
SECS=${4:-10}
for bin in cathedral-bench cathedral-log; do
    [ -x "target/release/$bin" ] || cargo build --release --locked --bin "$bin" >&2
done
BENCH=$PWD/target/release/cathedral-bench
LOG=$PWD/target/release/cathedral-log
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

# user + system ticks of PID, and of its waited-for children
ticks() { awk '{print $14 + $15, $16 + $17}' "/proc/$1/stat"; }

run() { # label bin
    local label=$1 bin=$2 dir=$TMP/$1-$RANDOM
    "$bin" --data-dir "$dir" --bind 127.0.0.1:19551 --http 127.0.0.1:19581 \
        --gossip-bind 127.0.0.1:19551 --slots 64 >"$dir.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 200); do
        curl -sf 127.0.0.1:19581/readyz >/dev/null 2>&1 && break
        sleep 0.05
    done
    # Placement waits for gossip to list the node as available: a moment after ready.
    sleep 1
    local s0 c0 s1 c1 b
    read -r s0 c0 < <(ticks "$PID")
    "$BENCH" --server 127.0.0.1:19551 --clients 64 --wait --sandbox process \
        --duration "${SECS}s" --warmup 0s >"$dir.out" 2>&1 &
    local bench=$!
    sleep $((SECS - 1))
    b=$(ticks "$bench" | awk '{print $1}')
    wait "$bench"
    read -r s1 c1 < <(ticks "$PID")
    kill "$PID"
    wait "$PID" || true
    PID=
    local rate p50 p99 n together
    rate=$(awk '/^per second/ {print $3}' "$dir.out")
    p50=$(awk '/^per second/ {print $5}' "$dir.out")
    p99=$(awk '/^per second/ {print $8}' "$dir.out")
    n=$(awk -v r="$rate" -v s="$SECS" 'BEGIN {print r * s}')
    together=$("$LOG" --data-dir "$dir" dump --type task_started --type task_finished |
        awk '{ if ($3 == "task_started") s[$5] = $1; else if ($3 == "task_finished") { n++; if (s[$5] == $1) m++ } }
             END { printf "%.0f", n ? 100 * m / n : 0 }')
    awk -v l="$label" -v r="$rate" -v p50="$p50" -v p99="$p99" -v n="$n" \
        -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v b="$b" -v t="$together" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { f = 1000 / hz / n; printf "%-2s jobs/s %5.0f  p50 %6.1f ms  p99 %6.1f ms  CPU ms/job: server %.2f  jobs %.2f  client ~%.2f  start+end in one entry %s%%\n", l, r, p50, p99, s * f, c * f, b * f, t }'
    rm -rf "$dir"
}

echo "A = $A"
echo "B = $B"
for round in $(seq 1 "$ROUNDS"); do
    run A "$A"
    run B "$B"
done
