#!/usr/bin/env bash
# Prints the path of a Lua 5.1 interpreter (the Lua version Argo CD's health checks run on),
# installing Debian's lua5.1 when missing. The cache holds a symlink so callers get one stable path.
set -euo pipefail

CACHE="${TRACKING_OPERATOR_CACHE:-$HOME/.cache/tracking-operator}"
LINK="$CACHE/bin/lua5.1"

log() { echo "install-lua: $*" >&2; }

is_lua51() { [[ -x "$1" ]] && "$1" -v 2>&1 | grep -q '^Lua 5\.1'; }

if is_lua51 "$LINK"; then
  echo "$LINK"
  exit 0
fi

found=""
for candidate in "$(command -v lua5.1 || true)" "$(command -v lua || true)"; do
  if [[ -n "$candidate" ]] && is_lua51 "$candidate"; then found="$candidate"; break; fi
done

if [[ -z "$found" ]]; then
  command -v apt-get >/dev/null 2>&1 || { log "ERROR: no Lua 5.1 found and no apt-get to install Debian's lua5.1"; exit 1; }
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { log "ERROR: installing lua5.1 needs root (or sudo)"; exit 1; }
    sudo="sudo"
  fi
  log "installing Debian package lua5.1"
  # A fresh machine has no package lists yet; only refresh them when the package is unknown.
  if ! apt-cache show lua5.1 >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2 || { log "ERROR: apt-get update failed"; exit 1; }
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq lua5.1 >&2 \
    || { log "ERROR: apt-get install lua5.1 failed"; exit 1; }
  found="$(command -v lua5.1 || true)"
  is_lua51 "$found" || { log "ERROR: lua5.1 installed but not runnable"; exit 1; }
fi

mkdir -p "$(dirname "$LINK")"
ln -sf "$found" "$LINK"
echo "$LINK"
