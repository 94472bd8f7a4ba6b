#!/usr/bin/env bash
# Cathedral's test command (the README's, and all .ci/run runs): installs what a fresh
# machine lacks, runs the whole suite, then the lints (clippy with warnings denied, rustfmt).
#
# Environment:
#   CATHEDRAL_CRASH_KILLS=N   SIGKILL crash loop length (default 20; long run: 1000)
#   CATHEDRAL_DAMAGE_ROUNDS=N three-node damaged-follower rounds in tests/tests/damage.rs (default 2)
#   CATHEDRAL_MODEL_CASES=N   model-based test sequences (default 48)
#   CATHEDRAL_PROP_CASES=N    consensus property-test cases
#   CATHEDRAL_SEED=N          replay a random test with the seed it printed
#   CATHEDRAL_PYTHON=PATH     a Python with grpcio for tests/tests/python_client.rs
#                             (default: a virtual environment this script makes in target/)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is not installed; install a Rust toolchain (rustup) first" >&2
    exit 2
fi

# need "WHAT" COMMAND… -- PACKAGE…: installs Debian's PACKAGEs unless every COMMAND is on
# PATH; where that cannot be done, says which tests will be skipped (they say so too).
need() {
    local what=$1 missing=0
    shift
    while [ "$1" != "--" ]; do
        command -v "$1" >/dev/null 2>&1 || missing=1
        shift
    done
    shift
    [ "$missing" = 1 ] || return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "scripts/test.sh: installing $* for $what" >&2
        apt-get install -y -qq "$@" >/dev/null 2>&1 \
            || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1) \
            || echo "scripts/test.sh: WARNING: could not install $*; $what will be skipped" >&2
    else
        echo "scripts/test.sh: WARNING: $* missing and cannot be installed here; $what will be skipped" >&2
    fi
}

# bubblewrap is the executor's default sandbox; Prometheus scrapes a cluster in
# tests/tests/metrics.rs and promtool lints /metrics; the dashboard's test drives
# Chromium through chromedriver; the docker sandbox's tests run containers on Podman's
# Docker-compatible API service (with runc) from a busybox image made offline; the DNS
# seed test serves names from dnsmasq; the deploy test renders deploy/kubernetes/ with
# kubectl's kustomize (v5 needed: with Debian 12's kubectl 1.20 it says it skips) and
# runs promtool over deploy/prometheus/.
need "the bubblewrap tests" bwrap -- bubblewrap
need "the docker sandbox tests" podman runc busybox -- podman runc busybox-static
need "the DNS seed test" dnsmasq -- dnsmasq
need "the Prometheus tests" prometheus promtool -- prometheus
need "the Kubernetes deploy test" kubectl -- kubernetes-client
need "the dashboard test" chromium chromedriver -- chromium chromium-driver

# Python's grpcio drives the API in one test, as a client that is not ours; the REST
# test validates the OpenAPI document with openapi-spec-validator; the dashboard test
# drives Chromium with Selenium. Pinned.
PY_PACKAGES=(grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 openapi-spec-validator==0.9.0 selenium==4.51.0)
setup_python() {
    local venv=target/pyenv
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import grpc_tools, grpc_health, grpc_reflection, openapi_spec_validator, selenium" 2>/dev/null; then
        echo "$PWD/$venv/bin/python"
        return 0
    fi
    local py
    py=$(command -v python3 || true)
    if [ -z "$py" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq python3 python3-venv >&2 || true
        py=$(command -v python3 || true)
    fi
    [ -n "$py" ] || return 1
    mkdir -p target
    if ! "$py" -m venv "$venv" >&2; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get install -y -qq python3-venv >&2 || return 1
            "$py" -m venv "$venv" >&2 || return 1
        else
            return 1
        fi
    fi
    "$venv/bin/pip" install -q "${PY_PACKAGES[@]}" >&2 || return 1
    echo "$PWD/$venv/bin/python"
}
if [ -z "${CATHEDRAL_PYTHON:-}" ]; then
    if CATHEDRAL_PYTHON=$(setup_python); then
        export CATHEDRAL_PYTHON
    else
        echo "scripts/test.sh: WARNING: could not install Python's grpcio; the Python client test will be skipped" >&2
        unset CATHEDRAL_PYTHON
    fi
fi

# The black-box tests (tests/) start the real binaries: build them first.
cargo build --bins --locked
cargo test --workspace --locked

# Fault injection (storage/tests/failpoints.rs) needs the storage crate's `failpoints`
# feature. It runs in its own invocation, scoped to that crate: the feature turns on the
# `fail` crate's failpoints for every crate built alongside, and raft-engine (a benchmark
# peer) does not build that way.
cargo test -p cathedral-storage --features failpoints --locked --test failpoints

# Lints: warnings are errors. clippy and rustfmt come with rustup's default profile; a
# minimal toolchain gets them added here.
if command -v rustup >/dev/null 2>&1; then
    for c in clippy rustfmt; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" \
            || rustup component add "$c" >/dev/null 2>&1 \
            || echo "scripts/test.sh: WARNING: could not add the $c component" >&2
    done
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p cathedral-storage --all-targets --features failpoints --locked -- -D warnings
cargo fmt --all -- --check
