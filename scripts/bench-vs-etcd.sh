#!/usr/bin/env bash
# Cathedral against etcd on this machine, side by side (benches/benches/vs_etcd/):
# committed writes per second, p50, fdatasyncs and server CPU per write for one node and
# three (to the leader and spread), leader SIGKILL to the first accepted write, and trivial
# jobs end to end against the machine's process start rate. One table per figure, with the
# ratio; the systems take turns on fresh data directories under target/.
#
#   scripts/bench-vs-etcd.sh [vs_etcd flags…]
#       --rounds 3 --secs 10 --warmup 2 --clients 1,16,64 --nodes 1,3 --failover-trials 10
#       --jobs-secs 10 --skip writes,failover,jobs --json
#
# Installs Debian's etcd-server and etcd-client (and linux-perf, to count fdatasyncs) when
# missing and running as root; without etcd it says so and exits 0 (nothing to compare).
# Without perf, syncs are counted as flushes of the data directory's disk.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() { # package…
    command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
    apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1)
}

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    if ! apt_install etcd-server etcd-client; then
        echo "scripts/bench-vs-etcd.sh: etcd is not installed and cannot be installed here" \
            "(needs root and apt-get); nothing to compare against, skipping" >&2
        exit 0
    fi
fi
if ! command -v perf >/dev/null 2>&1; then
    apt_install linux-perf \
        || echo "scripts/bench-vs-etcd.sh: perf unavailable; fdatasyncs counted from /proc/diskstats" >&2
fi

cargo build --release --bins --locked >&2
exec cargo bench --locked -p cathedral-benches --bench vs_etcd -- \
    --server-bin target/release/cathedral-server --etcd-bin "$(command -v etcd)" "$@"
