#!/usr/bin/env bash
# Runs a command in network, mount and pid namespaces of its own, as the test
# node needs: its own loopback and nothing else (no route out); tmpfs over
# /tmp, /var/lib and /var/log, the checkout and the command kept visible (the
# run's files, and what kubelet writes to
# /var/lib/kubelet/device-plugins and /var/log/{containers,pods} whatever its
# root dir says); and the kernel settings kubelet would change
# (vm.overcommit_memory, kernel.panic, ...) bind-mounted from files of the
# run's own that already hold the values kubelet wants, so the machine's stay
# as they are. When the command exits, however it exits, the kernel ends every
# process of the pid namespace and drops its mounts and network devices.
#
# The network namespace's file, for `nsenter --net=...` from outside, is
# written to /run/<PROBITY_ISOLATION_ID>.netns.
#
# cgroups are the one thing a node leaves in the machine's view: the node
# names its cgroup root after PROBITY_ISOLATION_ID (probity-isolated-<pid of
# this script>), this script removes them when the command ends, and every
# start removes those of runs whose script is gone (a killed run).
#   hack/isolated.sh COMMAND [ARGS...]
# Needs root (unshare).
set -euo pipefail

# Removes the cgroup trees /sys/fs/cgroup[/<controller>]/<prefix>*, killing
# what is left in them first.
remove_cgroups() {
  local prefix="$1" root dir pid
  for root in /sys/fs/cgroup/"$prefix"* /sys/fs/cgroup/*/"$prefix"*; do
    [[ -d "$root" ]] || continue
    while read -r dir; do
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$dir/cgroup.procs" 2>/dev/null || true
    done < <(find "$root" -depth -type d)
    for _ in $(seq 50); do
      find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$root" ]] || break
      sleep 0.1
    done
  done
}

if [[ "${1:-}" != --inside ]]; then
  (($#)) || { echo "usage: hack/isolated.sh COMMAND [ARGS...]" >&2; exit 2; }
  [[ $EUID -eq 0 ]] || { echo "hack/isolated.sh: needs root (network, mount and pid namespaces)" >&2; exit 1; }
  # Runs killed before they could clean up.
  for stale in /sys/fs/cgroup/probity-isolated-* /sys/fs/cgroup/*/probity-isolated-*; do
    [[ -d "$stale" ]] || continue
    name="${stale##*/}"
    owner="${name#probity-isolated-}"
    owner="${owner%%-*}"
    kill -0 "$owner" 2>/dev/null || remove_cgroups "probity-isolated-$owner-"
  done
  for stale in /run/probity-isolated-*.netns; do
    [[ -f "$stale" ]] || continue
    owner="${stale#/run/probity-isolated-}"
    kill -0 "${owner%.netns}" 2>/dev/null || rm -f "$stale"
  done
  PROBITY_HOST_NETNS="$(stat -L -c %i /proc/self/ns/net)"
  PROBITY_ISOLATION_ID="probity-isolated-$$"
  export PROBITY_HOST_NETNS PROBITY_ISOLATION_ID
  netns_file="/run/$PROBITY_ISOLATION_ID.netns"
  unshare --net --mount --pid --fork --propagation private -- "$0" --inside "$@" &
  child=$!
  # unshare ignores SIGTERM while it waits: hand it to the shell inside,
  # which hands it to the command.
  trap 'kill -TERM $(pgrep -P "$child") 2>/dev/null' TERM INT HUP
  # unshare itself is in the new network namespace (only the pid namespace
  # is for its children).
  echo "/proc/$child/ns/net" >"$netns_file"
  status=0
  while :; do
    wait "$child" && status=0 || status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  rm -f "$netns_file"
  remove_cgroups "$PROBITY_ISOLATION_ID-"
  exit "$status"
fi
shift

ip link set lo up
mount -t proc proc /proc
# The checkout and the command's directory stay visible when they live under
# a directory the tmpfs hides (a clone in /tmp, a target dir in /var/lib):
# each is held open across the mount and bound back at its path.
keep=()
# So do the caches the run reads (a PROBITY_CACHE_DIR or target dir in /tmp).
paths=("$(cd "$(dirname "$0")/.." && pwd -P)" "$(cd "$(dirname "$(command -v "$1")")" && pwd -P)")
for dir in "${PROBITY_CACHE_DIR:-}" "${PROBITY_K8S_BIN_DIR:-}" "${CARGO_TARGET_DIR:-}" \
  "$(dirname "${PROBITY_REGISTRY_BIN:-/}")"; do
  if [[ -n "$dir" && -d "$dir" ]]; then paths+=("$(cd "$dir" && pwd -P)"); fi
done
for path in "${paths[@]}"; do
  case "$path" in
    /tmp/* | /var/lib/* | /var/log/*)
      exec {fd}<"$path"
      keep+=("$fd:$path")
      ;;
  esac
done
for dir in /tmp /var/lib /var/log; do
  mount -t tmpfs -o mode=0755 tmpfs "$dir"
done
chmod 1777 /tmp
for held in "${keep[@]}"; do
  fd="${held%%:*}" path="${held#*:}"
  mkdir -p "$path"
  mount --no-canonicalize --bind "/proc/self/fd/$fd" "$path"
  exec {fd}<&-
done
sysctls=/var/lib/probity-sysctl
mkdir -p "$sysctls"
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key="${setting%=*}"
  file="$sysctls/${key//\//.}"
  echo "${setting#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done
# Not exec: this shell stays pid 1 of the namespace, reaps what the command
# leaves behind, and passes SIGTERM on (pid 1 ignores what it does not trap).
"$@" &
command_pid=$!
trap 'kill -TERM "$command_pid" 2>/dev/null' TERM INT HUP
status=0
while :; do
  wait "$command_pid" && status=0 || status=$?
  kill -0 "$command_pid" 2>/dev/null || break
done
exit "$status"
