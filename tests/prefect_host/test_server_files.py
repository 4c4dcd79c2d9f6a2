"""The env file and the unit text (the e2e tests prove both on a real systemd)."""

from __future__ import annotations

import pytest

from prefect_host import server_files as sf


def _settings(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize("tls, host, port", [(True, "127.0.0.1", "4201"), (False, "0.0.0.0", "4200")])
def test_env_file_has_every_server_setting(tls, host, port):
    """Behind Caddy Prefect listens on loopback only; with tls off it is the front door itself."""
    settings = _settings(sf.env_file_text(auth_string="admin:pw", tls=tls))
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
    assert sf.server_port(tls=tls) == int(port)
    assert sf.UI_STATIC_DIR.startswith(sf.STATE_DIR + "/")  # writable: inside StateDirectory


@pytest.mark.parametrize("value, quoted", [
    ("plain", "'plain'"),
    ('a$b"c\\d`e #f', "'a$b\"c\\d`e #f'"),           # literal inside single quotes
    ("it's", '"it\'s"'),                                # a single quote: double quotes instead
    ("it's $5 \"x\" \\ `y`", '"it\'s \\$5 \\"x\\" \\\\ \\`y\\`"'),
])
def test_env_values_are_quoted_for_systemd(value, quoted):
    assert sf.env_value(value) == quoted


def test_env_values_reject_line_breaks():
    for bad in ("a\nb", "a\rb", "a\0b"):
        with pytest.raises(ValueError):
            sf.env_value(bad)


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_unit_runs_the_server_as_the_service_user_and_restarts_it():
    unit = _directives(sf.unit_text())
    assert unit["User"] == ["prefect"] and unit["Group"] == ["prefect"]
    assert unit["EnvironmentFile"] == [sf.ENV_FILE]
    assert unit["WorkingDirectory"] == [sf.STATE_DIR]
    assert unit["ExecStart"] == ["/opt/prefect-host/venv/bin/prefect server start"]
    assert unit["Restart"] == ["always"]
    assert unit["StateDirectory"] == ["prefect"]  # /var/lib/prefect, owned by the service user
    assert unit["WantedBy"] == ["multi-user.target"]


def test_unit_is_sandboxed():
    unit = _directives(sf.unit_text())
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["PrivateUsers"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in unit["SystemCallFilter"]
    assert "MemoryDenyWriteExecute" not in unit
    assert "PREFECT_SERVER_API_AUTH_STRING" not in sf.unit_text()  # the secret stays in the 0600 file


def test_worker_env_has_the_local_api_the_poll_interval_and_the_result_storage():
    results = {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "s3-bucket/team-results",
               "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}
    settings = _settings(sf.worker_env_file_text(auth_string="admin:it's", ui_url="https://203.0.113.7",
                                                 result_settings=results, tls=True))
    assert settings == {
        "PREFECT_HOME": "'/var/lib/prefect-worker'",
        # The worker on the host keeps talking to the server over loopback, behind Caddy's back.
        "PREFECT_API_URL": "'http://127.0.0.1:4201/api'",
        "PREFECT_API_AUTH_STRING": '"admin:it\'s"',
        "PREFECT_UI_URL": "'https://203.0.113.7'",
        "PREFECT_WORKER_QUERY_SECONDS": "'5'",
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": "'s3-bucket/team-results'",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "'true'",
    }
    # Without storage: no result settings at all (a run then keeps its results on the host).
    bare = _settings(sf.worker_env_file_text(auth_string="a:b", ui_url="http://h:4200", result_settings={},
                                             tls=False))
    assert not [name for name in bare if name.startswith("PREFECT_RESULTS_")]
    assert bare["PREFECT_API_URL"] == "'http://127.0.0.1:4200/api'"  # tls off: Prefect itself on 4200


def test_worker_template_runs_one_named_worker_per_instance_as_the_service_user():
    unit = _directives(sf.worker_unit_text(pool="default"))
    assert unit["User"] == ["prefect"] and unit["Group"] == ["prefect"]
    assert unit["EnvironmentFile"] == [sf.WORKER_ENV_FILE]
    assert unit["ExecStart"] == ["/opt/prefect-host/venv/bin/prefect worker start --pool default --type process "
                                 "--name %H-%i"]
    assert unit["Restart"] == ["always"] and unit["WantedBy"] == ["multi-user.target"]
    assert unit["After"] == [f"network-online.target {sf.UNIT_NAME}"]
    # Flow runs get a writable home and state of their own, not the server's.
    assert unit["Environment"] == [f"HOME={sf.WORKER_STATE_DIR}"]
    assert unit["WorkingDirectory"] == [sf.WORKER_STATE_DIR] and unit["StateDirectory"] == ["prefect-worker"]
    assert unit["InaccessiblePaths"] == [f"-{sf.STATE_DIR}"]
    assert sf.worker_unit_name(2) == "prefect-worker@2.service"


def test_worker_template_is_sandboxed_and_holds_no_secret():
    unit = _directives(sf.worker_unit_text(pool="default"))
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""] and unit["PrivateUsers"] == ["yes"] and unit["PrivateTmp"] == ["yes"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert "ProcSubset" not in unit and "MemoryDenyWriteExecute" not in unit and "RemoveIPC" not in unit
    assert "AUTH_STRING" not in sf.worker_unit_text(pool="default")
