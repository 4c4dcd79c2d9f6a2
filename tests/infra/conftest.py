"""Shared for the infra tests: the program's modules on sys.path and cached mock runs."""

import functools
import json
import sys
from pathlib import Path

import pytest

import mockstack

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
# The language host runs infra/ with runpy, which puts infra/ first on sys.path; the unit tests
# import the same modules (stack_config, aws_host, ...) the same way, so they share one copy.
sys.path.insert(0, str(INFRA_DIR))


@functools.cache
def _cached_run(config_json: str, stack: str) -> mockstack.StackRun:
    return mockstack.run_program(json.loads(config_json), stack=stack)


@pytest.fixture
def program():
    """run(config, stack="dev") -> StackRun; identical runs are shared (a graph is only read)."""

    def run(config: dict, stack: str = "dev") -> mockstack.StackRun:
        return _cached_run(json.dumps(config, sort_keys=True), stack)

    return run
