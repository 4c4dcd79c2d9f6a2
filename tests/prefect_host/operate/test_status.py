"""`prefect-host status`'s verdicts on a host's report (as host_tool.py status prints it): green
when all is well, red for what needs a person, with the reason in the row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shlex

import pytest

from prefect_host.operate.status import assess, read_host, render
from prefect_host.services import litestream
from prefect_host.services.scale_out import Database
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
from tests.prefect_host.host.host_samples import RecordingSession

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


# --- the scale-out mode (database postgres) ---------------------------------------------------------
PG_PASSWORD = "pg-Status-Secret"
PG_INPUTS = sample_inputs(
    database=Database(
        url=f"postgresql+asyncpg://prefect:{PG_PASSWORD}@10.0.1.5:5432/prefect?ssl=require", api_workers=3
    )
)


def pg_report(**server_changes) -> dict:
    """What host_tool.py status prints on a PostgreSQL host: no Litestream, no SQLite file."""
    server = {
        "health": True,
        "ready": 200,
        "api_processes": 3,
        "version": "3.9.1",
        "workers": [{"name": "ph-1-1", "status": "ONLINE", "last_heartbeat": ago(12)}],
    }
    units = {
        "prefect-server.service": "active",
        "prefect-services.service": "active",
        "redis-server.service": "active",
        "caddy.service": "inactive",
    }
    return report(
        units=units,
        server=server | server_changes,
        replication={"configured": False},
        database={"path": litestream.DB_PATH, "exists": False, "bytes": 0, "disk_free": 20e9},
    )


def test_a_healthy_postgres_host_is_green_without_litestream_or_a_sqlite_file():
    rows = assess(pg_report(), PG_INPUTS, None, NOW)
    assert set(states(rows).values()) == {"ok"}
    details = {row.what: row.detail for row in rows}
    assert details["API processes"] == "3 running, 3 wanted"
    assert details["database"] == "PostgreSQL 10.0.1.5:5432/prefect: the API reaches it (/api/ready 200)"
    assert "managed database" in details["backup"]
    assert PG_PASSWORD not in render(rows, "t")
    # The same report read as a SQLite host's: no replica, no database file.
    sqlite_rows = states(assess(pg_report(), INPUTS, None, NOW))
    assert sqlite_rows["database"] == "bad" and sqlite_rows["backup"] == "warn"


@pytest.mark.parametrize(
    "changes, bad",
    [
        ({"api_processes": 2}, "API processes"),
        ({"api_processes": 4}, "API processes"),
        ({"ready": 503}, "database"),
        ({"ready": None}, "database"),
    ],
)
def test_a_missing_api_process_or_an_unready_database_is_red(changes, bad):
    rows = assess(pg_report(**changes), PG_INPUTS, None, NOW)
    assert {what for what, state in states(rows).items() if state == "bad"} == {bad}


def test_no_answer_from_ready_says_so():
    server = {k: v for k, v in pg_report()["server"].items() if k != "ready"}
    rows = assess(pg_report() | {"server": server}, PG_INPUTS, None, NOW)
    database = next(row for row in rows if row.what == "database")
    assert database.state == "bad" and database.detail.endswith("not ready (/api/ready no answer)")
    unready = next(row for row in assess(pg_report(ready=503), PG_INPUTS, None, NOW) if row.what == "database")
    assert "/api/ready 503" in unready.detail


def test_a_stopped_redis_or_services_unit_is_red():
    broken = pg_report()
    broken["units"] = broken["units"] | {"redis-server.service": "failed", "prefect-services.service": "inactive"}
    bad = {what for what, state in states(assess(broken, PG_INPUTS, None, NOW)).items() if state == "bad"}
    assert bad == {"redis-server.service", "prefect-services.service"}


def status_units(inputs) -> list[str]:
    session = RecordingSession(on_run={"read the host's status": lambda: '{"units": {}}'})
    assert read_host(session, inputs) == {"units": {}}
    [ran] = session.ran
    words = shlex.split(ran.script)
    assert ran.sudo and "status" in words
    return [words[i + 1] for i, word in enumerate(words) if word == "--status-unit"]


def test_the_status_probe_asks_for_redis_and_the_services_only_on_postgres():
    assert status_units(INPUTS) == ["prefect-server.service", "caddy.service", "prefect-litestream.service"]
    assert status_units(PG_INPUTS) == [
        "prefect-server.service",
        "prefect-services.service",
        "redis-server.service",
        "caddy.service",
        "prefect-litestream.service",
    ]
