#!/usr/bin/env bash
# End-to-end test of BOIFI on a real Kubernetes: k3s + Istio on one Linux host.
#
# It installs (or reuses) k3s and Istio, builds and pushes the images and the plugin to a
# registry the cluster reaches, installs the chart, deploys a demo namespace of 12 services with
# sidecars, and checks: service-level targeting, the fault percentage across replicas, how long
# a new policy takes to reach the sidecars, the halt switch, and Prometheus scraping the
# plugin's counters. Everything it created is removed on exit (unless --keep).
#
# It cannot run on machines without k3s support (containers without systemd, CI sandboxes):
# use a Linux VM or host where you are root. See docs/deploy.md, "End-to-end test on k3s".
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

usage() {
    cat <<'USAGE'
Usage: scripts/e2e-k3s.sh [options]

Options:
  --dry-run               print every step and command, run nothing
  --keep                  leave the cluster, release and demo namespace in place
  --registry HOST:PORT    an existing plain-HTTP registry the cluster can pull from (default:
                          start Debian's docker-registry on this host's IP, port 5000)
  --istio-version V       Istio to install when none runs (default: 1.24.2)
  --tag TAG               image tag (default: e2e-<unix time>)
  --propagation-budget S  seconds a new policy may take to act in the sidecars (default: 10)
  -h, --help              this text

Needs: root, curl, git checkout of BOIFI, podman (or docker), skopeo, helm, python3, and
network access to get.k3s.io, istio.io and the base images when they are not present.
USAGE
}

DRY_RUN=false KEEP=false REGISTRY="" ISTIO_VERSION=1.24.2 TAG="e2e-$(date +%s)" BUDGET=10
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=true; shift ;;
        --keep) KEEP=true; shift ;;
        --registry) REGISTRY="${2:?--registry needs HOST:PORT}"; shift 2 ;;
        --istio-version) ISTIO_VERSION="${2:?--istio-version needs a version}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --propagation-budget) BUDGET="${2:?--propagation-budget needs seconds}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--propagation-budget must be whole seconds"

NS_BOIFI=boifi
NS_DEMO=demo
RELEASE=boifi
DEMO_SERVICES=12
API_PORT=18080
PROM_PORT=19090
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
work="$(mktemp -d)"
step_no=0
pids=()
created_registry=false

step() {
    step_no=$((step_no + 1))
    log "step $step_no: $*"
}

