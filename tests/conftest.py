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
from prefect_host.local.s3 import S3Server
from prefect_host.local.wheelhouse import GUEST_PYTHON, GUEST_REQUIREMENTS


@pytest.fixture(scope="session")
def local_host() -> Iterator[LocalHost]:
    """One booted guest for the whole session (a fresh copy of the cached image); removed at the end."""
    with LocalHost.create(build_image()) as host:
        host.boot()
        yield host


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels for GUEST_REQUIREMENTS (what the guest installs from the package index) and their
    dependencies, for Debian 13's python3; downloaded once and cached."""
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


@pytest.fixture(scope="module")
def module_host() -> Iterator[LocalHost]:
    """A booted guest of one test module's own, for tests that change the host in ways other
    modules must not see (local_host stays as the bootstrap tests expect it); removed afterwards."""
    with LocalHost.create(build_image()) as host:
        host.boot()
        yield host


@pytest.fixture(scope="module")
def module_package_index(module_host: LocalHost, wheelhouse: Path) -> Iterator[PackageIndex]:
    """The wheelhouse served on module_host's gateway."""
    with PackageIndex(wheelhouse, module_host.gateway) as index:
        yield index


@pytest.fixture(scope="module")
def module_s3_server(module_host: LocalHost) -> Iterator[S3Server]:
    """An S3-API server (moto, IAM auth enforced) bound on module_host's gateway, where the guest's
    workers reach it; `.provision(bucket)` creates the bucket and an IAM user's key, as infra/ does."""
    with S3Server(module_host.gateway) as server:
        yield server
