"""Moving a host between SQLite and PostgreSQL: the switches refused before anything changes (from the
host's facts), when the objects move (--migrate-objects), the transfer itself (its commands and the
patch of `prefect transfer` it runs); and the other refusals of a PostgreSQL stack (a downgrade, the
Litestream backup commands)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tomllib
import types
import uuid
from pathlib import Path

import pytest
from rich.console import Console as RichConsole

from prefect_host.bootstrap import database_switch, upgrade
from prefect_host.bootstrap.database_inputs import check_backup_flags
from prefect_host.bootstrap.upgrade import DB_FACT
from prefect_host.cli import backup as backup_cli
from prefect_host.console import Console
from prefect_host.errors import UsageError
from prefect_host.host.facts import HostFacts, parse_facts
from prefect_host.services import litestream, prefect_server
from prefect_host.services.python_env import prefect_venv
from prefect_host.services.scale_out import MIGRATED_DIR, Database
from tests.prefect_host.bootstrap.bootstrap_samples import outputs_mapping, sample_inputs
from tests.prefect_host.host.host_samples import (
    END,
    HOST,
    RecordingSession,
    venv_lines,
)

DB_PASSWORD = "pg-Secret-pw"
DATABASE = Database(url=f"postgresql+asyncpg://prefect:{DB_PASSWORD}@10.0.1.5:5432/prefect?ssl=require", api_workers=2)
SQLITE = sample_inputs()
POSTGRES = sample_inputs(database=DATABASE)
MIGRATING = sample_inputs(database=DATABASE, migrate_objects=True)
ON_POSTGRES = f"{database_switch.ON_POSTGRES_FACT}=1\n"
HAS_SQLITE = f"{DB_FACT}=1\n"
MIGRATED = f"{database_switch.MIGRATED_FACT}=1\n"


def facts(*lines: str) -> HostFacts:
    return parse_facts(HOST + "".join(lines) + END)


# --- the facts -------------------------------------------------------------------------------------
def run_fact_script(tmp_path: Path, env: str | None, marker: bool) -> str:
    """The server's piece of the facts script, run by sh on this machine with its paths under tmp_path."""
    env_file, marker_file = tmp_path / "server.env", tmp_path / "objects-from-sqlite"
    if env is not None:
        env_file.write_text(env)
    if marker:
        marker_file.write_text("")
    script = database_switch.FACT_SCRIPT.replace(prefect_server.ENV_FILE, str(env_file)).replace(
        database_switch.MARKER, str(marker_file)
    )
    assert script != database_switch.FACT_SCRIPT
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout


def test_the_fact_script_reads_the_env_files_database_and_the_transfer_marker(tmp_path):
    assert f"{MIGRATED_DIR}/objects-from-sqlite" == database_switch.MARKER
    url = f"PREFECT_SERVER_DATABASE_CONNECTION_URL='{DATABASE.url}'\n"
    on_postgres = facts(run_fact_script(tmp_path, "PREFECT_HOME='/var/lib/prefect'\n" + url, marker=True))
    assert on_postgres.get(database_switch.ON_POSTGRES_FACT) == "1"
    assert on_postgres.get(database_switch.MIGRATED_FACT) == "1"
    # The password never leaves the host: the script prints flags, not the setting.
    assert DB_PASSWORD not in run_fact_script(tmp_path, url, marker=False)
    (tmp_path / "objects-from-sqlite").unlink()
    on_sqlite = facts(
        run_fact_script(
            tmp_path, "PREFECT_HOME='/var/lib/prefect'\n# PREFECT_SERVER_DATABASE_CONNECTION_URL=x\n", marker=False
        )
    )
    assert on_sqlite.get(database_switch.ON_POSTGRES_FACT) is None
    assert on_sqlite.get(database_switch.MIGRATED_FACT) is None
    # A new host: no env file at all.
    (tmp_path / "server.env").unlink()
    assert run_fact_script(tmp_path, None, marker=False) == ""


# --- the switches refused --------------------------------------------------------------------------
def test_back_to_sqlite_is_refused_on_a_host_whose_server_runs_on_postgres():
    with pytest.raises(UsageError) as refused:
        database_switch.check_database_switch(SQLITE, facts(ON_POSTGRES, HAS_SQLITE, MIGRATED))
    message = str(refused.value)
    assert message.startswith("database sqlite: ") and SQLITE.host in message and "PostgreSQL" in message
    assert "prefect transfer" in message and "database: postgres" in message


