#!/usr/bin/env bash
# Committed SubmitJob throughput and latency of release builds on loopback: a standalone
# node and a three-coordinator cluster, each with 1 and 64 clients (cathedral-bench).
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
bench() { # label servers clients
    printf '%-28s' "$1"
    "$BIN/cathedral-bench" --server "$2" --clients "$3" --duration "${SECS}s" --warmup 2s | tr '\n' ' '
    echo
}

start solo 17051 17081
bench "standalone, 1 client" 127.0.0.1:17051 1
bench "standalone, 64 clients" 127.0.0.1:17051 64
kill "${PIDS[@]}"; wait 2>/dev/null || true; PIDS=()

start c1 17061 17091 --role coordinator
start c2 17062 17092 --role coordinator --join 127.0.0.1:17061
start c3 17063 17093 --role coordinator --join 127.0.0.1:17061
sleep 2 # promotion of both joiners
"$BIN/cathedral" --server 127.0.0.1:17061 cluster status | grep -c voter | grep -qx 3 \
    || { echo "three voters expected" >&2; exit 1; }
bench "3 nodes, 1 client" 127.0.0.1:17061 1
bench "3 nodes, 64 clients" 127.0.0.1:17061 64
bench "3 nodes, 64 clients spread" 127.0.0.1:17061,127.0.0.1:17062,127.0.0.1:17063 64
