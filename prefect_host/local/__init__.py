"""A local Debian 13 guest under systemd-nspawn, standing in for a fresh cloud VM in end-to-end
tests and `make demo`. Needs root and the packages from scripts/install-system-deps.sh."""

from prefect_host.local.common import LocalHostError
from prefect_host.local.image import build_image
from prefect_host.local.machine import LocalHost
from prefect_host.local.package_index import PackageIndex
from prefect_host.local.wheelhouse import ensure_wheelhouse

__all__ = ["LocalHost", "LocalHostError", "PackageIndex", "build_image", "ensure_wheelhouse"]
