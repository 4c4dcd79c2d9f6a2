"""`prefect-host backup`: the database's replica in the bucket, from the laptop over SSH.

- now: a full snapshot taken now (Litestream paused meanwhile; it catches up from the WAL).
- list: what the bucket holds, per compaction level: files, transactions, time range.
- restore [--at TIME]: the server and workers stop, the replica (newest, or as it was at TIME)
  replaces the database, whose old file is kept beside it, Litestream's local state is reset to the
  restored database, and everything starts again. On a new host the bootstrap restores by itself.
"""

from __future__ import annotations

import json
import shlex

from prefect_host.bootstrap.checks import wait_for_start
from prefect_host.bootstrap.inputs import BootstrapInputs
from prefect_host.console import Console
from prefect_host.errors import PrefectHostError
from prefect_host.host.apply import journal_on_failure, run_command, run_step
from prefect_host.host.model import Step
from prefect_host.services import litestream, prefect_server, workers
from prefect_host.ssh import HostSession


class BackupError(PrefectHostError):
    pass


def require_replication(session: HostSession) -> None:
    result = session.run(
        f"test -f {shlex.quote(litestream.CONFIG_FILE)}", sudo=True, check=False, timeout=30, label="test -f"
    )
    if result.exit_status != 0:
        raise BackupError(
            f"{session.host} does not replicate its database ({litestream.CONFIG_FILE} is missing): run the "
            "bootstrap with the stack's bucket (without --no-storage or --no-backup) first."
        )


def snapshot_now(session: HostSession, console: Console) -> dict:
    require_replication(session)
    with console.step("take a full snapshot of the database", changed=True):
        command = litestream.host_command("snapshot", label="litestream snapshot")
        snapshot = json.loads(run_command(session, command).stdout)
    console.line(
        f"    snapshot at transaction {snapshot['txid']}, {snapshot['bytes'] / 1e6:.1f} MB, {snapshot['timestamp']}"
    )
    return snapshot


def replica_levels(session: HostSession) -> list[dict]:
    require_replication(session)
    return json.loads(run_command(session, litestream.host_command("list", label="litestream ltx")).stdout)


def render_levels(rows: list[dict], url: str) -> str:
    if not rows:
        return f"{url}: no replica yet."
    lines = [f"{url}:", f"  {'level':>5}  {'files':>5}  {'bytes':>10}  {'transactions':<19}  time range (UTC)"]
    for row in rows:
        lines.append(
            f"  {row['level']:>5}  {row['files']:>5}  {row['bytes']:>10}  "
            f"{row['min_txid']:>8} - {row['max_txid']:<8}  {row['oldest']} - {row['newest']}"
        )
    return "\n".join(lines)


def restore(session: HostSession, console: Console, inputs: BootstrapInputs, *, at: str | None) -> None:
    """Replace the database with the replica (at `at`), keeping the old file; stops the server, the
    running workers and Litestream around it and starts them again, also when the restore fails,
    and returns once the API answers again (a unit that fails to start has its journal printed)."""
    require_replication(session)
    units = [prefect_server.UNIT_NAME, *workers.running_units(session), litestream.UNIT_NAME]
    run_step(
        Step.shell(f"stop {' '.join(units)}", f"systemctl stop {' '.join(units)}", "systemctl stop"), session, console
    )
    try:
        name = "restore the database" + (f" as it was at {at}" if at else " (newest)")
        run_step(Step(name, (litestream.restore_command(timestamp=at, replace=True),)), session, console)
        # Litestream's local state describes the old database: it starts afresh from the restored one.
        reset = litestream.reset_script()
        run_step(Step.shell("reset Litestream's local state", reset, "litestream reset"), session, console)
    finally:
        starting = list(reversed(units))
        start = Step.shell(f"start {' '.join(starting)}", f"systemctl start {' '.join(starting)}", "systemctl start")
        run_step(start, session, console, units=starting)
    with journal_on_failure(True, session, console, [prefect_server.UNIT_NAME]), console.step("Prefect API answers"):
        wait_for_start(session, None, inputs)
