"""Which runs are upgrades, and the downgrade refused before anything changes (facts only)."""

from __future__ import annotations

import subprocess

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


def switched_upgrade(*, replicated: bool = True) -> upgrade.Upgrade:
    change = upgrade.plan_upgrade(facts("3.8.4"), NEW, allow_downgrade=False, replicated=replicated)
    change.snapshot, change.switched = "/var/lib/prefect/upgrades/prefect-3.8.4-20261206T070000Z.db", True
    change.worker_units = ["prefect-worker@1.service"]
    return change


def test_the_rollback_keeps_what_the_new_version_wrote_and_starts_the_units_whatever_failed():
    script = upgrade.rollback_script(switched_upgrade())
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    order = [
        "systemctl stop prefect-server.service prefect-worker@1.service prefect-litestream.service",
        "litestream reset",  # while the new venv's binary is there (an old venv may predate Litestream)
        "mv /opt/prefect-host/venv.rollback /opt/prefect-host/venv",
        "mv /var/lib/prefect/prefect.db$suffix /var/lib/prefect/upgrades/failed-3.9.1-20261206T070000Z.db$suffix",
        "install -o prefect -g prefect -m 600 /var/lib/prefect/upgrades/prefect-3.8.4-20261206T070000Z.db",
        "rc=$?; systemctl start prefect-worker@1.service prefect-server.service",
        "systemctl start prefect-litestream.service; exit $rc",
    ]
    positions = [script.index(part) for part in order]
    assert positions == sorted(positions)
    assert "rm -f /var/lib/prefect/prefect.db" not in script  # nothing of the database is deleted
    assert "litestream" not in upgrade.rollback_script(switched_upgrade(replicated=False))


def test_the_snapshot_checks_the_room_before_it_stops_the_server_and_cleans_up_a_failed_copy():
    script = upgrade.snapshot_script("/var/lib/prefect/upgrades/prefect-3.8.4-x.db")
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert script.index('if [ "$free" -lt "$need" ]') < script.index("systemctl stop prefect-server.service")
    assert "|| { rm -f /var/lib/prefect/upgrades/prefect-3.8.4-x.db; systemctl start prefect-server.service" in script


def test_an_interrupted_upgrade_is_refused_with_the_way_out():
    left = parse_facts(HOST + "".join(venv_lines(NEW)) + f"{upgrade.DB_FACT}=1\n{upgrade.ROLLBACK_FACT}=3.8.4\n" + END)
    with pytest.raises(UsageError, match=r"earlier upgrade from Prefect 3\.8\.4 did not finish: .*venv\.rollback"):
        upgrade.plan_upgrade(left, NEW, allow_downgrade=False, replicated=True)


def test_the_facts_line_reads_the_rollback_venvs_version(tmp_path):
    site = tmp_path / "lib" / "python3.13" / "site-packages" / "prefect-3.8.4.dist-info"
    site.mkdir(parents=True)
    line = upgrade.DB_FACT_SCRIPT.replace(upgrade._ROLLBACK_DIR, str(tmp_path))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True)
    assert f"{upgrade.ROLLBACK_FACT}=3.8.4" in done.stdout.splitlines()
