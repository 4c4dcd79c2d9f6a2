"""What the local-host modules share: the cache directory, a cross-process lock, the error type,
running a command with its output kept for the error message, and telling whether a process that
was started still runs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from prefect_host.errors import PrefectHostError

CACHE_ENV = "PREFECT_HOST_CACHE"
DEFAULT_CACHE = Path("/var/cache/prefect-host")
INSTALL_HINT = "run `bash scripts/install-system-deps.sh` as root"


class LocalHostError(PrefectHostError):
    """The local test/demo host could not be built, booted or removed."""


def cache_root() -> Path:
    """${PREFECT_HOST_CACHE:-/var/cache/prefect-host}, created on first use."""
    raw = os.environ.get(CACHE_ENV, "")
    root = Path(raw) if raw else DEFAULT_CACHE
    if not root.is_absolute():
        raise LocalHostError(f"{CACHE_ENV}={raw!r} must be an absolute path (or unset for {DEFAULT_CACHE}).")
    root.mkdir(parents=True, exist_ok=True)
    return root


def recipe_hash(recipe: dict) -> str:
    """A short stable digest of a build recipe: a changed recipe gets a new cache entry."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock held for the block, so two processes never build or allocate at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def progress(message: str) -> None:
    print(f"prefect-host local: {message}", file=sys.stderr, flush=True)


def require_root_and_tools(*tools: str) -> None:
    """Fail before changing anything when not root or a system tool is missing."""
    if os.geteuid() != 0:
        raise LocalHostError("The local host (systemd-nspawn, network namespaces) needs root; run as root.")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise LocalHostError(f"Missing system tool(s): {', '.join(missing)}; {INSTALL_HINT}.")


def run(
    argv: Sequence[str], *, what: str, timeout: float | None = None, log: Path | None = None
) -> subprocess.CompletedProcess:
    """Runs argv; on failure raises LocalHostError saying what failed with the end of its output.
    With `log`, output goes to that file (for long, chatty tools) instead of memory."""
    try:
        if log is None:
            result = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
            )
            output = (result.stdout or "") + (result.stderr or "")
        else:
            with open(log, "a") as sink:
                result = subprocess.run(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                )
            output = log.read_text(errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise LocalHostError(f"{what}: `{argv[0]}` did not finish within {timeout:.0f} s.") from exc
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        where = f" (full log: {log})" if log else ""
        raise LocalHostError(f"{what}: `{' '.join(argv[:3])} ...` exited with {result.returncode}{where}:\n{tail}")
    return result


def new_staging(cache: Path, name: str) -> tuple[Path, Path]:
    """Where a build of the cache entry `name` happens before it is renamed into place (what builds that were
    killed left there is removed first), and its log, emptied. Callers hold the entry's lock."""
    for stale in cache.glob(f".{name}.tmp-*"):
        remove_tree(stale)
    log = cache / f"{name}.log"
    log.write_text("")
    return cache / f".{name}.tmp-{os.getpid()}", log


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (so they can be unmounted in order)."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """Deletes a root file system tree. Unmounts anything mounted inside it first: a failed
    debootstrap can leave /proc mounted there, and deleting through it would be a disaster."""
    if not path.exists():
        return
    for point in mounts_under(path):
        run(["umount", "--lazy", str(point)], what=f"unmounting {point}")
    shutil.rmtree(path)


def process_start_time(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot), None when it is gone. Together with
    the PID it names one process: PIDs get reused, start times do not repeat for the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # exited, waiting to be reaped: as good as gone
        return None
    return int(fields[19])


def process_alive(pid: int | None, start: int | None) -> bool:
    """The process recorded as (PID, start time) still runs: neither exited nor replaced by one reusing its PID."""
    return pid is not None and start is not None and process_start_time(pid) == start
