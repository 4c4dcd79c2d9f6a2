"""Which database the host's Prefect runs on: SQLite on the VM (default) or the stack's managed
PostgreSQL (outputs `database: postgres`, `databaseUrl`, `apiWorkers`), the scale-out mode."""

from __future__ import annotations

from urllib.parse import urlsplit

from prefect_host.console import redact_url, shown
from prefect_host.errors import UsageError
from prefect_host.outputs import StackOutputs
from prefect_host.services.scale_out import Database


def database_from_outputs(outputs: StackOutputs) -> Database | None:
    """None: SQLite. The outputs module has checked that the values come together and apiWorkers' shape;
    the URL is checked here (shown without its password when it is wrong)."""
    if outputs.database != "postgres":
        return None
    url = outputs.database_url or ""
    try:
        parts = urlsplit(url)
        valid = parts.scheme == "postgresql+asyncpg" and bool(parts.hostname) and parts.path.strip("/") != ""
        valid = valid and parts.port != 0  # .port raises ValueError when out of range
    except ValueError:
        valid = False
    if not valid:
        redacted = redact_url(url)
        # A URL too broken to find its credentials in is not shown at all: it may hold the password.
        what = shown(redacted) if redacted != url or "@" not in url else "(not shown: it may hold the password)"
        raise UsageError(
            f"databaseUrl {what}: must be postgresql+asyncpg://USER:PASSWORD@HOST[:PORT]/NAME "
            "(take it unchanged from the stack outputs)."
        )
    return Database(url=url, api_workers=int(outputs.api_workers or "2"))


def check_backup_flags(database: Database | None, *, no_restore: bool, restore_at: str | None) -> None:
    """Litestream replicates SQLite only; on PostgreSQL the managed database's own backups and
    point-in-time recovery (dbBackupRetentionDays) take its place."""
    if database is not None and (no_restore or restore_at is not None):
        flag = "--restore-at" if restore_at is not None else "--no-restore"
        raise UsageError(
            f"{flag}: this stack's database is PostgreSQL ({database.where}), which the bootstrap does not "
            "restore; use the managed database's point-in-time recovery (RDS / Cloud SQL), and leave the flag out."
        )