def test_postgres_over_a_sqlite_database_is_refused_without_migrate_objects():
    with pytest.raises(UsageError) as refused:
        database_switch.check_database_switch(POSTGRES, facts(HAS_SQLITE))
    message = str(refused.value)
    assert message.startswith("database postgres: ") and POSTGRES.host in message
    assert "--migrate-objects" in message and litestream.DB_PATH in message and DATABASE.where in message
    assert DB_PASSWORD not in message and DATABASE.url not in message


def test_a_move_that_did_not_finish_is_named_as_such():
    # The API already runs on PostgreSQL, the marker is missing: an earlier --migrate-objects stopped half way.
    with pytest.raises(UsageError) as refused:
        database_switch.check_database_switch(POSTGRES, facts(HAS_SQLITE, ON_POSTGRES))
    message = str(refused.value)
    assert f"runs on {DATABASE.where}" in message and "did not finish" in message and "--migrate-objects" in message
    assert "runs Prefect on SQLite" not in message and DB_PASSWORD not in message


@pytest.mark.parametrize(
    "inputs, lines",
    [
        (SQLITE, ()),  # a new host on SQLite
        (SQLITE, (HAS_SQLITE,)),  # a SQLite host staying one
        (POSTGRES, ()),  # a new host on PostgreSQL: nothing to move
        (POSTGRES, (ON_POSTGRES,)),  # a PostgreSQL host staying one
        (POSTGRES, (HAS_SQLITE, ON_POSTGRES, MIGRATED)),  # moved already: a re-run needs no flag
        (POSTGRES, (HAS_SQLITE, MIGRATED)),
        (MIGRATING, (HAS_SQLITE,)),  # the move asked for
    ],
)
def test_what_loses_nothing_passes(inputs, lines):
    assert database_switch.check_database_switch(inputs, facts(*lines)) is None


@pytest.mark.parametrize(
    "inputs, lines, due",
    [
        (MIGRATING, (HAS_SQLITE,), True),
        (MIGRATING, (HAS_SQLITE, ON_POSTGRES), True),  # an earlier run stopped before the transfer's end
        (MIGRATING, (HAS_SQLITE, MIGRATED), False),  # done once: never again
        (MIGRATING, (), False),  # no SQLite database to move
        (MIGRATING, (ON_POSTGRES,), False),
        (POSTGRES, (HAS_SQLITE,), False),  # not asked for
        (sample_inputs(migrate_objects=True), (HAS_SQLITE,), False),  # sqlite: nowhere to move to
    ],
)
def test_transfer_due(inputs, lines, due):
    assert database_switch.transfer_due(inputs, facts(*lines)) is due


# --- the transfer ----------------------------------------------------------------------------------
AWKWARD_AUTH = "admin:pa\"ss\\word'$x"


def transfer_run() -> tuple[RecordingSession, str]:
    session, out = RecordingSession(), io.StringIO()
    inputs = sample_inputs(database=DATABASE, migrate_objects=True, auth_string=AWKWARD_AUTH)
    database_switch.transfer_objects(inputs, session, Console(out, io.StringIO()))
    return session, out.getvalue()