# run CMD...: execute, or print it (shell-quoted) in a dry run.
run() {
    if $DRY_RUN; then
        printf '  +'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# say TEXT: what a dry run would check or compute at this point.
say() {
    if $DRY_RUN; then printf '  = %s\n' "$*"; fi
}

# apply NAME: kubectl apply the manifest on stdin; a dry run prints it.
apply() {
    if $DRY_RUN; then
        printf '  + kubectl apply -f - <<%s\n' "$1"
        sed 's/^/      /'
    else
        kubectl apply -f -
    fi
}

# background NAME CMD...: start a helper process (port-forward, registry) stopped at exit.
background() {
    local name="$1"
    shift
    if $DRY_RUN; then
        printf '  + (background %s)' "$name"
        printf ' %q' "$@"
        printf '\n'
        return
    fi
    "$@" >"$work/$name.log" 2>&1 &
    pids+=("$!")
}

# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds, at most SECONDS.
wait_until() {
    local limit="$1" what="$2" deadline
    shift 2
    if $DRY_RUN; then
        printf '  + wait up to %ss for %s:' "$limit" "$what"
        printf ' %q' "$@"
        printf '\n'
        return
    fi
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what"
        sleep 1
    done
}

cleanup() {
    local rc=$? pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ! $DRY_RUN && ! $KEEP; then
        log "cleanup: demo namespace, release, plugin namespace objects"
        kubectl delete namespace "$NS_DEMO" --ignore-not-found --wait=false || true
        helm uninstall "$RELEASE" -n "$NS_BOIFI" --ignore-not-found || true
        kubectl delete namespace "$NS_BOIFI" --ignore-not-found --wait=false || true
    fi
    rm -rf "$work"
    if $DRY_RUN; then
        log "dry run: $step_no steps printed, nothing was run"
    elif [ "$rc" -eq 0 ]; then
        log "e2e: all checks passed"
    else
        log "e2e: FAILED (exit $rc)"
    fi
}
trap cleanup EXIT

# --- checks' building blocks ----------------------------------------------------------------

# api METHOD PATH [JSON]: call policy-api through the port-forward with the admin token.
api() {
    local method="$1" path="$2" body="${3:-}"
    if $DRY_RUN; then
        printf '  + curl -X %s http://127.0.0.1:%s%s %s\n' "$method" "$API_PORT" "$path" "$body"
        return
    fi
    curl -fsS -X "$method" "http://127.0.0.1:$API_PORT$path" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        ${body:+--data "$body"}
    echo
}

# hits SERVICE N: send N requests from the demo client pod; print "<faulted> <total>".
hits() {
    kubectl -n "$NS_DEMO" exec deploy/client -c client -- sh -c \
        "f=0; i=0; while [ \$i -lt $2 ]; do i=\$((i+1)); \
         curl -s -o /dev/null -D - http://$1:8080/ | grep -qi '^x-boifi-fault:' && f=\$((f+1)); \
         done; echo \$f $2"
}

# faulted SERVICE: true when one request to SERVICE comes back with x-boifi-fault.
faulted() {
    [ "$(hits "$1" 1)" = "1 1" ]
}
clean() {
    [ "$(hits "$1" 1)" = "0 1" ]
}
some_faulted() {
    local f
    read -r f _ <<<"$(hits "$1" 10)"
    [ "$f" -gt 0 ]
}

# prom_has_counters QUERY: true when Prometheus answers QUERY with a value above zero.
prom_has_counters() {
    curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" \
        | python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; sys.exit(0 if r and float(r[0]["value"][1]) > 0 else 1)'
}

policy() {
    # policy NAME SERVICE PERCENT
    printf '{"metadata":{"name":"%s"},"spec":{"selector":{"namespace":"%s","service":"%s"},"rules":[{"fault":{"percentage":%s,"abort":{"httpStatus":503}}}]}}' \
        "$1" "$NS_DEMO" "$2" "$3"
}

# --- 1. cluster -----------------------------------------------------------------------------

step "k3s: reuse a running cluster or install one (traefik off: Istio brings its own gateway)"
if ! $DRY_RUN && kubectl get nodes >/dev/null 2>&1; then
    log "k3s is running; reusing it"
else
    say "when 'kubectl get nodes' fails:"
    run sh -c 'curl -sfL https://get.k3s.io | INSTALL_K3S_EXEC="--disable traefik" sh -'
    wait_until 180 "the k3s node to be Ready" kubectl wait --for=condition=Ready node --all --timeout=5s
fi

if $DRY_RUN; then
    NODE_IP="<node-ip>"
else
    NODE_IP="$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
fi

step "registry the cluster pulls from (plain HTTP)"
if [ -z "$REGISTRY" ]; then
    REGISTRY="$NODE_IP:5000"
    created_registry=true
    if $DRY_RUN; then run apt-get install -y --no-install-recommends docker-registry skopeo; else apt_install docker-registry skopeo; fi
    if ! $DRY_RUN; then
        cat >"$work/registry.yml" <<CONF
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $REGISTRY
CONF
    fi
    background registry docker-registry serve "$work/registry.yml"
    wait_until 30 "the registry" curl -fsS "http://$REGISTRY/v2/"
fi
say "k3s's containerd must pull from http://$REGISTRY: registries.yaml mirror, then restart k3s"
if $DRY_RUN || ! grep -qs "\"$REGISTRY\"" /etc/rancher/k3s/registries.yaml; then
    if ! $DRY_RUN; then
        mkdir -p /etc/rancher/k3s
        printf 'mirrors:\n  "%s":\n    endpoint:\n      - "http://%s"\n' "$REGISTRY" "$REGISTRY" \
            >>/etc/rancher/k3s/registries.yaml
    fi
    run systemctl restart k3s
    wait_until 180 "k3s after the restart" kubectl wait --for=condition=Ready node --all --timeout=5s
fi

step "Istio $ISTIO_VERSION: reuse istiod or install (plugin stats included, insecure local registry)"
if ! $DRY_RUN && kubectl -n istio-system get deploy istiod >/dev/null 2>&1; then
    log "istiod is running; reusing it (it must accept plain HTTP from $REGISTRY: docs/deploy.md)"
else
    if ! command -v istioctl >/dev/null; then
        run sh -c "cd '$work' && curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=$ISTIO_VERSION sh -"
        PATH="$work/istio-$ISTIO_VERSION/bin:$PATH"
    fi
    run istioctl install -y --set profile=default \
        --set 'meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes[0]=wasmcustom.boifi_' \
        --set "meshConfig.defaultConfig.proxyMetadata.WASM_INSECURE_REGISTRIES=$REGISTRY"
fi
run kubectl apply -f "https://raw.githubusercontent.com/istio/istio/release-${ISTIO_VERSION%.*}/samples/addons/prometheus.yaml"
wait_until 300 "Prometheus" kubectl -n istio-system rollout status deploy/prometheus --timeout=5s

# --- 2. images and plugin -------------------------------------------------------------------

step "build and push the service images ($REGISTRY/boifi/*:$TAG)"
engine=podman
command -v podman >/dev/null || engine=docker
for name in policy-api sse-broadcaster; do
    run "$engine" build -f "docker/$name.Dockerfile" -t "$REGISTRY/boifi/$name:$TAG" .
    run "$engine" push --tls-verify=false "$REGISTRY/boifi/$name:$TAG"
done

step "build the plugin and publish it in both OCI formats"
run scripts/build-plugin.sh
if $DRY_RUN; then
    run scripts/publish-plugin.sh --plain-http --tag "$TAG" "$REGISTRY/boifi/plugin"
    PLUGIN_SHA="<sha256 printed by publish-plugin.sh>"
else
    scripts/publish-plugin.sh --plain-http --tag "$TAG" "$REGISTRY/boifi/plugin" | tee "$work/published"
    PLUGIN_SHA="$(sed -n 's/^image.sha256=//p' "$work/published")"
fi

# --- 3. demo namespace ----------------------------------------------------------------------

step "demo namespace: $DEMO_SERVICES services with sidecars (svc-05 has 3 replicas) and a client"
{
    cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $NS_DEMO, labels: {istio-injection: enabled}}
YAML
    for i in $(seq -w 1 "$DEMO_SERVICES"); do
        replicas=1
        [ "$i" != 05 ] || replicas=3
        cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: svc-$i, namespace: $NS_DEMO}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: svc-$i}}
  template:
    metadata: {labels: {app: svc-$i, version: v1}}
    spec:
      containers:
        - name: app
          image: docker.io/hashicorp/http-echo:1.0
          args: ["-listen=:8080", "-text=svc-$i"]
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-$i, namespace: $NS_DEMO}
spec:
  selector: {app: svc-$i}
  ports: [{name: http, port: 8080, targetPort: http}]
