"""The server and the workers as the service tests declare them, and readers of the files they write."""

from __future__ import annotations

import dataclasses

from prefect_host.host.model import PackageSource, Service, Venv
from prefect_host.services import prefect_server, workers
from prefect_host.services.python_env import PREFECT_AWS_VERSION, prefect_venv

AUTH = "admin:Sup3r'$ecret\\pw"
PASSWORD = AUTH.split(":", 1)[1]
UI_URL = "https://203.0.113.7"
RESULTS = {
    "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
}
FIND_LINKS = PackageSource(find_links="http://10.77.0.1:8000/")


def pinned_venv(
    prefect_version: str = "3.9.1",
    source: PackageSource = FIND_LINKS,
    *,
    prefect_aws_version: str = PREFECT_AWS_VERSION,
    **changes,
) -> Venv:
    venv = prefect_venv(prefect_version, source, prefect_aws_version=prefect_aws_version)
    return dataclasses.replace(venv, **changes)


def server(venv: Venv | None = None, *, auth_string: str = AUTH) -> Service:
    return prefect_server.server_service(venv=venv or pinned_venv(), auth_string=auth_string, tls=True)


def worker_env(*, auth_string: str = AUTH) -> str:
    return workers.env_text(auth_string=auth_string, ui_url=UI_URL, result_settings=RESULTS, tls=True)


def worker_set(count: int = 1, venv: Venv | None = None, *, env: str | None = None) -> Service:
    return workers.workers_service(
        count=count, pool="default", venv=venv or pinned_venv(), env=worker_env() if env is None else env
    )


def env_settings(text: str) -> dict[str, str]:
    """An env file's settings, values as written (quoted)."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def unit_directives(text: str) -> dict[str, list[str]]:
    """A unit's directives, each with every value it is given."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found
