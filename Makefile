# probity — developer entry points. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
CONTROL_PLANE := hack/control-plane.sh
K8S_BIN_DIR := $(shell $(CONTROL_PLANE) dir)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

# End-to-end tests fail, rather than skip, when the control plane is missing.
export PROBITY_E2E := require
export PROBITY_K8S_BIN_DIR := $(K8S_BIN_DIR)
export PROBITY_REGISTRY_BIN := $(shell hack/registry.sh path)

.PHONY: registry help test fmt-check clippy unit-and-e2e fuzz-smoke fuzz bench-lint bench-probe lab-cascade bench-operator bench-admission control-plane demo up clean-control-plane

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

test: control-plane registry fmt-check clippy unit-and-e2e fuzz-smoke demo ## Everything CI runs: fmt, clippy, unit + e2e tests, a short fuzz run, the demo
	@echo "make test: all checks passed"

fmt-check: ## rustfmt check
	$(CARGO) fmt --all -- --check

clippy: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy -p probity-probe --all-targets --all-features --locked -- -D warnings

unit-and-e2e: ## Unit, doc and end-to-end tests against the real control plane
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked
	$(CARGO) test -p probity-probe --all-targets --all-features --locked

FUZZ_SECONDS ?= 300
TOOLS_DIR := $(or $(PROBITY_CACHE_DIR),$(HOME)/.cache/probity)/tools
KUBE_SCORE_VERSION := v1.20.0

fuzz-smoke: ## Fuzz the reference parser and manifest reader, 20 s each
	@hack/fuzz.sh 20

fuzz: ## Fuzz each target for FUZZ_SECONDS (default 300)
	@hack/fuzz.sh $(FUZZ_SECONDS)

bench-lint: ## Lint throughput and peak memory against kube-score (installed with go install)
	@test -x $(TOOLS_DIR)/bin/kube-score || { echo "[bench] go install kube-score@$(KUBE_SCORE_VERSION)"; \
	  GOBIN=$(TOOLS_DIR)/bin go install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION); }
	@test -x $(TOOLS_DIR)/bin/kube-linter || GOBIN=$(TOOLS_DIR)/bin go install golang.stackrox.io/kube-linter/cmd/kube-linter@v0.7.6 \
	  || echo "[bench] kube-linter could not be installed; benchmarking without it"
	PROBITY_BENCH_TOOLS=$(TOOLS_DIR)/bin $(CARGO) bench --locked --bench lint_throughput

bench-probe: ## Breaker vs recloser and failsafe, bulkhead vs tokio Semaphore (criterion)
	$(CARGO) bench --locked -p probity-probe --bench resilience

bench-operator: control-plane ## Operator convergence time and peak RSS at 1,000 and 10,000 Deployments
	$(CARGO) bench --locked --bench operator_convergence

lab-cascade: ## The cascade lab: a dependency slows to 8 s under four configurations, plus a retry storm (~10 min; writes docs/cascade/)
	$(CARGO) bench --locked -p probity-probe --features chaos --bench cascade

registry: ## Fetch Debian's docker-registry into the cache (once), the OCI registry tests run
	@hack/registry.sh install

bench-admission: control-plane ## Admission: in-process µs per review, and create latency through the API server with and without the webhook
	$(CARGO) bench --locked --bench admission

control-plane: ## Build kube-apiserver, kubectl, helm and fetch etcd into the cache (once)
	@$(CONTROL_PLANE) build

demo: control-plane ## The narrated tour: operator, webhooks, policies, drift, probes (under a minute)
	@echo "[demo] building probity, the orders example and the tour"
	$(CARGO) build --locked -p probity --bin probity
	$(CARGO) build --locked -p probity-probe --example orders
	$(CARGO) build --locked -p probity-testenv
	$(CARGO) run --quiet --locked -p probity-testenv -- demo \
	  --probity $(TARGET_DIR)/debug/probity --orders $(TARGET_DIR)/debug/examples/orders --crds crds/crds.yaml

up: control-plane ## Start a local control plane and print how to use it (Ctrl-C stops it)
	$(CARGO) run --quiet --locked -p probity-testenv -- up --kubeconfig $(CURDIR)/target/demo.kubeconfig

clean-control-plane: ## Remove this version's cached binaries
	@$(CONTROL_PLANE) clean
