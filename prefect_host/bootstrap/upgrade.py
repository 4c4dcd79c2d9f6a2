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
from prefect_host.ssh import HostSession

from .inputs import release

UPGRADES_DIR = f"{prefect_server.STATE_DIR}/upgrades"
DB_FACT = "prefect_db"
# For the server's facts script: does the database exist (whether or not it is replicated)?
DB_FACT_SCRIPT = f'[ -e {shlex.quote(litestream.DB_PATH)} ] && echo "{DB_FACT}=1"\n'


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


def plan_upgrade(facts: HostFacts, venv: Venv, *, allow_downgrade: bool, replicated: bool) -> Upgrade | None:
    """The upgrade this run makes (None: a new host, or the same version); a downgrade without
    allow_downgrade is refused here, before anything changes."""
    installed = facts.venv_version(venv, "prefect")
    wanted = venv.pins[0][1]
    if installed is None or installed == wanted or facts.get(DB_FACT) is None:
        return None
    if release(wanted) < release(installed) and not allow_downgrade:
        raise UsageError(
            f"prefectVersion {wanted} is older than the {installed} the host runs. Prefect migrates its database "
            "forward on each upgrade and its downgrades are best effort; a downgrade is refused unless "
            "--allow-downgrade (take `prefect-host backup now` first)."
        )
    return Upgrade(installed, wanted, venv, replicated)


def prepare(upgrade: Upgrade, session: HostSession, console: Console) -> None:
    q = shlex.quote
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    upgrade.snapshot = f"{UPGRADES_DIR}/prefect-{upgrade.old}-{stamp}.db"
    copy = (
        f"install -d -o {prefect_server.SERVICE_USER} -g {prefect_server.SERVICE_USER} -m 0700 {q(UPGRADES_DIR)} && "
        f"python3 -c 'import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); "
        f"s.backup(d); d.close()' {q(litestream.DB_PATH)} {q(upgrade.snapshot)} && "
        f"chown {prefect_server.SERVICE_USER}: {q(upgrade.snapshot)} && chmod 600 {q(upgrade.snapshot)}"
    )
    keep = f"rm -rf {q(upgrade.rollback_dir)} && cp -al {q(upgrade.venv.path)} {q(upgrade.rollback_dir)}"
    listed = session.run(
        "systemctl list-units --state=active --plain --no-legend 'prefect-worker@*.service'",
        sudo=True,
        timeout=30,
        label="systemctl list-units",
    )
    upgrade.worker_units = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    console.line(f"  upgrade: Prefect {upgrade.old} -> {upgrade.new}; a snapshot first, the old venv kept")
    run_step(
        Step.shell(f"snapshot the database ({upgrade.old})", copy, "sqlite3 backup", timeout=900), session, console
    )
    run_step(Step.shell(f"keep the Prefect {upgrade.old} venv for a rollback", keep, "cp -al"), session, console)


def switching(upgrade: Upgrade) -> None:
    """Called as the server restarts on the new version."""
    upgrade.switched, upgrade.switched_at = True, time.monotonic()


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
    except (PrefectHostError, OSError) as exc:
        rollback(upgrade, session, console)
        if upgrade.switched:
            with console.step(f"Prefect {upgrade.old} answers again"):
                wait_for_start()
        where = "after the switch" if upgrade.switched else "before the switch"
        raise UpgradeError(
            f"The upgrade to Prefect {upgrade.new} failed {where} ({exc}). Rolled back: Prefect {upgrade.old} runs "
            f"with the database as it was{' before the upgrade' if upgrade.switched else ''} "
            f"(snapshot kept in {upgrade.snapshot})."
        ) from None
    run_step(
        Step.shell("drop the old venv copy", f"rm -rf {shlex.quote(upgrade.rollback_dir)}", "rm"), session, console
    )
    if upgrade.downtime is not None:
        console.line(f"  upgrade: the API was down {upgrade.downtime:.1f} s while Prefect {upgrade.new} started")


def rollback(upgrade: Upgrade, session: HostSession, console: Console) -> None:
    q = shlex.quote
    venv, kept = q(upgrade.venv.path), q(upgrade.rollback_dir)
    back = f"rm -rf {venv} && mv {kept} {venv}"
    if not upgrade.switched:
        run_step(Step.shell(f"put the Prefect {upgrade.old} venv back", back, "mv"), session, console)
        return
    units = [prefect_server.UNIT_NAME, *upgrade.worker_units] + ([litestream.UNIT_NAME] if upgrade.replicated else [])
    db = q(litestream.DB_PATH)
    restore = (
        f"systemctl stop {' '.join(units)} && {back} && "
        f"install -o {prefect_server.SERVICE_USER} -g {prefect_server.SERVICE_USER} -m 600 "
        f"{q(upgrade.snapshot)} {db}.rollback && rm -f {db}-wal {db}-shm && mv {db}.rollback {db} && "
        f"rm -f {q(prefect_server.APPLIED_FILE)} {q(workers.APPLIED_FILE)}"
    )
    if upgrade.replicated:
        restore += (
            f" && runuser -u {prefect_server.SERVICE_USER} -- {q(litestream.LITESTREAM_BIN)} reset -no-expand-env "
            f"-config {q(litestream.CONFIG_FILE)} {db}"
        )
    restore += f" && systemctl start {' '.join(reversed(units))}"
    run_step(
        Step.shell(f"roll back to Prefect {upgrade.old} and the snapshot", restore, "rollback", timeout=300),
        session,
        console,
    )
