#!/usr/bin/env bash
# Autoscaling benchmark: a burst of BURST (default 5,000) messages against an autoscaled
# pipeline at zero replicas, with the operator's controller and autoscaler in-process and one
# real `tracking-worker` process per Deployment replica (this script plays the kubelet); then
# a scale-in under load (SCALE_IN messages, default BURST; 0 skips it), replicas forced 4 -> 1.
# Prints figures next to Lambda's documented SQS scaling; asserts none. Runs against testenv's
# kube-apiserver and moto (`make tools` first). Worker stderr: $TMPDIR/bench-autoscale-workers.log
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --quiet -p tracking-worker --bin tracking-worker
exec cargo test --test autoscale_bench -- --ignored --nocapture --test-threads=1 "$@"
