"""A change of prefectVersion on a host that has a database: snapshot, switch, verify, or roll back.

Prefect migrates its database when the new version first starts, and its downgrades are best
effort (prefect#8058 lost every flow-run state on a SQLite upgrade). So before anything changes:

1. a consistent copy of the database (SQLite's online backup API, while the server runs) in
   /var/lib/prefect/upgrades/, and the venv kept beside the new one (`cp -al`: hard links, instant;
   uv unlinks and relinks files, it never writes into one, so the copy stays the old version);
2. the new version is installed, the server restarts on it and migrates, and is verified;
3. if any of that fails: before the server restarted, the old venv goes back and nothing else
   changed (the old server never stopped); after, the server, its workers and Litestream stop, the
   old venv and the snapshot go back, Litestream's local state is reset, the applied records are
   dropped (the next run restarts what it must), the old server starts and must answer with the old
   version, and the bootstrap exits non-zero with the reason.

A downgrade is refused unless --allow-downgrade: migrations only go forward here.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prefect_host.console import Console
from prefect_host.errors import PrefectHostError, UsageError
from prefect_host.host.apply import run_step
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import Step, Venv
from prefect_host.services import litestream, prefect_server, workers
from prefect_host.services.python_env import VENV_DIR
from prefect_host.services.scale_out import Database
from prefect_host.ssh import HostSession

from .inputs import release

UPGRADES_DIR = f"{prefect_server.STATE_DIR}/upgrades"
DB_FACT = "prefect_db"
ROLLBACK_FACT = "prefect_rollback_venv"
_ROLLBACK_DIR = f"{VENV_DIR}.rollback"
# For the server's facts script: does the database exist (whether or not it is replicated), and is an
# old venv left from an upgrade that was interrupted (its Prefect version)?
DB_FACT_SCRIPT = (
    f'[ -e {shlex.quote(litestream.DB_PATH)} ] && echo "{DB_FACT}=1"\n'
    f"for d in {shlex.quote(_ROLLBACK_DIR)}/lib/python3*/site-packages/prefect-*.dist-info; do\n"
    f'  [ -d "$d" ] && v="${{d##*/prefect-}}" && echo "{ROLLBACK_FACT}=${{v%.dist-info}}"\n'
    "done\n"
)
# Room the snapshot needs beside the database: a copy of it (with its WAL), and as much again for the
# rollback's copy back, plus a margin; checked before the snapshot so it can never fill the disk.
_SPACE_FACTOR, _SPACE_MARGIN_KB = 2, 100_000
KEEP_SNAPSHOTS = 3


class UpgradeError(PrefectHostError):
    """The new version did not come up; the host is back on the old one."""


@dataclass
class Upgrade:
    old: str
    new: str
    venv: Venv
    replicated: bool
    snapshot: str = ""
    switched: bool = False  # the server was restarted on the new version
    switched_at: float = 0.0
    downtime: float | None = None
    worker_units: list[str] = field(default_factory=list)

    @property
    def rollback_dir(self) -> str:
        return f"{self.venv.path}.rollback"


def plan_upgrade(
    facts: HostFacts, venv: Venv, *, allow_downgrade: bool, replicated: bool, database: Database | None = None
) -> Upgrade | None:
    """The upgrade this run makes (None: a new host, or the same version); a downgrade without
    allow_downgrade is refused here, before anything changes. On PostgreSQL (`database`) there is no
    snapshot to take here: the migration step runs before the new API starts, and the managed
    database's point-in-time recovery is the way back (None, after the downgrade check)."""
    installed = facts.venv_version(venv, "prefect")
    wanted = venv.pins[0][1]
    left = facts.get(ROLLBACK_FACT)
    if left is not None:
        raise UsageError(
            f"An earlier upgrade from Prefect {left} did not finish: its venv is kept at {_ROLLBACK_DIR} and the "
            f"host has Prefect {installed or 'none'} installed, with the database snapshots in {UPGRADES_DIR}. "
            f"If the server works on {installed}, remove the old venv (`sudo rm -rf {_ROLLBACK_DIR}`) and run the "
            f"bootstrap again; to go back, stop prefect-server, move {_ROLLBACK_DIR} to {VENV_DIR} and restore "
            "the newest snapshot over the database."
        )
    if installed is None or installed == wanted or (database is None and facts.get(DB_FACT) is None):
        return None
    if database is not None:
        if release(wanted) < release(installed):
            raise UsageError(
                f"prefectVersion {wanted} is older than the {installed} the host runs on PostgreSQL "
                f"({database.where}). Its migrations only go forward and the older version cannot read the newer "
                "schema, so a downgrade there is refused even with --allow-downgrade: restore the managed database "
                "to a point in time before the upgrade (RDS / Cloud SQL) and use a new database URL, or stay on "
                f"{installed}."
            )
        return None
    if release(wanted) < release(installed) and not allow_downgrade:
        raise UsageError(
            f"prefectVersion {wanted} is older than the {installed} the host runs. Prefect migrates its database "
            "forward on each upgrade and its downgrades are best effort; a downgrade is refused unless "
            "--allow-downgrade (take `prefect-host backup now` first)."
        )
    return Upgrade(installed, wanted, venv, replicated)


