"""Where the product's own commands and the example flow are: `make demo` and `make bench` run them
from the repository as a user would (scripts/*.py in a child process), not through imports."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP_SCRIPT = REPO / "scripts" / "bootstrap.py"
DEPLOY_SCRIPT = REPO / "scripts" / "deploy.py"
EXAMPLE_DIR = REPO / "examples" / "flows"
EXAMPLE_ENTRYPOINT = "duration_model.py:train_duration_model"
