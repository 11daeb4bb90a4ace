#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, seeded from the committed
# corpora and the test fixtures. Usage: hack/fuzz.sh [SECONDS_PER_TARGET]
# (default 30); FUZZ_JOBS=N runs N fuzzing processes per target;
# FUZZ_SANITIZER=address (or another cargo-fuzz sanitizer) adds one.
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

# libFuzzer writes what it finds into the first directory (scratch, under
# target/); the committed corpus and the fixtures are read-only seeds. Keep a
# find with `cargo fuzz cmin` into fuzz/corpus/<target>/, and a crash as a
# reproducer in fuzz/regressions/<target>/: `cargo test` replays both.
jobs="${FUZZ_JOBS:-1}"
declare -A seeds=(
  [reference]=""
  [manifest]="../tests/fixtures/lint"
  [admission]="../tests/fixtures/admission"
  [object]=""
)
for target in reference manifest admission object; do
  scratch="target/fuzz-corpus/$target"
  mkdir -p "$scratch"
  dirs=("../$scratch" "corpus/$target")
  [[ -d "fuzz/regressions/$target" ]] && dirs+=("regressions/$target")
  [[ -n "${seeds[$target]}" ]] && dirs+=("${seeds[$target]}")
  echo "[fuzz] $target for ${seconds}s on $jobs job(s)" >&2
  # Cargo's own flags for the fuzz build must not see the workspace's.
  (cd fuzz && PATH="$tools/bin:$PATH" cargo "${toolchain[@]}" fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" --debug-assertions "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 -jobs="$jobs" -workers="$jobs")
done
