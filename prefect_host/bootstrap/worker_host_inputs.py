"""The worker hosts one bootstrap converges besides the server (output workerHosts), and how many
workers run where: with worker hosts, `--workers N` is per worker host (default 2) and the server runs
`--server-workers M` (default 0: flows leave the server's CPU alone); without them, `--workers` is
the server's (default 1). `--queue [HOST=]QUEUE` pins a worker host's workers to a work queue of the
pool (deploy.py --queue sends a deployment's runs there)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect_host.console import shown
from prefect_host.errors import UsageError
from prefect_host.outputs import StackOutputs

# With worker hosts every worker polls one queue of the pool: its host's --queue, else the pool's default
# queue (a worker without --work-queue would poll them all, and take runs pinned elsewhere).
DEFAULT_QUEUE = "default"
SERVER_DEFAULT_WORKERS = 1  # a stack without worker hosts: the server's own
WORKER_HOST_DEFAULT_WORKERS = 2
MAX_WORKERS = 16  # each is a Python process with Prefect loaded, its flow runs more processes
# Prefect accepts more; these stay one word in a unit's command line and in a URL path.
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class WorkerHostInputs:
    name: str
    address: str
    host_key: str
    workers: int
    queue: str = DEFAULT_QUEUE


def _count(flag: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WORKERS:
        raise UsageError(
            f"{flag} {shown(value)}: must be a whole number from 0 to {MAX_WORKERS} (0: no worker there; each one "
            "runs its own flow runs)."
        )
    return value


def resolve_workers(
    outputs: StackOutputs, *, workers: int | None, server_workers: int | None, queues: tuple[str, ...]
) -> tuple[int, tuple[WorkerHostInputs, ...]]:
    """(the server's worker count, the worker hosts); bad flags are usage errors naming the flag."""
    if not outputs.worker_hosts:
        for flag, given in (("--server-workers", server_workers is not None), ("--queue", bool(queues))):
            if given:
                raise UsageError(
                    f"{flag}: this stack has no worker hosts (output workerHosts); the server's workers are "
                    "--workers N. Set workerHosts in the stack config and `pulumi up` for worker VMs."
                )
        return _count("--workers", workers, SERVER_DEFAULT_WORKERS), ()
    server = _count("--server-workers", server_workers, 0)
    each = _count("--workers", workers, WORKER_HOST_DEFAULT_WORKERS)
    chosen = _queues(queues, [host.name for host in outputs.worker_hosts])
    hosts = tuple(
        WorkerHostInputs(
            name=host.name,
            address=host.public_ip,
            host_key=host.host_public_key,
            workers=each,
            queue=chosen.get(host.name, chosen.get("", DEFAULT_QUEUE)),
        )
        for host in outputs.worker_hosts
    )
    return server, hosts


def _queues(given: tuple[str, ...], names: list[str]) -> dict[str, str]:
    """{worker host name or "" (all the others): queue}."""
    chosen: dict[str, str] = {}
    for value in given:
        host, _, queue = value.rpartition("=")
        if not QUEUE_NAME.fullmatch(queue):
            raise UsageError(
                f"--queue {shown(value)}: QUEUE or HOST=QUEUE, the queue 1-64 letters, digits, '.', '_' and '-', "
                "starting with a letter or digit."
            )
        if host and host not in names:
            raise UsageError(
                f"--queue {shown(value)}: no worker host {shown(host)}; the stack's are {', '.join(names)}."
            )
        if host in chosen:
            raise UsageError(f"--queue {shown(value)}: {'that host' if host else 'all hosts'} already got a queue.")
        chosen[host] = queue
    return chosen


def summary_lines(results: Sequence[Any], counts: Callable[[str], int]) -> list[str]:
    """One line per worker host (worker_hosts.HostResult): its workers and time, or why it failed."""
    lines = []
    for result in results:
        if result.error is None:
            lines.append(f"worker host {result.name}: ok, {counts(result.name)} worker(s), {result.seconds:.1f} s")
        else:
            lines.append(f"worker host {result.name}: FAILED after {result.seconds:.1f} s: {result.error}")
    return lines
