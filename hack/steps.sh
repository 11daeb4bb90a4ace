#!/usr/bin/env bash
# Runs make targets one after another, printing when each starts, how long it
# took, and a table of every step's time at the end (also when one fails).
#   hack/steps.sh TARGET...
set -uo pipefail
make_cmd="${MAKE:-make}"

names=()
times=()
run_start=$SECONDS

duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

summary() {
  local i
  printf '\n[steps] %-16s %8s\n' step time
  for i in "${!names[@]}"; do
    printf '[steps] %-16s %8s\n' "${names[$i]}" "${times[$i]}"
  done
  printf '[steps] %-16s %8s\n' total "$(duration $((SECONDS - run_start)))"
}

for step in "$@"; do
  printf '\n[steps] %s: started at %s\n' "$step" "$(date -u +%H:%M:%SZ)"
  start=$SECONDS
  "$make_cmd" --no-print-directory "$step"
  status=$?
  names+=("$step")
  if ((status != 0)); then
    times+=("FAILED $(duration $((SECONDS - start)))")
    summary
    exit "$status"
  fi
  times+=("$(duration $((SECONDS - start)))")
  printf '[steps] %s: done in %s\n' "$step" "${times[-1]}"
done
summary
