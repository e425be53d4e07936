#!/usr/bin/env bash
# Operator benchmark: the release-built operator against testenv's kube-apiserver and moto, with
# the fault layer playing AWS's default request quotas. Prints, for one pipeline, apply→Ready and
# the AWS calls to create and per steady resync; for BENCH_PIPELINES (default 1000) pipelines
# applied at once, the time until all are Ready, peak calls/s per service and per quota,
# throttling seen, peak RSS, the calls per pipeline per steady resync (BENCH_RESYNC_SECONDS,
# default 300) and the restart wave (the first BENCH_WAVE_SECONDS, default 300, after a restart).
# 1,000 pipelines take about 45 minutes: CloudWatch's PutMetricAlarm quota (3/s) paces creation.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p tracking-operator --bin tracking-operator
export BENCH_OPERATOR_BIN="$PWD/target/release/tracking-operator"
exec cargo test --workspace --test controller_bench -- --ignored --nocapture --test-threads=1 "$@"
