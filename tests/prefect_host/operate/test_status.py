"""`prefect-host status`'s verdicts on a host's report (as host_tool.py status prints it): green
when all is well, red for what needs a person, with the reason in the row."""

from __future__ import annotations

import dataclasses
import datetime as dt

from prefect_host.operate.status import assess, render
from prefect_host.services import litestream
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
INPUTS = sample_inputs()


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def report(**changes) -> dict:
    base = {
        "hostname": "ph-1",
        "units": {
            "prefect-server.service": "active",
            "caddy.service": "inactive",
            "prefect-worker@1.service": "active",
        },
        "server": {
            "health": True,
            "version": "3.9.1",
            "workers": [{"name": "ph-1-1", "status": "ONLINE", "last_heartbeat": ago(12)}],
        },
        "replication": {
            "configured": True,
            "list": {"databases": [{"path": litestream.DB_PATH, "status": "replicating", "last_sync_at": ago(3)}]},
        },
        "database": {"path": litestream.DB_PATH, "exists": True, "bytes": 2_400_000, "disk_free": 20e9},
    }
    base.update(changes)
    return base


def states(rows) -> dict[str, str]:
    return {row.what: row.state for row in rows}


def test_a_healthy_host_is_green():
    rows = assess(report(), INPUTS, NOW + dt.timedelta(days=60), NOW)
    assert set(states(rows).values()) == {"ok"}
    assert "caddy.service" not in states(rows)  # tls off: Caddy is not expected
    assert "last sync to the bucket 3 s ago" in render(rows, "t") and "expires" in render(rows, "t")


def test_what_needs_a_person_is_red():
    broken = report(
        units={"prefect-server.service": "failed", "prefect-worker@1.service": "active"},
        server={"error": "URLError: connection refused"},
        replication={"configured": True, "error": "dial unix: no such file"},
        database={"path": litestream.DB_PATH, "exists": False, "bytes": 0, "disk_free": 20e9},
    )
    bad = {
        what
        for what, state in states(assess(broken, INPUTS, NOW - dt.timedelta(days=1), NOW)).items()
        if state == "bad"
    }
    assert bad == {"prefect-server.service", "Prefect API", "backup", "database", "TLS certificate"}


def test_a_stale_worker_or_replica_and_a_moved_database_are_flagged():
    stale = report(
        server={
            "health": True,
            "version": "3.9.1",
            "database_elsewhere": True,
            "workers": [{"name": "ph-1-1", "status": "OFFLINE", "last_heartbeat": ago(900)}],
        },
        replication={
            "configured": True,
            "list": {"databases": [{"path": litestream.DB_PATH, "status": "replicating", "last_sync_at": ago(600)}]},
        },
    )
    rows = states(assess(stale, INPUTS, None, NOW))
    assert rows["worker ph-1-1"] == "bad" and rows["database location"] == "bad" and rows["backup"] == "warn"


def test_another_hosts_offline_worker_is_a_warning_this_hosts_is_red():
    """After a restore onto a new VM, the lost VM's workers are still in the pool, offline."""
    workers = [
        {"name": "ph-3-1", "status": "ONLINE", "last_heartbeat": ago(5)},
        {"name": "ph-1-1", "status": "OFFLINE", "last_heartbeat": ago(900)},
        {"name": "ph-3-2", "status": "OFFLINE", "last_heartbeat": ago(900)},
    ]
    server = {"health": True, "version": "3.9.1", "workers": workers}
    rows = states(assess(report(hostname="ph-3", server=server), INPUTS, None, NOW))
    assert (rows["worker ph-3-1"], rows["worker ph-1-1"], rows["worker ph-3-2"]) == ("ok", "warn", "bad")


def test_backups_off_is_a_warning_and_a_version_mismatch_too():
    rows = states(
        assess(
            report(replication={"configured": False}), dataclasses.replace(INPUTS, prefect_version="3.9.2"), None, NOW
        )
    )
    assert rows["backup"] == "warn" and rows["Prefect API"] == "warn"
