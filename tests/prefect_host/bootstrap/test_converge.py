"""The converge phase's first step: the host's facts, once the host can be converged."""

from __future__ import annotations

import dataclasses
import io

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from prefect_host.bootstrap.converge import GCP_HOST_KEY_GRACE_S, ready_facts, ssh_session
from prefect_host.bootstrap.inputs import BootstrapInputs
from prefect_host.console import Console
from prefect_host.errors import ConnectError
from prefect_host.ssh import HostSession
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
from tests.prefect_host.host.host_samples import WEB_VENV, RecordingSession, converged_output, web_service

WEB = web_service(venv=WEB_VENV)


def inputs(connect_timeout: float) -> BootstrapInputs:
    return sample_inputs(api_url="http://h/api", ui_url="http://h", connect_timeout=connect_timeout)


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


@pytest.mark.parametrize("cloud, grace", [("gcp", GCP_HOST_KEY_GRACE_S), ("aws", 0.0), ("local", 0.0)])
def test_only_gcp_waits_for_its_startup_script_to_install_the_pinned_key(monkeypatch, cloud, grace):
    seen = {}

    def connect(host, **options):
        seen.update(options)
        raise ConnectError("stop here")

    monkeypatch.setattr(HostSession, "connect", connect)
    key = ed25519.Ed25519PrivateKey.generate()
    identity = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    host_key = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    given = dataclasses.replace(inputs(30.0), cloud=cloud, identity_text=identity, host_key=host_key)
    with pytest.raises(ConnectError), ssh_session(given, Console(io.StringIO(), io.StringIO())):
        pass
    assert seen["key_grace"] == grace
