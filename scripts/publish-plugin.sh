#!/usr/bin/env bash
# Push the BOIFI Wasm plugin to an OCI registry in both formats Istio's WasmPlugin accepts, and
# print the url and sha256 to put in the chart's values.
#
#   image  (tag TAG):      an OCI image whose single layer (tar+gzip) holds plugin.wasm, as
#                          docker/plugin.Dockerfile builds it;
#   wasm   (tag TAG-wasm): the Wasm OCI variant: two layers, the raw module
#                          (application/vnd.module.wasm.content.layer.v1+wasm) and its config
#                          (application/vnd.module.wasm.config.v1+json).
#
# Istio verifies a WasmPlugin's sha256 against the manifest digest it pulls, so that is what
# this prints as sha256: the digest of the manifest read back from the registry after the push.
# Both layouts are built byte-for-byte reproducibly (fixed timestamps), so the same module always
# gets the same digests. Pushing uses skopeo (no container daemon). With --preserve-digests
# (skopeo 1.6.0 and newer) the registry stores exactly the manifest built here; older skopeo
# (Ubuntu 22.04 ships 1.4) lacks the flag and may re-encode the manifest on the way (e.g.
# compress the raw Wasm layer), so the stored digest can differ from the built one. The printed
# sha256 is the stored one either way.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

usage() {
    cat <<'USAGE'
Usage: scripts/publish-plugin.sh [options] REPOSITORY

Push the plugin module to REPOSITORY (e.g. registry.example.com/boifi/plugin) as
REPOSITORY:TAG (image format) and REPOSITORY:TAG-wasm (Wasm OCI format).

Options:
  --wasm FILE        the module (default: target/plugin/boifi_plugin.wasm, built by
                     scripts/build-plugin.sh when missing)
  --tag TAG          tag of the image format (default: the chart's appVersion)
  --format F         image, wasm or both (default: both)
  --plain-http       talk plain HTTP to the registry (a registry on loopback or in a lab)
  --authfile FILE    registry credentials (containers-auth.json; `skopeo login` writes one)
  --layout-dir DIR   also keep the OCI layouts in DIR (default: a temp dir, removed)
  -h, --help         this text

Output: for each format "<format>.url=oci://...", "<format>.sha256=<64 hex>" and
"<format>.module_sha256=<64 hex>" lines, then a values snippet for helm.
USAGE
}

wasm="" tag="" format=both tls_verify=true authfile="" layout_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wasm) wasm="${2:?--wasm needs a file}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --format) format="${2:?--format needs a value}"; shift 2 ;;
        --plain-http) tls_verify=false; shift ;;
        --authfile) authfile="${2:?--authfile needs a file}"; shift 2 ;;
        --layout-dir) layout_dir="${2:?--layout-dir needs a directory}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || { usage >&2; die "give exactly one REPOSITORY"; }
