"""What a deploy is asked to do, and the error it fails with: shared by the command line and the steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_host.errors import PrefectHostError

DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class DeployError(PrefectHostError):
    """The flow could not be deployed; nothing after the failed step was changed."""


@dataclass(frozen=True)
class DeployRequest:
    entrypoint: str  # FILE.py:function, FILE relative to project_dir
    project_dir: Path
    name: str | None
    pool: str
    interval: int | None
    cron: str | None
    parameters: dict[str, Any]
    run_now: bool
    timeout: float
    includes: tuple[str, ...] = ()  # --include: secret-looking files to upload all the same (gitignore patterns)
    queue: str | None = None  # --queue: the pool's work queue (None: its default queue)
    dry_run: bool = False  # --dry-run: check, list the files and what is left out, write nothing
