"""The bootstrap's backup settings: replicate the database to the bucket, restore it onto a new host.

On by default whenever the bootstrap has the stack's bucket (result storage); `--no-backup` turns
replication off (the unit is stopped, the replica stays in the bucket), `--no-restore` starts a
host without a database empty, `--restore-at` restores a point in time instead of the newest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from prefect_host.console import shown
from prefect_host.errors import UsageError
from prefect_host.outputs import StackOutputs
from prefect_host.services.litestream import DEFAULT_RETENTION, DEFAULT_SNAPSHOT_INTERVAL, Replica


@dataclass(frozen=True)
class BackupSettings:
    replica: Replica | None = None  # None: no replication (no bucket, or --no-backup)
    restore: bool = True
    restore_at: str | None = None  # RFC 3339 UTC, "2026-12-06T05:25:45Z"
    # Why there is no replica, for the unit's removal step and the summary.
    off_reason: str = "no bucket"


NO_BACKUP = BackupSettings()


def restore_timestamp(text: str, flag: str = "--restore-at") -> str:
    """`--restore-at` (or `flag`) as Litestream takes it (RFC 3339, UTC); a bad or naive time is a usage error."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or text != text.strip():
        raise UsageError(
            f"{flag} {shown(text)}: give a UTC time such as 2026-12-06T05:25:45Z (RFC 3339 with a Z or an offset)."
        )
    if moment > dt.datetime.now(dt.UTC):
        raise UsageError(f"{flag} {shown(text)}: that time is in the future.")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_settings(
    storage: StackOutputs | None, *, no_backup: bool, no_restore: bool, restore_at: str | None
) -> BackupSettings:
    if storage is None or no_backup:
        if restore_at is not None:
            flag = "--no-storage" if storage is None else "--no-backup"
            raise UsageError(f"--restore-at and {flag}: a restore needs the bucket's replica; give one of them.")
        return BackupSettings(off_reason="--no-backup" if storage is not None else "no bucket (--no-storage)")
    if no_restore and restore_at is not None:
        raise UsageError("--restore-at and --no-restore: give one of them.")
    replica = Replica(
        bucket=storage.bucket_name,
        region=storage.bucket_region,
        access_key_id=storage.aws_access_key_id,
        secret_access_key=storage.aws_secret_access_key,
        endpoint_url=storage.s3_endpoint_url,
        retention=getattr(storage, "backup_retention", None) or DEFAULT_RETENTION,
        snapshot_interval=getattr(storage, "backup_snapshot_interval", None) or DEFAULT_SNAPSHOT_INTERVAL,
    )
    return BackupSettings(
        replica=replica,
        restore=not no_restore,
        restore_at=None if restore_at is None else restore_timestamp(restore_at),
    )
