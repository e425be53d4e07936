#!/usr/bin/env bash
# Worker benchmark (not a test): 25,000 updates (5% duplicates, 0.5% poison) drained by the
# release-built worker and by a Python/boto3 baseline following the original Lambda, against
# ElasticMQ (SQS) and DynamoDB Local from Maven Central, with moto for CloudWatch (the worker
# publishes its alarm metrics there) and as the endpoint of any other service: every AWS call
# stays on loopback. Falls back to moto for everything when the emulators cannot be had (with a
# shallow queue: moto slows sharply with depth).
# Usage: bench/worker/run.sh [bench.py options: --count N, --concurrency N, --batch-size N,
#        --window S, --write-mode put|transaction, --skip-baseline]
# BENCH_NO_BUILD=1 skips the release build; BENCH_WORKER=path runs another worker binary.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/worker"
SQS_PORT="${BENCH_SQS_PORT:-19324}"
DDB_PORT="${BENCH_DDB_PORT:-18000}"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# bench_fetch, bench_wait_port, bench_start_elasticmq, bench_start_dynamodb; $BENCH_CACHE.
. "$ROOT/bench/lib/emulators.sh"
CACHE="$BENCH_CACHE"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "bench: building release binaries" >&2
  (cd "$ROOT" && cargo build --release -p tracking-worker --bins >&2)
fi
WORKER="${BENCH_WORKER:-$ROOT/target/release/tracking-worker}"
TRACKCTL="$ROOT/target/release/trackctl"

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
# No instance-metadata lookups (169.254.169.254 is not this machine).
export AWS_EC2_METADATA_DISABLED=true

# moto on loopback for CloudWatch (the worker publishes its alarm metrics every minute and at
# exit). Every service the worker, trackctl and the baseline call (SQS, DynamoDB, CloudWatch)
# gets a loopback endpoint; bench.py refuses to run otherwise. Not AWS_ENDPOINT_URL next to the
# per-service ones: the worker takes it as an explicit endpoint for every client.
MOTO_BIN="$(ls -d "${XDG_CACHE_HOME:-$HOME/.cache}"/tracking-operator/moto-*/bin/moto_server 2>/dev/null | tail -1)"
MOTO_BIN="${MOTO_BIN:-moto_server}"
MOTO_PORT="${BENCH_MOTO_PORT:-15000}"
"$MOTO_BIN" -H 127.0.0.1 -p "$MOTO_PORT" >"$CACHE/moto.log" 2>&1 & PIDS+=($!)
bench_wait_port "$MOTO_PORT" moto
export AWS_ENDPOINT_URL_CLOUDWATCH="http://127.0.0.1:$MOTO_PORT"

if bench_emulators_available; then
  bench_start_elasticmq "$SQS_PORT"
  bench_start_dynamodb "$DDB_PORT"
  export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$SQS_PORT" AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT"
  BACKEND="ElasticMQ (SQS) + DynamoDB Local 3.1.0 (in memory), from Maven Central, moto (CloudWatch), all on loopback"
else
  echo "bench: ElasticMQ/DynamoDB Local unavailable; falling back to moto (shallow queue)" >&2
  export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  BACKEND="moto on loopback (fallback; its SQS slows with depth, so throughput is moto's, not the worker's)"
  set -- --count 2000 --shallow "$@"
fi

env | grep '^AWS_ENDPOINT_URL' | sort >&2
python3 "$HERE/bench.py" --worker "$WORKER" --trackctl "$TRACKCTL" --backend "$BACKEND" "$@"
