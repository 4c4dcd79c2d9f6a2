"""Prefect's scale-out mode (database postgres): the env settings, the API's command, the migrations as
their own step (and their marker), the background services' unit; and the server's declaration, whose
defaults (sqlite mode) must stay what earlier releases wrote."""

from __future__ import annotations

import dataclasses
import hashlib
import shlex

import pytest

from prefect_host.services import metadata_guard, redis, scale_out
from prefect_host.services import prefect_server as ps
from prefect_host.services.python_env import PREFECT_BIN, VENV_DIR
from tests.prefect_host.host.host_samples import (
    assert_secret_only_on_stdin,
    assert_shell_parses,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    steps_for,
)
from tests.prefect_host.services.service_samples import AUTH, env_settings, pinned_venv, unit_directives

DB_PASSWORD = "pg%2FSecret-pw"
URL = f"postgresql+asyncpg://prefect:{DB_PASSWORD}@10.0.1.5:5432/prefect?ssl=require"
DATABASE = scale_out.Database(url=URL, api_workers=3)


def scaled_server(database: scale_out.Database = DATABASE, *, version: str = "3.9.1", auth_string: str = AUTH):
    return ps.server_service(
        venv=pinned_venv(version),
        auth_string=auth_string,
        tls=True,
        scale_out=scale_out.server_scale_out(database, auth_string=auth_string, version=version),
    )


def file_text(svc, path: str) -> str:
    return next(f.text for f in svc.files if f.path == path)


# --- the database ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, where",
    [
        (URL, "10.0.1.5:5432/prefect"),
        ("postgresql+asyncpg://u:p@db.internal/prefect", "db.internal:5432/prefect"),
        ("postgresql+asyncpg://u:p@db.internal:6543/other?ssl=require", "db.internal:6543/other"),
    ],
)
def test_where_names_host_port_and_database_without_user_or_password(url, where):
    database = scale_out.Database(url=url, api_workers=2)
    assert database.where == where
    assert "p@" not in database.where and DB_PASSWORD not in database.where


def test_the_url_stays_out_of_the_repr():
    assert DB_PASSWORD not in repr(DATABASE) and "postgresql" not in repr(DATABASE)
    assert "api_workers=3" in repr(DATABASE)


# --- env, command, marker --------------------------------------------------------------------------
def test_env_settings_point_prefect_at_postgres_and_redis_and_turn_migrate_on_start_off():
    settings = scale_out.env_settings(DATABASE, AUTH)
    assert settings == {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": URL,
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis.url(AUTH, redis.MESSAGING_DB),
        "PREFECT_SERVER_DOCKET_URL": redis.url(AUTH, redis.DOCKET_DB),
    }


def test_the_api_runs_without_services_in_the_processes_asked_for():
    assert scale_out.api_exec_start(DATABASE) == f"{PREFECT_BIN} server start --no-services --workers 3"
    one = scale_out.Database(url=URL, api_workers=1)
    assert scale_out.api_exec_start(one).endswith("--no-services --workers 1")


def test_the_migration_marker_changes_with_the_version_and_the_database_not_with_the_credentials():
    marker = scale_out.migration_marker(DATABASE, "3.9.1")
    assert marker.startswith(f"{scale_out.MIGRATED_DIR}/3.9.1-") and marker.startswith(ps.STATE_DIR + "/")
    assert scale_out.migration_marker(DATABASE, "3.9.2") != marker

    def at(url: str) -> str:
        return scale_out.migration_marker(scale_out.Database(url=url, api_workers=3), "3.9.1")

    assert at(URL.replace("10.0.1.5", "10.0.1.6")) != marker
    assert at(URL.replace(":5432/", ":6543/")) != marker
    assert at(URL.replace("/prefect?", "/other?")) != marker
    # A new password (or user, or query), or the default port written out or not: the same database.
    assert at(URL.replace(DB_PASSWORD, "rotated")) == marker
    assert at(URL.replace("prefect:", "admin:", 1)) == marker
    assert at(URL.replace("?ssl=require", "")) == marker
    assert at(URL.replace(":5432/", "/")) == marker
    assert DB_PASSWORD not in marker and "10.0.1.5" not in marker


