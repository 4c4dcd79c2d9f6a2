"""The converge phase's first step: the host's facts, once the host can be converged."""

from __future__ import annotations

import io

from prefect_host.bootstrap.converge import ready_facts
from prefect_host.bootstrap.inputs import BootstrapInputs
from prefect_host.console import Console
from tests.prefect_host.host.host_samples import WEB_VENV, RecordingSession, converged_output, web_service

WEB = web_service(venv=WEB_VENV)


def inputs(connect_timeout: float) -> BootstrapInputs:
    return BootstrapInputs(
        host="203.0.113.7",
        user="admin",
        host_key="ssh-ed25519 AAAA",
        api_url="http://h/api",
        ui_url="http://h",
        prefect_version="3.9.1",
        auth_string="admin:pw",
        profile_name="p",
        connect_timeout=connect_timeout,
    )


def test_cloud_init_still_running_is_waited_for_first():
    session = RecordingSession("cloud_init_status=running\n" + converged_output(WEB))
    ready_facts(session, inputs(123.0), (WEB,), Console(io.StringIO(), io.StringIO()))
    facts_run, wait = session.ran
    assert facts_run.script == "sh -s" and "cloud-init status --wait" in wait.script
    assert wait.timeout == 123.0 and wait.sudo
    for settled in ("done", "disabled", "error"):
        session = RecordingSession(f"cloud_init_status={settled}\n" + converged_output(WEB))
        ready_facts(session, inputs(123.0), (WEB,), Console(io.StringIO(), io.StringIO()))
        assert len(session.ran) == 1
