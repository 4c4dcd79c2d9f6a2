"""Issue 11's upgrades end to end on a real host, nothing mocked: Prefect 3.8.4 -> 3.9.1 with a
snapshot first, side-by-side venvs, a rollback when the new version cannot be installed (before the
switch) or its migration fails (after the switch, injected: a table 3.9.1's migration creates is
already there), then the real upgrade with the history kept and the API's downtime reported, and a
downgrade refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e_support import Stack, host_outputs, s3_outputs
from prefect_host.local import PackageIndex, ensure_wheelhouse
from prefect_host.local.wheelhouse import GUEST_PREFECT_VERSION, GUEST_PYTHON, GUEST_REQUIREMENTS

pytestmark = pytest.mark.e2e

OLD, NEW = "3.8.4", GUEST_PREFECT_VERSION
PROFILE = "prefect-host-upgrade-rollback-e2e"
AUTH = "admin:Upgrade-Rollback-e2e-93ad"
BUCKET = "prefect-host-upgrade-rollback-e2e"
VARIABLE = "upgrade_marker"
RUNS = 3
# A table Prefect 3.9.1's migration 8f5eda7c1dd7 creates (without IF NOT EXISTS): there already, the
# migration fails on the new version's first start, as a broken migration would.
INJECTED = "automation_held_event"
VENV_VERSION = "/opt/prefect-host/venv/bin/python -c 'import prefect; print(prefect.__version__)'"


@pytest.fixture(scope="module")
def old_wheelhouse() -> Path:
    requirements = [f"prefect=={OLD}" if r.startswith("prefect==") else r for r in GUEST_REQUIREMENTS]
    # pip download takes environment markers from this machine's Python (3.11), not --python-version:
    # 3.8.4's `whenever; python_version >= '3.13'` (what Debian 13's python3 needs) must be named. And
    # 3.8.4 allows any fastapi < 1, but fails at import with 0.165 (`Body(min_items=...)` is gone): the
    # FastAPI that 3.9.1 resolves to, as an operator would pin it.
    pins = ["whenever==0.10.5", "fastapi==0.150.0"]
    return ensure_wheelhouse([*requirements, *pins], python_version=GUEST_PYTHON)


@pytest.fixture(scope="module")
def indexes(module_host, wheelhouse, old_wheelhouse, tmp_path_factory) -> Iterator[tuple[PackageIndex, PackageIndex]]:
    """(both versions, the old one only): the second is a package index broken for the upgrade."""
    both = tmp_path_factory.mktemp("both-versions")
    for wheel in [*wheelhouse.iterdir(), *old_wheelhouse.iterdir()]:
        if not (both / wheel.name).exists():
            (both / wheel.name).symlink_to(wheel)
    with PackageIndex(both, module_host.gateway) as full, PackageIndex(old_wheelhouse, module_host.gateway) as old:
        yield full, old


@pytest.fixture(scope="module")
def stack(module_host, indexes, module_s3_server, tmp_path_factory) -> Stack:
    outputs = host_outputs(
        module_host, prefectAuthString=AUTH, prefectVersion=OLD, **s3_outputs(module_s3_server, BUCKET, user=PROFILE)
    )
    return Stack.create(
        module_host,
        tmp_path_factory.mktemp("upgrade-rollback"),
        profile=PROFILE,
        outputs=outputs,
        bootstrap_args=["--find-links", indexes[0].url],
        s3=module_s3_server,
    )


def api(stack: Stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", auth=stack.auth, timeout=30, **kwargs)


def history(stack: Stack) -> tuple[str, int]:
    variable = api(stack, "GET", f"/variables/name/{VARIABLE}").json()["value"]
    completed = api(stack, "POST", "/flow_runs/count", json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
    return variable, completed.json()


def sql(stack: Stack, statement: str) -> None:
    """One statement on the host's database, as root, while the server runs (WAL: no lock held long)."""
    code = f"import sqlite3; c = sqlite3.connect('/var/lib/prefect/prefect.db'); c.execute('{statement}'); c.commit()"
    stack.guest(f'python3 -c "{code}"')