def test_the_migration_runs_as_the_server_with_its_env_file_then_leaves_its_marker():
    seed = scale_out.migration_seed(DATABASE, "3.9.1")
    assert seed.path == scale_out.migration_marker(DATABASE, "3.9.1")
    [step] = seed.steps
    [command] = step.commands
    assert step.name == (
        "migrate the database 10.0.1.5:5432/prefect to Prefect 3.9.1 (pg_trgm, prefect server database upgrade)"
    )
    assert command.stdin == scale_out.MIGRATE_SCRIPT.encode() and command.timeout >= 600
    script = command.script
    words = shlex.split(script)
    assert words[:2] == ["systemd-run", "--quiet"] and "--wait" in words and "--pipe" in words
    assert {"User=prefect", "Group=prefect", f"EnvironmentFile={ps.ENV_FILE}"} <= set(words)
    assert f"{VENV_DIR}/bin/python" in words
    # The marker only once the migration succeeded (&&), never before it.
    assert script.index("bin/python - && ") < script.index(f"touch {seed.path}")
    assert script.endswith(f"touch {seed.path}")
    # No secret on the command line: systemd reads the env file.
    for secret in (URL, DB_PASSWORD, AUTH, redis.password(AUTH)):
        assert secret not in script and secret not in step.name and secret.encode() not in command.stdin
    assert_shell_parses(seed.steps)


def test_the_migrate_script_compiles_and_creates_pg_trgm_before_the_upgrade():
    code = scale_out.MIGRATE_SCRIPT
    compile(code, "<migrate>", "exec")
    assert code.index("CREATE EXTENSION IF NOT EXISTS pg_trgm") < code.index('"server", "database", "upgrade", "-y"')
    assert repr(PREFECT_BIN) in code


# --- the background services -----------------------------------------------------------------------
def test_the_services_unit_runs_them_as_the_server_user_after_redis_and_holds_no_secret():
    text = scale_out.services_unit_text()
    unit = unit_directives(text)
    assert unit["ExecStart"] == [f"{PREFECT_BIN} server services start"]
    assert unit["User"] == ["prefect"] and unit["Group"] == ["prefect"]
    assert unit["EnvironmentFile"] == [ps.ENV_FILE] and unit["WorkingDirectory"] == [ps.STATE_DIR]
    assert unit["Wants"] == [f"network-online.target {redis.UNIT}"]
    assert unit["After"] == [f"network-online.target {redis.UNIT}"]
    assert unit["Restart"] == ["always"] and unit["ProtectSystem"] == ["strict"]
    assert unit["WantedBy"] == ["multi-user.target"]
    assert metadata_guard.EXEC_START_PRE_OPTIONAL in text
    assert "postgresql" not in text and "redis://" not in text


def test_the_services_restart_with_the_servers_env_file_and_version():
    server = scaled_server()
    services = scale_out.services_service(server=server)
    [unit] = services.files
    assert (unit.path, unit.systemd, unit.mode) == (scale_out.SERVICES_UNIT_PATH, True, 0o644)
    assert services.start_after == (ps.NAME,) and services.units.names == (scale_out.SERVICES_UNIT,)
    assert services.units.applied == scale_out.SERVICES_APPLIED_FILE
    # The env file's digest, not the env file: the secrets stay in the server's 0600 file.
    env = file_text(server, ps.ENV_FILE)
    assert services.version == f"3.9.1 {hashlib.sha256(env.encode()).hexdigest()}"
    assert URL not in services.version and redis.password(AUTH) not in services.version
    rotated = scale_out.services_service(server=scaled_server(auth_string="admin:rotated"))
    newer = scale_out.services_service(server=scaled_server(version="3.9.2"))
    elsewhere = dataclasses.replace(DATABASE, url=URL.replace("10.0.1.5", "10.0.1.6"))
    moved = scale_out.services_service(server=scaled_server(elsewhere))
    digests = {s.restart_digest() for s in (services, rotated, newer, moved)}
    assert len(digests) == 4


def test_services_absent_in_sqlite_mode_stop_and_remove_their_unit():
    absent = scale_out.services_service(
        server=ps.server_service(venv=pinned_venv(), auth_string=AUTH, tls=True), absent="database sqlite"
    )
    assert absent.absent == "database sqlite"
    assert [(f.path, f.text) for f in absent.files] == [(scale_out.SERVICES_UNIT_PATH, None)]
    present = scale_out.services_service(server=scaled_server())
    assert names(steps_for(converged_output(present), absent)) == [
        f"stop and disable {scale_out.SERVICES_UNIT} (database sqlite)",
        f"remove {scale_out.SERVICES_UNIT_PATH}",
    ]
    assert steps_for(fresh_output(absent), absent) == []


