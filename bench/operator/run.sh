#!/usr/bin/env bash
# Operator benchmark: prints seconds apply→Ready for one pipeline, AWS calls to create and
# per steady-state resync, and for BENCH_PIPELINES (default 200) pipelines applied at once the
# time until all are Ready and the operator's peak RSS. Runs the real operator binary against
# testenv's kube-apiserver and moto (`make tools` first).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test --test controller_bench -- --ignored --nocapture --test-threads=1 "$@"
