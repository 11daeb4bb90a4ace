#!/usr/bin/env bash
# Build or locate the real Kubernetes components probity's end-to-end tests run
# against: kube-apiserver, kubectl and helm built from Go modules, and etcd from
# the crates.io package that vendors the upstream binary. `node` adds what a
# node runs: kubelet, kube-controller-manager and kube-scheduler from the same
# module graph, containerd from its Go module, and Debian's runc and CNI
# plugins (installed with apt-get when missing).
#
#   hack/control-plane.sh build   build anything missing into the cache (default)
#   hack/control-plane.sh node    the same, plus the node's components
#   hack/control-plane.sh dir     print the cache directory (for PROBITY_K8S_BIN_DIR)
#   hack/control-plane.sh check   exit 0 if every binary is present, 1 otherwise
#   hack/control-plane.sh clean   remove this version's cache directory
#
# Environment:
#   PROBITY_K8S_VERSION  Kubernetes version to build (default below)
#   PROBITY_CACHE_DIR    cache root (default: ${XDG_CACHE_HOME:-~/.cache}/probity)
set -euo pipefail

K8S_VERSION="${PROBITY_K8S_VERSION:-1.37.2}"
# etcd minor that this Kubernetes minor is tested with (build/dependencies.yaml).
ETCD_VERSION="3.7.2"
HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="v4.3.1"
CONTAINERD_MODULE="github.com/containerd/containerd/v2"
CONTAINERD_VERSION="v2.4.2"

CACHE_ROOT="${PROBITY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/probity}"
BIN_DIR="$CACHE_ROOT/k8s/v$K8S_VERSION"
BINARIES=(etcd kube-apiserver kubectl helm)
NODE_BINARIES=(kubelet kube-controller-manager kube-scheduler containerd containerd-shim-runc-v2)
# Where Debian puts what the node needs from packages.
RUNC=/usr/sbin/runc
CNI_DIR=/usr/lib/cni

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

have_node() {
  local b
  for b in "${NODE_BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  [[ -x "$RUNC" && -x "$CNI_DIR/bridge" && -x "$CNI_DIR/host-local" && -x "$CNI_DIR/loopback" ]]
}

# Run a long command, printing a heartbeat every 30 s so it never looks hung.
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    local e=$((SECONDS - start))
    if (( e > 0 && e % 30 < 5 )) && kill -0 "$pid" 2>/dev/null; then
      log "  still building $what ($((e / 60))m$((e % 60))s elapsed)"
    fi
  done
  wait "$pid" || die "building $what failed"
  log "  $what done in $((SECONDS - start))s"
}

build_etcd() {
  [[ -x "$BIN_DIR/etcd" ]] && return 0
  command -v cargo >/dev/null || die "cargo is required to fetch etcd"
  log "fetching etcd $ETCD_VERSION (crates.io: etcd-bin-vendored-linux-amd64)"
  local tmp; tmp="$(mktemp -d)"
  mkdir -p "$tmp/src"
  cat >"$tmp/Cargo.toml" <<TOML
[package]
name = "fetch-etcd"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
etcd-bin-vendored-linux-amd64 = "=$ETCD_VERSION"
TOML
  : >"$tmp/src/lib.rs"
  (cd "$tmp" && cargo fetch --quiet) || die "cargo fetch of etcd failed"
  local crate
  crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/etcd-bin-vendored-linux-amd64-"$ETCD_VERSION".crate | head -n 1)"
  [[ -f "$crate" ]] || die "etcd crate not found in the cargo cache"
  tar -xzf "$crate" -C "$tmp" "etcd-bin-vendored-linux-amd64-$ETCD_VERSION/bin/etcd"
  install -m 0755 "$tmp/etcd-bin-vendored-linux-amd64-$ETCD_VERSION/bin/etcd" "$BIN_DIR/etcd.tmp"
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  rm -rf "$tmp"
}

