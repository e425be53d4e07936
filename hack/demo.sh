#!/usr/bin/env bash
# `make demo`: the whole product on local defaults, end to end.
#   1. build; start kube-apiserver + etcd + moto (.local/); install the CRD
#   2. start the operator; apply examples/pipeline.yaml; show conditions until Ready
#   3. start the worker as a local process with the environment of the Deployment the operator
#      created (nothing here runs Pods); send 25,000 tracking updates (duplicates, a few poison)
#   4. wait for the queue to drain and print a summary
# Everything is stopped at the end unless KEEP=1 (then `make env-down` stops it).
# COUNT=25000 changes the number of updates.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
local_dir="$root/.local"
count="${COUNT:-25000}"
ns=logistics
pipeline=parcels

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then
    target/debug/testenv down --dir "$local_dir" >/dev/null 2>&1 || true
  else
    echo "KEEP=1: environment left running; logs in .local/logs; stop with: make env-down"
  fi
  exit $rc
}
trap cleanup EXIT

bold "building (debug)"
cargo build --quiet --workspace --bins

bold "starting kube-apiserver + etcd + moto"
if [[ -f "$local_dir/pids" ]]; then
  echo "reusing the environment in .local (make env-down to reset)"
else
  target/debug/testenv up --dir "$local_dir" --crds crds
fi
# shellcheck disable=SC1091
source "$local_dir/env"
mkdir -p "$local_dir/logs"

bold "starting the operator (logs: .local/logs/operator.log)"
op_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/tracking-operator run \
  --metrics-addr "127.0.0.1:$op_port" --resync-interval 1m --log-format json \
  --worker-image tracking-worker:dev >"$local_dir/logs/operator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$op_port/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fs "http://127.0.0.1:$op_port/readyz" >/dev/null || { echo "operator not ready:"; tail -20 "$local_dir/logs/operator.log"; exit 1; }

bold "kubectl apply -f examples/pipeline.yaml"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" apply -f examples/pipeline.yaml
start=$(date +%s.%N)
last=""
for _ in $(seq 1 240); do
  line=$(kubectl -n "$ns" get tp "$pipeline" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}' 2>/dev/null || true)
  if [[ "$line" != "$last" ]]; then printf '  %6.1fs  %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "${line:-(no status yet)}"; last=$line; fi
  [[ " $line" == *" Ready=True "* ]] && break
  sleep 0.5
done
if [[ "$(kubectl -n "$ns" get tp "$pipeline" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" != True ]]; then
  echo "pipeline did not become Ready:"; kubectl -n "$ns" get tp "$pipeline" -o yaml | sed -n '/^status:/,$p'; exit 1
fi
ready_after=$(echo "$(date +%s.%N) - $start" | bc)
printf 'Ready after %.1f s\n' "$ready_after"

bold "starting the worker locally with the Deployment's configuration (logs: .local/logs/worker.log)"
deploy=$(kubectl -n "$ns" get deploy -l "tracking-operator.io/pipeline=$pipeline" -o jsonpath="{.items[0].metadata.name}")
worker_env=$(kubectl -n "$ns" get deploy "$deploy" -o jsonpath='{range .spec.template.spec.containers[0].env[*]}{.name}={.value}{"\n"}{end}')
echo "$worker_env" | sed 's/^/  /'
w_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The Deployment's settings, except the metrics address: a Pod has its own network, this process does not.
env $(echo "$worker_env" | grep -v '^TRACKING_METRICS_ADDR=' | xargs) TRACKING_METRICS_ADDR="127.0.0.1:$w_port" \
  target/debug/tracking-worker >"$local_dir/logs/worker.log" 2>&1 &
pids+=($!)
queue_url=$(echo "$worker_env" | sed -n 's/^TRACKING_QUEUE_URL=//p')

bold "sending $count tracking updates (5% duplicates, 0.5% poison)"
send_start=$(date +%s.%N)
target/debug/trackctl send --queue-url "$queue_url" --count "$count" --duplicate-percent 5 \
  --poison-percent 0.5 --max-depth "${MAX_DEPTH:-50}" --seed 42 >"$local_dir/sent.json"

bold "waiting for the worker to drain the queue"
"${TRACKING_OPERATOR_CACHE:-$HOME/.cache/tracking-operator}/moto-$(sed -n "s/^MOTO_VERSION=//p" hack/versions.env)/bin/python" hack/demo_report.py \
  --namespace "$ns" --pipeline "$pipeline" --sent "$local_dir/sent.json" \
  --worker-metrics "http://127.0.0.1:$w_port/metrics" --send-start "$send_start" --ready-after "$ready_after"

bold "kubectl get tp -o wide"
kubectl -n "$ns" get tp -o wide
