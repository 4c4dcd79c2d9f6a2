"""`prefect-host status`: the host on one screen, and an exit status that says whether all is well.

One SSH round trip runs host_tool.py status on the host (server health and version, workers and their
last heartbeat, units, Litestream's replication, the database's size); the laptop adds the TLS
certificate's expiry as its clients see it. Each row is ok, warn or bad; any bad row exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

from prefect_host.bootstrap.inputs import WORK_POOL_NAME, BootstrapInputs
from prefect_host.durations import seconds_since
from prefect_host.errors import PrefectHostError
from prefect_host.host.apply import run_command
from prefect_host.services import caddy, litestream, prefect_server, redis, scale_out
from prefect_host.ssh import HostSession

# Replication older than this (seconds since Litestream's last sync) is a warning; Litestream syncs
# every second while Prefect writes, and Prefect writes every few seconds (heartbeats, schedules).
REPLICATION_WARN_S = 120
CERT_WARN_DAYS = 14
HEARTBEAT_WARN_S = 120


class StatusError(PrefectHostError):
    pass


@dataclass(frozen=True)
class Row:
    what: str
    state: str  # ok | warn | bad
    detail: str


def read_host(session: HostSession, inputs: BootstrapInputs) -> dict:
    options = ["--server-env", prefect_server.ENV_FILE, "--pool", WORK_POOL_NAME]
    scale_out_units = (scale_out.SERVICES_UNIT, redis.UNIT) if inputs.database is not None else ()
    for unit in (prefect_server.UNIT_NAME, *scale_out_units, caddy.UNIT, litestream.UNIT_NAME):
        options += ["--status-unit", unit]
    command = litestream.host_command("status", *options, label="read the host's status", timeout=60)
    result = run_command(session, command)
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise StatusError(f"{session.host} answered the status probe with something else than JSON.") from None


def certificate_expiry(api_url: str, timeout: float = 10.0) -> dt.datetime | None:
    """When the certificate the API serves expires (None: plain HTTP). Not verified here: the
    bootstrap pins and verifies it; this only reads its date."""
    from cryptography import x509

    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme != "https":
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def assess(report: dict, inputs: BootstrapInputs, expiry: dt.datetime | None, now: dt.datetime) -> list[Row]:
    rows = _unit_rows(report["units"], inputs) + _server_rows(report["server"], inputs, now, report.get("hostname", ""))
    if inputs.database is None:
        rows += _replication_rows(report["replication"], report["server"], now)
        rows.append(_database_row(report["database"]))
    else:
        rows += _postgres_rows(report["server"], inputs)
    if expiry is not None:
        days = (expiry - now).total_seconds() / 86400
        state = "bad" if days <= 0 else "warn" if days < CERT_WARN_DAYS else "ok"
        rows.append(Row("TLS certificate", state, f"expires {expiry:%Y-%m-%d %H:%M} UTC ({days:.0f} days)"))
    return rows


def _unit_rows(units: dict[str, str], inputs: BootstrapInputs) -> list[Row]:
    rows = []
    for name, state in units.items():
        wanted = name != caddy.UNIT or inputs.tls_on
        if name == litestream.UNIT_NAME and state in ("inactive", "unknown"):
            continue  # reported by the replication row
        if not wanted and state != "active":
            continue
        rows.append(Row(name, "ok" if state == "active" else "bad", state))
    return rows


def _server_rows(server: dict, inputs: BootstrapInputs, now: dt.datetime, hostname: str) -> list[Row]:
    """The API, and the pool's workers: this host's must be online; another's offline worker (a VM
    that is gone, whose workers a restored database still lists) is a warning."""
    if "error" in server:
        return [Row("Prefect API", "bad", f"no answer on the host: {server['error']}")]
    version = server.get("version")
    state = "ok" if server.get("health") is True and version == inputs.prefect_version else "warn"
    rows = [Row("Prefect API", state, f"healthy, version {version} (outputs: {inputs.prefect_version})")]
    for worker in server.get("workers", []):
        age = seconds_since(worker.get("last_heartbeat"), now)
        fresh = worker.get("status") == "ONLINE" and age is not None and age < HEARTBEAT_WARN_S
        own = worker["name"].startswith(f"{hostname}-")
        state = "ok" if fresh else "bad" if own else "warn"
        seen = "never" if age is None else f"{age:.0f} s ago"
        where = "" if own or fresh else " (not this host's)"
        rows.append(Row(f"worker {worker['name']}", state, f"{worker.get('status')}, last heartbeat {seen}{where}"))
    return rows


def _replication_rows(replication: dict, server: dict, now: dt.datetime) -> list[Row]:
    if not replication.get("configured"):
        return [Row("backup", "warn", "off: the database is not replicated (bootstrap --no-backup or no bucket)")]
    if "error" in replication:
        return [Row("backup", "bad", f"Litestream is not answering: {replication['error']}")]
    databases = replication.get("list", {}).get("databases", [])
    mine = next((d for d in databases if d.get("path") == litestream.DB_PATH), None)
    if mine is None:
        return [Row("backup", "bad", f"Litestream does not replicate {litestream.DB_PATH}")]
    rows = []
    if server.get("database_elsewhere"):
        rows.append(Row("database location", "bad", "the server's database is not the replicated file"))
    age = seconds_since(mine.get("last_sync_at"), now)
    state = "ok" if age is not None and age < REPLICATION_WARN_S else "bad" if age is None else "warn"
    seen = "never" if age is None else f"{age:.0f} s ago"
    rows.append(Row("backup", state, f"{mine.get('status')}, last sync to the bucket {seen}"))
    return rows


def _postgres_rows(server: dict, inputs: BootstrapInputs) -> list[Row]:
    """The scale-out mode: the API's processes, and whether it reaches PostgreSQL (/api/ready)."""
    assert inputs.database is not None
    wanted, running = inputs.database.api_workers, server.get("api_processes")
    processes = Row("API processes", "ok" if running == wanted else "bad", f"{running} running, {wanted} wanted")
    where = f"PostgreSQL {inputs.database.where}"
    if server.get("ready") == 200:
        database = Row("database", "ok", f"{where}: the API reaches it (/api/ready 200)")
    else:
        database = Row("database", "bad", f"{where}: not ready (/api/ready {server.get('ready', 'no answer')})")
    backup = Row("backup", "ok", "the managed database's own backups (Litestream replicates SQLite only)")
    return [processes, database, backup]


def _database_row(database: dict) -> Row:
    if "error" in database:
        return Row("database", "bad", f"cannot read it: {database['error']}")
    if not database["exists"]:
        return Row("database", "bad", f"{database['path']} does not exist")
    free_gb = database["disk_free"] / 1e9
    state = "ok" if free_gb >= 1 else "warn"
    return Row("database", state, f"{database['bytes'] / 1e6:.1f} MB, {free_gb:.1f} GB free on its disk")


def render(rows: list[Row], title: str) -> str:
    """A rich table as text (colours only on a terminal)."""
    from rich.console import Console as RichConsole
    from rich.table import Table

    colour = {"ok": "green", "warn": "yellow", "bad": "bold red"}
    table = Table(title=title)
    for column in ("what", "state", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.what, f"[{colour[row.state]}]{row.state}[/]", row.detail)
    console = RichConsole(width=120)
    with console.capture() as captured:
        console.print(table)
    return captured.get()
