#!/usr/bin/env bash
# `make demo`: the whole product on local defaults, end to end, on Pods.
#   1. build; start kube-apiserver + etcd + moto + a node (kubelet, containerd) in .local/
#   2. assemble the operator and worker images from the build (no Docker) and import them
#   3. helm install the chart; the operator Pod reconciles examples/pipeline.yaml to Ready
#   4. the worker Deployment's Pods consume 5,000 tracking updates (duplicates, a few poison)
#   5. wait for the queue to drain; print a summary, the Pods and the operator's Events
# Everything is stopped at the end unless KEEP=1 (then `make env-down` stops it).
# COUNT=N changes the number of updates: COUNT=25000 is a whole day of the original stack (about
# 10 minutes on moto, which is the bottleneck); the default, a fifth of it, keeps the demo within 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
local_dir="$root/.local"
count="${COUNT:-5000}"
ns=logistics
pipeline=parcels
tag=demo
t0=$(date +%s)

phase() { printf '\n\033[1m== [%4ss] %s\033[0m\n' "$(( $(date +%s) - t0 ))" "$*"; }
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && -d "$local_dir" ]]; then
    echo "demo failed; operator log (last lines):"
    kubectl -n tracking-operator logs deploy/tracking-operator --tail=20 2>/dev/null || true
  fi
  if [[ "${KEEP:-0}" != 1 ]]; then
    target/debug/testenv down --dir "$local_dir" >/dev/null 2>&1 || true
  else
    echo "KEEP=1: environment left running (source .local/env; kubectl get pods -A); stop with: make env-down"
  fi
  exit $rc
}
trap cleanup EXIT

phase "building (debug)"
cargo build --quiet --workspace --bins

phase "starting kube-apiserver + etcd + moto + a node (kubelet, containerd)"
if [[ -f "$local_dir/pids" ]]; then
  echo "reusing the environment in .local (make env-down to reset)"
else
  target/debug/testenv up --dir "$local_dir" --node
fi
# shellcheck disable=SC1091
source "$local_dir/env"
[[ -S "$local_dir/node/containerd/containerd.sock" ]] || { echo "the environment in .local has no node: make env-down, then make demo"; exit 1; }

phase "images from the build, imported into the node (no Docker, no registry)"
mkdir -p "$local_dir/images"
for img in tracking-operator tracking-worker; do
  hack/mkimage.py "$img" "target/debug/$img" "$local_dir/images/$img.tar" --ref "localhost/$img:$tag"
  ctr -a "$local_dir/node/containerd/containerd.sock" -n k8s.io images import "$local_dir/images/$img.tar" >/dev/null
done

phase "helm install tracking-operator charts/tracking-operator"
helm=$(hack/install-helm.sh)
# The chart installs the CRD, unless one was applied by hand (make env-up) that helm cannot adopt.
crds=true
if kubectl get crd trackingpipelines.tracking-operator.io >/dev/null 2>&1 &&
   [[ -z "$(kubectl get crd trackingpipelines.tracking-operator.io -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" ]]; then
  crds=false
fi
"$helm" upgrade --install tracking-operator charts/tracking-operator \
  --set crds.enabled=$crds \
  --namespace tracking-operator --create-namespace --wait --timeout 3m \
  --set image.repository=localhost/tracking-operator,image.tag=$tag,image.pullPolicy=Never \
  --set operator.workerImage.repository=localhost/tracking-worker,operator.workerImage.tag=$tag \
  --set "operator.region=$AWS_REGION,operator.awsEndpointUrl=$AWS_ENDPOINT_URL" \
  --set operator.workerCredentialsSecret=aws-credentials,operator.resyncInterval=1m \
  --set-json 'operator.extraEnv=[{"name":"AWS_ACCESS_KEY_ID","value":"testing"},{"name":"AWS_SECRET_ACCESS_KEY","value":"testing"}]'
kubectl -n tracking-operator get pods -o wide

phase "kubectl apply -f examples/pipeline.yaml"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Off EKS the workers take static credentials from this Secret (moto accepts any).
kubectl -n "$ns" create secret generic aws-credentials --from-literal=AWS_ACCESS_KEY_ID=testing \
  --from-literal=AWS_SECRET_ACCESS_KEY=testing --dry-run=client -o yaml | kubectl apply -f - >/dev/null
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

phase "the worker Deployment's Pods"
deploy=$(kubectl -n "$ns" get deploy -l "tracking-operator.io/pipeline=$pipeline" -o jsonpath="{.items[0].metadata.name}")
kubectl -n "$ns" rollout status "deploy/$deploy" --timeout=3m
kubectl -n "$ns" get pods -o wide
queue_url=$(kubectl -n "$ns" get tp "$pipeline" -o jsonpath='{.status.outputs.queueUrl}')
metrics_args=()
for ip in $(kubectl -n "$ns" get pods -l app.kubernetes.io/name=tracking-worker -o jsonpath='{.items[*].status.podIP}'); do
  metrics_args+=(--worker-metrics "http://$ip:9090/metrics")
done

phase "sending $count tracking updates (5% duplicates, 0.5% poison)"
send_start=$(date +%s.%N)
target/debug/trackctl send --queue-url "$queue_url" --count "$count" --duplicate-percent 5 \
  --poison-percent 0.5 --max-depth "${MAX_DEPTH:-50}" --seed 42 >"$local_dir/sent.json" &
sender=$!

echo "the worker Pods drain the queue while it is filled (sampled every 2 s for the chart):"
"${TRACKING_OPERATOR_CACHE:-$HOME/.cache/tracking-operator}/moto-$(sed -n "s/^MOTO_VERSION=//p" hack/versions.env)/bin/python" hack/demo_report.py \
  --namespace "$ns" --pipeline "$pipeline" --sent "$local_dir/sent.json" \
  "${metrics_args[@]}" --send-start "$send_start" --ready-after "$ready_after" \
  --samples "$local_dir/demo-samples.json" --sender-pid "$sender"
wait "$sender" || { echo "the sender failed"; exit 1; }

phase "the picture: throughput, backlog and end-to-end latency over the run"
if plot_python=$(hack/tools.sh plot) && "$plot_python" hack/demo_chart.py \
    "$local_dir/demo-samples.json" "$local_dir/demo-chart.png"; then
  echo "chart: $local_dir/demo-chart.png"
else
  echo "warning: no chart (matplotlib could not be installed or run); the numbers above stand"
fi

phase "kubectl get tp,pods -o wide"
kubectl -n "$ns" get tp -o wide
kubectl get pods -A -o wide

phase "the operator's Events"
kubectl -n "$ns" get events --field-selector "involvedObject.kind=TrackingPipeline" \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | head -40
phase "done in $(( $(date +%s) - t0 )) s"
