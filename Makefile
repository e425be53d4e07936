# One entry point. `make demo` runs the whole thing on local defaults; `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
LOCAL := $(CURDIR)/.local

.PHONY: help tools test fmt-check clippy crds chart-lint images env-up env-down demo bench-worker bench-operator build release

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

tools: ## build/install etcd, kube-apiserver, kube-controller-manager and moto into ~/.cache/tracking-operator
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

images: ## build the container images (needs a Docker engine; none runs on the dev machines)
	docker build -t ghcr.io/tracking-operator/tracking-operator:0.1.0 .
	docker build -f worker/Dockerfile -t ghcr.io/tracking-operator/tracking-worker:0.1.0 .

env-up: tools ## start kube-apiserver + etcd + moto in the background; writes .local/kubeconfig and .local/env
	@$(CARGO) build --quiet -p testenv --bin testenv
	@target/debug/testenv up --dir $(LOCAL) --crds crds
	@echo "next: source .local/env && kubectl get ns"

env-down: ## stop the local environment and remove .local
	@if [ -x target/debug/testenv ]; then target/debug/testenv down --dir $(LOCAL); \
	 else $(CARGO) run --quiet -p testenv --bin testenv -- down --dir $(LOCAL); fi

demo: tools ## build, start everything, provision a pipeline, push 25,000 updates, print a summary
	@hack/demo.sh

bench-worker: tools ## worker throughput/CPU/RSS against fast emulators, with a boto3 baseline
	@bench/worker/run.sh

bench-operator: tools ## apply->Ready time, AWS calls per pipeline, 200 pipelines at once
	@bench/operator/run.sh
