"""Which runs are upgrades, and the downgrade refused before anything changes (facts only)."""

from __future__ import annotations

import pytest

from prefect_host.bootstrap import upgrade
from prefect_host.errors import UsageError
from prefect_host.host.facts import parse_facts
from prefect_host.services.python_env import prefect_venv
from tests.prefect_host.host.host_samples import END, HOST, venv_lines

NEW = prefect_venv("3.9.1")


def facts(installed: str | None, *, database: bool = True):
    lines = venv_lines(prefect_venv(installed)) if installed else []
    return parse_facts(HOST + "".join(lines) + (f"{upgrade.DB_FACT}=1\n" if database else "") + END)


def test_a_new_host_or_the_same_version_is_no_upgrade():
    assert upgrade.plan_upgrade(facts(None), NEW, allow_downgrade=False, replicated=True) is None
    assert upgrade.plan_upgrade(facts("3.9.1"), NEW, allow_downgrade=False, replicated=True) is None
    # A venv but no database yet (a first run that stopped early): nothing to keep.
    assert upgrade.plan_upgrade(facts("3.8.4", database=False), NEW, allow_downgrade=False, replicated=True) is None


def test_a_newer_version_on_a_host_with_a_database_is_an_upgrade():
    change = upgrade.plan_upgrade(facts("3.8.4"), NEW, allow_downgrade=False, replicated=False)
    assert (change.old, change.new, change.replicated, change.switched) == ("3.8.4", "3.9.1", False, False)
    assert change.rollback_dir == f"{NEW.path}.rollback"


def test_a_downgrade_is_refused_unless_allowed():
    with pytest.raises(UsageError, match=r"prefectVersion 3\.9\.1 is older than the 3\.10\.0 .*--allow-downgrade"):
        upgrade.plan_upgrade(facts("3.10.0"), NEW, allow_downgrade=False, replicated=True)
    change = upgrade.plan_upgrade(facts("3.10.0"), NEW, allow_downgrade=True, replicated=True)
    assert (change.old, change.new) == ("3.10.0", "3.9.1")
