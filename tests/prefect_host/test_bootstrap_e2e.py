"""scripts/bootstrap.py end to end on a real booted Debian 13 host, nothing mocked.

One host for the whole module, in this order: fresh install -> hardening -> a real flow run through
the written profile -> re-run is a no-op -> a rotated secret restarts once -> wrong host key and a
user without sudo are refused with nothing changed -> `systemctl kill` and a reboot bring the
server back -> no secret in any output, nor in the host's journal.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import sys
import time
import tomllib

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from e2e_support import Stack, files_state, host_outputs

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-e2e"
# Quotes, $, backslash and backtick: the env file's quoting must carry them to the server intact.
AUTH = "admin:E2e-'q' $x\\y\"z`w-7f3a"
ROTATED_AUTH = "admin:rotated-E2e-secret-9c41"
SERVER = "prefect-server.service"


def fingerprint(public_line: str) -> str:
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.fixture(scope="module")
def stack(local_host, package_index, tmp_path_factory) -> Stack:
    # The outputs' bucket is not reachable from here: result storage is test_worker_e2e.py's part.
    return Stack.create(
        local_host,
        tmp_path_factory.mktemp("bootstrap-e2e"),
        profile=PROFILE,
        outputs=host_outputs(local_host, prefectAuthString=AUTH),
        bootstrap_args=["--find-links", package_index.url, "--no-storage"],
        extra_secrets=(ROTATED_AUTH.split(":", 1)[1],),
    )


def health(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=3).json() is True
    except (httpx.HTTPError, ValueError):
        return False


def host_snapshot(stack: Stack) -> dict[str, str]:
    """What a refused run must leave as it was."""
    files = [
        "/etc/prefect-host/server.env",
        "/etc/systemd/system/prefect-server.service",
        "/etc/prefect-host/server.applied",
    ]
    return {
        "files": files_state(stack, files),
        "pid": str(stack.main_pid(SERVER)),
        "sessions": stack.guest(
            "journalctl -q _COMM=sshd-session _COMM=sshd | grep -c 'Accepted publickey' || true"
        ).strip(),
    }


def test_fresh_install_is_verified_and_writes_the_profile(stack, local_host, record_property):
    untouched = local_host.guest_exec(["test", "-e", "/opt/prefect-host"], check=False).returncode != 0
    assert untouched, "local_host was bootstrapped by an earlier test module; this one needs it fresh"
    run = stack.measured_bootstrap(record_property, "fresh_install_seconds", "fresh install to verified", "--activate")
    steps = run.changed
    assert steps[:9] == [
        "create service user prefect",
        "install uv 0.13.8",
        "create the virtualenv",
        "install prefect 3.9.1 and prefect-aws 0.7.12",
        "write /etc/prefect-host/server.env",
        "install /usr/local/sbin/prefect-host-metadata-guard",
        "install prefect-server.service",
        "enable prefect-server.service",
        "start the Prefect server",
    ]
    assert "compile bytecode (in the background)" in steps
    assert re.search(r"UI: +" + re.escape(stack.outputs["uiUrl"]), run.stdout)
    assert f"profile: {PROFILE} (active)" in run.stdout
    # Outputs without tlsMode (from before TLS) describe a plaintext server: served as such, loudly.
    assert "warning: tlsMode is off (allowPlaintext)" in run.stderr

    api = stack.api_url
    assert httpx.get(f"{api}/health").json() is True
    assert httpx.get(f"{api}/admin/version").status_code == 401
    user, password = AUTH.split(":", 1)
    assert httpx.get(f"{api}/admin/version", auth=(user, password)).json() == "3.9.1"
    # Relative: the browser calls the API on the origin it loaded the UI from.
    assert httpx.get(f"{stack.outputs['uiUrl']}/ui-settings").json()["api_url"] == "/api"
    ui = httpx.get(stack.outputs["uiUrl"] + "/")
    assert ui.status_code == 200 and ui.headers["content-type"].startswith("text/html")
    pool = httpx.get(f"{api}/work_pools/default", auth=(user, password)).json()
    assert pool["type"] == "process" and pool["base_job_template"]["job_configuration"]

    profiles = stack.laptop_home / "profiles.toml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    data = tomllib.loads(profiles.read_text())
    assert data["active"] == PROFILE
    assert data["profiles"][PROFILE] == {"PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH}


def test_server_is_a_hardened_service_of_its_own_user(stack, local_host):
    analysis = local_host.guest_exec(["systemd-analyze", "security", "--no-pager", SERVER]).stdout
    score = float(re.search(r"Overall exposure level for prefect-server.service: ([\d.]+)", analysis).group(1))
    print(f"\nsystemd-analyze security prefect-server.service: {score}")
    assert score <= 2.0
    pid = stack.main_pid(SERVER)
    assert local_host.guest_exec(["ps", "-o", "user=", "-p", str(pid)]).stdout.strip() == "prefect"
    assert local_host.guest_exec(["stat", "-c", "%a %U %G", "/etc/prefect-host/server.env"]).stdout.split() == [
        "600",
        "root",
        "root",
    ]
    venv_site = local_host.guest_exec(
        ["sh", "-c", "echo /opt/prefect-host/venv/lib/python3*/site-packages"]
    ).stdout.strip()
    not_writable = local_host.guest_exec(["runuser", "-u", "prefect", "--", "test", "-w", venv_site], check=False)
    assert not_writable.returncode == 1  # the service cannot modify its own code
    assert local_host.guest_exec(["systemctl", "is-enabled", "prefect-server.service"]).stdout.strip() == "enabled"
    # The background job compiles the venv's bytecode (which the service could not write itself).
    deadline = time.monotonic() + 120
    while local_host.guest_exec(["cat", "/opt/prefect-host/venv/.bytecode-compiled"], check=False).stdout != "3.9.1\n":
        assert time.monotonic() < deadline, "the bytecode job did not finish"
        time.sleep(1)
    compiled = local_host.guest_exec(["sh", "-c", f"ls {venv_site}/prefect/server/api/__pycache__ | wc -l"]).stdout
    assert int(compiled) > 10


def test_host_session_puts_private_files_through_sudo(stack, local_host):
    """The SSH layer on its own (issue 5 writes the worker's env file with it)."""
    from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key_file

    secret = "WORKER_SECRET=put-file-secret-5f1e\n"
    stack.secrets.append("put-file-secret-5f1e")
    pinned = PinnedHostKey.parse(local_host.host_public_key, setting="hostPublicKey")
    with HostSession.connect(
        local_host.address,
        user=local_host.ssh_user,
        host_key=pinned,
        identity=load_private_key_file(local_host.identity_file),
        connect_timeout=30,
    ) as session:
        session.put_file("/etc/prefect-host/e2e-probe.env", secret, mode=0o600, owner="prefect")
        assert session.run("id -un", sudo=True).stdout == "root\n"
        assert session.run("id -un", as_user="prefect").stdout == "prefect\n"
    listing = local_host.guest_exec(["stat", "-c", "%a %U %G", "/etc/prefect-host/e2e-probe.env"]).stdout.split()
    assert listing == ["600", "prefect", "prefect"]
    assert local_host.guest_exec(["cat", "/etc/prefect-host/e2e-probe.env"]).stdout == secret
    local_host.guest_exec(["rm", "/etc/prefect-host/e2e-probe.env"])


def test_a_flow_runs_through_the_written_profile(stack):
    """A real flow run from this machine, configured by nothing but the profile."""
    code = (
        "from prefect import flow\n"
        "@flow\n"
        "def hello(name: str) -> str:\n"
        "    return f'hello {name}'\n"
        "state = hello('e2e', return_state=True)\n"
        "print(state.state_details.flow_run_id)\n"
    )
    done = stack.run([sys.executable, "-c", code], cwd=stack.laptop_home, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    flow_run_id = done.stdout.strip().splitlines()[-1]
    flow_run = httpx.get(f"{stack.api_url}/flow_runs/{flow_run_id}", auth=stack.auth).json()
    assert flow_run["state_type"] == "COMPLETED" and flow_run["parameters"] == {"name": "e2e"}


def test_rerun_changes_nothing_and_restarts_nothing(stack, local_host, record_property):
    before = host_snapshot(stack)
    run = stack.measured_bootstrap(
        record_property, "rerun_seconds", "re-run on a converged host", "--activate", digits=2
    )
    assert run.changed == []
    after = host_snapshot(stack)
    assert after["files"] == before["files"] and after["pid"] == before["pid"]


def test_rotated_auth_string_restarts_the_server_once(stack, local_host):
    pid = stack.main_pid(SERVER)
    stack.outputs["prefectAuthString"] = ROTATED_AUTH
    stack.write_outputs()
    run = stack.bootstrap()
    assert run.returncode == 0, run.stdout + run.stderr
    assert [name.split()[0] for name in run.changed][:2] == ["write", "restart"]
    assert stack.main_pid(SERVER) != pid
    old_user, old_password = AUTH.split(":", 1)
    assert httpx.get(f"{stack.api_url}/admin/version", auth=(old_user, old_password)).status_code == 401
    assert httpx.get(f"{stack.api_url}/admin/version", auth=tuple(ROTATED_AUTH.split(":", 1))).json() == "3.9.1"
    again = stack.bootstrap()
    assert again.returncode == 0 and again.changed == []


def test_wrong_host_key_is_refused_and_nothing_changes(stack, local_host):
    before = host_snapshot(stack)
    other = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    run = stack.bootstrap("--host-key", other)
    assert run.returncode == 1
    assert "Host key mismatch" in run.stderr
    assert fingerprint(other) in run.stderr and fingerprint(local_host.host_public_key) in run.stderr
    assert host_snapshot(stack) == before  # not even an authenticated session


def test_user_without_sudo_is_refused_and_nothing_changes(stack, local_host):
    public = local_host.identity_file.with_suffix(".pub").read_text()
    local_host.guest_exec(
        [
            "sh",
            "-c",
            "id nosudo >/dev/null 2>&1 || useradd -m -s /bin/sh nosudo; "
            "install -d -o nosudo -m 700 /home/nosudo/.ssh; "
            "cat > /home/nosudo/.ssh/authorized_keys; "
            "chown nosudo /home/nosudo/.ssh/authorized_keys",
        ],
        input=public,
    )
    before = host_snapshot(stack)
    run = stack.bootstrap("--user", "nosudo", "--identity", str(local_host.identity_file))
    assert run.returncode == 1
    assert "nosudo@" in run.stderr and "sudo -n" in run.stderr and "passwordless sudo" in run.stderr
    after = host_snapshot(stack)
    assert after["files"] == before["files"] and after["pid"] == before["pid"]


def wait_for_new_healthy_server(stack: Stack, old_pid: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.main_pid(SERVER)
        if pid not in (0, old_pid) and health(stack.api_url):
            return pid
        time.sleep(0.5)
    pytest.fail(f"the server did not come back within {timeout:.0f} s")


def test_systemctl_kill_brings_the_server_back(stack, local_host):
    pid = stack.main_pid(SERVER)
    local_host.guest_exec(["systemctl", "kill", SERVER])  # SIGTERM, the default
    wait_for_new_healthy_server(stack, pid)
    log = local_host.guest_exec(["journalctl", "-u", SERVER, "-n", "50", "-o", "cat"]).stdout
    assert f"Sent signal SIGTERM to main process {pid}" in log


def test_reboot_brings_the_server_back(stack, local_host):
    pid = stack.main_pid(SERVER)
    local_host.reboot()
    wait_for_new_healthy_server(stack, pid)
    run = stack.bootstrap()
    assert run.returncode == 0 and run.changed == [], run.stdout


def test_no_secret_in_any_output_nor_in_the_hosts_journal(stack, local_host):
    assert stack.runs, "the runs above recorded their output"
    for printed in stack.runs:
        assert not stack.secrets_in(printed)
    # sudo logs every command line it runs: the secrets travelled on stdin only.
    journal = local_host.guest_exec(["journalctl", "-q", "--no-pager", "-o", "cat"]).stdout
    assert "COMMAND=" in journal  # the journal does record sudo's command lines
    for secret in (AUTH.split(":", 1)[1], ROTATED_AUTH.split(":", 1)[1], "put-file-secret-5f1e"):
        assert secret not in journal
