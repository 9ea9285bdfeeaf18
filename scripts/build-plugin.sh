#!/usr/bin/env bash
# Build the Wasm plugin (wasm/plugin) for wasm32-unknown-unknown in release, shrink it with
# wasm-opt, and write target/plugin/boifi_plugin.wasm, plus next to it boifi_plugin.d: cargo's
# dep-info for the module (every source file it was compiled from), by which the tests refuse a
# module older than its sources. Prints the size and fails when the module is over the 400 KB
# budget (raised from 300 KB for request-keyed sampling, gRPC aborts and the cap on held
# requests; wasm/plugin/README.md shows what each part costs). Needs scripts/install-deps.sh
# (wasm32 target, binaryen).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

BUDGET_BYTES=400000
OUT_DIR="$BOIFI_ROOT/target/plugin"
OUT="$OUT_DIR/boifi_plugin.wasm"

command -v wasm-opt >/dev/null || die "wasm-opt not found: run scripts/install-deps.sh"

# Its own target dir, so the path remapping below does not invalidate other wasm32 builds.
# Remapping keeps this machine's paths out of the module (panic locations), so the same
# sources give the same bytes wherever they are checked out.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_TARGET_DIR="$BOIFI_ROOT/target/plugin-build"
# opt-level "z" (size) for this build only: the workspace release profile stays as it is.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--remap-path-prefix=$BOIFI_ROOT=/boifi --remap-path-prefix=$cargo_home=/cargo"

log "cargo build -p boifi-plugin (wasm32-unknown-unknown, release)"
messages="$(mktemp)"
trap 'rm -f "$messages"' EXIT
wasm_cargo build -p boifi-plugin --release --locked --lib \
    --message-format=json-render-diagnostics >"$messages"
# The artifact's path depends on which toolchain route wasm_cargo took; cargo reports it.
raw="$(grep -o '"filenames":\["[^"]*boifi_plugin\.wasm"' "$messages" | tail -n 1 | sed 's/.*\["//; s/"$//')"
if [ -z "$raw" ] || [ ! -f "$raw" ]; then die "cargo did not report boifi_plugin.wasm"; fi

mkdir -p "$OUT_DIR"
# Feature flags: what rustc's wasm32 output uses; wasm-opt (binaryen 108) rejects the module
# without them.
wasm-opt -Oz --converge --strip-debug --strip-producers \
    --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
    -o "$OUT" "$raw"

# Cargo writes the dep-info next to the artifact it reports.
cp "${raw%.wasm}.d" "$OUT_DIR/boifi_plugin.d"

raw_size="$(stat -c %s "$raw")"
size="$(stat -c %s "$OUT")"
printf 'plugin: %s\n  %d bytes (%d KB) after wasm-opt; %d bytes before; budget %d bytes\n' \
    "${OUT#"$BOIFI_ROOT"/}" "$size" "$((size / 1000))" "$raw_size" "$BUDGET_BYTES"
[ "$size" -le "$BUDGET_BYTES" ] || die "plugin is $size bytes, over the $BUDGET_BYTES byte budget"