YAML
    done
    cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: $NS_DEMO}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
        - name: client
          image: docker.io/curlimages/curl:8.11.1
          command: ["sleep", "infinity"]
YAML
} | apply demo-services
wait_until 300 "the demo deployments" kubectl -n "$NS_DEMO" wait --for=condition=Available deploy --all --timeout=5s

# --- 4. BOIFI -------------------------------------------------------------------------------

step "helm install $RELEASE (plugin in namespace $NS_DEMO, every workload)"
run helm upgrade --install "$RELEASE" helm/boifi -n "$NS_BOIFI" --create-namespace --wait --timeout 10m \
    --set imageRegistry="$REGISTRY" \
    --set policyApi.image.tag="$TAG" --set sseBroadcaster.image.tag="$TAG" \
    --set plugin.url="oci://$REGISTRY/boifi/plugin:$TAG" --set plugin.sha256="$PLUGIN_SHA" \
    --set-json "plugin.targets={\"$NS_DEMO\":{}}"
run helm test "$RELEASE" -n "$NS_BOIFI" --timeout 5m
background api-port-forward kubectl -n "$NS_BOIFI" port-forward "svc/$RELEASE-policy-api" "$API_PORT:8080"
wait_until 30 "the API port-forward" curl -fsS "http://127.0.0.1:$API_PORT/v1/health"
if $DRY_RUN; then
    TOKEN="<admin token>"
    say "TOKEN from secret $RELEASE-tokens key token.admin"
