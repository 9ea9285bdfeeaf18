#!/usr/bin/env bash
# Container images, checked without a Docker daemon or network access to base images:
#  - hadolint on every Dockerfile in docker/;
#  - policy-api and sse-broadcaster: static binaries built here, put into each Dockerfile's
#    runtime stage (RUNTIME_IMAGE=scratch, BINARY_FROM=an image holding the binary) with podman;
#    each container runs read-only as its image user next to a real etcd on loopback, and must
#    answer /v1/health, /v1/ready (etcd reached by host name) and /metrics, then exit 0 within
#    10 s of SIGTERM (as Kubernetes stops pods);
#  - the chart's own pods (tests/chart/podrunner.py): policy-api and sse-broadcaster from the pod
#    spec `helm install` renders (securityContext, env, probes, ports), the tokens Secret laid
#    out as kubelet lays it out; both turn ready on their rendered readinessProbe and an
#    authenticated API call works with a token from the rendered Secret. A control run of
#    policy-api without fsGroup (the chart before the fix) must fail with "Permission denied";
#  - the plugin image: built from docker/plugin.Dockerfile, the module read back byte for byte;
#  - scripts/publish-plugin.sh against a real registry (Debian docker-registry on loopback): both
#    formats pushed, pulled back with skopeo, media types, layer count, manifest digest (the
#    sha256 Istio checks) and module sha256 verified.
# Podman runs with its own storage (vfs), runtime (runc) and limits under a temp dir; nothing
# global is changed. Every container and process started here is stopped on exit.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
cd "$BOIFI_ROOT"

# musl-tools: musl-gcc builds jemalloc, the broadcaster image's allocator, for the musl target.
apt_install podman runc slirp4netns skopeo docker-registry curl etcd-server musl-tools
"$BOIFI_ROOT/scripts/test-chart.sh" --tools-only
hadolint="$BOIFI_ROOT/target/tools/chart-venv/bin/hadolint"

