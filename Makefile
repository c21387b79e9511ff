# Tether — project tasks. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
STAMP       := $(VENV)/.installed
SOURCES     := operator/tether_operator worker_runtime tether_types tests bench examples scripts

.PHONY: help venv demo test lint format typecheck contracts unit e2e e2e-postgres e2e-kind bench bench-ui bench-memory bench-cluster chaos fuzz openapi crds \
	helm-lint clean cluster-up cluster-down image

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make TARGET\n\nTargets:\n"} \
		/^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-11s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## Create .venv and install tether with its dev extras (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: venv ## Start dev mode, run the ML example, then crash a session's worker mid-run
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/demo.sh

# The e2e modules run again with the chart's embedded Postgres as the history store.
POSTGRES_TIER_E2E := tests/e2e/test_sessions_k8s.py tests/e2e/test_examples_k8s.py \
	tests/e2e/test_leader_k8s.py tests/e2e/test_runs_k8s.py tests/e2e/test_postgres_chart_k8s.py

test: venv lint typecheck contracts ## Lint, typecheck, import contracts and the test suite (both store tiers)
	VENV_BIN=$(BIN) scripts/test-suite.sh $(POSTGRES_TIER_E2E)

unit: venv ## Only the fast tests (no real worker processes)
	$(BIN)/pytest -m 'not slow and not e2e'

e2e: venv ## Only the end-to-end tests (KUBECONFIG's cluster, else kind via hack/kind-up)
	$(BIN)/pytest -m e2e

e2e-postgres: venv ## The e2e modules of sessions, examples, runs and operator kills on the Postgres tier
	TETHER_E2E_STORE=postgres $(BIN)/pytest -m e2e $(POSTGRES_TIER_E2E)

e2e-kind: venv ## The e2e suite, both store tiers, on kind (hack/kind-up; offline it needs root)
	hack/kind-up >/dev/null
	eval "$$(hack/kind-up env)" && $(BIN)/pytest -m e2e \
		&& TETHER_E2E_STORE=postgres $(BIN)/pytest -m e2e $(POSTGRES_TIER_E2E)

cluster-up: ## Create the kind cluster the e2e tests use (hack/kind-up; offline: root)
	hack/kind-up

cluster-down: ## Delete the kind cluster, its network, dockerd and state
	hack/kind-up --delete

image: ## Build the tether:dev image from the Dockerfile (offline)
	hack/build-image

SHELL_SCRIPTS := hack/lib/*.sh hack/build-image hack/install-deps hack/kind-up hack/local-pv \
	hack/kind/node/rootfs/kind/bin/tether-cni \
	hack/images/*.sh .ci/run scripts/*.sh

lint: venv helm-lint ## ruff check + ruff format --check + shellcheck + helm lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@command -v shellcheck >/dev/null || { echo "lint: install shellcheck (apt)" >&2; exit 1; }
	shellcheck -x -S warning $(SHELL_SCRIPTS)

format: venv ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv ## mypy --strict over tether_operator and worker_runtime
	$(BIN)/mypy

contracts: venv ## Import-layer contracts (lint-imports)
	$(BIN)/lint-imports

bench: venv ## Benchmarks; results land in bench/results/*.json
	mkdir -p bench/results
	$(PY) -m bench.run

bench-ui: venv ## The run page with a 1,000-activity run: view size, 200/304 cost, draw time (bench/results/ui.md)
	$(PY) -m bench.ui

bench-memory: venv ## Operator memory over 100,000 finished runs (bench/results/finished-runs.*)
	$(PY) -m bench.finished_runs --label current

chaos: venv ## Full chaos on the kind cluster (200 runs; figures in bench/results/chaos.md)
	TETHER_CHAOS=full TETHER_CHAOS_REPORT=bench/results/chaos.md \
		$(BIN)/pytest -s -p no:cacheprovider tests/e2e/test_chaos_k8s.py

fuzz: venv ## Long HTTP fuzz of the scheduler API (figures in bench/results/fuzz.md)
	TETHER_FUZZ_EXAMPLES=3500 TETHER_FUZZ_REPORT=bench/results/fuzz.md \
		$(BIN)/pytest -p no:cacheprovider tests/integration/test_api_fuzz.py

bench-cluster: venv ## Cluster benchmarks (KUBECONFIG's cluster, chart installed by Helm)
	mkdir -p bench/results
	$(PY) -m bench.cluster

openapi: venv ## Regenerate docs/openapi.json from the scheduler app
	$(PY) -m tether_operator.scheduler.openapi > docs/openapi.json.tmp
	mv docs/openapi.json.tmp docs/openapi.json

CHART       := charts/tether

crds: venv ## Generate crds/*.yaml from the pydantic models, and the Helm chart's copy
	$(PY) -m tether_operator.k8s.resources.crdgen crds
	rm -f $(CHART)/files/crds/*.yaml
	cp crds/*.yaml $(CHART)/files/crds/

helm-lint: ## helm lint --strict and helm template of the chart (helm: see hack/kind-up env)
	@command -v helm >/dev/null || { echo "helm-lint: helm is not on PATH: eval \"\$$(hack/kind-up env)\"" >&2; exit 1; }
	helm lint --strict $(CHART)
	helm template tether $(CHART) --namespace tether-system >/dev/null

clean: ## Remove caches and build output (keeps .venv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis dist build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
