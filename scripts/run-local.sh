#!/usr/bin/env bash
# Run BOIFI locally and watch it inject a fault: `boifi serve` (policy-api + the stream, embedded
# store, no auth, loopback), two demo workloads each behind two real Envoys running the real
# plugin, traffic before and after the example policies, which it applies with the `boifi` CLI.
# Keeps running until Ctrl-C, and prints how to use the CLI it built (target/debug/boifi) on it.
# Arguments go to boifi-demo: --port PORT (default 8080), --once (exit after the demo).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

"$BOIFI_ROOT/scripts/install-deps.sh"
"$BOIFI_ROOT/scripts/build-plugin.sh"

log "building boifi (the CLI and boifi serve) and boifi-demo"
# The demo asks cargo for the boifi binary when it starts; built here, that is a no-op.
cargo build --locked --bin boifi --bin boifi-demo

exec target/debug/boifi-demo "$@"