else
    TOKEN="$(kubectl -n "$NS_BOIFI" get secret "$RELEASE-tokens" -o jsonpath='{.data.token\.admin}' | base64 -d)"
fi
say "the sidecars restart so that they load the plugin"
run kubectl -n "$NS_DEMO" rollout restart deploy
wait_until 300 "the restarted demo" kubectl -n "$NS_DEMO" wait --for=condition=Available deploy --all --timeout=5s

# --- 5. checks ------------------------------------------------------------------------------

step "check: service-level targeting (svc-03 faulted, svc-04 untouched)"
api POST /v1/policies "$(policy e2e-target svc-03 100)"
wait_until "$BUDGET" "the svc-03 fault" faulted svc-03
if ! $DRY_RUN; then
    [ "$(hits svc-03 20)" = "20 20" ] || die "svc-03: not every request was faulted"
    [ "$(hits svc-04 20)" = "0 20" ] || die "svc-04: faulted without a policy"
fi
say "svc-03: 20/20 faulted; svc-04: 0/20"

step "check: percentage across replicas (svc-05, 3 replicas, 50%, 600 requests)"
api POST /v1/policies "$(policy e2e-percent svc-05 50)"
wait_until "$BUDGET" "the svc-05 policy" some_faulted svc-05
if ! $DRY_RUN; then
    read -r f n <<<"$(hits svc-05 600)"
    log "svc-05: $f of $n faulted"
    # 50% of 600: the 99.99% binomial interval is about 300 +- 48.
    if [ "$f" -lt 252 ] || [ "$f" -gt 348 ]; then die "svc-05: $f/$n faulted, expected about 300"; fi
    for pod in $(kubectl -n "$NS_DEMO" get pod -l app=svc-05 -o name); do
        count="$(kubectl -n "$NS_DEMO" exec "$pod" -c istio-proxy -- pilot-agent request GET stats \
            | grep '^wasmcustom\.boifi_' | grep -i abort | awk -F': ' '{s+=$2} END {print s+0}')"
        log "$pod: $count aborts counted by its sidecar"
        [ "$count" -gt 0 ] || die "$pod: no faults in its sidecar's counters"
    done
fi
say "svc-05: 252..348 of 600 faulted, and every replica's sidecar counted aborts"

step "check: propagation time of a new policy (svc-06, budget ${BUDGET}s)"
if $DRY_RUN; then
    api POST /v1/policies "$(policy e2e-propagation svc-06 100)"
    say "time from the POST until svc-06 answers with x-boifi-fault, at most ${BUDGET}s"
else
    start_ms="$(date +%s%3N)"
    api POST /v1/policies "$(policy e2e-propagation svc-06 100)" >/dev/null
    wait_until "$BUDGET" "the svc-06 fault" faulted svc-06
    log "propagation: $(($(date +%s%3N) - start_ms)) ms (includes one request round trip)"
fi

step "check: halt stops every fault, resuming brings them back"
api POST /v1/halt
wait_until "$BUDGET" "svc-03 to be clean after halt" clean svc-03
wait_until "$BUDGET" "svc-06 to be clean after halt" clean svc-06
api DELETE /v1/halt
wait_until "$BUDGET" "svc-03 faults after resume" faulted svc-03

step "check: Prometheus scrapes the plugin's counters from the sidecars"
background prom-port-forward kubectl -n istio-system port-forward svc/prometheus "$PROM_PORT:9090"
# Labels from the chart's EnvoyFilter (bootstrap stats_tags; the demo restarted after install).
query='sum(boifi_faults_injected{policy="e2e-target",fault_type="abort"})'
wait_until 120 "plugin counters in Prometheus" prom_has_counters "$query"
say "Prometheus query $query > 0"

step "clean up the policies"
for name in e2e-target e2e-percent e2e-propagation; do
    api DELETE "/v1/policies/$name"
done
if $created_registry; then say "the registry started here stops at exit"; fi
