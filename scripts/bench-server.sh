#!/usr/bin/env bash
# Committed SubmitJob throughput and latency of release builds on loopback: a standalone
# node and a three-coordinator cluster, each with 1 and 64 clients (cathedral-bench); then
# trivial jobs (`true`) end to end, submit to success, with 1 and 16 clients.
#
#   scripts/bench-server.sh [SECONDS]      (default 10 s per run)
#
# Builds the release binaries, uses fresh data directories under a temporary directory,
# sends the three-node load to the leader and to both followers in turn (clients spread
# over all three nodes), and prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
cargo build --release --bins --locked >&2
BIN=$PWD/target/release
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

start() { # name port http [flags…]
    local name=$1 port=$2 http=$3; shift 3
    "$BIN/cathedral-server" --data-dir "$TMP/$name" --bind 127.0.0.1:$port --http 127.0.0.1:$http "$@" \
        >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 200); do
        curl -sf "127.0.0.1:$http/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "node $name did not become ready" >&2; cat "$TMP/$name.log" >&2; exit 1
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; PIDS=(); }
three_voters() {
    for _ in $(seq 1 100); do
        [ "$("$BIN/cathedral" --server "127.0.0.1:$1" cluster status 2>/dev/null | grep -c voter)" = 3 ] && return 0
        sleep 0.1
    done
    echo "three voters expected" >&2; exit 1
}
bench() { # label servers clients [flags…]
    printf '%-34s' "$1"
    local label=$1 servers=$2 clients=$3; shift 3
    "$BIN/cathedral-bench" --server "$servers" --clients "$clients" --duration "${SECS}s" --warmup 2s "$@" | tr '\n' ' '
    echo
}

# Submits alone: nodes with --slots 0 accept and replicate jobs but run none.
start solo 17051 17081 --slots 0
bench "standalone, 1 client" 127.0.0.1:17051 1
bench "standalone, 64 clients" 127.0.0.1:17051 64
stop_all

start c1 17061 17091 --role coordinator --slots 0
start c2 17062 17092 --role coordinator --slots 0 --join 127.0.0.1:17061
start c3 17063 17093 --role coordinator --slots 0 --join 127.0.0.1:17061
three_voters 17061
bench "3 nodes, 1 client" 127.0.0.1:17061 1
bench "3 nodes, 64 clients" 127.0.0.1:17061 64
bench "3 nodes, 64 clients spread" 127.0.0.1:17061,127.0.0.1:17062,127.0.0.1:17063 64
stop_all

# Jobs run: `true` in the default sandbox, submit to success, on fresh nodes.
start solo2 17151 17181
bench "standalone, run 'true', 1 client" 127.0.0.1:17151 1 --wait
bench "standalone, run 'true', 16 clients" 127.0.0.1:17151 16 --wait
stop_all

start r1 17161 17191 --role coordinator
start r2 17162 17192 --role coordinator --join 127.0.0.1:17161
start r3 17163 17193 --role coordinator --join 127.0.0.1:17161
three_voters 17161
bench "3 nodes, run 'true', 1 client" 127.0.0.1:17161 1 --wait
bench "3 nodes, run 'true', 16 clients" 127.0.0.1:17161 16 --wait
