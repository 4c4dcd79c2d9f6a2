# Two commands set up a fresh machine: `make demo` (a local Prefect host, no cloud) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
SYSDEPS := .cache/.sysdeps
CONFIG ?= examples/stack-aws.yaml

.PHONY: test test-fast plan demo demo-down bench sysdeps venv

# The venv is rebuilt from the pinned requirements whenever they change (or it is missing).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v uv >/dev/null || python3 -m pip install -q "uv==$(UV_VERSION)"
	@test -x $(PY) || uv venv -q --python python3 $(VENV)
	uv pip install -q --python $(PY) -r requirements.txt -r requirements-dev.txt -e .
	@touch $@

venv: $(STAMP)

$(SYSDEPS): scripts/install-system-deps.sh
	@mkdir -p $(dir $@)
	bash scripts/install-system-deps.sh
	@touch $@

sysdeps: $(SYSDEPS)

test: $(STAMP) $(SYSDEPS)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e"

plan: $(STAMP)
	$(PY) scripts/plan.py $(CONFIG)

# A Prefect host on this machine (a local Debian guest, a local S3 server), bootstrapped and running a
# scheduled flow; it keeps running until `make demo-down`. State in .demo/.
demo: $(STAMP) $(SYSDEPS)
	$(PY) scripts/demo.py up

demo-down: $(STAMP)
	$(PY) scripts/demo.py down

# Our bootstrap against the tutorial's pip path on fresh local hosts; writes bench/latest.md.
BENCH_ARGS ?= --repeat 3
bench: $(STAMP) $(SYSDEPS)
	$(PY) scripts/bench_bootstrap.py $(BENCH_ARGS)
