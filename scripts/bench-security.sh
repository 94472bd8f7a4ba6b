#!/usr/bin/env bash
# What TLS and token checks cost: committed SubmitJobs on one node (`--slots 0`) in three
# configurations — plaintext, TLS (server certificate; the client verifies it), and TLS
# with access control on (every call's token hashed and looked up) — at 1 and 64 clients,
# the configurations alternating for ROUNDS rounds on fresh data directories; prints the
# median writes/s and p50 of each and the ratio to plaintext.
#
#   scripts/bench-security.sh [ROUNDS] [SECONDS]   (defaults 3 and 10)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
cargo build --release --locked --bin cathedral-server --bin cathedral --bin cathedral-bench >&2
BIN=$PWD/target/release
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$BIN/cathedral" tls create-ca --out "$TMP/ca" >/dev/null
"$BIN/cathedral" tls create-cert --ca "$TMP/ca" --node b --ip 127.0.0.1 --out "$TMP" >/dev/null
CA=$TMP/ca/ca.pem
TLS=(--tls-cert "$TMP/node-b.pem" --tls-key "$TMP/node-b-key.pem")

start() { # config
    rm -rf "$TMP/d"
    local flags=()
    [ "$1" != plain ] && flags=("${TLS[@]}")
    "$BIN/cathedral-server" --data-dir "$TMP/d" --bind 127.0.0.1:19151 --http 127.0.0.1:19181 \
        --slots 0 "${flags[@]}" >"$TMP/server.log" 2>&1 &
    PID=$!
    local client=(--server 127.0.0.1:19151)
    [ "$1" != plain ] && client+=(--tls-ca "$CA")
    for _ in $(seq 1 200); do
        "$BIN/cathedral" "${client[@]}" cluster status >/dev/null 2>&1 && break
        sleep 0.05
    done
    TOKEN=
    if [ "$1" = acl ]; then
        local root
        root=$("$BIN/cathedral" "${client[@]}" acl bootstrap --json | sed -n 's/.*"secret": "\(.*\)".*/\1/p')
        TOKEN=$("$BIN/cathedral" "${client[@]}" --token "$root" acl token create --policy submit --json \
            | sed -n 's/.*"secret": "\(.*\)".*/\1/p')
    fi
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; }
run() { # config clients → "per_sec p50_ms"
    local args=(--server 127.0.0.1:19151 --clients "$2" --duration "${SECS}s" --warmup 2s --json)
    [ "$1" != plain ] && args+=(--tls-ca "$CA")
    [ -n "$TOKEN" ] && args+=(--token "$TOKEN")
    "$BIN/cathedral-bench" "${args[@]}" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["errors"]==0, r; print(r["per_sec"], r["p50_ms"])'
}

declare -A R
for round in $(seq 1 "$ROUNDS"); do
    for config in plain tls acl; do
        start "$config"
        for c in 1 64; do
            R[$config,$c]+="$(run "$config" "$c" | tr ' ' ':') "
        done
        stop
    done
    echo "round $round done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| configuration | clients | writes/s | ratio to plaintext | p50 ms |"
echo "|---|---:|---:|---:|---:|"
for c in 1 64; do
    base=$(for x in ${R[plain,$c]}; do echo "${x%%:*}"; done | median)
    for config in plain tls acl; do
        rate=$(for x in ${R[$config,$c]}; do echo "${x%%:*}"; done | median)
        p50=$(for x in ${R[$config,$c]}; do echo "${x##*:}"; done | median)
        name=$config; [ "$config" = tls ] && name="TLS"; [ "$config" = acl ] && name="TLS + tokens"
        printf "| %s | %s | %.0f | %.2f | %.3f |\n" "$name" "$c" "$rate" "$(python3 -c "print($rate/$base)")" "$p50"
    done
done
