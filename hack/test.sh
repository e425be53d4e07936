#!/usr/bin/env bash
# `make test`: static checks, then every unit and integration test. Integration tests start their
# own kube-apiserver/etcd/moto (tests/testenv) and stop them at exit; the trap below is a last
# resort so that nothing outlives this script even if a test binary is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
reap() { pkill -f -- '/testenv-(kube|moto)-[0-9]+' 2>/dev/null || true; }
trap reap EXIT
start=$(date +%s)
echo ">> cargo fmt --check"
cargo fmt --all -- --check
echo ">> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
for extra in hack/test-*.sh; do
  [[ -x "$extra" ]] || continue
  echo ">> $extra"
  "$extra"
done
echo ">> unit + integration tests, two binaries at a time (hack/run-tests.py)"
hack/run-tests.py
echo ">> make test finished in $(( $(date +%s) - start ))s"
