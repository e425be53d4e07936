#!/usr/bin/env bash
# Installs what a test node needs from Debian's packages, each only when missing:
#   containerd, runc, the CNI plugins (containernetworking-plugins), iptables (kube-proxy) and
#   nftables (to remove the tables kube-proxy leaves behind).
# Prints nothing when everything is present. Needs root (apt-get); says what to run otherwise.
set -euo pipefail
missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the test node needs the Debian packages: ${missing[*]}" >&2
  echo "       install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  echo "       (or run without a node: make env-up NODE=0; node tests need them)" >&2
  exit 1
fi
echo ">> installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
# The packages' maintainer scripts would start the system's own containerd; the node runs its
# own instance, so keep services from starting (there is no init system here anyway).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.tracking && chmod +x /usr/sbin/policy-rc.d.tracking
restore_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  cp /usr/sbin/policy-rc.d.tracking /usr/sbin/policy-rc.d; restore_policy=1
fi
trap '[[ $restore_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d; rm -f /usr/sbin/policy-rc.d.tracking' EXIT
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "error: apt-get could not install ${missing[*]}; are Debian's package mirrors reachable?" >&2
  exit 1
fi
