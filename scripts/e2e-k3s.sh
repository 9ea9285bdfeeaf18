#!/usr/bin/env bash
# End-to-end test of BOIFI on a real Kubernetes: k3s + Istio on one Linux host.
#
# It installs (or reuses) k3s and Istio (1.19 or newer), starts a plain-HTTP registry on the node
# (or uses --registry), builds and pushes the service images, mirrors the chart's public images
# (etcd, the helm test image) into that registry, publishes the plugin, installs the chart,
# deploys a demo namespace of 12 services with sidecars, and checks: service-level targeting, the
# fault percentage across replicas, how long a new policy takes to reach the sidecars, the halt
# switch, and Prometheus scraping the plugin's counters.
#
# On exit it stops, by PID, every process it started (the registry, the port-forwards), deletes
# its temp dir (with the registry's storage) and the service images it built locally; unless
# --keep it also deletes the demo namespace, the release and the release's namespace. What it
# installed on the host stays, so the next run starts faster: k3s (remove it with
# /usr/local/bin/k3s-uninstall.sh), Istio and its sample Prometheus, the registries.yaml mirror
# entry (the original file is kept as registries.yaml.boifi.bak), apt packages, base images in the
# engine's cache.
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
  --keep                  leave the release and the demo namespace in place (the registry
                          started here still stops: pods keep the images they pulled)
  --registry HOST:PORT    an existing plain-HTTP registry the cluster can pull from (default:
                          start Debian's/Ubuntu's docker-registry binary on the node IP with
                          its own config, not the packaged service)
  --registry-port P       port of the registry started here (default: 5055; the packaged
                          docker-registry.service holds 5000)
  --istio-version V       Istio to install when none runs, 1.19 or newer (default: 1.24.2)
  --tag TAG               image tag (default: e2e-<unix time>)
  --propagation-budget S  seconds a new policy may take to act in the sidecars (default: 10)
  -h, --help              this text

Needs: root on a Linux host where k3s can run (systemd), a git checkout of BOIFI, and network
access to get.k3s.io, istio.io, raw.githubusercontent.com, docker.io, quay.io and gcr.io.
Checked first (install them yourself):
  helm 3.10+ (--set-json) or 4; podman or docker;
  cargo with the wasm32-unknown-unknown target (added with rustup when missing;
  scripts/install-deps.sh knows a Debian fallback), for scripts/build-plugin.sh.
Installed with apt when missing: curl, python3, python3-yaml, skopeo, binaryen (wasm-opt,
for scripts/build-plugin.sh), iproute2 (ss), docker-registry (only its binary is used).
Downloaded when missing: k3s (get.k3s.io) when no cluster answers, istioctl when no istiod runs.
USAGE
}

# The oldest Istio the chart works with: its WasmPlugins set failStrategy (istio/api 1.19).
ISTIO_MIN_MINOR=19
DRY_RUN=false KEEP=false REGISTRY="" REGISTRY_PORT=5055 ISTIO_VERSION=1.24.2 TAG="e2e-$(date +%s)" BUDGET=10
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=true; shift ;;
        --keep) KEEP=true; shift ;;
        --registry) REGISTRY="${2:?--registry needs HOST:PORT}"; shift 2 ;;
        --registry-port) REGISTRY_PORT="${2:?--registry-port needs a port}"; shift 2 ;;
        --istio-version) ISTIO_VERSION="${2:?--istio-version needs a version}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --propagation-budget) BUDGET="${2:?--propagation-budget needs seconds}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--propagation-budget must be whole seconds"
if ! [[ "$REGISTRY_PORT" =~ ^[0-9]{1,5}$ ]] || [ "$REGISTRY_PORT" -lt 1 ] || [ "$REGISTRY_PORT" -gt 65535 ]; then
    die "--registry-port must be a port number"
fi

