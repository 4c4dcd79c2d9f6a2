"""The Litestream service's declaration: its files, its unit, its seed (the restore), and where the
bucket key may be (only the root 0600 env file, the restore's env, never a command line)."""

from __future__ import annotations

import dataclasses

import pytest

from prefect_host.host.model import Seed
from prefect_host.services import litestream
from prefect_host.services.python_env import prefect_venv
from tests.prefect_host.host.host_samples import (
    assert_shell_parses,
    converged_output,
    fresh_output,
    names,
    steps_for,
)

SECRET = "Sec/ret+Key-for-litestream-tests"
REPLICA = litestream.Replica(
    bucket="team-bucket",
    region="eu-west-1",
    access_key_id="AKIATESTLITESTREAM",
    secret_access_key=SECRET,
    endpoint_url="http://10.77.0.1:9000",
    retention="7d",
    snapshot_interval="1d",
)
VENV = prefect_venv("3.9.1", extra_pins=((litestream.DISTRIBUTION, litestream.LITESTREAM_VERSION),))


def service(**changes) -> litestream.Service:
    return litestream.litestream_service(venv=VENV, **({"replica": REPLICA} | changes))


def file_text(svc, path: str) -> str:
    return next(f.text for f in svc.files if f.path == path)


@pytest.mark.parametrize("text, hours", [("7d", "168h"), ("36h", "36h"), ("1d", "24h"), ("3650d", "87600h")])
def test_go_durations_have_no_days(text, hours):
    assert litestream.go_duration(text) == hours


def test_config_names_the_bucket_retention_and_the_endpoint_and_holds_no_secret():
    config = litestream.config_text(REPLICA)
    assert "retention: 168h" in config and "interval: 24h" in config
    assert 'bucket: "team-bucket"' in config and f"path: {litestream.REPLICA_PATH}" in config
    assert 'endpoint: "http://10.77.0.1:9000"' in config and "force-path-style: true" in config
    assert f"- path: {litestream.DB_PATH}" in config and f"path: {litestream.SOCKET}" in config
    assert SECRET not in config and REPLICA.access_key_id not in config
    on_aws = litestream.config_text(dataclasses.replace(REPLICA, endpoint_url=None))
    assert "endpoint" not in on_aws and "force-path-style" not in on_aws


def test_a_quote_in_a_value_stays_inside_its_yaml_string():
    config = litestream.config_text(dataclasses.replace(REPLICA, region='eu"\\x'))
    assert 'region: "eu\\"\\\\x"' in config


def test_the_key_is_only_in_the_root_only_env_file():
    svc = service()
    env = next(f for f in svc.files if f.path == litestream.ENV_FILE)
    assert env.mode == 0o600 and env.owner == "root" and SECRET in env.text
    assert [f.path for f in svc.files if f.text and SECRET in f.text] == [litestream.ENV_FILE]
    unit = file_text(svc, litestream.UNIT_PATH)
    assert f"EnvironmentFile={litestream.ENV_FILE}" in unit and "User=prefect" in unit
    assert f"ExecStart={litestream.LITESTREAM_BIN} replicate -no-expand-env -config {litestream.CONFIG_FILE}" in unit
    assert "Restart=always" in unit and "ProtectSystem=strict" in unit and "StateDirectory=prefect" in unit


def test_backups_turned_off_stop_the_unit_then_remove_its_config_and_the_key():
    off = litestream.litestream_service(venv=VENV, replica=None, absent="--no-backup")
    assert off.absent == "--no-backup" and off.units.names == (litestream.UNIT_NAME,)
    on = service()
    # The host as a bootstrap with backups left it: unit running, files in place.
    steps = steps_for(converged_output(on), off)
    assert names(steps) == [
        f"stop and disable {litestream.UNIT_NAME} (--no-backup)",
        f"remove {litestream.CONFIG_FILE}",
        f"remove {litestream.ENV_FILE}",
        f"remove {litestream.UNIT_NAME}",
    ]
    assert_shell_parses(steps)
    # Once gone, nothing more to do.
    assert steps_for(converged_output(off), off) == []


def test_the_seed_restores_only_when_asked():
    assert service(restore=False).seed is None
    seed = service(restore_at="2026-12-06T05:25:45Z").seed
    assert isinstance(seed, Seed) and seed.path == litestream.DB_PATH
    [step] = seed.steps
    [command] = step.commands
    assert "at 2026-12-06T05:25:45Z" in step.name and "--timestamp 2026-12-06T05:25:45Z" in command.script
    assert command.reports and command.stdin.startswith(b'"""The bootstrap')
    assert SECRET not in command.script and SECRET.encode() not in command.stdin


def test_a_host_without_the_database_is_restored_after_the_files_and_before_the_unit_starts():
    svc = service()
    fresh = names(steps_for(fresh_output(svc), svc))
    restore = fresh.index(f"restore the database from {REPLICA.url}")
    assert fresh.index(f"write {litestream.ENV_FILE}") < restore < fresh.index("start Litestream")
    assert_shell_parses(steps_for(fresh_output(svc), svc))


def test_a_host_with_the_database_is_never_restored():
    svc = service()
    converged = converged_output(svc, extra=f"exists:{litestream.DB_PATH}=1\n")
    assert steps_for(converged, svc) == []
    # Everything else in place but no database: only the restore.
    assert names(steps_for(converged_output(svc), svc)) == [f"restore the database from {REPLICA.url}"]
