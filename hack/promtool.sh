#!/usr/bin/env bash
# Prometheus' promtool, built from its Go module into the cache: `make test`
# checks the chart's alerting rules with it.
# Usage: hack/promtool.sh path     print where the binary is (or will be)
#        hack/promtool.sh install  build it once (go install; minutes cold)
set -euo pipefail
# Prometheus v3.16.0 (its Go module numbers minor releases 0.3xx).
version="${PROBITY_PROMTOOL_VERSION:-v0.316.0}"
cache="${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}"
dir="$cache/tools/promtool/$version"
dest="$dir/promtool"
case "${1:-path}" in
  path) echo "$dest" ;;
  install)
    [[ -x "$dest" ]] && exit 0
    command -v go >/dev/null || { echo "[promtool] error: go is required" >&2; exit 1; }
    echo "[promtool] building promtool $version with go install (once; a few minutes cold)" >&2
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath \
      "github.com/prometheus/prometheus/cmd/promtool@$version" &
    pid=$!
    start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
      sleep 5
      e=$((SECONDS - start))
      if ((e % 30 < 5)) && kill -0 "$pid" 2>/dev/null; then
        echo "[promtool]   still building ($((e / 60))m$((e % 60))s elapsed)" >&2
      fi
    done
    wait "$pid" || { echo "[promtool] error: building promtool failed" >&2; exit 1; }
    mkdir -p "$dir"
    mv "$tmp/promtool" "$dest"
    "$dest" --version 2>&1 | head -1 >&2
    ;;
  *) echo "usage: $0 path|install" >&2; exit 2 ;;
esac
