"""Redis for the scale-out mode: Debian's redis-server pointed by a drop-in at our configuration, the
password (derived from the auth string) only in that 0600 file, and a Redis stopped in sqlite mode."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from prefect_host.host.model import AptPackage
from prefect_host.services import redis
from tests.prefect_host.host.host_samples import (
    assert_secret_only_on_stdin,
    assert_shell_parses,
    converged_output,
    fresh_output,
    lanes_for,
    names,
    steps_for,
    unit_line,
)
from tests.prefect_host.services.service_samples import AUTH, unit_directives

MIRROR = "deb [trusted=yes] http://10.77.0.1:8123/ ./"


def service(auth_string: str = AUTH, **changes) -> redis.Service:
    return redis.redis_service(auth_string, **({"apt_source": None} | changes))


def file_of(svc, path: str):
    return next(f for f in svc.files if f.path == path)


def config_directives(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split(" ", 1) for line in lines)


# --- the password and the URLs ---------------------------------------------------------------------
def test_the_password_is_an_hmac_of_the_auth_string_and_holds_none_of_it():
    password = redis.password(AUTH)
    expected = hmac.new(AUTH.encode(), b"prefect-host redis requirepass", hashlib.sha256).hexdigest()
    assert password == expected and len(password) == 64 and password == redis.password(AUTH)
    assert AUTH not in password and AUTH.split(":", 1)[1] not in password
    # Rotating the auth string rotates it; the auth string alone (no salt from the host) decides it.
    assert redis.password("admin:rotated") != password
    assert redis.password(AUTH) != hashlib.sha256(AUTH.encode()).hexdigest()


def test_urls_name_the_loopback_redis_with_the_password_and_one_database_each():
    password = redis.password(AUTH)
    assert redis.url(AUTH, redis.MESSAGING_DB) == f"redis://default:{password}@127.0.0.1:6379/0"
    assert redis.url(AUTH, redis.DOCKET_DB) == f"redis://default:{password}@127.0.0.1:6379/1"
    assert redis.MESSAGING_DB != redis.DOCKET_DB


# --- the files -------------------------------------------------------------------------------------
def test_config_listens_on_loopback_only_with_the_password_and_an_append_only_file():
    config = config_directives(redis.config_text(AUTH))
    assert config["bind"] == "127.0.0.1 -::1" and config["port"] == "6379"
    assert config["protected-mode"] == "yes"
    assert config["requirepass"] == redis.password(AUTH)
    assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
    assert config["supervised"] == "systemd" and config["daemonize"] == "no"
    assert config["dir"] == "/var/lib/redis"
    assert AUTH not in redis.config_text(AUTH)


def test_the_config_holding_the_password_is_0600_and_owned_by_redis():
    svc = service()
    config = file_of(svc, redis.CONFIG_PATH)
    assert (config.mode, config.owner, config.systemd, config.on_change) == (0o600, "redis", False, "restart")
    password = redis.password(AUTH)
    assert [f.path for f in svc.files if f.text and password in f.text] == [redis.CONFIG_PATH]
    assert not any(f.text and AUTH in f.text for f in svc.files)


def test_the_dropin_points_debians_unit_at_our_config_and_takes_back_its_write_access_to_etc_redis():
    dropin = file_of(service(), redis.DROPIN_PATH)
    assert dropin.systemd and dropin.mode == 0o644 and dropin.owner == "root"
    assert dropin.path == "/etc/systemd/system/redis-server.service.d/prefect-host.conf"
    directives = unit_directives(dropin.text)
    # An empty assignment first: systemd would otherwise add ours to Debian's (two ExecStart= is an error).
    assert directives["ExecStart"] == [
        "",
        f"/usr/bin/redis-server {redis.CONFIG_PATH} --supervised systemd --daemonize no",
    ]
    assert directives["ReadWritePaths"][0] == ""
    assert "/etc/redis" not in " ".join(directives["ReadWritePaths"])
    assert "-/var/lib/redis" in directives["ReadWritePaths"][1]
    assert redis.password(AUTH) not in dropin.text


def test_the_package_comes_from_the_apt_source_given():
    assert service().packages == (AptPackage("redis-server", source=None),)
    assert service(apt_source=MIRROR).packages == (AptPackage("redis-server", source=MIRROR),)
    svc = service()
    assert svc.units.names == (redis.UNIT,) and svc.units.applied == redis.APPLIED_FILE and not svc.absent


# --- the steps -------------------------------------------------------------------------------------
def test_a_fresh_host_installs_writes_then_starts_redis():
    (lane,) = lanes_for(fresh_output(service()), service())
    assert names(lane.prepare) == [
        "install redis-server (apt)",
        f"write {redis.CONFIG_PATH}",
        f"point {redis.UNIT} at {redis.CONFIG_PATH}",
    ]
    assert names(lane.start) == [f"enable {redis.UNIT}", "start Redis"]
    write = lane.prepare[1].commands[0]
    assert "chmod 0600" in write.script and "chown redis:redis" in write.script
    assert f"requirepass {redis.password(AUTH)}\n".encode() in write.stdin
    steps = list(lane.steps)
    assert_secret_only_on_stdin(steps, redis.password(AUTH))
    assert_secret_only_on_stdin(steps, AUTH)
    assert_shell_parses(steps)


def test_a_converged_host_gets_no_steps_and_a_rotated_auth_string_rewrites_and_restarts():
    converged = converged_output(service())
    assert steps_for(converged, service()) == []
    rotated = steps_for(converged, service("admin:rotated"))
    assert names(rotated) == [f"write {redis.CONFIG_PATH}", "restart Redis"]
    assert_secret_only_on_stdin(rotated, redis.password("admin:rotated"))


def test_in_sqlite_mode_redis_is_stopped_and_declares_nothing_to_install():
    absent = service(absent="database sqlite")
    assert absent.absent == "database sqlite" and absent.packages == () and absent.files == ()
    assert absent.units.names == (redis.UNIT,)
    # A host that ran postgres mode: Redis is stopped and disabled, its applied record dropped.
    (stop,) = steps_for(converged_output(service()), absent)
    assert stop.name == f"stop and disable {redis.UNIT} (database sqlite)"
    assert stop.commands[0].script == f"systemctl disable --now --quiet {redis.UNIT} && rm -f {redis.APPLIED_FILE}"
    # A host that never had Redis (systemd does not know the unit): nothing to do.
    assert steps_for(fresh_output(absent), absent) == []


@pytest.mark.parametrize("enabled, state", [("enabled", "inactive"), ("disabled", "active")])
def test_an_enabled_or_running_redis_left_in_sqlite_mode_is_stopped(enabled, state):
    absent = service(absent="database sqlite")
    host = converged_output(service()).replace(unit_line(redis.UNIT), unit_line(redis.UNIT, enabled, state))
    assert names(steps_for(host, absent)) == [f"stop and disable {redis.UNIT} (database sqlite)"]
