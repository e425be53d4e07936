# One entry point. `make demo` runs the whole thing on local defaults; `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
LOCAL := $(CURDIR)/.local
# `make env-up` starts a node (kubelet + containerd) so Pods run; NODE=0 skips it.
NODE ?= 1
IMAGE_TAG ?= dev

.PHONY: help tools test fmt-check clippy crds chart-lint images docker-images env-up env-down demo bench-worker bench-worker-soak bench-operator bench-autoscale build release

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

tools: ## build/install etcd, kube-apiserver, kube-controller-manager, the node (kubelet, containerd...) and moto
	@hack/tools.sh all

test: tools ## every check: fmt, clippy, unit + integration tests (real kube-apiserver and moto)
	@hack/test.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## debug build of every binary
	$(CARGO) build --workspace --bins

release: ## release build of the operator and the worker (what the Dockerfiles copy)
	$(CARGO) build --release -p tracking-operator -p tracking-worker --bins

crds: ## regenerate crds/ from the Rust types, and the chart's copy of them
	$(CARGO) run --quiet --bin tracking-operator -- crd > crds/tracking-operator.io_trackingpipelines.yaml
	hack/chart-crds.sh

chart-lint: ## helm lint --strict the chart
	$$(hack/install-helm.sh) lint --strict charts/tracking-operator

images: release ## OCI images of the release binaries, without Docker (.local/images/*.tar); imported into a running node
	@mkdir -p $(LOCAL)/images
	@for img in tracking-operator tracking-worker; do \
	  hack/mkimage.py $$img target/release/$$img $(LOCAL)/images/$$img.tar --ref localhost/$$img:$(IMAGE_TAG) || exit 1; \
	  if [ -S $(LOCAL)/node/containerd/containerd.sock ]; then \
	    ctr -a $(LOCAL)/node/containerd/containerd.sock -n k8s.io images import $(LOCAL)/images/$$img.tar >/dev/null && echo "imported localhost/$$img:$(IMAGE_TAG) into the node"; \
	  fi; \
	done

docker-images: ## the same images with a Docker engine, for a registry (Dockerfile, worker/Dockerfile)
	docker build -t ghcr.io/tracking-operator/tracking-operator:0.1.0 .
	docker build -f worker/Dockerfile -t ghcr.io/tracking-operator/tracking-worker:0.1.0 .

env-up: tools ## start kube-apiserver + etcd + moto (+ a node unless NODE=0) in the background; writes .local/kubeconfig and .local/env
	@$(CARGO) build --quiet -p testenv --bin testenv
	@target/debug/testenv up --dir $(LOCAL) --crds crds $(if $(filter 1,$(NODE)),--node)
	@echo "next: source .local/env && kubectl get ns"

env-down: ## stop the local environment and remove .local
	@if [ -x target/debug/testenv ]; then target/debug/testenv down --dir $(LOCAL); \
	 else $(CARGO) run --quiet -p testenv --bin testenv -- down --dir $(LOCAL); fi

demo: tools ## build, start everything, provision a pipeline, push 5,000 updates (COUNT=N), print a summary
	@hack/demo.sh

bench-worker: tools ## worker throughput/CPU/RSS against fast emulators, with a boto3 baseline
	@bench/worker/run.sh

bench-worker-soak: tools ## 100,000 messages, 2 workers, SIGKILLs, DynamoDB outage/throttling/lost answers: exactly once, poison only in the DLQ
	@bench/soak/run.sh

bench-operator: tools ## 1,000 pipelines under AWS's quotas: time to Ready, calls/s per service, RSS, steady resync, restart wave (BENCH_PIPELINES=N)
	@bench/operator/run.sh

bench-autoscale: tools ## a 20,000-message burst scales the worker up and back to zero (vs Lambda); scale-in 4->1 under load, proof asserted. Data path on ElasticMQ + DynamoDB Local. BURST=N SCALE_IN=N
	@bench/autoscale/run.sh
