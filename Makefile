# fnrelay: `make demo` and `make test` on a fresh Debian machine (as root: installs
# rabbitmq-server with apt when it is missing). Without root, see README.md.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fnrelay-installed
LOCAL_DIR ?= .fnrelay-local
RABBITMQ_SERVER ?= /usr/lib/rabbitmq/bin/rabbitmq-server

.PHONY: all venv demo-venv gc-venv deps test-deps demo test lint bench clean screenshots

all: test

# Each venv target first checks that $(PYTHON) can make one, and says what to do if not.
CAN_MAKE_VENV = $(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "error: $(PYTHON) cannot create a venv (no ensurepip); run 'make deps' as root" \
	       "or install the python3-venv package" >&2; exit 1; }

# The project and its test tools in $(VENV); redone only when pyproject.toml changes.
venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(CAN_MAKE_VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# What the demo needs alone (broker and endpoint, no test tools): half the install time of
# $(STAMP), so a fresh machine prints its first result well within a minute. A venv made for
# the tests already holds all of it; `make test` after `make demo` adds the test tools.
DEMO_STAMP := $(VENV)/.fnrelay-demo-installed

demo-venv: $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	@$(CAN_MAKE_VENV)
	@if [ ! -e $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet -e '.[all]'; fi
	touch $@

# The official Globus Compute SDK, unmodified from PyPI, in a venv of its own: its dill==0.3.9
# pin must not change $(VENV)'s dill. fnrelay's SDK and endpoint are installed there too (an
# endpoint may run from it when tasks come in GC's serialization formats). The SDK's version
# range is the `globus-compute` extra in pyproject.toml; tests/gc runs its tutorial with it.
# Its wheelhouse (globus-compute-endpoint and dependencies, at the venv's versions) is the
# only package index of the user endpoints tests/gc starts with GC's default template.
GC_VENV ?= .venv-gc
GC_STAMP := $(GC_VENV)/.fnrelay-installed

gc-venv: $(GC_STAMP)

$(GC_STAMP): pyproject.toml
	@$(CAN_MAKE_VENV)
	$(PYTHON) -m venv $(GC_VENV)
	$(GC_VENV)/bin/pip install --quiet -e '.[endpoint,globus-compute]'
	scripts/gc-wheelhouse.sh $(GC_VENV) $(GC_VENV)/wheelhouse
	touch $@

# System packages, with apt when root; otherwise say what to do. The demo needs RabbitMQ;
# the test suite also runs a real one-node Slurm (slurm-wlm, munge), a one-host Son of Grid
# Engine (gridengine-*), OpenMPI and PostgreSQL, and drives the dashboard in Debian's Chromium.
DEMO_PKGS := rabbitmq-server:rabbitmq-server python3-venv
TEST_PKGS := $(DEMO_PKGS) slurm-wlm:slurmctld munge:munged openmpi-bin:mpiexec postgresql:pg_ctlcluster \
	gridengine-master:sge_qmaster gridengine-exec:sge_execd gridengine-client:qconf \
	chromium:chromium systemd:systemd-analyze

deps:
	@scripts/ensure-packages.sh $(DEMO_PKGS)

test-deps:
	@scripts/ensure-packages.sh $(TEST_PKGS)

# Start the local stack, run the example against it, and always stop the stack again.
demo: deps demo-venv
	@set -euo pipefail; \
	trap '$(BIN)/fnrelay local down --dir $(LOCAL_DIR)' EXIT; \
	exports="$$($(BIN)/fnrelay local up --dir $(LOCAL_DIR))"; \
	eval "$$exports"; \
	$(BIN)/python examples/demo.py

# Two pytest-xdist workers, a module each at a time (tests/support/workers.py): the suite mostly
# waits on servers and schedulers, so two take about half the time on two cores.
TEST_WORKERS ?= 2

test: test-deps venv gc-venv lint
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile tests/

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: deps venv
	$(BIN)/python -m benchmarks

# The dashboard's main pages as docs/dashboard-*.png (shown in docs/dashboard.md): the browser
# test run with real tasks, saving what it sees. Not part of `make test`.
screenshots: test-deps venv
	FNRELAY_DASHBOARD_SHOTS=$(CURDIR)/docs $(BIN)/python -m pytest -q tests/dashboard

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
