"""The Prefect server's declaration: its env file and unit (the e2e tests prove both on a real
systemd), the digest its applied record holds, and the steps planned from the host's facts."""

from __future__ import annotations

import hashlib

import pytest

from prefect_host.host.facts import parse_facts
from prefect_host.host.model import Step
from prefect_host.host.planner import plan
from prefect_host.services import metadata_guard
from prefect_host.services import prefect_server as ps
from prefect_host.services.systemd import env_value
from prefect_host.tls import UPSTREAM_PORT
from tests.prefect_host.host.host_samples import (
    assert_secret_only_on_stdin,
    assert_shell_parses,
    converged_output,
    fresh_output,
    names,
    replace_file,
    steps_for,
    unit_line,
)
from tests.prefect_host.services.service_samples import (
    AUTH,
    PASSWORD,
    env_settings,
    pinned_venv,
    server,
    unit_directives,
    worker_set,
)

CONVERGED = converged_output(server(), worker_set())


# --- the files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("tls, host, port", [(True, "127.0.0.1", "4201"), (False, "0.0.0.0", "4200")])
def test_env_file_has_every_server_setting(tls, host, port):
    """Behind Caddy Prefect listens on loopback only; with tls off it is the front door itself."""
    settings = env_settings(ps.env_text(auth_string="admin:pw", tls=tls))
    assert settings == {
        "PREFECT_HOME": "'/var/lib/prefect'",
        "PREFECT_SERVER_API_HOST": f"'{host}'",
        "PREFECT_SERVER_API_PORT": f"'{port}'",
        # Relative: the browser calls the API on the origin it loaded the UI from.
        "PREFECT_SERVER_UI_API_URL": "'/api'",
        "PREFECT_SERVER_API_AUTH_STRING": "'admin:pw'",
        "PREFECT_SERVER_UI_STATIC_DIRECTORY": "'/var/lib/prefect/ui-build'",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "'false'",
    }
    assert ps.server_port(tls=tls) == int(port)
    assert ps.UI_STATIC_DIR.startswith(ps.STATE_DIR + "/")  # writable: inside StateDirectory


def test_prefect_listens_on_the_port_caddy_proxies_to():
    assert ps.server_port(tls=True) == ps.LOOPBACK_PORT == UPSTREAM_PORT


def test_unit_runs_the_server_as_the_service_user_and_restarts_it():
    unit = unit_directives(ps.unit_text())
    assert unit["User"] == ["prefect"] and unit["Group"] == ["prefect"]
    assert unit["EnvironmentFile"] == [ps.ENV_FILE]
    assert unit["WorkingDirectory"] == [ps.STATE_DIR]
    assert unit["ExecStart"] == ["/opt/prefect-host/venv/bin/prefect server start"]
    assert unit["Restart"] == ["always"]
    assert unit["StateDirectory"] == ["prefect"]  # /var/lib/prefect, owned by the service user
    assert unit["WantedBy"] == ["multi-user.target"]


