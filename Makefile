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
