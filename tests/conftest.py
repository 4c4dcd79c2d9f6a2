"""Shared fixtures.

End-to-end host fixtures: a real Debian 13 guest booted with systemd-nspawn (prefect_host.local),
prepared like a fresh cloud VM, and a package index it can reach (it has no internet). They need
root and scripts/install-system-deps.sh; tests using them are marked `@pytest.mark.e2e`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from prefect_host.local import LocalHost, PackageIndex, build_image, ensure_wheelhouse

# What the guest installs from the package index; the wheels are downloaded once and cached.
GUEST_REQUIREMENTS = ["prefect==3.9.1", "prefect-aws==0.7.12", "uv==0.13.8"]
GUEST_PYTHON = "3.13"  # Debian 13's python3


@pytest.fixture(scope="session")
def local_host() -> Iterator[LocalHost]:
    """One booted guest for the whole session (a fresh copy of the cached image); removed at the end."""
    with LocalHost.create(build_image()) as host:
        host.boot()
        yield host


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels for GUEST_REQUIREMENTS and their dependencies, for the guest's CPython."""
    return ensure_wheelhouse(GUEST_REQUIREMENTS, python_version=GUEST_PYTHON)


@pytest.fixture(scope="session")
def package_index(local_host: LocalHost, wheelhouse: Path) -> Iterator[PackageIndex]:
    """The wheelhouse served on local_host's gateway; `.url` is the guest's `--find-links` page."""
    with PackageIndex(wheelhouse, local_host.gateway) as index:
        yield index


@pytest.fixture
def fresh_host() -> Iterator[Callable[..., LocalHost]]:
    """Makes hosts of the test's own: `fresh_host(extra_packages=("python3-venv", "python3-pip"))`
    boots one from an image with those packages (built once). All are removed after the test."""
    hosts: list[LocalHost] = []

    def make(extra_packages: Iterable[str] = (), boot: bool = True) -> LocalHost:
        host = LocalHost.create(build_image(extra_packages=extra_packages))
        hosts.append(host)
        if boot:
            host.boot()
        return host

    yield make
    for host in hosts:
        host.destroy()
