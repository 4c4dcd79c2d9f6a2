"""Moving a host between SQLite and PostgreSQL (the stack's `database` changed).

SQLite -> PostgreSQL is refused while the host holds a SQLite database unless --migrate-objects:
then, once the API runs on PostgreSQL, the old database is served by a temporary server on
loopback (as the server's user, from the same venv) and `prefect transfer` copies
deployments, blocks, work pools and queues, variables, concurrency limits and automations to the
new API. Flow-run history stays in the SQLite file (and its Litestream replica, if any): Prefect's
transfer does not move it. A marker records the transfer, so a re-run does not repeat it.

PostgreSQL -> SQLite is refused: the host's SQLite file (if any) is older than what PostgreSQL holds.
"""

from __future__ import annotations

import shlex

from prefect_host.console import Console
from prefect_host.errors import UsageError
from prefect_host.host.apply import run_step
from prefect_host.host.facts import HostFacts
from prefect_host.host.model import Command, File, Step
from prefect_host.host.planner import write_file
from prefect_host.services import litestream, prefect_server, scale_out
from prefect_host.services.python_env import PREFECT_BIN, VENV_DIR
from prefect_host.services.systemd import env_file_text
from prefect_host.ssh import HostSession

from .inputs import BootstrapInputs
from .upgrade import DB_FACT

MARKER = f"{scale_out.MIGRATED_DIR}/objects-from-sqlite"
# `prefect transfer --from sqlite --to postgres`, with one change: Prefect 3.9.1 never starts a resource
# whose dependency was skipped ("Already exists", "Default work queues are created with work pools"),
# and a new server always has the block types, the bootstrap's work pool and its default queue, so no
# block document or deployment would move. A resource its migrate() skips because it is in the target
# already counts as transferred here, so its dependents go on; other skips and failures stay what they are.
TRANSFER_SCRIPT = """\
import sys
import prefect.cli.transfer._commands as commands
from prefect.cli.transfer._exceptions import TransferSkipped

_execute = commands.execute_transfer


# The skips that only mean "in the target already"; any other (an automation this version cannot read,
# ...) stays a skip, so the table shows it.
IN_TARGET = ("Already exists", "Default work queues are created with work pools")


def tolerant(migrate):
    async def run():
        try:
            await migrate()
        except TransferSkipped as skipped:
            if str(skipped) not in IN_TARGET:
                raise
    return run


async def execute_transfer(dag, console):
    for node in dag.nodes.values():
        node.migrate = tolerant(node.migrate)
    return await _execute(dag, console)


commands.execute_transfer = execute_transfer
from prefect.cli import app

sys.argv = ["prefect", "transfer", "--from", "sqlite", "--to", "postgres"]
app()
"""
_TRANSFER_DIR = f"{prefect_server.STATE_DIR}/transfer"
# The temporary server reads a copy: it migrates its database on start (when prefectVersion changed in
# the same run), and the original stays as the old version left it.
_SOURCE_COPY = f"{_TRANSFER_DIR}/source.db"
_SOURCE_PORT = 4299
_SOURCE_UNIT = "prefect-transfer-source"
ON_POSTGRES_FACT = "server_on_postgres"
MIGRATED_FACT = "objects_migrated"
FACT_SCRIPT = (
    f"grep -qs '^PREFECT_SERVER_DATABASE_CONNECTION_URL=' {shlex.quote(prefect_server.ENV_FILE)} "
    f'&& echo "{ON_POSTGRES_FACT}=1"\n'
    f'[ -e {shlex.quote(MARKER)} ] && echo "{MIGRATED_FACT}=1"\n'
)


def transfer_due(inputs: BootstrapInputs, facts: HostFacts) -> bool:
    return (
        inputs.database is not None
        and inputs.migrate_objects
        and facts.get(DB_FACT) is not None
        and facts.get(MIGRATED_FACT) is None
    )


def check_database_switch(inputs: BootstrapInputs, facts: HostFacts) -> None:
    """Before any change: a switch the stack asks for that would lose data is refused."""
    if inputs.database is None and facts.get(ON_POSTGRES_FACT) is not None:
        raise UsageError(
            f"database sqlite: the server on {inputs.host} runs on PostgreSQL, and going back to SQLite is not "
            "automated (its SQLite file, if any, is older). Set database: postgres again, or move the objects "
            "yourself with `prefect transfer` between two profiles."
        )
    if inputs.database is None or facts.get(DB_FACT) is None or facts.get(MIGRATED_FACT) is not None:
        return
    if not inputs.migrate_objects and facts.get(ON_POSTGRES_FACT) is not None:
        raise UsageError(
            f"database postgres: the server on {inputs.host} runs on {inputs.database.where}, but the objects of its "
            f"SQLite database ({litestream.DB_PATH}) were not moved yet (an earlier --migrate-objects did not finish). "
            "Run the bootstrap with --migrate-objects again, or move that file away to leave them behind."
        )
    if not inputs.migrate_objects:
        raise UsageError(
            f"database postgres: {inputs.host} runs Prefect on SQLite ({litestream.DB_PATH}) and the new database "
            f"{inputs.database.where} starts empty. Run the bootstrap with --migrate-objects to move deployments, "
            "blocks, work pools, variables, concurrency limits and automations over with `prefect transfer` (the "
            "flow-run history stays in the SQLite file and its replica), or move that file away to start empty."
        )


