# Stronghold Operator — two commands on a fresh Debian 12 machine (as root):
#   make demo   local cluster + services + operator + examples, then `kubectl get stronghold`
#   make test   install, start and test everything (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TESTBED := $(BIN)/stronghold-testbed
export KUBECONFIG ?= $(or $(STRONGHOLD_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/stronghold)/admin.kubeconfig

.PHONY: help venv tools lint unit integration test cluster services demo demo-down down audit bench image lock clean

help:
	@echo "make demo | make test | make lint | make unit | make integration | make cluster | make down | make audit | make bench"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

# The operator and its dev-only testbed (testbed/: cluster, services, demo, image builds).
$(VENV)/.installed: pyproject.toml testbed/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]' -e ./testbed
	touch $@

venv: $(VENV)/.installed

# Debian tools the checks run: shellcheck lints the backup Job's program; lua5.1 (Argo CD's
# dialect) and lua5.4 run the Argo CD health scripts in manifests/gitops/ (unit tests);
# prometheus (with promtool) and chromium: the capacity report's integration tests.
TOOLS := shellcheck lua5.1 lua5.4 prometheus chromium
tools:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || { \
	    apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; fi

lint: venv tools
	shellcheck operator/stronghold_operator/builders/jobs/*.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv tools
	$(BIN)/pytest tests/unit -q

# Services first (PostgreSQL, RabbitMQ, Memcached, Docker), then the cluster.
services: venv
	$(TESTBED) services up

cluster: services
	$(TESTBED) cluster up

# Test files that cannot interfere run side by side, one file per worker (most of an e2e test
# is waiting for intervals); the `serial` ones run afterwards with the machine to themselves.
WORKERS ?= 3
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

integration: cluster tools
	$(PYTEST) tests/integration -m "not serial" -n $(WORKERS) --dist loadfile
	$(PYTEST) tests/integration -m serial

test: lint cluster
	$(PYTEST) tests -m "not serial" -n $(WORKERS) --dist loadfile
	$(PYTEST) tests -m serial

demo: cluster
	$(TESTBED) demo up

demo-down: venv
	$(TESTBED) demo down

down: venv
	-$(TESTBED) demo down
	$(TESTBED) cluster down
	$(TESTBED) services down

# Regenerate the pinned runtime dependencies of the image from pyproject.toml.
lock: venv
	rm -rf build/lockvenv && $(PYTHON) -m venv build/lockvenv
	build/lockvenv/bin/pip install -q .
	{ echo "# Pinned runtime dependencies of the operator image (pip install -c requirements.lock)."; \
	  echo "# Regenerate: make lock"; build/lockvenv/bin/pip freeze --exclude stronghold-operator; } > requirements.lock

# Known vulnerabilities in the pinned dependencies (needs PyPI's JSON API).
audit: venv
	$(BIN)/pip install -q pip-audit
	$(BIN)/pip-audit -r requirements.lock --progress-spinner off

# The operator image, built offline (wheels from the host, base image from Debian packages).
image: cluster
	$(TESTBED) image

bench: cluster
	$(BIN)/python -m benchmarks

clean: down
	rm -rf $(VENV)
