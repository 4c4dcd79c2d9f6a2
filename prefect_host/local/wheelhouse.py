"""Python packages for a guest without internet: a cached directory of wheels for the guest's
CPython, and a small HTTP server that offers it to the guest as a `--find-links` page."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prefect_host.local.common import (INSTALL_HINT, LocalHostError, cache_root, file_lock, progress,
                                       recipe_hash, remove_tree, run)

_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")


def _platform_tags() -> list[str]:
    """Binary wheels the guest can run: it shares the host's CPU; Debian 13's glibc is 2.41."""
    machine = platform.machine()
    return [f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"manylinux2014_{machine}", "any"]


def _validate(requirements: Sequence[str], python_version: str) -> list[str]:
    if isinstance(requirements, str) or not requirements:
        raise LocalHostError(f"requirements={requirements!r} must be a non-empty list of requirement strings "
                             "such as 'prefect==3.9.1'.")
    bad = [r for r in requirements if not isinstance(r, str) or not r.strip() or r.lstrip().startswith("-")
           or any(c.isspace() for c in r.strip())]
    if bad:
        raise LocalHostError(f"requirements: {bad!r} are not requirement strings; use 'name==version' "
                             "(no pip options, no spaces).")
    if not isinstance(python_version, str) or not _PYTHON_VERSION.match(python_version):
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
        for stale in wheels.glob(f".{name}.tmp-*"):
            remove_tree(stale)
        staging = wheels / f".{name}.tmp-{os.getpid()}"
        log = wheels / f"{name}.log"
        log.write_text("")
        started = time.monotonic()
        progress(f"downloading wheels for CPython {python_version}: {' '.join(wanted)} (once; log: {log})")
        argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
                "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
        for tag in tags:
            argv += ["--platform", tag]
        try:
            run([*argv, "--dest", str(staging), *wanted], what="downloading wheels for the guest",
                timeout=900, log=log)
            staging.rename(final)
        except BaseException:
            remove_tree(staging)
            raise
        count = len(list(final.glob("*.whl")))
        progress(f"{count} wheels ready in {time.monotonic() - started:.0f} s")
    return final


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """The guest's downloads are not worth a line each on the test output."""


class PackageIndex:
    """Serves `directory` over HTTP on `bind_address` (the host side of a guest's veth) on a free
    port, in a background thread. `url` is the page to give uv as `--find-links`."""

    def __init__(self, directory: Path, bind_address: str):
        directory = Path(directory)
        if not directory.is_dir():
            raise LocalHostError(f"PackageIndex directory {directory} does not exist.")
        handler = functools.partial(_QuietHandler, directory=str(directory))
        try:
            self._server = ThreadingHTTPServer((bind_address, 0), handler)
        except OSError as exc:
            raise LocalHostError(f"PackageIndex cannot listen on {bind_address!r}: {exc.strerror}; "
                                 "give the host-side address of a running local host.") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="package-index", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> "PackageIndex":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