# The wrapper module: requires k8s.io/kubernetes and replaces each staging
# module (./staging/src/k8s.io/X) with its published v0.<minor>.<patch>.
write_wrapper() {
  local dir="$1" modfile
  modfile="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  [[ -f "$modfile" ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"
  local goline godebug
  goline="$(grep -E '^go [0-9.]+$' "$modfile" | head -n 1)"
  godebug="$(grep -E '^godebug ' "$modfile" || true)"
  {
    echo "module probity.dev/k8s-build"
    echo
    echo "$goline"
    [[ -n "$godebug" ]] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$modfile" |
      awk -v v="v0.${K8S_VERSION#*.}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
}

# build_kube BINARY...: the named k8s.io/kubernetes commands, those missing.
build_kube() {
  local missing=() b
  for b in "$@"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
  ((${#missing[@]})) || return 0
  command -v go >/dev/null || die "go is required to build kube-apiserver and kubectl"
  local minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  local tmp; tmp="$(mktemp -d)"
  log "preparing wrapper module for k8s.io/kubernetes v$K8S_VERSION"
  write_wrapper "$tmp"
  (cd "$tmp" && go mod download k8s.io/kubernetes && go get "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null 2>&1) ||
    die "resolving the k8s.io/kubernetes module graph failed"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for b in "${missing[@]}"; do
    log "building $b v$K8S_VERSION with $(go env GOVERSION) (cold: minutes on 2 cores, more on a cold module cache; later runs reuse $BIN_DIR)"
    with_heartbeat "$b" bash -c "cd '$tmp' && go build -mod=mod -trimpath -ldflags '$ld' -o '$BIN_DIR/$b.tmp' k8s.io/kubernetes/cmd/$b"
    mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  done
  rm -rf "$tmp"
}

build_helm() {
  [[ -x "$BIN_DIR/helm" ]] && return 0
  command -v go >/dev/null || die "go is required to build helm"
  log "building helm $HELM_VERSION (go install; a few minutes cold)"
  local tmp; tmp="$(mktemp -d)"
  with_heartbeat helm env GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.gitTreeState=clean" \
    "$HELM_MODULE/cmd/helm@$HELM_VERSION"
  mv "$tmp/helm" "$BIN_DIR/helm"
  rm -rf "$tmp"
}

# containerd and the runc shim it starts per pod, from containerd's module.
build_containerd() {
  [[ -x "$BIN_DIR/containerd" && -x "$BIN_DIR/containerd-shim-runc-v2" ]] && return 0
  command -v go >/dev/null || die "go is required to build containerd"
  local tmp; tmp="$(mktemp -d)"
  local b
  for b in containerd containerd-shim-runc-v2; do
    [[ -x "$BIN_DIR/$b" ]] && continue
    log "building $b $CONTAINERD_VERSION (go install; a few minutes cold)"
    with_heartbeat "$b" env GOBIN="$tmp" go install -trimpath \
      -ldflags "-s -w -X $CONTAINERD_MODULE/version.Version=$CONTAINERD_VERSION" \
      "$CONTAINERD_MODULE/cmd/$b@$CONTAINERD_VERSION"
    mv "$tmp/$b" "$BIN_DIR/$b"
  done
  rm -rf "$tmp"
}

# runc and the CNI plugins come from Debian's packages.
install_node_packages() {
  local need=()
  [[ -x "$RUNC" ]] || need+=(runc)
  [[ -x "$CNI_DIR/bridge" && -x "$CNI_DIR/host-local" && -x "$CNI_DIR/loopback" ]] ||
    need+=(containernetworking-plugins)
  ((${#need[@]})) || return 0
  command -v apt-get >/dev/null || die "install ${need[*]} (Debian packages) for the node"
  log "installing ${need[*]} (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
    die "apt-get install ${need[*]} failed"
}

cmd_node() {
  cmd_build
  if have_node; then
    log "using cached node components in $BIN_DIR"
    return 0
  fi
  exec 9>"$BIN_DIR/.lock"
  flock 9
  local start=$SECONDS
  log "building the test node's components into $BIN_DIR"
  build_kube kube-scheduler kube-controller-manager kubelet
  build_containerd
  install_node_packages
  have_node || die "some node components are still missing"
  log "node components ready in $((SECONDS - start))s:"
  "$BIN_DIR/kubelet" --version >&2
  "$BIN_DIR/containerd" --version >&2
  "$RUNC" --version | head -n 1 >&2
}

cmd_build() {
  if have_all; then
    log "using cached Kubernetes v$K8S_VERSION binaries in $BIN_DIR"
    return 0
  fi
  mkdir -p "$BIN_DIR"
  # One build at a time per cache directory.
  exec 9>"$BIN_DIR/.lock"
  flock 9
  local start=$SECONDS
  log "building the test control plane into $BIN_DIR"
  build_etcd
  build_kube kube-apiserver kubectl
  build_helm
  have_all || die "some binaries are still missing in $BIN_DIR"
  log "control plane ready in $((SECONDS - start))s:"
  "$BIN_DIR/kube-apiserver" --version >&2
  "$BIN_DIR/etcd" --version | head -n 1 >&2
  "$BIN_DIR/kubectl" version --client 2>/dev/null | head -n 1 >&2
  "$BIN_DIR/helm" version --short >&2
}

case "${1:-build}" in
  build) cmd_build ;;
  node) cmd_node ;;
  dir) echo "$BIN_DIR" ;;
  check) have_all ;;
  clean) rm -rf "$BIN_DIR" ;;
  -h|--help|help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try --help)" ;;
esac