# istio_supported VERSION: true for Istio 1.$ISTIO_MIN_MINOR or newer.
istio_supported() {
    [[ "$1" =~ ^([0-9]+)\.([0-9]+)(\.|-|$) ]] || return 1
    local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
    [ "$((10#$major))" -gt 1 ] || { [ "$((10#$major))" -eq 1 ] && [ "$((10#$minor))" -ge "$ISTIO_MIN_MINOR" ]; }
}
[[ "$ISTIO_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]] \
    || die "--istio-version must look like 1.24.2"
istio_supported "$ISTIO_VERSION" \
    || die "--istio-version $ISTIO_VERSION: the chart needs Istio 1.$ISTIO_MIN_MINOR or newer (WasmPlugin failStrategy)"

NS_BOIFI=boifi
NS_DEMO=demo
RELEASE=boifi
DEMO_SERVICES=12
API_PORT=18080
PROM_PORT=19090
K3S_REGISTRIES=/etc/rancher/k3s/registries.yaml
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
work="$(mktemp -d)"
step_no=0
declare -A pid_of=() # background NAME -> PID, stopped at exit
built=()             # image references built here, removed from the engine at exit
engine=""

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

# write_file PATH: write stdin to PATH; a dry run prints it.
write_file() {
    if $DRY_RUN; then
        printf '  + cat >%s <<EOF\n' "$1"
        sed 's/^/      /'
    else
        cat >"$1"
    fi
}

# pkgs PACKAGE...: apt-get install the missing ones (lib/common.sh apt_install); a dry run prints it.
pkgs() {
    if $DRY_RUN; then run apt-get install -y --no-install-recommends "$@"; else apt_install "$@"; fi
}

# need COMMAND HINT: COMMAND must be on PATH; a dry run only reports what is missing.
need() {
    command -v "$1" >/dev/null && return 0
    if $DRY_RUN; then say "not found here: $1 ($2)"; else die "$1 not found: $2"; fi
}

# background NAME CMD...: start a helper process (registry, port-forward), stopped at exit by PID.
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
    pid_of[$name]=$!
}

# running NAME CMD...: CMD's status, but fail at once (with its log) when the background process
# NAME has exited, instead of waiting for a deadline.
running() {
    local name="$1"
    shift
    if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
        die "$name exited; its log: $(tail -n 20 "$work/$name.log" 2>/dev/null)"
    fi
    "$@"
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
    local rc=$? name pid
    for name in "${!pid_of[@]}"; do
        pid="${pid_of[$name]}"
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ! $DRY_RUN && ! $KEEP; then
        log "cleanup: demo namespace, release, release namespace"
        kubectl delete namespace "$NS_DEMO" --ignore-not-found --wait=false || true
        # No --ignore-not-found: Helm before 3.13 does not know it.
        helm uninstall "$RELEASE" -n "$NS_BOIFI" || true
        kubectl delete namespace "$NS_BOIFI" --ignore-not-found --wait=false || true
    fi
    if ! $DRY_RUN && [ "${#built[@]}" -gt 0 ]; then
        "$engine" rmi "${built[@]}" >/dev/null 2>&1 || true
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
    local cmd=(curl -fsS -X "$method" "http://127.0.0.1:$API_PORT$path"
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
    [ -z "$body" ] || cmd+=(--data "$body")
    run "${cmd[@]}"
    $DRY_RUN || echo
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

# plugin_everywhere: true when the sidecar of every demo pod runs the plugin, which sets the gauge
# wasmcustom.boifi_config_revision when it starts.
plugin_everywhere() {
    local pod stats
    for pod in $(kubectl -n "$NS_DEMO" get pod -o name); do
        stats="$(kubectl -n "$NS_DEMO" exec "$pod" -c istio-proxy -- pilot-agent request GET stats)" || return 1
        grep -q '^wasmcustom\.boifi_config_revision' <<<"$stats" || return 1
    done
}

policy() {
    # policy NAME SERVICE PERCENT
    printf '{"metadata":{"name":"%s"},"spec":{"selector":{"namespace":"%s","service":"%s"},"rules":[{"fault":{"percentage":%s,"abort":{"httpStatus":503}}}]}}' \
        "$1" "$NS_DEMO" "$2" "$3"
}

# qualified IMAGE: IMAGE with its registry host (Docker Hub's when the first part names none).
qualified() {
    case "$1" in
        */*) ;;
        *) printf 'docker.io/library/%s\n' "$1"; return ;;
    esac
    case "${1%%/*}" in
        *.* | *:* | localhost) printf '%s\n' "$1" ;;
        *) printf 'docker.io/%s\n' "$1" ;;
    esac
}

# --- 0. prerequisites -----------------------------------------------------------------------

step "prerequisites: root, tools, the plugin's toolchain (cargo, wasm32-unknown-unknown, wasm-opt)"
if ! $DRY_RUN; then [ "$(id -u)" -eq 0 ] || die "run as root (k3s, apt, registries.yaml)"; fi
# python3-yaml: scripts/lib/e2e_k3s.py merges registries.yaml and reads the chart's images.
# binaryen: wasm-opt, which scripts/build-plugin.sh runs. iproute2: ss, to check the registry port.
pkgs ca-certificates curl python3 python3-yaml skopeo binaryen iproute2
need helm "install Helm 3.10+ or 4: https://helm.sh/docs/intro/install/"
if command -v podman >/dev/null; then
    engine=podman
elif command -v docker >/dev/null; then
    engine=docker
elif $DRY_RUN; then
    engine=podman
    say "not found here: podman or docker (apt-get install podman)"
else
    die "no container engine: apt-get install podman (or install docker)"
fi
need cargo "install Rust with rustup (https://rustup.rs), then run this again"
if have_rustup_wasm32; then
    say "rustup has wasm32-unknown-unknown"
elif command -v rustup >/dev/null; then
    run rustup target add wasm32-unknown-unknown
elif [ -x /usr/bin/rustc ] && command -v wasm-ld-22 >/dev/null; then
    say "wasm32 through Debian's rustc-web (scripts/install-deps.sh, lib/common.sh wasm_cargo)"
else
    need rustup "the plugin builds for wasm32-unknown-unknown: install Rust with rustup, or run scripts/install-deps.sh"
fi

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
    [ -n "$NODE_IP" ] || die "the k3s node reports no InternalIP"
fi

step "registry the cluster pulls from (plain HTTP)"
if [ -z "$REGISTRY" ]; then
    REGISTRY="$NODE_IP:$REGISTRY_PORT"
    fresh_package=false
    dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed' || fresh_package=true
    pkgs docker-registry
    # Debian's and Ubuntu's package start docker-registry.service at install: every interface,
    # port 5000, htpasswd auth (/etc/docker/registry/config.yml). Only its binary is used here, with
    # our own config on another port. A service this run installed is stopped and disabled; one
    # that was there before is left alone.
    if $DRY_RUN; then
        say "when apt installs docker-registry now:"
        run systemctl disable --now docker-registry.service
    elif $fresh_package; then
        systemctl disable --now docker-registry.service || true
    fi
    say "port $REGISTRY_PORT must be free on the node"
    if ! $DRY_RUN && [ -n "$(ss -Hltn "sport = :$REGISTRY_PORT")" ]; then
        die "port $REGISTRY_PORT is in use: choose another with --registry-port, or pass --registry"
    fi
    write_file "$work/registry.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $REGISTRY
CONF
    background registry docker-registry serve "$work/registry.yml"
    wait_until 30 "the registry" running registry curl -fsS "http://$REGISTRY/v2/"
fi

step "k3s's containerd pulls from http://$REGISTRY (registries.yaml mirror; k3s restarts when it changed)"
# k3s reads registries.yaml only at start. The helper merges one mirror entry into the file and
# refuses files it cannot merge safely (duplicate keys, another endpoint for the same host).
if $DRY_RUN; then
    run python3 scripts/lib/e2e_k3s.py registries-add "$K3S_REGISTRIES" "$REGISTRY"
    say "when it prints 'added':"
    mirror=added
else
    mirror="$(python3 scripts/lib/e2e_k3s.py registries-add "$K3S_REGISTRIES" "$REGISTRY")" \
        || die "cannot add the mirror for $REGISTRY to $K3S_REGISTRIES (see above)"
fi
if [ "$mirror" = added ]; then
    run systemctl restart k3s
    wait_until 180 "k3s after the restart" kubectl wait --for=condition=Ready node --all --timeout=5s
fi

step "Istio: reuse istiod (1.$ISTIO_MIN_MINOR or newer) or install $ISTIO_VERSION (plugin stats included, insecure local registry)"
if ! $DRY_RUN && kubectl -n istio-system get deploy istiod >/dev/null 2>&1; then
    istiod_image="$(kubectl -n istio-system get deploy istiod -o jsonpath='{.spec.template.spec.containers[0].image}')"
    istiod_version="${istiod_image##*:}"
    if [[ "$istiod_version" =~ ^[0-9]+\.[0-9]+ ]]; then
        istio_supported "$istiod_version" \
            || die "istiod runs $istiod_image: the chart needs Istio 1.$ISTIO_MIN_MINOR or newer"
    else
        log "cannot tell istiod's version from its image $istiod_image: it must be 1.$ISTIO_MIN_MINOR or newer"
    fi
    log "istiod is running ($istiod_image); reusing it (it must accept plain HTTP from $REGISTRY: docs/deploy.md)"
else
    say "when istio-system has no istiod:"
    if ! command -v istioctl >/dev/null; then
        run sh -c "cd '$work' && curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=$ISTIO_VERSION sh -"
        PATH="$work/istio-$ISTIO_VERSION/bin:$PATH"
    fi
    # No proxyStatsMatcher: pilot-agent always keeps stats starting with "wasm" (the plugin's).
    run istioctl install -y --set profile=default \
        --set "meshConfig.defaultConfig.proxyMetadata.WASM_INSECURE_REGISTRIES=$REGISTRY"
fi
run kubectl apply -f "https://raw.githubusercontent.com/istio/istio/release-${ISTIO_VERSION%.*}/samples/addons/prometheus.yaml"
wait_until 300 "Prometheus" kubectl -n istio-system rollout status deploy/prometheus --timeout=5s
# The chart's relabel rules give the plugin's counters their policy and fault_type labels; the
# sample Prometheus reloads its ConfigMap by itself (configmap-reload), no sidecar restarts.
if $DRY_RUN; then
    say "kubectl -n istio-system get configmap prometheus -o json | python3 scripts/lib/e2e_k3s.py prometheus-relabel helm/boifi/files/plugin-metric-relabel.yaml | kubectl apply -f -"
else
    kubectl -n istio-system get configmap prometheus -o json \
        | python3 scripts/lib/e2e_k3s.py prometheus-relabel helm/boifi/files/plugin-metric-relabel.yaml \
        | kubectl apply -f -
fi

# --- 2. images and plugin -------------------------------------------------------------------

step "build and push the service images ($REGISTRY/boifi/*:$TAG, $engine)"
for name in policy-api sse-broadcaster; do
    ref="$REGISTRY/boifi/$name:$TAG"
    build=("$engine" build -f "docker/$name.Dockerfile" -t "$ref"
        --build-arg "RUST_TARGET=$(uname -m)-unknown-linux-musl")
    # BuildKit reads docker/NAME.Dockerfile.dockerignore by itself; podman before 4.5 needs it
    # named, or target/ goes into the build context.
    [ "$engine" = docker ] || build+=(--ignorefile "docker/$name.Dockerfile.dockerignore")
    run "${build[@]}" .
    built+=("$ref")
    if [ "$engine" = podman ]; then
        run podman push --tls-verify=false "$ref"
    else
        # docker push has no TLS switch (a plain-HTTP registry must be listed in the daemon's
        # insecure-registries); skopeo copies from the daemon instead.
        run skopeo copy --dest-tls-verify=false "docker-daemon:$ref" "docker://$ref"
    fi
done

step "mirror the chart's public images into $REGISTRY (imageRegistry prefixes every image)"
# imageRegistry keeps its meaning (the one registry every image of the release comes from, as an
# air-gapped install needs), so etcd and the helm test image go into $REGISTRY under their public
# names. Without --all skopeo copies the image for this host's platform: the k3s node's.
public_images="$(python3 scripts/lib/e2e_k3s.py public-images helm/boifi/values.yaml)" \
    || die "cannot read the chart's images from helm/boifi/values.yaml (python3-yaml missing?)"
for image in $public_images; do
    run skopeo copy --dest-tls-verify=false "docker://$(qualified "$image")" "docker://$REGISTRY/$image"
done

step "build the plugin and publish it in both OCI formats"
run scripts/build-plugin.sh
if $DRY_RUN; then
    run scripts/publish-plugin.sh --plain-http --tag "$TAG" "$REGISTRY/boifi/plugin"
    PLUGIN_SHA="<sha256 printed by publish-plugin.sh>"
else
    scripts/publish-plugin.sh --plain-http --tag "$TAG" "$REGISTRY/boifi/plugin" | tee "$work/published"
    # The manifest digest publish-plugin.sh read back from the registry: what Istio verifies.
    PLUGIN_SHA="$(sed -n 's/^image.sha256=//p' "$work/published")"
    [[ "$PLUGIN_SHA" =~ ^[0-9a-f]{64}$ ]] || die "publish-plugin.sh printed no image.sha256"
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
wait_until 30 "the API port-forward" running api-port-forward curl -fsS "http://127.0.0.1:$API_PORT/v1/health"
if $DRY_RUN; then
    TOKEN="<admin token>"
    say "TOKEN from secret $RELEASE-tokens key token.admin"
else
    TOKEN="$(kubectl -n "$NS_BOIFI" get secret "$RELEASE-tokens" -o jsonpath='{.data.token\.admin}' | base64 -d)"
fi
# No restart: Istio sends WasmPlugins to running sidecars (ECDS) and istio-agent fetches the
# module, so the plugin starts in the demo pods deployed above. Wait until every sidecar runs it
# (the plugin sets its boifi_config_revision gauge when it starts), so that the timed checks
# below measure policy propagation, not the module download.
wait_until 300 "the plugin in every demo sidecar" plugin_everywhere

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
        # One awk, no grep: under pipefail a grep that matches nothing would end the script
        # here without the message below.
        count="$(kubectl -n "$NS_DEMO" exec "$pod" -c istio-proxy -- pilot-agent request GET stats \
            | awk -F': ' '/^wasmcustom\.boifi_/ && /abort/ {s+=$2} END {print s+0}')"
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
wait_until 30 "the Prometheus port-forward" running prom-port-forward curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready"
# The fault counter of the target policy with the labels the relabel rules give it.
query='sum(boifi_faults_injected{policy="e2e-target",fault_type="abort"})'
wait_until 180 "labelled plugin counters in Prometheus" prom_has_counters "$query"
say "Prometheus query $query > 0"

step "clean up the policies"
for name in e2e-target e2e-percent e2e-propagation; do
    api DELETE "/v1/policies/$name"
done
say "at exit: stop the registry and port-forwards by PID, remove the built images and the temp dir"
