#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, seeded from the lint
# fixtures. Usage: hack/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
#
# cargo-fuzz needs nightly compiler flags: a nightly toolchain is used when
# rustup has one, otherwise the stable compiler with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
tools="${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}/tools"
fuzz="$tools/bin/cargo-fuzz"
if [[ ! -x "$fuzz" ]]; then
  echo "[fuzz] installing cargo-fuzz into $tools (once, about a minute)" >&2
  cargo install cargo-fuzz@0.13.2 --locked --quiet --root "$tools"
fi
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

corpus="target/fuzz-corpus"
mkdir -p "$corpus/manifest" "$corpus/reference" "$corpus/admission"
cp tests/fixtures/admission/*.json "$corpus/admission/" 2>/dev/null || true
cp tests/fixtures/lint/*/*.yaml "$corpus/manifest/" 2>/dev/null || true
i=0
for image in nginx nginx:1.27 ghcr.io/acme/web:1.4.2 registry:5000/app \
  "app:1.2@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "[::1]:5000/a/b:c"; do
  printf '%s' "$image" >"$corpus/reference/seed-$i"; i=$((i + 1))
done

for target in reference manifest admission; do
  echo "[fuzz] $target for ${seconds}s" >&2
  # Cargo's own flags for the fuzz build must not see the workspace's.
  (cd fuzz && PATH="$tools/bin:$PATH" cargo "${toolchain[@]}" fuzz run --sanitizer none "$target" "../$corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1)
done
