#!/usr/bin/env bash
# Soak benchmark (not a test): 100,000 messages, two release-built workers, one SIGKILLed every
# 10 s, lost answers, an outage and throttling of DynamoDB through the fault layer; checks that
# every update is stored exactly once and only poison reaches the DLQ. See README.md.
# Backends: ElasticMQ and DynamoDB Local (as bench/worker/run.sh starts them), moto for
# CloudWatch, on this benchmark's own ports (override with SOAK_SQS_PORT, SOAK_DDB_PORT,
# SOAK_MOTO_PORT). SOAK_DISTINCT (90,090 -> 100,000 messages), SOAK_SEND_RATE (1,000/s) and
# SOAK_LIMIT_SECONDS (1,200) shape the run; BENCH_NO_BUILD=1 skips the release build.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SQS_PORT="${SOAK_SQS_PORT:-39324}"
DDB_PORT="${SOAK_DDB_PORT:-38000}"
MOTO_PORT="${SOAK_MOTO_PORT:-35000}"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# shellcheck source=../emulators.sh
. "$ROOT/bench/emulators.sh"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  echo "soak: building the release worker" >&2
  (cd "$ROOT" && cargo build --release -p tracking-worker --bin tracking-worker >&2)
fi
# The driver is a test binary (debug build): it talks to the backends and reads results back.
(cd "$ROOT" && cargo test --no-run --workspace --test soak >&2)

emulators_available || { echo "soak: needs java and mvn for ElasticMQ and DynamoDB Local" >&2; exit 1; }
start_moto "$MOTO_PORT"
start_elasticmq "$SQS_PORT"
start_dynamodb "$DDB_PORT"

export SOAK_WORKER="${BENCH_WORKER:-$ROOT/target/release/tracking-worker}"
export SOAK_SQS_ENDPOINT="http://127.0.0.1:$SQS_PORT"
export SOAK_DYNAMODB_ENDPOINT="http://127.0.0.1:$DDB_PORT"
export SOAK_CLOUDWATCH_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export SOAK_LOG_DIR="${SOAK_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")}"
mkdir -p "$SOAK_LOG_DIR"
echo "soak: worker logs in $SOAK_LOG_DIR" >&2
cd "$ROOT"
cargo test -q --workspace --test soak -- --ignored --nocapture
