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
export PROBITY_REDIS_BIN := $(shell hack/redis.sh path)
export PROBITY_PROMTOOL_BIN := $(shell hack/promtool.sh path)

.PHONY: chart-docs binaries registry redis promtool help test fmt-check clippy unit-and-e2e fuzz fuzz-long bench-lint bench-probe lab-cascade bench-operator bench-admission bench-admission-hostile control-plane demo up clean-control-plane

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

# Every cargo step builds the workspace with one feature set (all features,
# dev-dependencies on), so the dependency graph compiles once for tests and
# the demo reuses those binaries.
CARGO_ALL := --workspace --all-features --locked

test: ## Everything CI runs: fmt, clippy, unit + e2e tests (with the fuzz corpora), the demo; each step timed
	@hack/steps.sh control-plane registry redis promtool fmt-check clippy unit-and-e2e demo
	@echo "make test: all checks passed"

fmt-check: ## rustfmt check
	$(CARGO) fmt --all -- --check

clippy: ## clippy on every target, warnings are errors
	$(CARGO) clippy $(CARGO_ALL) --all-targets -- -D warnings

unit-and-e2e: ## Unit, doc and end-to-end tests against the real control plane; replays the fuzz corpora
	@CARGO=$(CARGO) hack/test.sh $(CARGO_ALL)

FUZZ_SECONDS ?= 300
TOOLS_DIR := $(or $(PROBITY_CACHE_DIR),$(HOME)/.cache/probity)/tools
KUBE_SCORE_VERSION := v1.20.0

fuzz: ## Fuzz each target for FUZZ_SECONDS (default 300): libFuzzer, release build with debug assertions
	@hack/fuzz.sh $(FUZZ_SECONDS)

fuzz-long: ## Fuzz each target for an hour on both cores (a nightly job's length)
	@FUZZ_JOBS=2 hack/fuzz.sh 3600

bench-lint: ## Lint throughput and peak memory against kube-score (go install) and kube-linter (when in the tools cache)
	@test -x $(TOOLS_DIR)/bin/kube-score || { echo "[bench] go install kube-score@$(KUBE_SCORE_VERSION)"; \
	  GOBIN=$(TOOLS_DIR)/bin go install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION); }
	@test -x $(TOOLS_DIR)/bin/kube-linter || GOBIN=$(TOOLS_DIR)/bin go install golang.stackrox.io/kube-linter/cmd/kube-linter@v0.7.6 \
	  || echo "[bench] kube-linter could not be installed; put a kube-linter binary in $(TOOLS_DIR)/bin to compare with it"
	PROBITY_BENCH_TOOLS=$(TOOLS_DIR)/bin $(CARGO) bench --locked --bench lint_throughput

bench-probe: ## Breaker vs recloser and failsafe, bulkhead vs tokio Semaphore (criterion)
	$(CARGO) bench --locked -p probity-probe --bench resilience

bench-operator: control-plane ## Operator convergence time and peak RSS at 1,000 and 10,000 Deployments
	$(CARGO) bench --locked --bench operator_convergence

lab-cascade: redis ## The cascade lab: a dependency slows to 8 s under five configurations, a retry storm, and three replicas sharing breakers and a charge queue through Redis (~20 min; writes docs/cascade/)
	$(CARGO) bench --locked -p probity-probe --features chaos,queue --bench cascade

chart-docs: ## Regenerate the values table of charts/probity/README.md from values.yaml's comments
	$(CARGO) run --locked -q -p probity-testenv -- chart-docs

registry: ## Fetch Debian's docker-registry into the cache (once), the OCI registry tests run
	@hack/registry.sh install

promtool: ## Build Prometheus' promtool into the cache (once), which checks the chart's alerting rules
	@hack/promtool.sh install

redis: ## Fetch Debian's redis-server into the cache (once), the Redis the fleet and queue tests run
	@hack/redis.sh install

bench-admission: control-plane ## Admission: in-process µs per review, and create latency through the API server with probity's webhook, a null webhook and none
	$(CARGO) bench --locked --bench admission

bench-admission-hostile: control-plane ## Webhook under hostile load: peak operator RSS, and ordinary reviews answered meanwhile
	$(CARGO) bench --locked --bench admission_hostile

control-plane: ## Build the control plane (kube-apiserver, kubectl, helm, etcd) and the test node (kubelet, controller manager, scheduler, containerd; Debian's runc and CNI plugins) into the cache (once)
	@$(CONTROL_PLANE) node

# The binaries the demo and `make up` run, built with the tests' feature set
# (a no-op after `make unit-and-e2e`).
binaries:
	@echo "[build] probity, probity-testenv and the orders example"
	$(CARGO) build $(CARGO_ALL) --bins --examples

# As root the tour runs on a real node (through hack/isolated.sh), which pulls
# from the local registry; DEMO_NODE=never runs it without one.
DEMO_NODE ?= auto
DEMO_DEPS := control-plane binaries $(if $(filter 0,$(shell id -u)),$(if $(filter never,$(DEMO_NODE)),,registry))

demo: $(DEMO_DEPS) ## The narrated tour: chart, webhooks, policies, drift, probes; on a real node as root (under a minute)
	$(TARGET_DIR)/debug/probity-testenv demo --node $(DEMO_NODE) \
	  --probity $(TARGET_DIR)/debug/probity --orders $(TARGET_DIR)/debug/examples/orders --crds crds/crds.yaml \
	  --chart charts/probity --isolated hack/isolated.sh

up: control-plane binaries ## Start a local control plane and print how to use it (Ctrl-C stops it)
	$(TARGET_DIR)/debug/probity-testenv up --kubeconfig $(CURDIR)/target/demo.kubeconfig

clean-control-plane: ## Remove this version's cached binaries
	@$(CONTROL_PLANE) clean
