"""Whether a destroyed local host left anything behind, with the test files running in parallel
(`make test` runs two at a time): the moment a host is gone its slot is free, and another test's
host may already own `ph-<n>` again. `mark` tags the host's directory before the removal; the check
holds the hosts lock that slot claims take, so it sees either a free slot or one wholly claimed by
another host (a directory without the tag)."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect_host.local import LocalHost, guest_cgroup
from prefect_host.local.common import cache_root, file_lock


def mark(host: LocalHost) -> Path:
    tag = host.host_dir / f"test-tag-{uuid.uuid4().hex}"
    tag.touch()
    return tag


def leftovers(host: LocalHost, tag: Path) -> list[str]:
    """What of `host` (tagged with `tag`) still exists; empty once it is all gone."""
    with file_lock(cache_root() / "hosts" / ".lock"):
        if host.host_dir.exists():
            return [str(host.host_dir)] if tag.exists() else []  # untagged: another host's now
        owned = [f"/run/netns/{host.netns}", f"/sys/class/net/{host.veth}", *guest_cgroup.guest_cgroups(host.name)]
        return [str(path) for path in owned if Path(path).exists()]
