#!/usr/bin/env bash
# Debian's docker-registry (distribution v2.8), extracted from its package
# into the cache: tests run it on loopback as the real OCI registry.
# Usage: hack/registry.sh path     print where the binary is (or will be)
#        hack/registry.sh install  fetch it once (apt-get download; no install)
set -euo pipefail
cache="${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}"
dest="$cache/tools/docker-registry/docker-registry"
case "${1:-path}" in
  path) echo "$dest" ;;
  install)
    [[ -x "$dest" ]] && exit 0
    echo "[registry] fetching Debian's docker-registry package into $(dirname "$dest") (once)" >&2
    if ! apt-cache show docker-registry >/dev/null 2>&1; then
      apt-get update -qq
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq docker-registry 2>/dev/null)
    dpkg-deb -x "$work"/docker-registry_*.deb "$work/root"
    mkdir -p "$(dirname "$dest")"
    install -m 0755 "$work/root/usr/bin/docker-registry" "$dest"
    "$dest" --version >&2
    ;;
  *) echo "usage: $0 path|install" >&2; exit 2 ;;
esac