def test_the_transfer_writes_its_secrets_to_0600_files_and_leaves_its_marker_last():
    session, printed = transfer_run()
    labels = session.labels
    assert labels == [
        "mkdir",
        "write /var/lib/prefect/transfer/source.env",
        "write /var/lib/prefect/transfer/profiles.toml",
        "prefect transfer --from sqlite --to postgres",
    ]
    mkdir, source_env, profiles, transfer = session.ran
    assert all(ran.sudo for ran in session.ran)
    assert "install -d -o prefect -g prefect -m 0700 /var/lib/prefect/transfer" in mkdir.script
    assert "chmod 0600" in source_env.script and "chown root:root" in source_env.script
    assert "chmod 0600" in profiles.script and "chown prefect:prefect" in profiles.script
    source = source_env.stdin.decode()
    # The temporary server reads a copy (it may migrate it), made as the file's owner before it starts.
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL='sqlite+aiosqlite:////var/lib/prefect/transfer/source.db'" in source
    copy = f"runuser -u prefect -- {litestream.SQLITE_COPY} {litestream.DB_PATH} /var/lib/prefect/transfer/source.db"
    assert transfer.script.startswith(copy + " && ")
    assert "PREFECT_SERVER_API_PORT='4299'" in source and "PREFECT_SERVER_API_HOST='127.0.0.1'" in source
    assert transfer.stdin == database_switch.TRANSFER_SCRIPT.encode()
    script = transfer.script
    assert script.endswith(f"touch {database_switch.MARKER}")
    # The marker only after the transfer succeeded (its output on stderr too when it fails), and only once
    # the old database's temporary server answered.
    assert script.index("bin/python - >") < script.index("exit $rc") < script.index(f"touch {database_switch.MARKER}")
    assert '[ -n "$up" ] || {' in script and "journalctl -u prefect-transfer-source" in script
    assert "trap 'systemctl stop prefect-transfer-source; rm -rf /var/lib/prefect/transfer' EXIT" in script
    for secret in (AWKWARD_AUTH, AWKWARD_AUTH.split(":", 1)[1], DB_PASSWORD):
        assert all(secret not in ran.script and secret not in ran.label for ran in session.ran)
    assert DB_PASSWORD not in printed and "the flow-run history stays in" in printed
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_the_profiles_hold_the_auth_string_as_toml_reads_it_back():
    session, _ = transfer_run()
    profiles = tomllib.loads(session.ran[2].stdin.decode())["profiles"]
    assert profiles["sqlite"] == {
        "PREFECT_API_URL": "http://127.0.0.1:4299/api",
        "PREFECT_API_AUTH_STRING": AWKWARD_AUTH,
    }
    # tls off in the samples: the API itself on 4200.
    assert profiles["postgres"] == {
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_server.server_port(tls=False)}/api",
        "PREFECT_API_AUTH_STRING": AWKWARD_AUTH,
    }


class FakeDag:
    """What Prefect's execute_transfer asks of a TransferDAG: its nodes, and running a function on each."""

    def __init__(self, *migrations):
        self.nodes = {uuid.uuid4(): types.SimpleNamespace(migrate=migrate) for migrate in migrations}

    async def execute_concurrent(self, run, max_workers: int, skip_on_failure: bool) -> dict:
        results = {}
        for node_id, node in self.nodes.items():
            try:
                results[node_id] = await run(node)
            except ValueError as exc:  # as Prefect's DAG records a failure (the tests' fail so)
                results[node_id] = exc
        return results


@pytest.fixture
def patched_transfer(monkeypatch):
    """The transfer script run up to `app()`, which only records sys.argv: its namespace."""
    commands = pytest.importorskip("prefect.cli.transfer._commands")
    import prefect.cli

    calls = []
    monkeypatch.setattr(commands, "execute_transfer", commands.execute_transfer)  # restored afterwards
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(prefect.cli, "app", lambda: calls.append(list(sys.argv)))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(database_switch.TRANSFER_SCRIPT, "<transfer>", "exec"), namespace)
    assert calls == [["prefect", "transfer", "--from", "sqlite", "--to", "postgres"]]
    assert commands.execute_transfer is namespace["execute_transfer"]
    return namespace


def test_a_resource_already_in_the_target_counts_as_transferred_and_a_failure_stays_one(patched_transfer):
    from prefect.cli.transfer._exceptions import TransferSkipped

    async def skipped():
        raise TransferSkipped("Already exists")

    async def broken():
        raise ValueError("refused by the target")

    async def unreadable():
        raise TransferSkipped("Uses action types this version of Prefect does not recognize")

    tolerant = patched_transfer["tolerant"]
    assert asyncio.run(tolerant(skipped)()) is None
    with pytest.raises(ValueError, match="refused by the target"):
        asyncio.run(tolerant(broken)())
    # A skip that does not mean "in the target already" stays a skip (the table shows it, not a success).
    with pytest.raises(TransferSkipped, match="does not recognize"):
        asyncio.run(tolerant(unreadable)())


