"""The services one host runs for the bootstrap's inputs: their lane order, what is absent in sqlite and
in postgres mode, the venv's pins; and what the planner makes of them on new, converged and changed
hosts (facts rendered from the declarations, as host_samples does)."""

from __future__ import annotations

import dataclasses

import pytest

from prefect_host.bootstrap import database_switch, upgrade
from prefect_host.bootstrap.backup_inputs import BackupSettings
from prefect_host.bootstrap.host_services import HostServices, host_services
from prefect_host.host.model import Service
from prefect_host.services import caddy, litestream, prefect_server, redis, scale_out, workers
from prefect_host.tls import TlsSettings
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
from tests.prefect_host.host.host_samples import (
    assert_secret_only_on_stdin,
    assert_shell_parses,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    steps_for,
)
from tests.prefect_host.services.test_litestream import REPLICA

AUTH = "admin:Host-Services-Secret"
DB_PASSWORD = "pg-Host-Services-pw"
DATABASE = scale_out.Database(
    url=f"postgresql+asyncpg://prefect:{DB_PASSWORD}@10.0.1.5:5432/prefect?ssl=require", api_workers=3
)
POSTGRES_BACKUP = BackupSettings(off_reason="database postgres: the managed database keeps its own backups")
MARKER = scale_out.migration_marker(DATABASE, "3.9.1")


def sqlite(**changes) -> HostServices:
    return host_services(sample_inputs(auth_string=AUTH, **changes))


def postgres(**changes) -> HostServices:
    return host_services(
        sample_inputs(**({"auth_string": AUTH, "database": DATABASE, "backup": POSTGRES_BACKUP} | changes))
    )


def file_text(service: Service, path: str) -> str | None:
    return next(f.text for f in service.files if f.path == path)


def pins(services: HostServices) -> list[str]:
    return [name for name, _ in services.server.venv.pins]


# --- the declarations ------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [sqlite, postgres])
def test_lanes_run_litestream_redis_server_services_caddy_then_the_workers(build):
    services = build()
    assert [s.name for s in services.all] == [
        litestream.NAME,
        redis.NAME,
        prefect_server.NAME,
        scale_out.SERVICES_NAME,
        caddy.NAME,
        services.workers.name,
    ]
    assert services.serving == services.all[:5] and services.all[-1] is services.workers
    assert (
        services.workers.units.template
        == workers.workers_service(count=1, pool="default", venv=services.server.venv, env="").units.template
    )


def test_sqlite_mode_leaves_redis_and_the_services_out_and_runs_the_server_as_before():
    services = sqlite()
    assert services.redis.absent == "database sqlite" and services.services.absent == "database sqlite"
    assert services.redis.files == () and services.redis.packages == ()
    assert services.server.seed is None
    assert file_text(services.server, prefect_server.UNIT_PATH) == prefect_server.unit_text()
    assert file_text(services.server, prefect_server.ENV_FILE) == prefect_server.env_text(auth_string=AUTH, tls=False)
    assert redis.NAME not in services.server.start_after
    assert pins(services) == ["prefect", "prefect-aws"]  # no bucket: no Litestream either


def test_postgres_mode_runs_redis_and_the_services_and_the_api_after_redis():
    services = postgres()
    assert services.backup.absent.startswith("database postgres")
    assert not services.redis.absent and not services.services.absent and not services.server.absent
    assert services.server.start_after == (caddy.NAME, redis.NAME)  # tls off: Caddy lets go of 4200 first
    behind_caddy = TlsSettings(mode="internal", address="203.0.113.7")
    assert postgres(tls=behind_caddy).server.start_after == (redis.NAME,)
    assert services.services.start_after == (prefect_server.NAME,)
    assert services.server.after == (litestream.NAME,)
    assert services.server.seed == scale_out.migration_seed(DATABASE, "3.9.1")
    unit = file_text(services.server, prefect_server.UNIT_PATH)
    assert "--no-services --workers 3" in unit and f"Wants=network-online.target {redis.UNIT}" in unit


