"""A control group of its own for each guest.

systemd-nspawn with `--keep-unit --register=no` (no machined here) puts the guest's systemd under
the cgroup nspawn itself was started in, as `payload/`. Started from the same cgroup, every guest
got the same `/payload`: two guests' `prefect-server.service` were one cgroup, and one guest's
systemd stopping, emptying or removing a unit's cgroup raced another guest's start of the unit of
the same name ("failed because of unavailable resources", stops waiting on the other guest's
processes). Each guest's nspawn therefore starts in `prefect-host-guests/<name>/` of every
hierarchy systemd tracks processes with (the named `systemd` one and the unified one on a hybrid
host, the unified root on a cgroup2-only host), as a VM has its own.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "prefect-host-guests"
# What the wrapper runs: join each cgroup named before "--" (writing its own PID, which `exec`
# keeps), then become the command after it.
_ENTER = 'set -e; while [ "$1" != -- ]; do echo $$ > "$1"; shift; done; shift; exec "$@"'


def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The mounted hierarchies systemd tracks processes with: name=systemd and cgroup2."""
    if (root / "cgroup.procs").exists():  # cgroup2 only (the unified layout)
        return [root]
    return [root / name for name in ("systemd", "unified") if (root / name / "cgroup.procs").exists()]


def guest_cgroups(name: str, root: Path = CGROUP_ROOT) -> list[Path]:
    return [hierarchy / GROUP / name for hierarchy in hierarchies(root)]


def in_own_cgroup(name: str, argv: list[str], root: Path = CGROUP_ROOT) -> list[str]:
    """`argv` run from the guest's own cgroups (made here), with the same PID."""
    procs = []
    for group in guest_cgroups(name, root):
        group.mkdir(parents=True, exist_ok=True)
        procs.append(str(group / "cgroup.procs"))
    return ["sh", "-c", _ENTER, "enter-cgroup", *procs, "--", *argv]


def remove_cgroups(name: str, root: Path = CGROUP_ROOT, *, patience: float = 5.0) -> None:
    """Once the guest is off: its cgroups, innermost first (a cgroup goes with rmdir once it holds
    no process and no child; the guest's last processes may take a moment to be reaped). Best
    effort: one still busy after `patience` seconds stays, and is reused by the next boot."""
    deadline = time.monotonic() + patience
    while True:
        left = [group for group in guest_cgroups(name, root) if group.is_dir()]
        for group in left:
            for parent, _, _ in os.walk(group, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(parent)
        if not any(group.is_dir() for group in left) or time.monotonic() > deadline:
            return
        time.sleep(0.1)
