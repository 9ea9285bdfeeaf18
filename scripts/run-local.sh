#!/usr/bin/env bash
# Run BOIFI locally: policy-api on the embedded store (auth off, loopback only), then create the
# example policy with curl and read it back. Ctrl-C stops the service.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

"$BOIFI_ROOT/scripts/install-deps.sh"

PORT="${BOIFI_PORT:-8080}"
DATA_DIR="${BOIFI_DATA_DIR:-$BOIFI_ROOT/target/boifi-data}"
log "building policy-api"
cargo build --release --locked -p boifi-policy-api --bin policy-api

mkdir -p "$DATA_DIR"
log "starting policy-api on 127.0.0.1:$PORT (embedded store in $DATA_DIR, auth disabled)"
BOIFI_LISTEN_ADDR="127.0.0.1:$PORT" BOIFI_DATA_DIR="$DATA_DIR" BOIFI_AUTH_DISABLED=true \
    RUST_LOG="${RUST_LOG:-info}" target/release/policy-api &
API_PID=$!
trap 'kill "$API_PID" 2>/dev/null; wait "$API_PID" 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/v1/health" >/dev/null 2>&1 && break
    kill -0 "$API_PID" 2>/dev/null || die "policy-api exited during startup"
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/v1/health" >/dev/null || die "policy-api did not become healthy"

log "creating a policy:"
echo "curl -sS -X POST -H 'content-type: application/json' --data @docs/examples/reviews-abort.json http://127.0.0.1:$PORT/v1/policies"
curl -sS -X POST -H 'content-type: application/json' --data @docs/examples/reviews-abort.json \
    -w '\nHTTP %{http_code}\n' "http://127.0.0.1:$PORT/v1/policies"

log "reading it back:"
curl -sS "http://127.0.0.1:$PORT/v1/policies/reviews-abort"; echo

log "a bad policy gets a 400 naming every field:"
curl -sS -X POST -H 'content-type: application/json' \
    --data '{"metadata":{"name":"Bad_Name"},"spec":{"rules":[{"fault":{"percentage":150,"abort":{"httpStatus":700}}}]}}' \
    -w '\nHTTP %{http_code}\n' "http://127.0.0.1:$PORT/v1/policies"

log "policy-api is running on http://127.0.0.1:$PORT (API reference: /v1/openapi.json); Ctrl-C stops it"
wait "$API_PID"