def prepare(upgrade: Upgrade, session: HostSession, console: Console) -> None:
    """Before anything changes: the old venv kept beside the new one (the snapshot comes at the switch)."""
    venv, kept = shlex.quote(upgrade.venv.path), shlex.quote(upgrade.rollback_dir)
    keep = f"rm -rf {kept} && cp -al {venv} {kept}"
    upgrade.worker_units = workers.running_units(session)
    console.line(f"  upgrade: Prefect {upgrade.old} -> {upgrade.new}; the old venv kept, a snapshot at the switch")
    run_step(Step.shell(f"keep the Prefect {upgrade.old} venv for a rollback", keep, "cp -al"), session, console)


def snapshot_script(snapshot: str) -> str:
    """Stop the server, then copy the database with SQLite's backup API: nothing is written after the
    copy until the new version starts. Refused (the server started again) when the disk lacks room."""
    q, db, user = shlex.quote, shlex.quote(litestream.DB_PATH), prefect_server.SERVICE_USER
    return (
        f"install -d -o {user} -g {user} -m 0700 {q(UPGRADES_DIR)} && "
        f"need=$(( ($(du -sk {db} {db}-wal 2>/dev/null | awk '{{s+=$1}} END {{print s+0}}') * {_SPACE_FACTOR}) "
        f"+ {_SPACE_MARGIN_KB} )) && free=$(df -Pk {q(UPGRADES_DIR)} | awk 'NR==2 {{print $4}}') && "
        f'if [ "$free" -lt "$need" ]; then echo "the snapshot needs $need kB free beside the database, '
        f'there are $free kB: free some space and run the bootstrap again" >&2; exit 1; fi && '
        f"systemctl stop {prefect_server.UNIT_NAME} && "
        f"{{ {litestream.SQLITE_COPY} {db} {q(snapshot)} || {{ rm -f {q(snapshot)}; systemctl start "
        f"{prefect_server.UNIT_NAME}; exit 1; }}; }} && chown {user}: {q(snapshot)} && chmod 600 {q(snapshot)} && "
        # The newest KEEP_SNAPSHOTS snapshots stay; older ones (and what failed upgrades wrote) go.
        f"for pattern in 'prefect-*.db' 'failed-*.db'; do ls -1t {q(UPGRADES_DIR)}/$pattern 2>/dev/null | "
        f"tail -n +{KEEP_SNAPSHOTS + 1} | xargs -r rm -f; done"
    )


