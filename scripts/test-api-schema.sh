#!/usr/bin/env bash
# Schemathesis against a real `boifi serve`: property-based requests generated from the API's own
# OpenAPI document (GET /v1/openapi.json), every check (`--checks all`, said in the config file so
# that its per-operation exclusions hold), on a free loopback port
# with a temp data dir and a tokens file; the server is stopped by PID however the run ends.
#
# Auth is on and schemathesis sends a writer token (its `ignored_auth` check also tries no token
# and a wrong one). No second run with auth off: the handlers, the write guard and every answer
# but 401 are the same code with auth off (tests/write_guard.rs and the policy-api binary test
# cover that mode), and `ignored_auth` would rightly fail against a server that takes no tokens.
#
# Exclusions, each in tests/schemathesis/schemathesis.toml with its reason (docs/api.md lists
# them too). Environment: BOIFI_ST_EXAMPLES (test cases per operation, default 60),
# BOIFI_ST_SEED (default fixed, so a failure reproduces; `random` for a new one each run).
#   scripts/test-api-schema.sh
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

# Through the venv's python, not its `st` script: a script's shebang names the venv's absolute path,
# which is stale once the checkout moves.
st=("$(envoy_venv)/bin/python" -m schemathesis.cli)
"${st[@]}" --version >/dev/null 2>&1 || die "schemathesis not found in $(envoy_venv): run scripts/install-deps.sh"
examples="${BOIFI_ST_EXAMPLES:-60}"
seed="${BOIFI_ST_SEED:-20260101}"

log "cargo build -p boifi"
cargo build -p boifi --locked --quiet
boifi="$BOIFI_ROOT/target/debug/boifi"

work="$(mktemp -d)"
boifi_pid=""
cleanup() {
    if [ -n "$boifi_pid" ]; then
        kill "$boifi_pid" 2>/dev/null || true
        wait "$boifi_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
printf 'schemathesis writer %s\n' "$token" >"$work/tokens"
port="$(free_port)"
base="http://127.0.0.1:$port"
log "boifi serve on $base (auth on)"
BOIFI_LISTEN_ADDR="127.0.0.1:$port" BOIFI_DATA_DIR="$work/data" BOIFI_TOKENS_FILE="$work/tokens" \
    RUST_LOG=warn "$boifi" serve >"$work/boifi.log" 2>&1 &
boifi_pid=$!
if ! wait_http "$base/v1/ready" "boifi serve"; then
    cat "$work/boifi.log" >&2
    exit 1
fi

seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()
log "schemathesis: every check, $examples cases per operation"
# Run from the temp dir: schemathesis keeps its example database in the working directory.
status=0
(cd "$work" && "${st[@]}" --no-color --config-file "$BOIFI_ROOT/tests/schemathesis/schemathesis.toml" run \
    "$base/v1/openapi.json" --max-examples "$examples" "${seed_args[@]}" \
    --workers 1 --request-timeout 10 -H "Authorization: Bearer $token") || status=$?
if [ "$status" -ne 0 ]; then
    log "boifi serve log"
    tail -n 50 "$work/boifi.log" >&2
    die "schemathesis found failures (exit $status)"
fi
kill -0 "$boifi_pid" || die "boifi serve exited during the run"
log "schemathesis: no failures"