def test_unit_is_sandboxed():
    unit = unit_directives(ps.unit_text())
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["PrivateUsers"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in unit["SystemCallFilter"]
    assert "MemoryDenyWriteExecute" not in unit
    assert "PREFECT_SERVER_API_AUTH_STRING" not in ps.unit_text()  # the secret stays in the 0600 file


def test_the_declared_files_the_user_and_the_unit():
    declared = server()
    assert [(f.path, f.mode, f.owner, f.on_change, f.systemd) for f in declared.files] == [
        (ps.UNIT_PATH, 0o644, "root", "restart", True),
        (ps.ENV_FILE, 0o600, "root", "restart", False),
        (metadata_guard.PATH, 0o755, "root", "restart", False),
    ]
    assert [(u.name, u.home) for u in declared.users] == [("prefect", "/var/lib/prefect")]
    assert declared.packages == (metadata_guard.PACKAGE,)
    assert declared.units.names == (ps.UNIT_NAME,) and declared.units.applied == ps.APPLIED_FILE


# --- the applied record: what a host converged by an earlier release holds ------------------------
@pytest.mark.parametrize("prefect_version", ["3.9.1", "3.8.4"])
def test_applied_record_is_the_digest_earlier_releases_recorded(prefect_version):
    declared = server(pinned_venv(prefect_version))
    unit_text, env_text = ps.unit_text(), ps.env_text(auth_string=AUTH, tls=True)
    parts = (prefect_version, unit_text, env_text, metadata_guard.script_text())
    earlier = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    assert declared.restart_digest() == earlier and declared.applied_record() == earlier


# --- the steps -------------------------------------------------------------------------------------
def server_steps(output: str) -> list[Step]:
    """The server's steps, planned as the first lane: the one that installs the venv it shares."""
    return steps_for(output, server())


def test_fresh_host_gets_every_step_in_order():
    (lane,) = plan(parse_facts(fresh_output(server())), [server()])
    assert names(lane.steps) == [
        "create service user prefect",
        "install iptables (apt)",
        "install uv 0.13.8",
        "create the virtualenv",
        "install prefect 3.9.1 and prefect-aws 0.7.12",
        f"write {ps.ENV_FILE}",
        f"install {metadata_guard.PATH}",
        f"install {ps.UNIT_NAME}",
        f"enable {ps.UNIT_NAME}",
        "start the Prefect server",
        "compile bytecode (in the background)",
    ]
    # Started once, by the step the bootstrap watches; Caddy may (re)start only after it.
    assert [step.starts for step in lane.steps].count(ps.NAME) == 1 and lane.steps[-2].starts == ps.NAME
    assert names(lane.start) == [
        f"enable {ps.UNIT_NAME}",
        "start the Prefect server",
        "compile bytecode (in the background)",
    ]
    start = lane.steps[-2].commands[0].script
    assert start.startswith(f"systemctl restart {ps.UNIT_NAME} && ")
    assert start.endswith(f"{server().applied_record()} > {ps.APPLIED_FILE}")


def test_converged_host_gets_no_steps():
    assert steps_for(CONVERGED, server(), worker_set()) == []


@pytest.mark.parametrize(
    "changed, expected",
    [
        (lambda: server(auth_string="admin:rotated"), [f"write {ps.ENV_FILE}", "restart the Prefect server"]),
        (
            lambda: replace_file(server(), ps.UNIT_PATH, ps.unit_text() + "# edited\n"),
            [f"install {ps.UNIT_NAME}", "restart the Prefect server"],
        ),
        (
            lambda: server(pinned_venv("3.9.2")),
            ["install prefect 3.9.2", "restart the Prefect server", "compile bytecode (in the background)"],
        ),
        (lambda: server(pinned_venv(uv_version="0.14.0")), ["install uv 0.14.0"]),
    ],
)
def test_one_change_gives_only_its_steps(changed, expected):
    assert names(steps_for(CONVERGED, changed())) == expected


def test_stopped_server_is_started_without_other_steps():
    stopped = CONVERGED.replace(unit_line(ps.UNIT_NAME), unit_line(ps.UNIT_NAME, state="failed"))
    assert names(server_steps(stopped)) == ["start the Prefect server"]


def test_interrupted_run_restarts_although_files_match():
    """Files written but the restart never happened (no applied record): restart now."""
    interrupted = CONVERGED.replace(f"applied:{ps.APPLIED_FILE}={server().applied_record()}\n", "")
    assert names(server_steps(interrupted)) == ["restart the Prefect server"]


def test_pending_daemon_reload_reinstalls_the_unit():
    pending = CONVERGED.replace(unit_line(ps.UNIT_NAME), unit_line(ps.UNIT_NAME, need_reload="yes"))
    steps = server_steps(pending)
    assert names(steps) == [f"install {ps.UNIT_NAME}"]
    assert [c.script for c in steps[0].commands][-1] == "systemctl daemon-reload"


def test_secrets_only_travel_on_stdin():
    steps = server_steps(fresh_output(server(), worker_set()))
    assert_secret_only_on_stdin(steps, PASSWORD)
    env_command = next(c for s in steps for c in s.commands if c.label == f"write {ps.ENV_FILE}")
    assert f"PREFECT_SERVER_API_AUTH_STRING={env_value(AUTH)}\n".encode() in env_command.stdin
    assert "chmod 0600" in env_command.script


def test_shell_of_every_step_parses():
    assert_shell_parses(server_steps(fresh_output(server(), worker_set())))
    assert_shell_parses(steps_for(CONVERGED, server(pinned_venv("3.9.2"), auth_string="admin:rotated")))