def switch(upgrade: Upgrade, session: HostSession, console: Console) -> None:
    """Just before the server restarts on the new version: stop it and snapshot the database."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    upgrade.snapshot = f"{UPGRADES_DIR}/prefect-{upgrade.old}-{stamp}.db"
    upgrade.switched, upgrade.switched_at = True, time.monotonic()
    session.run(snapshot_script(upgrade.snapshot), sudo=True, timeout=900, label="snapshot the database")
    console.line(f"    snapshot of the database (Prefect {upgrade.old}): {upgrade.snapshot}")


def started(upgrade: Upgrade) -> None:
    if upgrade.switched and upgrade.downtime is None:
        upgrade.downtime = time.monotonic() - upgrade.switched_at


@contextmanager
def guarded(
    upgrade: Upgrade | None, session: HostSession, console: Console, wait_for_start: Callable[[], None]
) -> Iterator[None]:
    """Roll back if the body (install, restart, migrate, verify) fails, then wait for the old server
    (`wait_for_start`); a success drops the venv copy."""
    if upgrade is None:
        yield
        return
    try:
        yield
    except (PrefectHostError, OSError, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        try:
            rollback(upgrade, session, console)
        except PrefectHostError as failed:
            raise UpgradeError(
                f"The upgrade to Prefect {upgrade.new} failed ({reason}), and so did the rollback ({failed}). "
                f"The old venv is at {upgrade.rollback_dir} (or already back in {upgrade.venv.path}), the snapshot "
                f"at {upgrade.snapshot or '(none: the server had not stopped)'}; `prefect-host status` shows what runs."
            ) from None
        if upgrade.switched:
            with console.step(f"Prefect {upgrade.old} answers again"):
                wait_for_start()
        where = "after the switch" if upgrade.switched else "before the switch"
        kept = (
            f"with the database as it was when it stopped (snapshot {upgrade.snapshot}; what the new version "
            f"wrote is kept as {failed_database(upgrade)})"
            if upgrade.switched
            else "and never stopped"
        )
        raise UpgradeError(
            f"The upgrade to Prefect {upgrade.new} failed {where} ({reason}). Rolled back: Prefect {upgrade.old} "
            f"runs {kept}."
        ) from None
    run_step(
        Step.shell("drop the old venv copy", f"rm -rf {shlex.quote(upgrade.rollback_dir)}", "rm"), session, console
    )
    if upgrade.downtime is not None:
        console.line(
            f"  upgrade: the API was down {upgrade.downtime:.1f} s (snapshot, restart, migrations); "
            f"the snapshot of Prefect {upgrade.old}'s database stays in {upgrade.snapshot}"
        )


def failed_database(upgrade: Upgrade) -> str:
    return upgrade.snapshot.replace(f"prefect-{upgrade.old}-", f"failed-{upgrade.new}-")


def rollback_script(upgrade: Upgrade) -> str:
    """Stop the server, workers and Litestream; reset Litestream's state while its binary is there (an
    old venv may predate it); the old venv back; the new version's database kept aside, the snapshot
    in place; the applied records dropped. The units start again whatever failed before."""
    q, db = shlex.quote, litestream.DB_PATH
    user = prefect_server.SERVICE_USER
    units = [prefect_server.UNIT_NAME, *upgrade.worker_units]
    failed = failed_database(upgrade)
    reset = f"{litestream.reset_script()} >/dev/null || true; " if upgrade.replicated else ""
    venv, kept = q(upgrade.venv.path), q(upgrade.rollback_dir)
    swap = (
        f"set -e; {reset}rm -rf {venv}.failed; mv {venv} {venv}.failed; mv {kept} {venv}; rm -rf {venv}.failed; "
        f"for suffix in '' -wal -shm; do [ ! -e {q(db)}$suffix ] || mv {q(db)}$suffix {q(failed)}$suffix; done; "
        f"install -o {user} -g {user} -m 600 {q(upgrade.snapshot)} {q(db)}.rollback; mv {q(db)}.rollback {q(db)}; "
        f"rm -f {q(prefect_server.APPLIED_FILE)} {q(workers.APPLIED_FILE)}"
    )
    start = f"systemctl start {' '.join(reversed(units))}"
    if upgrade.replicated:
        start += f"; [ ! -x {q(litestream.LITESTREAM_BIN)} ] || systemctl start {litestream.UNIT_NAME}"
    stop = " ".join(units + ([litestream.UNIT_NAME] if upgrade.replicated else []))
    return f"systemctl stop {stop}; ( {swap} ); rc=$?; {start}; exit $rc"


def rollback(upgrade: Upgrade, session: HostSession, console: Console) -> None:
    q = shlex.quote
    if not upgrade.switched:
        back = f"rm -rf {q(upgrade.venv.path)} && mv {q(upgrade.rollback_dir)} {q(upgrade.venv.path)}"
        run_step(Step.shell(f"put the Prefect {upgrade.old} venv back", back, "mv"), session, console)
        return
    run_step(
        Step.shell(
            f"roll back to Prefect {upgrade.old} and the snapshot", rollback_script(upgrade), "rollback", timeout=300
        ),
        session,
        console,
    )