def wanting(stack: Stack, version: str) -> None:
    stack.outputs["prefectVersion"] = version
    stack.write_outputs()


def test_the_old_version_with_history(stack: Stack) -> None:
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    assert api(stack, "GET", "/admin/version").json() == OLD
    flow = api(stack, "POST", "/flows/", json={"name": "upgrade-history"}).json()
    for _ in range(RUNS):
        created = api(stack, "POST", "/flow_runs/", json={"flow_id": flow["id"], "state": {"type": "COMPLETED"}})
        assert created.status_code == 201, created.text
    assert api(stack, "POST", "/variables/", json={"name": VARIABLE, "value": "kept"}).status_code == 201
    assert history(stack) == ("kept", RUNS)


def test_a_package_index_without_the_new_version_changes_nothing(stack: Stack, indexes) -> None:
    pid = stack.main_pid("prefect-server.service")
    wanting(stack, NEW)
    run = stack.bootstrap("--find-links", indexes[1].url)
    assert run.returncode == 1, run.printed
    assert f"The upgrade to Prefect {NEW} failed before the switch" in run.stderr
    assert f"Rolled back: Prefect {OLD} runs and never stopped" in run.stderr
    assert stack.main_pid("prefect-server.service") == pid  # never stopped
    assert stack.guest(VENV_VERSION).strip() == OLD
    assert stack.guest("ls /opt/prefect-host").split() == ["bin", "venv"]
    assert api(stack, "GET", "/admin/version").json() == OLD and history(stack) == ("kept", RUNS)


def test_a_failing_migration_rolls_back_to_the_old_server_and_database(stack: Stack) -> None:
    sql(stack, f"CREATE TABLE {INJECTED} (x)")
    run = stack.bootstrap()
    assert run.returncode == 1, run.printed
    assert f"The upgrade to Prefect {NEW} failed after the switch" in run.stderr
    assert f"roll back to Prefect {OLD} and the snapshot" in run.stdout
    assert f"Prefect {OLD} answers again" in run.stdout
    assert stack.guest(VENV_VERSION).strip() == OLD
    assert api(stack, "GET", "/admin/version").json() == OLD and history(stack) == ("kept", RUNS)
    assert stack.guest("systemctl is-active prefect-litestream.service").strip() == "active"


def test_the_upgrade_keeps_the_history_and_reports_the_downtime(stack: Stack) -> None:
    sql(stack, f"DROP TABLE {INJECTED}")
    run = stack.bootstrap()
    assert run.returncode == 0, run.printed
    assert f"snapshot of the database (Prefect {OLD}): /var/lib/prefect/upgrades/prefect-{OLD}-" in run.stdout
    assert "the API was down" in run.stdout
    print(f"\n{run.stdout}")
    assert api(stack, "GET", "/admin/version").json() == NEW and history(stack) == ("kept", RUNS)
    assert stack.guest("ls /opt/prefect-host").split() == ["bin", "venv"]  # the old venv's copy is gone
    # One snapshot per switch (the index failure never stopped the server), and what the failed
    # migration left is kept beside them.
    kept = stack.guest("ls /var/lib/prefect/upgrades").split()
    assert sum(name.startswith(f"prefect-{OLD}-") for name in kept) == 2, kept
    assert any(name.startswith(f"failed-{NEW}-") for name in kept), kept
    again = stack.bootstrap()
    assert again.returncode == 0 and again.changed == [], again.stdout


def test_a_downgrade_is_refused_before_anything_changes(stack: Stack) -> None:
    pid = stack.main_pid("prefect-server.service")
    wanting(stack, OLD)
    run = stack.bootstrap()
    assert run.returncode == 1 and "--allow-downgrade" in run.stderr, run.printed
    time.sleep(1)
    assert stack.main_pid("prefect-server.service") == pid and stack.guest(VENV_VERSION).strip() == NEW