log "hadolint docker/*.Dockerfile"
"$hadolint" --failure-threshold warning docker/*.Dockerfile

# The Dockerfiles build for musl (its resolver needs no NSS modules in a libc-less image); fall
# back to static glibc when rustup cannot fetch the musl target.
rust_target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$rust_target" \
    && ! rustup target add "$rust_target"; then
    rust_target=x86_64-unknown-linux-gnu
    log "musl target unavailable: testing a static glibc build"
fi

log "static binaries ($rust_target)"
# Own target dir: RUSTFLAGS differ from the workspace build. Debug profile without debug info
# keeps the test quick; linking is what the images depend on.
bin_dir="$BOIFI_ROOT/target/images/$rust_target/debug"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_DEV_DEBUG=0 \
    CARGO_TARGET_DIR="$BOIFI_ROOT/target/images" \
    cargo build --locked --target "$rust_target" \
    -p boifi-policy-api --bin policy-api -p boifi-sse-broadcaster --bin sse-broadcaster \
    --features boifi-sse-broadcaster/jemalloc

work="$(mktemp -d)"
etcd_pid=""
registry_pid=""
containers=()
cleanup() {
    local id pid
    # Containers the pod runner started (by name), in case it did not get to remove them.
    if [ -f "$work/pod-ids" ]; then
        while read -r id; do containers+=("$id"); done <"$work/pod-ids"
    fi
    for id in "${containers[@]}"; do
        pm stop -t 5 "$id" >/dev/null 2>&1 || true
        pm rm -f "$id" >/dev/null 2>&1 || true
    done
    for pid in "$etcd_pid" "$registry_pid"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Podman's own configuration: runc (crun fails on this cgroup setup), cgroupfs, file events,
# and explicit limits below the host's (raising them fails in runc).
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
# The one podman command line: pm here, BOIFI_PODMAN for the pod runner.
podman_cmd=(env "CONTAINERS_CONF=$work/containers.conf" podman --root "$work/storage"
    --runroot "$work/run" --storage-driver vfs)
pm() { "${podman_cmd[@]}" "$@"; }

log "etcd on loopback"
etcd_client="$(free_port)"
etcd_peer="$(free_port)"
etcd --name images-test --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "images-test=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state new --logger zap --log-level warn >"$work/etcd.log" 2>&1 &
etcd_pid=$!
wait_http "http://127.0.0.1:$etcd_client/health" etcd

# The runtime stage with RUNTIME_IMAGE=scratch; the binary comes in through BINARY_FROM. The build
# context is empty: the runtime stage copies nothing from it.
build_service_image() {
    local name="$1"
    mkdir -p "$work/$name-bin/out" "$work/empty"
    cp "$bin_dir/$name" "$work/$name-bin/out/$name"
    printf 'FROM scratch\nCOPY out/%s /out/%s\n' "$name" "$name" >"$work/$name-bin/Containerfile"
    pm build -q -t "localhost/boifi-test/$name-bin:test" "$work/$name-bin" >/dev/null
    pm build -q -f "docker/$name.Dockerfile" \
        --build-arg RUNTIME_IMAGE=scratch \
        --build-arg "BINARY_FROM=localhost/boifi-test/$name-bin:test" \
        -t "localhost/boifi-test/$name:test" "$work/empty" >/dev/null
    [ "$(pm image inspect --format '{{.Config.User}}' "localhost/boifi-test/$name:test")" = "65532:65532" ] \
        || die "$name image does not run as 65532:65532"
}

# check_service NAME PORT [podman run args...]: run read-only, check the routes, stop.
check_service() {
    local name="$1" port="$2" id
    shift 2
    id="$(pm run -d --network host --read-only \
        -e "BOIFI_LISTEN_ADDR=127.0.0.1:$port" \
        -e "BOIFI_ETCD_ENDPOINTS=http://localhost:$etcd_client" \
        -e "BOIFI_ETCD_PREFIX=/images-test/" \
        "$@" "localhost/boifi-test/$name:test")"
    containers+=("$id")
    if ! wait_http "http://127.0.0.1:$port/v1/health" "$name container" 2>/dev/null; then
        pm logs "$id" >&2 || true
        die "$name container did not become healthy"
    fi
    wait_http "http://127.0.0.1:$port/v1/ready" "$name (etcd via localhost)"
    curl -fsS "http://127.0.0.1:$port/metrics" | grep -q '^# TYPE ' \
        || die "$name /metrics has no Prometheus text"
    [ "$(pm inspect --format '{{.State.Running}}' "$id")" = true ] || die "$name stopped"
    local started=$SECONDS code
    pm stop -t 10 "$id" >/dev/null 2>&1
    # Kubernetes sends SIGTERM, then SIGKILL after the grace period: a slow stop delays rollouts.
    # A process killed after the grace period exits with 137, one that stopped itself with 0.
    code="$(pm inspect --format '{{.State.ExitCode}}' "$id")"
    if [ $((SECONDS - started)) -ge 10 ] || [ "$code" != 0 ]; then
        pm logs "$id" >&2 || true
        die "$name did not exit cleanly within 10 s of SIGTERM (exit code $code)"
    fi
    log "$name image: healthy, ready, metrics, stopped by SIGTERM after $((SECONDS - started)) s"
}

log "policy-api image"
build_service_image policy-api
printf 'images-test writer %s\n' "images-test-token-0123456789" >"$work/tokens"
api_port="$(free_port)"
check_service policy-api "$api_port" \
    -v "$work/tokens:/etc/boifi/tokens/tokens:ro" -e BOIFI_TOKENS_FILE=/etc/boifi/tokens/tokens
log "sse-broadcaster image"
build_service_image sse-broadcaster
check_service sse-broadcaster "$(free_port)"

log "the chart's pods from their rendered spec (tests/chart/podrunner.py)"
# Pods get their own network namespace (slirp4netns): the rendered 0.0.0.0 listen addresses stay
# inside it, ports are published on 127.0.0.1, and etcd is this script's, on host loopback.
BOIFI_PODMAN="$(printf '%q ' "${podman_cmd[@]}")" \
    BOIFI_POD_IMAGES="boifi/policy-api=localhost/boifi-test/policy-api:test boifi/sse-broadcaster=localhost/boifi-test/sse-broadcaster:test" \
    BOIFI_POD_IDS_FILE="$work/pod-ids" PYTHONDONTWRITEBYTECODE=1 \
    "$BOIFI_ROOT/target/tools/chart-venv/bin/python" tests/chart/podrunner.py --etcd-port "$etcd_client"

log "plugin image"
plugin="$BOIFI_ROOT/target/plugin/boifi_plugin.wasm" # written by scripts/build-plugin.sh
mkdir -p "$work/plugin"
[ -f "$plugin" ] || die "$plugin missing: run scripts/build-plugin.sh first"
cp "$plugin" "$work/plugin/plugin.wasm"
pm build -q -f docker/plugin.Dockerfile -t localhost/boifi-test/plugin:test "$work/plugin" >/dev/null
id="$(pm create localhost/boifi-test/plugin:test /plugin.wasm)"
containers+=("$id")
pm cp "$id:/plugin.wasm" "$work/plugin-back.wasm"
cmp "$work/plugin/plugin.wasm" "$work/plugin-back.wasm" || die "plugin image changed the module"
log "plugin image: /plugin.wasm round-trips ($(wc -c <"$work/plugin-back.wasm") bytes)"

log "publish-plugin.sh against docker-registry on loopback"
registry_port="$(free_port)"
# Our own config: the packaged one listens on every interface and wants htpasswd.
cat >"$work/registry.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$registry_port
CONF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
wait_http "http://127.0.0.1:$registry_port/v2/" docker-registry
repo="127.0.0.1:$registry_port/boifi/plugin"
scripts/publish-plugin.sh --wasm "$work/plugin/plugin.wasm" --plain-http --tag test "$repo" \
    >"$work/published"
module_sha="$(sha256sum "$work/plugin/plugin.wasm" | cut -d ' ' -f 1)"
grep -q "^  sha256: \"$(sed -n 's/^image.sha256=//p' "$work/published")\"$" "$work/published" \
    || die "publish-plugin.sh values snippet does not pin the image format's digest"
for format in image wasm; do
    url="$(sed -n "s/^$format.url=//p" "$work/published")"
    sha="$(sed -n "s/^$format.sha256=//p" "$work/published")"
    if [ -z "$url" ] || [ -z "$sha" ]; then die "publish-plugin.sh printed no url/sha256 for $format"; fi
    ref="${url#oci://}"
    # The digest the registry serves is what Istio compares with the WasmPlugin's sha256.
    served="$(skopeo inspect --raw --tls-verify=false "docker://$ref" | sha256sum | cut -d ' ' -f 1)"
    [ "$served" = "$sha" ] || die "$format: registry serves manifest $served, script printed $sha"
    skopeo copy --quiet --src-tls-verify=false "docker://$ref" "dir:$work/pulled-$format"
    python3 - "$format" "$work/pulled-$format" "$module_sha" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
fmt, pulled, want = sys.argv[1], sys.argv[2], sys.argv[3]
manifest = json.load(open(f"{pulled}/manifest.json"))
blob = lambda d: open(f"{pulled}/{d['digest'].split(':', 1)[1]}", "rb").read()
types = [layer["mediaType"] for layer in manifest["layers"]]
if fmt == "image":
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json", manifest
    assert types == ["application/vnd.oci.image.layer.v1.tar+gzip"], types
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(manifest["layers"][-1])))) as t:
        module = t.extractfile("plugin.wasm").read()
else:
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json", manifest
    assert len(types) == 2 and "application/vnd.module.wasm.config.v1+json" in types, types
    (layer,) = [l for l in manifest["layers"]
                if l["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"]
    module = blob(layer)
got = hashlib.sha256(module).hexdigest()
assert got == want, f"{fmt}: module sha256 {got} != built file {want}"
PY
    log "$format format: media types, layers, digest $sha, module sha256 $module_sha: ok"
done
# Same module, same digests: the layouts are reproducible, so a re-publish keeps the pin valid.
scripts/publish-plugin.sh --wasm "$work/plugin/plugin.wasm" --plain-http --tag test2 "$repo" \
    >"$work/published2"
[ "$(grep '\.sha256=' "$work/published")" = "$(grep '\.sha256=' "$work/published2")" ] \
    || die "publishing the same module twice gave different digests"
