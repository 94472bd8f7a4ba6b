#!/usr/bin/env bash
# Two builds of cathedral-server against each other: committed SubmitJobs per second on one
# node (16 and 64 clients) and on three coordinators (64 clients spread over them), the
# builds alternating for ROUNDS rounds on fresh data directories, then the median of each
# and the ratio B / A, for the rate and for the servers' CPU time per write (user + system
# from /proc, steadier than the rate on a machine the load generator shares). For
# measuring what one change costs or gives; A and B may be scripts that exec a server
# with flags (e.g. `exec cathedral-server --metrics false "$@"`).
#
#   scripts/bench-ab.sh A_SERVER_BIN B_SERVER_BIN [ROUNDS] [SECONDS]   (defaults 3 and 10)
#   WORKLOADS="1n16 1n64 3n64" (the default) picks the workloads: 1nC is one node with C
#   clients, 3nC three coordinators with C clients spread over them, 3lC three coordinators
#   with C clients all to the leader (e.g. "1n1 3l1" for the one-client rows).
#
# e.g. keep the release binary of the commit before a change, then:
#   cp target/release/cathedral-server /tmp/before      # (before the change)
#   cargo build --release --bins && scripts/bench-ab.sh /tmp/before target/release/cathedral-server
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-3}
SECS=${4:-10}
WORKLOADS=${WORKLOADS:-1n16 1n64 3n64}
[ -x target/release/cathedral-bench ] || cargo build --release --locked --bin cathedral-bench >&2
[ -x target/release/cathedral ] || cargo build --release --locked --bin cathedral >&2
BENCH=$PWD/target/release/cathedral-bench
CLI=$PWD/target/release/cathedral
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

start() { # bin name port http [flags…]
    local bin=$1 name=$2 port=$3 http=$4; shift 4
    "$bin" --data-dir "$TMP/$name" --bind 127.0.0.1:$port --http 127.0.0.1:$http \
        --gossip-bind 127.0.0.1:$port --slots 0 "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 200); do
        curl -sf "127.0.0.1:$http/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "node $name did not become ready" >&2; cat "$TMP/$name.log" >&2; exit 1
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; PIDS=(); rm -rf "${TMP:?}"/*; }
cpu_ticks() { # user + system clock ticks of every server process now
    local t=0 p
    for p in "${PIDS[@]}"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
rate() { # servers clients → RATE (writes/s), P50 (µs) and CPU (the servers' CPU µs per
    # counted write, warm-up included)
    local before after out
    before=$(cpu_ticks)
    out=$("$BENCH" --server "$1" --clients "$2" --duration "${SECS}s" --warmup 2s)
    after=$(cpu_ticks)
    RATE=$(echo "$out" | awk '/^per second/ {print $3}')
    P50=$(echo "$out" | awk '/^per second/ {printf "%.0f", $5 * 1000}')
    CPU=$(awk -v t=$((after - before)) -v us="$TICK_US" -v r="$RATE" -v s="$SECS" \
        'BEGIN {printf "%.0f", t * us / (r * s)}')
}
three_voters() {
    for _ in $(seq 1 100); do
        [ "$("$CLI" --server "127.0.0.1:$1" cluster status 2>/dev/null | grep -c voter)" = 3 ] && return 0
        sleep 0.1
    done
    echo "three voters expected" >&2; exit 1
}

leads_still() { # the node at this port is still the leader
    "$CLI" --server "127.0.0.1:$1" cluster status 2>/dev/null | grep -q "^leader .* at 127.0.0.1:$1," \
        || { echo "the node at port $1 no longer leads; its row would not be to the leader" >&2; exit 1; }
}
declare -A R C P
for k in $WORKLOADS; do
    [[ $k =~ ^(1n|3n|3l)[0-9]+$ ]] || { echo "unknown workload $k (1nC, 3nC or 3lC)" >&2; exit 2; }
done
pick() { local k; for k in $WORKLOADS; do case $k in $1) echo "$k" ;; esac; done; }
record() { R[$1,$2]+="$RATE "; C[$1,$2]+="$CPU "; P[$1,$2]+="$P50 "; }
for round in $(seq 1 "$ROUNDS"); do
    for which in A B; do
        bin=${!which}
        ones=$(pick '1n*')
        if [ -n "$ones" ]; then
            start "$bin" solo 19051 19081
            for k in $ones; do rate 127.0.0.1:19051 "${k#1n}"; record "$which" "$k"; done
            stop_all
        fi
        threes=$(pick '3*')
        if [ -n "$threes" ]; then
            start "$bin" c1 19061 19091 --role coordinator
            start "$bin" c2 19062 19092 --role coordinator --join 127.0.0.1:19061
            start "$bin" c3 19063 19093 --role coordinator --join 127.0.0.1:19061
            three_voters 19061
            for k in $threes; do
                case $k in
                    3n*) rate 127.0.0.1:19061,127.0.0.1:19062,127.0.0.1:19063 "${k#3n}" ;;
                    3l*) leads_still 19061; rate 127.0.0.1:19061 "${k#3l}" ;; # c1 started the cluster
                esac
                record "$which" "$k"
            done
            stop_all
        fi
        echo "round $round $which done" >&2
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| workload | A writes/s | B writes/s | B / A | A rounds | B rounds | p50 µs A / B | server CPU µs/write A | B | B / A |"
echo "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"
for k in $WORKLOADS; do
    a=$(echo "${R[A,$k]}" | median)
    b=$(echo "${R[B,$k]}" | median)
    ca=$(echo "${C[A,$k]}" | median)
    cb=$(echo "${C[B,$k]}" | median)
    pa=$(echo "${P[A,$k]}" | median)
    pb=$(echo "${P[B,$k]}" | median)
    n=${k:2}
    label=$(case $k in 1n*) echo "1 node, $n clients";; 3n*) echo "3 nodes, $n clients spread";; 3l*) echo "3 nodes, $n clients to the leader";; esac)
    echo "| $label | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}') | ${R[A,$k]}| ${R[B,$k]}| $pa / $pb | $ca | $cb | $(awk -v a="$ca" -v b="$cb" 'BEGIN {printf "%.3f", b / a}') |"
done
