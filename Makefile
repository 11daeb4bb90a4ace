# probity — developer entry points. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
CONTROL_PLANE := hack/control-plane.sh
K8S_BIN_DIR := $(shell $(CONTROL_PLANE) dir)

# End-to-end tests fail, rather than skip, when the control plane is missing.
export PROBITY_E2E := require
export PROBITY_K8S_BIN_DIR := $(K8S_BIN_DIR)

.PHONY: help test fmt-check clippy unit-and-e2e control-plane demo clean-control-plane

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

test: control-plane fmt-check clippy unit-and-e2e ## Everything CI runs: fmt, clippy, unit + e2e tests
	@echo "make test: all checks passed"

fmt-check: ## rustfmt check
	$(CARGO) fmt --all -- --check

clippy: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit-and-e2e: ## Unit, doc and end-to-end tests against the real control plane
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked

control-plane: ## Build kube-apiserver, kubectl, helm and fetch etcd into the cache (once)
	@$(CONTROL_PLANE) build

demo: control-plane ## Start a local control plane and print how to use it (Ctrl-C stops it)
	$(CARGO) run --quiet --locked -p probity-testenv -- up --kubeconfig $(CURDIR)/target/demo.kubeconfig

clean-control-plane: ## Remove this version's cached binaries
	@$(CONTROL_PLANE) clean
