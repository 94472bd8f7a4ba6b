#!/usr/bin/env bash
# Two builds of cathedral-server against each other on trivial jobs: one node, --slots 64,
# 64 clients each submitting `true` (plain process) and watching it to success
# (`cathedral-bench --wait`), the builds alternating for ROUNDS rounds on fresh data
# directories. Each run prints jobs/s, the latency from submit to success, the CPU time
# per job (user + system from /proc) of the server, of the jobs' own processes (its
# children) and of the load generator, and the share of jobs whose start and end were
# recorded in one log entry (from `cathedral-log dump` once the server stopped). A and B
# may be scripts that `exec` a server with flags.
#
#   scripts/jobs-ab.sh A_SERVER_BIN B_SERVER_BIN [ROUNDS] [SECONDS]   (defaults 2 and 10)
#
# e.g. keep the release binary of the commit before a change, then:
#   cp target/release/cathedral-server /tmp/before      # (before the change)
#   cargo build --release --bins && scripts/jobs-ab.sh /tmp/before target/release/cathedral-server
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in "$1" "$2"; do
    [ -x "$bin" ] || { echo "jobs-ab: $bin is not an executable" >&2; exit 2; }
done
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-2}
SECS=${4:-10}
[ "$SECS" -ge 2 ] || { echo "jobs-ab: SECONDS must be at least 2" >&2; exit 2; }
for bin in cathedral-bench cathedral-log; do
    [ -x "target/release/$bin" ] || cargo build --release --locked --bin "$bin" >&2
done
BENCH=$PWD/target/release/cathedral-bench
LOG=$PWD/target/release/cathedral-log
TMP=$(mktemp -d)
PID=
BENCH_PID=
cleanup() {
    local code=$?
    for p in $BENCH_PID $PID; do
        { kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; } || true
    done
    if [ "$code" -ne 0 ]; then
        # What the failed run said, before its directory goes.
        for f in "$TMP"/*.out "$TMP"/*.log; do
            [ -f "$f" ] && { echo "== $f" >&2; tail -20 "$f" >&2; }
        done
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# user + system ticks of PID itself, and of its children it waited for
ticks() { awk '{print $14 + $15, $16 + $17}' "/proc/$1/stat"; }

run() { # label bin
    local label=$1 bin=$2 dir=$TMP/$1-$RANDOM
    "$bin" --data-dir "$dir" --bind 127.0.0.1:19551 --http 127.0.0.1:19581 \
        --gossip-bind 127.0.0.1:19551 --slots 64 >"$dir.log" 2>&1 &
    PID=$!
    local ready=
    for _ in $(seq 1 200); do
        kill -0 "$PID" 2>/dev/null || break
        if curl -sf 127.0.0.1:19581/readyz >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.05
    done
    [ -n "$ready" ] || { echo "jobs-ab: $label ($bin) did not become ready" >&2; exit 1; }
    # A node is given work once registered, up to 500 ms after it reports ready (its
    # upkeep tick): a moment first, so every run starts alike.
    sleep 1
    local s0 c0 s1 c1 b0 b1
    read -r s0 c0 < <(ticks "$PID")
    # The load generator's CPU: this shell's waited-for children before and after it.
    read -r _ b0 < <(ticks $$)
    "$BENCH" --server 127.0.0.1:19551 --clients 64 --wait --sandbox process \
        --duration "${SECS}s" --warmup 0s >"$dir.out" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || { echo "jobs-ab: the load generator failed against $label" >&2; exit 1; }
    BENCH_PID=
    read -r _ b1 < <(ticks $$)
    read -r s1 c1 < <(ticks "$PID")
    kill "$PID"
    wait "$PID" || true
    PID=
    local jobs rate p50 p99 together
    jobs=$(awk '/jobs succeeded/ {for (i = 1; i < NF; i++) if ($i == "succeeded") print $(i + 1)}' "$dir.out")
    rate=$(awk '/^per second/ {print $3}' "$dir.out")
    p50=$(awk '/^per second/ {print $5}' "$dir.out")
    p99=$(awk '/^per second/ {print $8}' "$dir.out")
    # A job's start and end in one entry: the same index on both lines (a batch's lines
    # repeat its entry's index), per job and attempt.
    together=$({ "$LOG" --data-dir "$dir" dump --type task_started --type task_finished || true; } |
        awk '{ k = $5 " " $7; if ($3 == "task_started") s[k] = $1; else if ($3 == "task_finished") e[k] = $1 }
             END { for (k in e) { n++; if (k in s && s[k] == e[k]) m++ } printf "%.0f", n ? 100 * m / n : 0 }')
    awk -v l="$label" -v r="$rate" -v p50="$p50" -v p99="$p99" -v n="$jobs" \
        -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v b=$((b1 - b0)) -v t="$together" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { f = 1000 / hz / n; printf "%-2s jobs/s %5.0f  p50 %6.1f ms  p99 %6.1f ms  CPU ms/job: server %.2f  jobs %.2f  client %.2f  start+end in one entry %s%%\n", l, r, p50, p99, s * f, c * f, b * f, t }'
    rm -rf "$dir" "$dir.log" "$dir.out"
}

echo "A = $A"
echo "B = $B"
for round in $(seq 1 "$ROUNDS"); do
    run A "$A"
    run B "$B"
done