def test_the_redis_it_declares_has_the_password_the_servers_env_file_gives_prefect():
    services = postgres()
    config = file_text(services.redis, redis.CONFIG_PATH)
    env = file_text(services.server, prefect_server.ENV_FILE)
    assert f"requirepass {redis.password(AUTH)}\n" in config
    assert redis.url(AUTH, redis.MESSAGING_DB) in env and redis.url(AUTH, redis.DOCKET_DB) in env


@pytest.mark.parametrize(
    "build, replica, expected",
    [
        (sqlite, None, ["prefect", "prefect-aws"]),
        (sqlite, REPLICA, ["prefect", "prefect-aws", litestream.DISTRIBUTION]),
        (postgres, None, ["prefect", "prefect-aws", scale_out.PREFECT_REDIS_DISTRIBUTION]),
    ],
)
def test_the_venv_pins_prefect_redis_only_with_postgres_and_litestream_only_with_a_replica(build, replica, expected):
    services = sqlite(backup=BackupSettings(replica=replica)) if replica else build()
    assert pins(services) == expected
    assert dict(services.server.venv.pins).get(scale_out.PREFECT_REDIS_DISTRIBUTION) in (
        None,
        scale_out.PREFECT_REDIS_VERSION,
    )
    # One venv, shared by every service that has one.
    assert {s.venv for s in services.all if s.venv is not None} == {services.server.venv}


def test_the_servers_facts_tell_the_database_switch_what_the_host_holds():
    script = postgres().server.fact_script
    assert upgrade.DB_FACT_SCRIPT in script and database_switch.FACT_SCRIPT in script
    assert sqlite().server.fact_script == script


def test_the_workers_never_get_the_database_or_redis():
    services = postgres()
    worker_files = "".join(f.text or "" for f in services.workers.files)
    assert DB_PASSWORD not in worker_files and redis.password(AUTH) not in worker_files


# --- secrets ---------------------------------------------------------------------------------------
def test_secrets_are_only_in_0600_files_and_only_travel_on_stdin():
    services = postgres()
    secrets = {
        DB_PASSWORD: {(prefect_server.ENV_FILE, 0o600, "root")},
        redis.password(AUTH): {(prefect_server.ENV_FILE, 0o600, "root"), (redis.CONFIG_PATH, 0o600, "redis")},
        AUTH: {(prefect_server.ENV_FILE, 0o600, "root"), (workers.ENV_FILE, 0o600, "root")},
    }
    for secret, holders in secrets.items():
        found = {(f.path, f.mode, f.owner) for s in services.all for f in s.files if f.text and secret in f.text}
        assert found == holders, secret
    units = [f for s in services.all for f in s.files if f.systemd and f.text]
    assert len(units) >= 4
    for unit in units:
        assert not any(secret in unit.text for secret in secrets), unit.path
    steps = steps_for(fresh_output(*services.all), *services.all)
    for secret in secrets:
        assert_secret_only_on_stdin(steps, secret)
    assert_shell_parses(steps)


# --- planning --------------------------------------------------------------------------------------
def converged(services: HostServices, *, migrated: bool = True) -> str:
    return converged_output(*services.all, extra=f"exists:{MARKER}=1\n" if migrated else "")


@pytest.mark.parametrize("build", [sqlite, postgres])
def test_a_converged_host_gets_no_steps(build):
    services = build()
    assert steps_for(converged(services), *services.all) == []


def test_a_sqlite_host_from_the_previous_release_gets_no_steps():
    """Its facts know nothing of Redis or the services (systemd has no such units): nothing to stop,
    and the server's digest is the one it recorded: nothing restarts."""
    services = sqlite()
    earlier = converged_output(services.backup, services.server, services.front, services.workers)
    assert f"applied:{prefect_server.APPLIED_FILE}=" in earlier and redis.UNIT not in earlier
    assert steps_for(earlier, *services.all) == []


def test_a_converged_postgres_host_without_the_marker_gets_only_the_migration_in_the_servers_lane():
    services = postgres()
    lanes = lanes_for(converged(services, migrated=False), *services.all)
    stepped = {lane.service.name: names(lane.steps) for lane in lanes if lane.steps}
    assert stepped == {prefect_server.NAME: [services.server.seed.steps[0].name]}


