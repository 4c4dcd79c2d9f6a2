"""The bootstrap's checks around the database's replica: a restore request the host allows, and
replication proven (a forced sync that reached the bucket) before the bootstrap reports success."""

from __future__ import annotations

import datetime as dt
import json

from prefect_host.console import Console
from prefect_host.durations import seconds_since
from prefect_host.errors import PrefectHostError, UsageError
from prefect_host.host.apply import journal_on_failure, run_command
from prefect_host.host.facts import HostFacts
from prefect_host.services import litestream
from prefect_host.ssh import HostSession
from prefect_host.storage import s3_client

from . import upgrade
from .inputs import BootstrapInputs

# How long a forced sync may take to reach the bucket (Litestream's own -timeout, seconds).
SYNC_TIMEOUT_S = 60


class ReplicationError(PrefectHostError):
    """The database's replica does not reach the bucket."""


def check_restore_request(inputs: BootstrapInputs, facts: HostFacts) -> None:
    """--restore-at on a host that has a database: refused before anything changes (a restore never
    overwrites one; `prefect-host backup restore --at` does it on a stopped server, keeping the old)."""
    if inputs.backup.restore_at and facts.get(f"exists:{litestream.DB_PATH}") is not None:
        raise UsageError(
            f"--restore-at {inputs.backup.restore_at}: {inputs.host} already has a Prefect database "
            f"({litestream.DB_PATH}), which a bootstrap never overwrites. To go back in time on this host, "
            "stop the server and run `prefect-host backup restore --at TIME` (it keeps the current database "
            "beside the restored one)."
        )


def warn_before_an_empty_start(inputs: BootstrapInputs, facts: HostFacts, console: Console) -> None:
    """--no-restore on a host without a database while the bucket holds a replica: the new, empty
    database's replica becomes the newest there (the older history then ages out after the retention)."""
    replica = inputs.backup.replica
    if replica is None or inputs.backup.restore or facts.get(upgrade.DB_FACT) is not None:
        return
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(
        region=replica.region,
        access_key_id=replica.access_key_id,
        secret_access_key=replica.secret_access_key,
        endpoint_url=replica.endpoint_url,
    )
    try:
        listed = client.list_objects_v2(Bucket=replica.bucket, Prefix=f"{litestream.REPLICA_PATH}/", MaxKeys=1)
    except (BotoCoreError, ClientError):
        return  # the bucket was probed already; a listing refused here changes nothing about the warning's point
    if listed.get("KeyCount", 0):
        console.warn(
            f"--no-restore: {replica.url} holds a replica of an earlier database, and this host starts empty; "
            "from now on its own replica is the newest there. The earlier history stays restorable with "
            "`prefect-host backup restore --at TIME` (a time before this run) until backupRetention ages it out."
        )


def replication_position(session: HostSession, *, timeout: int = SYNC_TIMEOUT_S) -> dict:
    """{txid, replica_txid, last_sync_at} once a forced sync has reached the bucket."""
    command = litestream.host_command(
        "position", "--timeout", str(timeout), label="litestream sync -wait", timeout=timeout + 30
    )
    return json.loads(run_command(session, command).stdout)


def verify_replication(session: HostSession, inputs: BootstrapInputs, console: Console) -> None:
    """A sync forced through Litestream's control socket must reach the bucket: the replica then has
    the database's newest transaction. Prints how old the newest replicated write is."""
    replica = inputs.backup.replica
    if replica is None:
        return
    with (
        journal_on_failure(True, session, console, [litestream.UNIT_NAME]),
        console.step(f"verify the backup ({replica.url})"),
    ):
        try:
            position = replication_position(session)
        except PrefectHostError as exc:
            raise ReplicationError(
                f"Prefect's database does not reach {replica.url}: {exc}. The server runs, but nothing is "
                f"backed up; see `journalctl -u {litestream.UNIT_NAME}` on the host."
            ) from None
        if position["replica_txid"] < position["txid"]:
            raise ReplicationError(
                f"the replica in {replica.url} is at transaction {position['replica_txid']}, the database at "
                f"{position['txid']}: Litestream did not catch up within {SYNC_TIMEOUT_S} s."
            )
    console.line(f"    replica at transaction {position['replica_txid']}, {sync_age(position.get('last_sync_at'))}")


def sync_age(moment: str | None, now: dt.datetime | None = None) -> str:
    """ "last sync 3 s ago" from Litestream's RFC 3339 time (nanoseconds: Python keeps microseconds)."""
    seconds = seconds_since(moment, now or dt.datetime.now(dt.UTC))
    return "never synced" if seconds is None else f"last sync {max(seconds, 0):.0f} s ago"
