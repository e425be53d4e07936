#!/usr/bin/env bash
# Autoscaling benchmark: a burst of BURST (default 20,000) messages against an autoscaled
# pipeline at zero replicas, with the operator's controller and autoscaler in-process and one
# real `tracking-worker` process per Deployment replica (the test plays the kubelet); then a
# scale-in under load (SCALE_IN messages, default BURST; 0 skips it), replicas forced 4 -> 1.
# Prints figures next to Lambda's documented SQS scaling; asserts the scale-in proof when the
# data path is on the emulators. Runs against testenv's kube-apiserver and moto (`make tools`
# first). Worker stderr: $TMPDIR/bench-autoscale-workers.log
#
# The data path (the pipeline's queue, DLQ and table, the workers, the autoscaler's
# GetQueueAttributes) runs on ElasticMQ + DynamoDB Local (bench/emulators.sh, as
# bench/worker/run.sh) on BENCH_SQS_PORT / BENCH_DDB_PORT; the controller provisions on moto.
# BENCH_MOTO_ONLY=1 runs everything on moto (a few messages a second: keep BURST small).
# Workers: release build (BENCH_WORKER=path runs another binary).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export BURST="${BURST:-20000}"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
. "$ROOT/bench/emulators.sh"

if [ -z "${BENCH_WORKER:-}" ]; then
  echo "bench: building the release worker" >&2
  cargo build --quiet --release -p tracking-worker --bin tracking-worker
fi
export TRACKING_WORKER_BIN="${BENCH_WORKER:-$ROOT/target/release/tracking-worker}"

if [ -z "${BENCH_MOTO_ONLY:-}" ]; then
  if ! emulators_available; then
    echo "bench: ElasticMQ/DynamoDB Local unavailable (java, mvn); BENCH_MOTO_ONLY=1 runs on moto" >&2
    exit 1
  fi
  SQS_PORT="${BENCH_SQS_PORT:-19324}"
  DDB_PORT="${BENCH_DDB_PORT:-18000}"
  start_elasticmq "$SQS_PORT"
  start_dynamodb "$DDB_PORT"
  export BENCH_SQS_ENDPOINT="http://127.0.0.1:$SQS_PORT"
  export BENCH_DYNAMODB_ENDPOINT="http://127.0.0.1:$DDB_PORT"
fi

# Not exec: the trap stops the emulators when the bench ends.
cargo test --workspace --test autoscale_bench -- --ignored --nocapture --test-threads=1 "$@"
