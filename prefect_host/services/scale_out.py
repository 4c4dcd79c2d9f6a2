"""Prefect's own scale-out mode (database postgres): the API without its background services in
`api_workers` processes (`prefect server start --no-services --workers N`, uvicorn's supervisor
replaces a process that dies; systemd restarts the unit if the supervisor does), the background
services as `prefect-services.service`, Redis for what the processes share, and migrations as their
own step before the API (re)starts on a new version or a new database.

The database URL (with its password) and Redis's password live only in the server's 0600 env file,
which both units read.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prefect_host.host.model import Command, File, Seed, Service, Step, Units
from prefect_host.services import metadata_guard, prefect_server, redis
from prefect_host.services.python_env import PREFECT_BIN, VENV_DIR
from prefect_host.services.systemd import HEADER, sandbox_block

# prefect-redis: the release current with Prefect 3.9.1 (requires prefect >= 3.7.4, redis >= 8).
PREFECT_REDIS_DISTRIBUTION = "prefect-redis"
PREFECT_REDIS_VERSION = "0.3.0"
SERVICES_NAME = "prefect-services"
SERVICES_UNIT = "prefect-services.service"
SERVICES_UNIT_PATH = f"/etc/systemd/system/{SERVICES_UNIT}"
SERVICES_APPLIED_FILE = f"{prefect_server.CONFIG_DIR}/services.applied"
# One marker per (Prefect version, database): its migrations ran there (root-owned, in the state dir).
MIGRATED_DIR = f"{prefect_server.STATE_DIR}/migrated"


@dataclass(frozen=True)
class Database:
    """PostgreSQL for Prefect: the URL (postgresql+asyncpg://..., a secret) and the API's processes."""

    url: str = field(repr=False)
    api_workers: int

    @property
    def where(self) -> str:
        """host:port/name, for messages and the migration marker (no user, no password)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def env_settings(database: Database, auth_string: str) -> dict[str, str]:
    """What the API and the services add to the server's env file in scale-out mode."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database.url,
        # Migrations are their own step (migration_seed), never raced by several processes at start.
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis.url(auth_string, redis.MESSAGING_DB),
        "PREFECT_SERVER_DOCKET_URL": redis.url(auth_string, redis.DOCKET_DB),
    }


def api_exec_start(database: Database) -> str:
    return f"{PREFECT_BIN} server start --no-services --workers {database.api_workers}"


# Run as the server's user with the server's env file, the way its units run (systemd parses the
# env file, so the secrets never reach a command line): pg_trgm, then Prefect's migrations.
_RUN_AS_SERVER = (
    "systemd-run --quiet --wait --pipe --collect --service-type=exec "
    f"-p User={prefect_server.SERVICE_USER} -p Group={prefect_server.SERVICE_USER} "
    f"-p EnvironmentFile={prefect_server.ENV_FILE} -p StateDirectory=prefect "
    f"-p WorkingDirectory={prefect_server.STATE_DIR}"
)
MIGRATE_SCRIPT = f"""\
import asyncio, subprocess, sys
from prefect.server.database import provide_database_interface

async def ensure_trgm():
    engine = await provide_database_interface().engine()
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    finally:
        await engine.dispose()

asyncio.run(ensure_trgm())
print("pg_trgm: present", flush=True)
sys.exit(subprocess.run([{PREFECT_BIN!r}, "server", "database", "upgrade", "-y"]).returncode)
"""


def migration_marker(database: Database, version: str) -> str:
    digest = hashlib.sha256(database.where.encode()).hexdigest()[:16]
    return f"{MIGRATED_DIR}/{version}-{digest}"


def migration_seed(database: Database, version: str) -> Seed:
    """Prefect's migrations on this database for this version, once, before the API (re)starts."""
    marker = migration_marker(database, version)
    script = (
        f"{_RUN_AS_SERVER} {shlex.quote(VENV_DIR + '/bin/python')} - && "
        f"install -d -m 0755 {shlex.quote(MIGRATED_DIR)} && touch {shlex.quote(marker)}"
    )
    step = Step(
        f"migrate the database {database.where} to Prefect {version} (pg_trgm, prefect server database upgrade)",
        (Command(script, "prefect server database upgrade", stdin=MIGRATE_SCRIPT.encode(), timeout=900.0),),
    )
    return Seed(marker, (step,))


def services_unit_text() -> str:
    return f"""\
{HEADER}
[Unit]
Description=Prefect server background services (scheduler, late runs, events, ...)
Documentation=https://docs.prefect.io/v3/advanced/self-hosted
Wants=network-online.target {redis.UNIT}
After=network-online.target {redis.UNIT}

[Service]
Type=simple
User={prefect_server.SERVICE_USER}
Group={prefect_server.SERVICE_USER}
EnvironmentFile={prefect_server.ENV_FILE}
WorkingDirectory={prefect_server.STATE_DIR}
{metadata_guard.EXEC_START_PRE_OPTIONAL}
ExecStart={PREFECT_BIN} server services start
Restart=always
RestartSec=2
TimeoutStopSec=30
StateDirectory=prefect
StateDirectoryMode=0750
UMask=0077

{sandbox_block()}
[Install]
WantedBy=multi-user.target
"""


def services_service(*, server: Service, absent: str = "") -> Service:
    """The background services: restarted whenever the server's env file or version changes (the
    env file is the server's declaration; its digest is this unit's version)."""
    units = Units((SERVICES_UNIT,), applied=SERVICES_APPLIED_FILE, display="the Prefect services")
    if absent:
        return Service(SERVICES_NAME, units=units, absent=absent, files=(File(SERVICES_UNIT_PATH, None, systemd=True),))
    env = next(file.text or "" for file in server.files if file.path == prefect_server.ENV_FILE)
    return Service(
        SERVICES_NAME,
        files=(File(SERVICES_UNIT_PATH, services_unit_text(), systemd=True, describe=f"install {SERVICES_UNIT}"),),
        units=units,
        version=f"{server.version} {hashlib.sha256(env.encode()).hexdigest()}",
        start_after=(server.name,),
    )


def server_scale_out(database: Database, *, auth_string: str, version: str) -> prefect_server.ScaleOut:
    """The server's scale-out settings: env, API command, Redis as its dependency, migrations."""
    return prefect_server.ScaleOut(
        env=env_settings(database, auth_string),
        exec_start=api_exec_start(database),
        needs=redis.UNIT,
        migrations=migration_seed(database, version),
    )
