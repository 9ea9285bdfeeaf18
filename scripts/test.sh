#!/usr/bin/env bash
# The whole test suite, as CI runs it: lints, the wasm32 build of the policy model, and every
# Rust test (unit, service-boundary, and end-to-end against real etcd and real binaries).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

"$BOIFI_ROOT/scripts/install-deps.sh"

log "shellcheck"
shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "policy model builds for wasm32-unknown-unknown"
wasm_cargo build -p boifi-policy --release --locked

log "Wasm plugin: build, optimize, check the size budget (scripts/build-plugin.sh)"
scripts/build-plugin.sh

log "Helm chart: render, lint, validate (scripts/test-chart.sh)"
scripts/test-chart.sh

log "container images and the plugin's OCI round trip (scripts/test-images.sh)"
scripts/test-images.sh

log "cargo test"
cargo test --workspace --locked

log "API against its OpenAPI document: schemathesis on a real boifi serve (scripts/test-api-schema.sh)"
scripts/test-api-schema.sh