repository="${1#oci://}"
case "$format" in image | wasm | both) ;; *) die "--format must be image, wasm or both" ;; esac
case "$repository" in */*) ;; *) die "REPOSITORY must include a registry host: HOST[:PORT]/PATH" ;; esac
command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"

if [ -z "$tag" ]; then
    tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$BOIFI_ROOT/helm/boifi/Chart.yaml")"
fi
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}$ ]] || die "invalid tag: $tag"

if [ -z "$wasm" ]; then
    wasm="$BOIFI_ROOT/target/plugin/boifi_plugin.wasm"
    [ -f "$wasm" ] || "$BOIFI_ROOT/scripts/build-plugin.sh"
fi
[ -f "$wasm" ] || die "module not found: $wasm"
# Istio rejects anything that does not start with the Wasm magic number.
[ "$(head -c 4 "$wasm" | od -An -tx1 | tr -d ' \n')" = "0061736d" ] || die "$wasm is not a Wasm module"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ -n "$layout_dir" ] || layout_dir="$work/layouts"
mkdir -p "$layout_dir"

# Writes an OCI image layout per format into $layout_dir/<format> and prints
# "<format> <manifest digest>" lines.
python3 - "$wasm" "$layout_dir" "$format" >"$work/digests" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile

wasm_path, out, which = sys.argv[1], sys.argv[2], sys.argv[3]
module = open(wasm_path, "rb").read()

def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{layout}/blobs/sha256", exist_ok=True)
    with open(f"{layout}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}

def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

def write_layout(name, config_type, config, layers):
    layout = f"{out}/{name}"
    os.makedirs(layout, exist_ok=True)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, **blob(layout, config)},
        "layers": [{"mediaType": t, **blob(layout, d)} for t, d in layers],
    }
    desc = {"mediaType": manifest["mediaType"], **blob(layout, canonical(manifest))}
    with open(f"{layout}/oci-layout", "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(f"{layout}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [desc]}, f)
    print(name, desc["digest"])

if which in ("image", "both"):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o644, 0
        t.addfile(info, io.BytesIO(module))
    layer_tar = tar.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    config = canonical({
        "architecture": "wasm", "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    })
    write_layout("image", "application/vnd.oci.image.config.v1+json", config,
                 [("application/vnd.oci.image.layer.v1.tar+gzip", layer)])

if which in ("wasm", "both"):
    config = canonical({"created": "1970-01-01T00:00:00Z", "author": "boifi", "type": "proxy-wasm"})
    write_layout("wasm", "application/vnd.module.wasm.config.v1+json", config,
                 [("application/vnd.module.wasm.config.v1+json", config),
                  ("application/vnd.module.wasm.content.layer.v1+wasm", module)])
PY

module_sha="$(sha256sum "$wasm" | cut -d ' ' -f 1)"
skopeo_args=(--dest-tls-verify="$tls_verify")
[ -z "$authfile" ] || skopeo_args+=(--dest-authfile "$authfile")
inspect_args=(--tls-verify="$tls_verify")
[ -z "$authfile" ] || inspect_args+=(--authfile "$authfile")
# --preserve-digests: the registry must store exactly the manifest built above (skopeo fails
# otherwise). Detected, since skopeo before 1.6.0 rejects the unknown flag.
preserve=()
copy_help="$(skopeo copy --help 2>&1)"
if grep -q -- '--preserve-digests' <<<"$copy_help"; then
    preserve=(--preserve-digests)
else
    log "$(skopeo --version) has no --preserve-digests (1.6.0+): printing the digest the registry stores"
fi

while read -r name digest; do
    ref="$repository:$tag"
    [ "$name" = image ] || ref="$repository:$tag-$name"
    log "push $name format to $ref"
    skopeo copy --quiet "${preserve[@]}" "${skopeo_args[@]}" "oci:$layout_dir/$name" "docker://$ref"
    # Istio compares the WasmPlugin's sha256 with the digest of the manifest it pulls: read the
    # manifest back (--raw: its bytes as stored) and print its digest, not the built one.
    stored="sha256:$(skopeo inspect --raw "${inspect_args[@]}" "docker://$ref" | sha256sum | cut -d ' ' -f 1)"
    if [ "$stored" != "$digest" ]; then
        [ "${#preserve[@]}" -eq 0 ] || die "$ref: the registry stores manifest $stored, not the pushed $digest"
        log "$ref: skopeo re-encoded the manifest ($digest built, $stored stored); printing the stored digest"
        digest="$stored"
    fi
    printf '%s.url=oci://%s\n%s.sha256=%s\n%s.module_sha256=%s\n' \
        "$name" "$ref" "$name" "${digest#sha256:}" "$name" "$module_sha"
    # The values snippet prefers the image format: every Istio with WasmPlugin reads it.
    if [ -z "${values_ref:-}" ] || [ "$name" = image ]; then
        values_ref="$ref" values_sha="${digest#sha256:}"
    fi
done <"$work/digests"

cat <<VALUES

# Helm values (helm/boifi) for this module, pinned by sha256:
plugin:
  url: "oci://$values_ref"
  sha256: "$values_sha"
VALUES
