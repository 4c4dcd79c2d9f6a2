# Two commands set up a fresh machine: `make demo` (a local Prefect host, no cloud) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
SYSDEPS := .cache/.sysdeps
CONFIG ?= examples/stack-aws.yaml

.PHONY: test test-fast lint fmt plan demo demo-down bench bench-durability bench-load sysdeps venv bench-workers

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

# Style (ruff) and the layers: the import-linter contracts in pyproject.toml, and tests/test_layers.py for infra/,
# which is no package. Every check runs even after one fails, so one run shows all there is to fix; one line
# per finding (`ruff check` without the flag shows each in context, with its fix).
LINT_CHECKS := "$(PY) -m ruff check --output-format concise ." \
	"$(PY) -m ruff format --check --output-format concise ." \
	"$(VENV)/bin/lint-imports --no-logo --cache-dir .cache/import-linter" \
	"$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py"
lint: $(STAMP)
	@failed=0; for check in $(LINT_CHECKS); do echo "$$check"; eval "$$check" || failed=1; done; exit $$failed

# For developers: ruff's safe fixes, then the formatter; what `make lint` still reports is fixed by hand.
fmt: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint $(STAMP) $(SYSDEPS)
	$(PY) -m pytest -n 2 --dist loadfile

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

# Issue 11's durability figures on this machine (loopback, no guest, no root): replication lag, restore
# time and replica size for 10,000 flow runs, idle RSS/CPU and a write burst with and without Litestream;
# under 10 minutes.
# Prints a markdown table (kept in bench/issue11-durability.md).
DURABILITY_ARGS ?=
bench-durability: $(STAMP)
	$(PY) bench/durability.py $(DURABILITY_ARGS)

# Issue 12's load figures on this machine: the tutorial's server, this product's default, scale-out and (issue 13)
# the default with its workers on 2 worker hosts, each on fresh local guests, one after another: API requests/s and
# p50/p99 at 8, 32 and 128 clients, and 500 flow runs through 4 process workers. Needs root (guests); writes
# bench/load.md and prints it.
LOAD_ARGS ?=
bench-load: $(STAMP) $(SYSDEPS)
	$(PY) bench/load.py $(LOAD_ARGS)

# Issue 13's worker-host figures on this machine: the bootstrap's wall time for 0, 1 and 2 worker hosts (fresh local
# guests each time, interleaved, --repeat R rounds) and its re-run on the converged hosts; the per-host times the
# bootstrap prints. Needs root (guests); writes bench/worker-hosts.md and prints it.
WORKERS_ARGS ?=
bench-workers: $(STAMP) $(SYSDEPS)
	$(PY) bench/worker_hosts.py $(WORKERS_ARGS)