def transfer_objects(inputs: BootstrapInputs, session: HostSession, console: Console) -> None:
    """The old SQLite database served on loopback while `prefect transfer` copies its objects to the API."""
    console.line(
        "  --migrate-objects: deployments, blocks, work pools, variables, concurrency limits and automations move "
        f"to {inputs.database.where if inputs.database else 'PostgreSQL'}; the flow-run history stays in "
        f"{litestream.DB_PATH}"
    )
    source = env_file_text(
        {
            "PREFECT_HOME": prefect_server.STATE_DIR,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{_SOURCE_COPY}",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(_SOURCE_PORT),
            "PREFECT_SERVER_API_AUTH_STRING": inputs.auth_string,
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    target = f"http://127.0.0.1:{prefect_server.server_port(tls=inputs.tls_on)}/api"
    profiles = "".join(
        f'[profiles.{name}]\nPREFECT_API_URL = "{url}"\nPREFECT_API_AUTH_STRING = {_toml_string(inputs.auth_string)}\n'
        for name, url in (("sqlite", f"http://127.0.0.1:{_SOURCE_PORT}/api"), ("postgres", target))
    )
    user = prefect_server.SERVICE_USER
    q = shlex.quote
    run_as = f"-p User={user} -p Group={user} -p WorkingDirectory={q(_TRANSFER_DIR)}"
    health = f"http://127.0.0.1:{_SOURCE_PORT}/api/health"
    copy = (  # as the file's owner: opening it must leave no root-owned -wal / -shm beside it
        f"runuser -u {user} -- {litestream.SQLITE_COPY} {q(litestream.DB_PATH)} {q(_SOURCE_COPY)} && "
    )
    script = copy + (
        f"systemctl stop {_SOURCE_UNIT} 2>/dev/null; systemctl reset-failed {_SOURCE_UNIT} 2>/dev/null; "
        f"systemd-run --quiet --unit={_SOURCE_UNIT} --collect --service-type=exec {run_as} "
        f"-p EnvironmentFile={q(_TRANSFER_DIR + '/source.env')} {q(PREFECT_BIN)} server start --no-services && "
        f"trap 'systemctl stop {_SOURCE_UNIT}; rm -rf {q(_TRANSFER_DIR)}' EXIT && "
        "up=; "
        f"for i in $(seq 180); do python3 -c \"import urllib.request; urllib.request.urlopen('{health}', timeout=2)\" "
        "2>/dev/null && { up=1; break; }; sleep 1; done; "
        f'[ -n "$up" ] || {{ echo "the old database\'s temporary server did not answer:" >&2; '
        f"journalctl -u {_SOURCE_UNIT} -n 40 --no-pager -o cat >&2; exit 1; }} && "
        # Prefect prints the transfer's table (and what failed) on stdout: on stderr too when it fails.
        f"out=$(mktemp) && systemd-run --quiet --wait --pipe --collect --service-type=exec {run_as} "
        f"-E PREFECT_HOME={q(_TRANSFER_DIR)} -E PREFECT_PROFILES_PATH={q(_TRANSFER_DIR + '/profiles.toml')} "
        f'{q(VENV_DIR + "/bin/python")} - >"$out" 2>&1; rc=$?; cat "$out"; '
        '[ $rc -eq 0 ] || { cat "$out" >&2; rm -f "$out"; exit $rc; }; rm -f "$out" && '
        f"install -d -m 0755 {q(scale_out.MIGRATED_DIR)} && touch {q(MARKER)}"
    )
    step = Step(
        "move the objects from SQLite to PostgreSQL (prefect transfer)",
        (
            Command(f"rm -rf {q(_TRANSFER_DIR)} && install -d -o {user} -g {user} -m 0700 {q(_TRANSFER_DIR)}", "mkdir"),
            write_file(File(f"{_TRANSFER_DIR}/source.env", source, mode=0o600)),
            write_file(File(f"{_TRANSFER_DIR}/profiles.toml", profiles, mode=0o600, owner=user)),
            Command(
                script,
                "prefect transfer --from sqlite --to postgres",
                stdin=TRANSFER_SCRIPT.encode(),
                timeout=900.0,
                reports=True,
            ),
        ),
    )
    run_step(step, session, console)


def _toml_string(value: str) -> str:
    """A TOML basic string (the auth string may hold quotes or backslashes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