# --- the server in scale-out mode ------------------------------------------------------------------
def test_sqlite_mode_writes_the_bytes_earlier_releases_wrote():
    """The digests of the unit and env file the previous release wrote: a host converged by it is not
    restarted by this one."""
    assert hashlib.sha256(ps.unit_text().encode()).hexdigest() == (
        "a61aed0fe4ec3ee68db1669583dad7aeb873c37e0a8a9e3e49eab92d981864ee"
    )
    assert hashlib.sha256(ps.env_text(auth_string="a:b", tls=True).encode()).hexdigest() == (
        "66c555dcdf0dae0b32f6d5807f478e17f1dde0a23116f2920cce8f5bae162752"
    )
    plain = ps.server_service(venv=pinned_venv(), auth_string=AUTH, tls=True)
    assert file_text(plain, ps.UNIT_PATH) == ps.unit_text() and plain.seed is None
    assert file_text(plain, ps.ENV_FILE) == ps.env_text(auth_string=AUTH, tls=True)


def test_the_scaled_server_runs_the_api_alone_after_redis():
    server = scaled_server()
    unit = unit_directives(file_text(server, ps.UNIT_PATH))
    assert unit["ExecStart"] == [f"{PREFECT_BIN} server start --no-services --workers 3"]
    assert unit["Wants"] == [f"network-online.target {redis.UNIT}"]
    assert unit["After"] == [f"network-online.target {redis.UNIT}"]
    assert (
        file_text(server, ps.UNIT_PATH)
        .replace(f"{PREFECT_BIN} server start --no-services --workers 3", f"{PREFECT_BIN} server start")
        .replace(f" {redis.UNIT}", "")
        == ps.unit_text()
    )
    assert server.seed == scale_out.migration_seed(DATABASE, "3.9.1")


def test_the_database_url_and_the_redis_password_are_only_in_the_servers_0600_env_file():
    server = scaled_server()
    env = next(f for f in server.files if f.path == ps.ENV_FILE)
    assert (env.mode, env.owner) == (0o600, "root")
    settings = env_settings(env.text)
    assert settings["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"'{URL}'"
    assert settings["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "'false'"
    assert settings["PREFECT_SERVER_API_HOST"] == "'127.0.0.1'"  # every mode's settings come first, unchanged
    assert list(settings)[:7] == list(env_settings(ps.env_text(auth_string=AUTH, tls=True)))
    for secret in (DB_PASSWORD, redis.password(AUTH)):
        assert [f.path for f in server.files if f.text and secret in f.text] == [ps.ENV_FILE]
    steps = steps_for(fresh_output(server), server)
    for secret in (DB_PASSWORD, redis.password(AUTH), AUTH):
        assert_secret_only_on_stdin(steps, secret)
    assert_shell_parses(steps)


def test_a_converged_scaled_server_with_its_marker_gets_no_steps_and_without_it_only_the_migration():
    server = scaled_server()
    marker = scale_out.migration_marker(DATABASE, "3.9.1")
    assert steps_for(converged_output(server, extra=f"exists:{marker}=1\n"), server) == []
    (lane,) = lanes_for(converged_output(server), server)
    assert names(lane.prepare) == [server.seed.steps[0].name] and lane.start == ()


def test_a_new_version_installs_then_migrates_then_restarts():
    old = scaled_server()
    host = converged_output(old, extra=f"exists:{scale_out.migration_marker(DATABASE, '3.9.1')}=1\n")
    new = scaled_server(version="3.9.2")
    (lane,) = lanes_for(host, new)
    migrate = new.seed.steps[0].name
    assert "Prefect 3.9.2" in migrate
    # The new venv first (the migration runs its Prefect), the API restarted only once migrated.
    assert names(lane.prepare) == ["install prefect 3.9.2", migrate]
    assert names(lane.start) == ["restart the Prefect server", "compile bytecode (in the background)"]


def test_server_scale_out_bundles_env_command_dependency_and_migrations():
    bundle = scale_out.server_scale_out(DATABASE, auth_string=AUTH, version="3.9.1")
    assert bundle.env == scale_out.env_settings(DATABASE, AUTH)
    assert bundle.exec_start == scale_out.api_exec_start(DATABASE) and bundle.needs == redis.UNIT
    assert bundle.migrations == scale_out.migration_seed(DATABASE, "3.9.1")
    assert URL not in repr(bundle) and DB_PASSWORD not in repr(bundle)
