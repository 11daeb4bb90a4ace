#!/usr/bin/env bash
# `cargo test ARGS --all-targets` then `cargo test ARGS --doc`, in less wall
# time: every test binary is built first, then run as `cargo test` would run
# it (in its package's directory, one after another), except the end-to-end
# and CLI binaries, which run beside the others and the doc
# tests, and the node tests, which run alone at the end. The end-to-end tests mostly wait on the API server, so on two cores
# the whole run takes about as long as its longest part instead of the sum.
#   hack/test.sh CARGO_ARGS...     e.g. --workspace --all-features --locked
# Exits non-zero when anything fails; everything runs either way.
set -uo pipefail
cargo="${CARGO:-cargo}"
# Binaries run beside the rest: the end-to-end tests, and the CLI tests (one
# of them lints a 50 MB file in a debug build, a core for most of a minute).
parallel="${PROBITY_PARALLEL_TESTS:-e2e cli}"
# Binaries run last, alone, after the others: the node tests, whose
# figures (rollouts, drains under load) mean little on a starved machine.
last="${PROBITY_LAST_TESTS:-node}"
# The end-to-end tests wait far more than they compute: more of them at once
# than libtest's default of one per core.
e2e_threads="${PROBITY_E2E_THREADS:-4}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

echo "[test] building the test binaries"
"$cargo" test "$@" --all-targets --no-run --message-format=json-render-diagnostics >"$work/artifacts" || exit $?
# The node tests pack target/debug/probity and target/debug/examples/orders
# into images; a test build leaves the examples only under examples/*-<hash>.
echo "[test] building the binaries the node tests run as images"
"$cargo" build "$@" --bins --examples || exit $?

# One line per test binary: <executable> <package directory>. Test
# binaries live in deps/ with a hash in their name; the binaries built for
# the tests to run (CARGO_BIN_EXE_*) do not.
grep '"reason":"compiler-artifact"' "$work/artifacts" | grep '"executable":"[^"]*/deps/' |
  sed -n 's/.*"manifest_path":"\([^"]*\)".*"executable":"\([^"]*\)".*/\2 \1/p' |
  while read -r exe manifest; do echo "$exe $(dirname "$manifest")"; done | sort >"$work/binaries"
[[ -s "$work/binaries" ]] || { echo "[test] error: cargo listed no test binaries" >&2; exit 1; }

run() {
  local exe="$1" dir="$2"
  shift 2
  (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$exe" "$@")
}

failed=()
declare -A bg_pid=()
is_parallel() { [[ " $parallel " == *" $1 "* ]]; }
is_last() { [[ " $last " == *" $1 "* ]]; }

while read -r exe dir; do
  name="$(basename "$exe")"
  name="${name%-*}"
  if is_parallel "$name" && [[ -z "${bg_pid[$name]:-}" ]]; then
    echo "[test] $name: started beside the others (its output follows when it ends)"
    args=()
    [[ "$name" == e2e ]] && args=(--test-threads="$e2e_threads")
    (
      start=$SECONDS
      run "$exe" "$dir" "${args[@]}" >"$work/$name.log" 2>&1
      status=$?
      echo "$((SECONDS - start))" >"$work/$name.took"
      exit "$status"
    ) &
    bg_pid[$name]=$!
  fi
done <"$work/binaries"

while read -r exe dir; do
  name="$(basename "$exe")"
  name="${name%-*}"
  [[ -n "${bg_pid[$name]:-}" ]] && continue
  is_last "$name" && continue
  echo "[test] $name (${dir#"$PWD"/})"
  run "$exe" "$dir" || failed+=("$name")
done <"$work/binaries"

echo "[test] doc tests"
"$cargo" test "$@" --doc || failed+=(doc-tests)

for name in "${!bg_pid[@]}"; do
  wait "${bg_pid[$name]}"
  status=$?
  echo "[test] $name (ran beside the others, $(duration "$(cat "$work/$name.took" 2>/dev/null || echo 0)")):"
  cat "$work/$name.log"
  ((status == 0)) || failed+=("$name")
done

while read -r exe dir; do
  name="$(basename "$exe")"
  name="${name%-*}"
  is_last "$name" || continue
  echo "[test] $name (${dir#"$PWD"/}, after the others)"
  run "$exe" "$dir" || failed+=("$name")
done <"$work/binaries"

if ((${#failed[@]})); then
  echo "[test] failed: ${failed[*]}" >&2
  exit 1
fi
echo "[test] every test binary passed"
