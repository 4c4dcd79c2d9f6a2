"""The installed `prefect-host` console script, and an environment to run it in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def console_script() -> Path:
    """What `[project.scripts]` installs beside the venv's python (`uv pip install -e .`)."""
    path = Path(sys.executable).parent / "prefect-host"
    if not path.exists():
        pytest.fail(
            f"{path} is missing: install the project into the venv (`make venv`, or "
            f"`uv pip install --python {sys.executable} -e .`)."
        )
    return path


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """This environment without the caller's Prefect and AWS settings; a Prefect home and a local-host cache
    (where demo and bench would build) of the test's own, under tmp_path; and a PATH of the venv alone: a
    command line that reached `demo up` or a bench by mistake fails on the missing systemd-nspawn before
    it boots a guest that would outlive the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    return env | {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_HOST_CACHE": str(tmp_path / "cache"),
        "PATH": str(Path(sys.executable).parent),
    }
