"""The bootstrap's last check: the metadata guard's rules are in force on the host, read back as root
over the SSH session after every unit started; what is missing is named, with how to put it back."""

from __future__ import annotations

import io

import pytest

from prefect_host.bootstrap.checks import verify_metadata_guard
from prefect_host.console import Console, parse_step_lines
from prefect_host.errors import VerifyError
from prefect_host.services import metadata_guard as guard
from tests.prefect_host.bootstrap.bootstrap_samples import sample_inputs
from tests.prefect_host.host.host_samples import RecordingSession

READ = "read the metadata guard's rules"
STEP = "metadata service guard in force (iptables)"
IN_FORCE = "\n".join(
    [
        "uid prefect 996",
        "uid prefect-flow 995",
        "== IPv4",
        f"-A OUTPUT -d 169.254.169.254/32 -j {guard.CHAIN}",
        f"-A {guard.CHAIN} -m owner --uid-owner 996 -j REJECT --reject-with icmp-admin-prohibited",
        f"-A {guard.CHAIN} -m owner --uid-owner 995 -j REJECT --reject-with icmp-admin-prohibited",
    ]
)
INPUTS = sample_inputs()


def check(rules: str) -> tuple[RecordingSession, io.StringIO]:
    session, out = RecordingSession(on_run={READ: lambda: rules}), io.StringIO()
    try:
        verify_metadata_guard(session, INPUTS, Console(out, io.StringIO()))
    finally:
        [ran] = session.ran
        assert ran.sudo and ran.script == guard.read_rules_script()  # as root, one round trip
    return session, out


def test_rules_in_force_pass_as_one_ok_step():
    _, out = check(IN_FORCE)
    assert [(step.tag, step.name) for step in parse_step_lines(out.getvalue())] == [("ok", STEP)]


def test_a_flushed_chain_fails_the_bootstrap_naming_the_users_and_the_fix():
    flushed = "\n".join(line for line in IN_FORCE.splitlines() if "--uid-owner" not in line)
    with pytest.raises(VerifyError) as failed:
        check(flushed)
    message = str(failed.value)
    assert f"no REJECT rule in {guard.CHAIN} for prefect (uid 996), prefect-flow (uid 995)" in message
    assert "not in force on 203.0.113.7" in message and f"sudo {guard.PATH}" in message
    assert "systemctl restart prefect-server" in message and "run the bootstrap again" in message


def test_no_jump_from_output_fails_the_bootstrap():
    with pytest.raises(VerifyError, match=f"IPv4: OUTPUT does not jump to {guard.CHAIN} for 169.254.169.254"):
        check("\n".join(line for line in IN_FORCE.splitlines() if "OUTPUT" not in line))
