#!/usr/bin/env bash
# Debian's redis-server (7.0) and the two libraries it links that a base
# image lacks (jemalloc, lzf), extracted from their packages into the cache:
# tests run it on loopback for shared breaker state and the durable queue.
# Nothing is installed, so no init script starts a system-wide Redis.
# Usage: hack/redis.sh path     print where the binary is (or will be)
#        hack/redis.sh install  fetch it once (apt-get download; no install)
set -euo pipefail
cache="${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}"
dir="$cache/tools/redis"
dest="$dir/redis-server"
case "${1:-path}" in
  path) echo "$dest" ;;
  install)
    [[ -x "$dest" ]] && "$dest" --version >/dev/null 2>&1 && exit 0
    echo "[redis] fetching Debian's redis-tools, libjemalloc2 and liblzf1 into $dir (once)" >&2
    packages=(redis-tools libjemalloc2 liblzf1)
    if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
      apt-get update -qq
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq "${packages[@]}" 2>/dev/null)
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    rm -rf "$dir" && mkdir -p "$dir/lib"
    # redis-server is redis-check-rdb under another name: the binary is a
    # server unless argv[0] says redis-check-rdb.
    install -m 0755 "$work/root/usr/bin/redis-check-rdb" "$dir/redis-server.bin"
    cp -a "$work"/root/usr/lib/*-linux-gnu/libjemalloc.so.* "$work"/root/usr/lib/*-linux-gnu/liblzf.so.* "$dir/lib/"
    # A wrapper that finds the libraries, so callers need no LD_LIBRARY_PATH;
    # it execs, so the server keeps the wrapper's pid.
    cat >"$dest" <<'WRAP'
#!/bin/sh
here="$(dirname "$0")"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/redis-server.bin" "$@"
WRAP
    chmod 0755 "$dest"
    "$dest" --version >&2
    ;;
  *) echo "usage: $0 path|install" >&2; exit 2 ;;
esac