def test_a_new_version_on_postgres_migrates_before_the_api_restarts_then_the_services_restart():
    old = postgres()
    new = postgres(prefect_version="3.9.2")
    lanes = {lane.service.name: lane for lane in lanes_for(converged(old), *new.all)}
    server = names(lanes[prefect_server.NAME].steps)
    migrate = f"migrate the database {DATABASE.where} to Prefect 3.9.2 (pg_trgm, prefect server database upgrade)"
    assert server[:3] == ["install prefect 3.9.2", migrate, "restart the Prefect server"]
    assert names(lanes[scale_out.SERVICES_NAME].steps) == ["restart the Prefect services"]
    assert names(lanes[redis.NAME].steps) == []
    assert names(lanes["workers"].steps) == ["restart prefect-worker@1"]


def test_a_fresh_postgres_host_installs_redis_and_migrates_before_the_api_first_starts():
    services = postgres()
    lanes = {lane.service.name: lane for lane in lanes_for(fresh_output(*services.all), *services.all)}
    assert names(lanes[redis.NAME].steps)[0] == "install redis-server (apt)"
    server = names(lanes[prefect_server.NAME].steps)
    migrate = services.server.seed.steps[0].name
    assert (
        server.index(f"write {prefect_server.ENV_FILE}")
        < server.index(migrate)
        < server.index("start the Prefect server")
    )
    assert names(lanes[litestream.NAME].steps) == [] and names(lanes[caddy.NAME].steps) == []


def test_a_rotated_auth_string_on_postgres_restarts_redis_the_api_and_the_services():
    old = postgres()
    rotated = host_services(sample_inputs(auth_string="admin:rotated-pw", database=DATABASE, backup=POSTGRES_BACKUP))
    lanes = {lane.service.name: names(lane.steps) for lane in lanes_for(converged(old), *rotated.all)}
    assert lanes[redis.NAME] == [f"write {redis.CONFIG_PATH}", "restart Redis"]
    assert lanes[prefect_server.NAME] == [f"write {prefect_server.ENV_FILE}", "restart the Prefect server"]
    assert lanes[scale_out.SERVICES_NAME] == ["restart the Prefect services"]


def test_a_postgres_host_switched_to_another_database_migrates_it():
    old = postgres()
    elsewhere = dataclasses.replace(DATABASE, url=DATABASE.url.replace("10.0.1.5", "10.0.1.9"))
    moved = host_services(sample_inputs(auth_string=AUTH, database=elsewhere, backup=POSTGRES_BACKUP))
    lanes = {lane.service.name: names(lane.steps) for lane in lanes_for(converged(old), *moved.all)}
    assert lanes[prefect_server.NAME] == [
        f"write {prefect_server.ENV_FILE}",
        "migrate the database 10.0.1.9:5432/prefect to Prefect 3.9.1 (pg_trgm, prefect server database upgrade)",
        "restart the Prefect server",
    ]


def test_a_sqlite_host_switched_to_postgres_stops_litestream_and_starts_the_scale_out_services():
    before = sqlite(backup=BackupSettings(replica=REPLICA))
    after = postgres()
    lanes = {lane.service.name: names(lane.steps) for lane in lanes_for(converged(before, migrated=False), *after.all)}
    assert lanes[litestream.NAME][0] == f"stop and disable {litestream.UNIT_NAME} ({POSTGRES_BACKUP.off_reason})"
    assert lanes[redis.NAME][-1] == "start Redis" and lanes[scale_out.SERVICES_NAME][-1] == "start the Prefect services"
    # prefect-redis in the venv and the env file on PostgreSQL before the migration, the restart after it.
    server = lanes[prefect_server.NAME]
    migrate = after.server.seed.steps[0].name
    assert server.index(f"install prefect-redis {scale_out.PREFECT_REDIS_VERSION}") < server.index(migrate)
    assert server.index(f"write {prefect_server.ENV_FILE}") < server.index(migrate)
    assert server.index(migrate) < server.index("restart the Prefect server")
