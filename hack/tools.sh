#!/usr/bin/env bash
# Installs the test environment's tools into the cache, each only when missing:
#   etcd, kube-apiserver, kube-controller-manager  built from the Go module proxy (hack/k8s, hack/etcd)
#   moto_server                                    moto[server] from PyPI in a virtualenv
#   helm v4, lua5.1                                hack/install-helm.sh, hack/install-lua.sh
#   kubelet, kube-scheduler, kube-proxy, pause     the test node (hack/k8s, hack/pause), plus
#   containerd, runc, CNI plugins, iptables        from Debian (hack/install-node-deps.sh)
# Usage: hack/tools.sh [kube|moto|extras|node|plot|all]   (default all; all includes node)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=versions.env
source "$root/hack/versions.env"
cache="${TRACKING_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracking-operator}"
mkdir -p "$cache"

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go is not installed, and it is needed to build etcd and kube-apiserver." >&2
    echo "       Install Go (1.24+) with access to the Go module proxy, or set KUBEBUILDER_ASSETS" >&2
    echo "       to a folder that holds etcd and kube-apiserver binaries (e.g. from setup-envtest)." >&2
    exit 1
  fi
}

kube() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    for b in etcd kube-apiserver; do
      [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "error: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no $b" >&2; exit 1; }
    done
    echo "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
    return
  fi
  local dir="$cache/kube-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
  if [[ -x "$dir/etcd" && -x "$dir/kube-apiserver" && -x "$dir/kube-controller-manager" ]]; then
    return
  fi
  need_go
  local tmp="$dir.partial"
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo ">> building etcd v$ETCD_VERSION (Go module proxy)" >&2
  if ! (cd "$root/hack/etcd" && go build -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3); then
    echo "error: building etcd failed. Is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?" >&2
    echo "       Alternatively set KUBEBUILDER_ASSETS to a folder with etcd and kube-apiserver." >&2
    exit 1
  fi
  echo ">> building kube-apiserver and kube-controller-manager v$KUBERNETES_VERSION (several minutes cold)" >&2
  # Stamp the version: without it the server reports v0.0.0-master, which breaks clients
  # (helm, kubectl) that check the server version.
  local v="k8s.io/component-base/version"
  local minor="${KUBERNETES_VERSION#*.}"; minor="${minor%%.*}"
  local ld="-s -w -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  if ! (cd "$root/hack/k8s" && go build -ldflags="$ld" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager); then
    echo "error: building kube-apiserver failed. Is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?" >&2
    echo "       Alternatively set KUBEBUILDER_ASSETS to a folder with etcd and kube-apiserver." >&2
    exit 1
  fi
  rm -rf "$dir" && mv "$tmp" "$dir"
}

node() {
  "$root/hack/install-node-deps.sh"
  local dir="$cache/node-$KUBERNETES_VERSION"
  if [[ -x "$dir/kubelet" && -x "$dir/kube-scheduler" && -x "$dir/kube-proxy" && -x "$dir/pause" ]]; then
    return
  fi
  need_go
  local tmp="$dir.partial"
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo ">> building kubelet, kube-scheduler and kube-proxy v$KUBERNETES_VERSION (a few minutes cold)" >&2
  local v="k8s.io/component-base/version"
  local minor="${KUBERNETES_VERSION#*.}"; minor="${minor%%.*}"
  local ld="-s -w -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  if ! (cd "$root/hack/k8s" && go build -ldflags="$ld" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy); then
    echo "error: building the node's binaries failed. Is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?" >&2
    exit 1
  fi
  # The sandbox image's only binary; static, since the image holds nothing else.
  if ! (cd "$root/hack/pause" && CGO_ENABLED=0 go build -ldflags="-s -w" -o "$tmp/pause" .); then
    echo "error: building the pause binary failed" >&2
    exit 1
  fi
  rm -rf "$dir" && mv "$tmp" "$dir"
}

moto() {
  if [[ -n "${MOTO_SERVER:-}" ]]; then return; fi
  local venv="$cache/moto-$MOTO_VERSION"
  [[ -f "$venv/.complete" ]] && return
  echo ">> installing moto[server]==$MOTO_VERSION from PyPI" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"; then
    echo "error: pip could not install moto[server]==$MOTO_VERSION; is PyPI reachable?" >&2
    exit 1
  fi
  touch "$venv/.complete"
}

plot() {
  # matplotlib for the demo's chart (make demo only; a failure there skips the picture).
  local venv="$cache/plot-$MATPLOTLIB_VERSION"
  if [[ ! -f "$venv/.complete" ]]; then
    echo ">> installing matplotlib==$MATPLOTLIB_VERSION from PyPI" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --only-binary=:all: "matplotlib==$MATPLOTLIB_VERSION"; then
      echo "error: pip could not install matplotlib==$MATPLOTLIB_VERSION; is PyPI reachable?" >&2
      exit 1
    fi
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}

extras() {
  # helm v4 (chart tests) and Lua 5.1 (Argo CD health check tests); each script prints its path.
  "$root/hack/install-helm.sh" >/dev/null
  "$root/hack/install-lua.sh" >/dev/null
}

case "${1:-all}" in
  kube) kube ;;
  moto) moto ;;
  extras) extras ;;
  plot) plot ;;
  node) node ;;
  all) kube; moto; extras; node ;;
  *) echo "usage: $0 [kube|moto|extras|node|plot|all]" >&2; exit 2 ;;
esac