def test_the_patched_transfer_runs_prefects_own_with_skips_tolerated(patched_transfer):
    """Through Prefect's execute_transfer (the one `prefect transfer` calls): a skip is a success
    (None, so its dependents go on), a failure is reported as one."""
    import prefect.cli.transfer._commands as commands
    from prefect.cli.transfer._exceptions import TransferSkipped

    moved = []

    async def fine():
        moved.append("fine")

    async def skipped():
        raise TransferSkipped("Default work queues are created with work pools")

    async def broken():
        raise ValueError("refused")

    dag = FakeDag(fine, skipped, broken)
    quiet = RichConsole(file=io.StringIO())
    results = list(asyncio.run(commands.execute_transfer(dag, quiet)).values())
    assert results[:2] == [None, None] and isinstance(results[2], ValueError) and moved == ["fine"]


def test_the_transfer_script_compiles():
    compile(database_switch.TRANSFER_SCRIPT, "<transfer>", "exec")
    assert "commands.execute_transfer = execute_transfer" in database_switch.TRANSFER_SCRIPT
    # The patch is in place before Prefect's CLI (and the transfer command module it loads) runs.
    script = database_switch.TRANSFER_SCRIPT
    assert script.index("commands.execute_transfer = execute_transfer") < script.index("app()")


# --- an upgrade on PostgreSQL ----------------------------------------------------------------------
NEW = prefect_venv("3.9.1")


def installed(version: str, *lines: str) -> HostFacts:
    return facts(*venv_lines(prefect_venv(version)), *lines)


def test_on_postgres_a_newer_version_is_no_snapshot_upgrade_with_or_without_a_sqlite_file():
    for lines in ((), (HAS_SQLITE,)):
        change = upgrade.plan_upgrade(
            installed("3.8.4", *lines), NEW, allow_downgrade=False, replicated=False, database=DATABASE
        )
        assert change is None
    # On SQLite the same host is an upgrade (snapshot, rollback).
    assert (
        upgrade.plan_upgrade(installed("3.8.4", HAS_SQLITE), NEW, allow_downgrade=False, replicated=False) is not None
    )


@pytest.mark.parametrize("allow_downgrade", [False, True])
def test_on_postgres_a_downgrade_is_refused_even_when_allowed_pointing_at_the_managed_database(allow_downgrade):
    # The older version's migrations cannot read the newer schema: no flag lets it through.
    with pytest.raises(UsageError) as refused:
        upgrade.plan_upgrade(
            installed("3.10.0"), NEW, allow_downgrade=allow_downgrade, replicated=False, database=DATABASE
        )
    message = str(refused.value)
    assert "prefectVersion 3.9.1 is older than the 3.10.0" in message and "even with --allow-downgrade" in message
    assert "managed database" in message and "backup now" not in message and DB_PASSWORD not in message


def test_a_sqlite_downgrade_is_refused_unless_allowed():
    with pytest.raises(UsageError, match="prefect-host backup now"):
        upgrade.plan_upgrade(installed("3.10.0", HAS_SQLITE), NEW, allow_downgrade=False, replicated=True)


# --- Litestream's commands on a PostgreSQL stack ---------------------------------------------------
@pytest.mark.parametrize("flags", [{"no_restore": True, "restore_at": None}, {"no_restore": False, "restore_at": "x"}])
def test_restore_flags_are_refused_on_postgres_without_the_password(flags):
    with pytest.raises(UsageError) as refused:
        check_backup_flags(DATABASE, **flags)
    assert DATABASE.where in str(refused.value) and DB_PASSWORD not in str(refused.value)
    assert check_backup_flags(None, **flags) is None


@pytest.mark.parametrize("action", ["now", "list", "restore"])
def test_backup_refuses_a_postgres_stack_before_any_ssh(tmp_path, monkeypatch, capsys, action):
    outputs = tmp_path / "outputs.json"
    url = f"postgresql+asyncpg://prefect:{DB_PASSWORD}@10.0.1.5:5432/prefect?ssl=require"
    outputs.write_text(json.dumps(outputs_mapping(database="postgres", apiWorkers="2", databaseUrl=url)))

    def no_ssh(*args, **kwargs):
        raise AssertionError("backup connected to the host")

    monkeypatch.setattr(backup_cli, "host_session", no_ssh)
    assert backup_cli.main([action, "--outputs", str(outputs)]) == 1
    captured = capsys.readouterr()
    assert "PostgreSQL" in captured.err and "10.0.1.5:5432/prefect" in captured.err
    assert f"backup {action}" in captured.err and DB_PASSWORD not in captured.err + captured.out
