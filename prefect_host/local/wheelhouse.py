"""Python packages for a guest without internet: a cached directory of wheels for the guest's
CPython. package_index.py serves it to the guest (PackageIndex)."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from prefect_host.local.common import (
    INSTALL_HINT,
    LocalHostError,
    cache_root,
    file_lock,
    new_staging,
    progress,
    recipe_hash,
    remove_tree,
    run,
)
from prefect_host.local.package_index import PackageIndex, normalize_project, parse_byte_range
from prefect_host.services.litestream import DISTRIBUTION as LITESTREAM_DISTRIBUTION
from prefect_host.services.litestream import LITESTREAM_VERSION
from prefect_host.services.python_env import PREFECT_AWS_VERSION, UV_VERSION
from prefect_host.services.scale_out import PREFECT_REDIS_DISTRIBUTION, PREFECT_REDIS_VERSION

# The index's names stay importable from here, where the tests and older callers look for them.
__all__ = [
    "GUEST_PREFECT_VERSION",
    "GUEST_PYTHON",
    "GUEST_REQUIREMENTS",
    "PackageIndex",
    "ensure_wheelhouse",
    "normalize_project",
    "parse_byte_range",
]

# What a guest installs (the bootstrap's pins) and for which CPython (Debian 13's python3): the
# e2e tests, `make demo` and the benchmark all serve this one cached wheelhouse.
GUEST_PREFECT_VERSION = "3.9.1"
GUEST_REQUIREMENTS = [
    f"prefect=={GUEST_PREFECT_VERSION}",
    f"prefect-aws=={PREFECT_AWS_VERSION}",
    f"uv=={UV_VERSION}",
    f"{LITESTREAM_DISTRIBUTION}=={LITESTREAM_VERSION}",
    f"{PREFECT_REDIS_DISTRIBUTION}=={PREFECT_REDIS_VERSION}",
]
GUEST_PYTHON = "3.13"

_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")


def _platform_tags() -> list[str]:
    """Binary wheels the guest can run: it shares the host's CPU; Debian 13's glibc is 2.41."""
    machine = platform.machine()
    return [f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"manylinux2014_{machine}", "any"]


def _validate(requirements: Sequence[str], python_version: str) -> list[str]:
    if isinstance(requirements, str) or not requirements:
        raise LocalHostError(
            f"requirements={requirements!r} must be a non-empty list of requirement strings such as 'prefect==3.9.1'."
        )
    bad = [
        r
        for r in requirements
        if not isinstance(r, str) or not r.strip() or r.lstrip().startswith("-") or any(c.isspace() for c in r.strip())
    ]
    if bad:
        raise LocalHostError(
            f"requirements: {bad!r} are not requirement strings; use 'name==version' (no pip options, no spaces)."
        )
    if not isinstance(python_version, str) or not _PYTHON_VERSION.fullmatch(python_version):
        raise LocalHostError(f"python_version={python_version!r} must look like '3.13' (the guest's CPython).")
    return sorted({r.strip() for r in requirements})


def ensure_wheelhouse(requirements: Sequence[str], python_version: str = "3.13") -> Path:
    """A directory with wheels for `requirements` and all their dependencies, for CPython
    `python_version` on this CPU; downloaded once per requirement list and reused."""
    wanted = _validate(requirements, python_version)
    tags = _platform_tags()
    wheels = cache_root() / "wheels"
    name = f"py{python_version}-{recipe_hash({'requirements': wanted, 'python': python_version, 'tags': tags})}"
    final = wheels / name
    if final.is_dir():
        return final
    python = shutil.which("python3")
    if python is None or subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode:
        raise LocalHostError(f"`python3 -m pip` is needed to download wheels for the guest; {INSTALL_HINT}.")
    with file_lock(wheels / f".{name}.lock"):
        if final.is_dir():
            return final
        staging, log = new_staging(wheels, name)
        started = time.monotonic()
        progress(f"downloading wheels for CPython {python_version}: {' '.join(wanted)} (once; log: {log})")
        argv = [
            python,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--implementation",
            "cp",
        ]
        for tag in tags:
            argv += ["--platform", tag]
        try:
            run([*argv, "--dest", str(staging), *wanted], what="downloading wheels for the guest", timeout=900, log=log)
            staging.rename(final)
        except BaseException:
            remove_tree(staging)
            raise
        count = len(list(final.glob("*.whl")))
        progress(f"{count} wheels ready in {time.monotonic() - started:.0f} s")
    return final
