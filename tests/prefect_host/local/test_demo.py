"""`make demo` / `make demo-down` (prefect_host.local.demo, scripts/demo.py).

Unit tests for the pure parts and the state bookkeeping (the services process: test_demo_services.py);
and one end-to-end run: demo up on a real local host, up again (converges), down (the host is gone),
down again (nothing to do).
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from prefect_host.errors import OutputsError
from prefect_host.local import demo
from prefect_host.local.machine import process_start_time
from prefect_host.outputs import StackOutputs
from tests.prefect_host.local import released

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "demo.py"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
STORAGE = {
    "bucket": "prefect-host-demo",
    "region": "us-east-1",
    "iam_group": "S3-FullAccess",
    "iam_user": "prefect-host-demo",
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "s3cr3t/Key",
    "s3_endpoint_url": "http://10.77.3.1:40123",
}


def outputs(**changes) -> dict:
    arguments = {
        "address": "10.77.3.2",
        "ssh_user": "admin",
        "host_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
        "ssh_private_key": KEY,
        "auth_string": "admin:a-long-enough-secret",
        "storage": STORAGE,
    }
    return demo.local_outputs(**(arguments | changes))


# --- pure parts ---------------------------------------------------------------------------------


def test_outputs_have_the_stack_output_shape_of_a_local_cloud():
    data = outputs()
    parsed = StackOutputs.from_mapping(data)
    assert (parsed.cloud, parsed.public_ip, parsed.ssh_user) == ("local", "10.77.3.2", "admin")
    assert (data["apiUrl"], data["uiUrl"], data["tlsMode"]) == (
        "https://10.77.3.2/api",
        "https://10.77.3.2",
        "internal",
    )
    assert data["prefectVersion"] == "3.9.1" and data["sshPrivateKey"] == KEY
    assert (data["bucketName"], data["awsSecretAccessKey"], data["s3EndpointUrl"]) == (
        "prefect-host-demo",
        "s3cr3t/Key",
        "http://10.77.3.1:40123",
    )


def test_outputs_without_storage_carry_placeholders_and_no_endpoint():
    data = outputs(storage=None)
    assert data["bucketName"] == "no-storage" and "s3EndpointUrl" not in data
    StackOutputs.from_mapping(data)


def test_outputs_are_checked_with_the_bootstraps_contract():
    with pytest.raises(OutputsError, match="prefectAuthString"):
        outputs(auth_string="no-colon-here")


def test_auth_strings_are_random_and_reused_on_a_rerun(tmp_path: Path):
    first, second = demo.new_auth_string(), demo.new_auth_string()
    assert first != second and first.startswith("admin:") and len(first) > 36
    path = tmp_path / "outputs.json"
    assert demo.previous_auth_string(path) is None
    path.write_text(json.dumps({"prefectAuthString": first}))
    assert demo.previous_auth_string(path) == first
    for unusable in (
        "not json",
        "[]",
        json.dumps({"prefectAuthString": "admin:short"}),
        json.dumps({"prefectAuthString": "root:" + "x" * 40}),
    ):
        path.write_text(unusable)
        assert demo.previous_auth_string(path) is None


def test_the_demos_own_runs_take_settings_from_its_profile_only():
    environ = {
        "PREFECT_API_URL": "http://elsewhere/api",
        "PREFECT_API_AUTH_STRING": "u:p",
        "PREFECT_API_KEY": "k",
        "PREFECT_PROFILE": "mine",
        "PREFECT_HOME": "/somewhere",
        "PATH": "/bin",
    }
    assert demo.profile_env(environ, "prefect-host-demo") == {
        "PREFECT_PROFILE": "prefect-host-demo",
        "PREFECT_HOME": "/somewhere",
        "PATH": "/bin",
    }


def test_read_json_explains_an_unusable_state_file(tmp_path: Path):
    assert demo.read_json(tmp_path / "absent.json", "x") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(demo.DemoError, match=r"bad\.json \(the state\) is unreadable.*make demo-down"):
        demo.read_json(tmp_path / "bad.json", "the state")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(demo.DemoError, match="does not hold a JSON object"):
        demo.read_json(tmp_path / "list.json", "the state")


def test_finds_the_deployed_runs_result_in_deploys_output():
    output = (
        "deployment:  x/y created\nrun:         flow run 'a' Completed after 5.1 s; "
        "result at s3://prefect-host-demo/results/0cdd7010 (5.1 s)\n"
    )
    assert demo.deployed_result_key(output, "prefect-host-demo") == "results/0cdd7010"
    assert demo.deployed_result_key(output, "other-bucket") is None
    assert demo.deployed_result_key("run: its result was not persisted", "prefect-host-demo") is None


def test_summary_says_where_everything_is(tmp_path: Path):
    lines = demo.summary_lines(
        ui_url="http://10.77.3.2:4200",
        api_url="http://10.77.3.2:4200/api",
        state_dir=tmp_path,
        profile="prefect-host-demo",
        profiles_path="/root/.prefect/profiles.toml",
        prefect_cli=".venv/bin/prefect",
        flow_run_url="http://10.77.3.2:4200/runs/flow-run/abc",
        results={"the deployed flow": ("results/0cdd", 150)},
        bucket="prefect-host-demo",
        s3_endpoint_url="http://10.77.3.1:40123",
        ssh_command="ssh admin@10.77.3.2",
        seconds=42.0,
    )
    text = "\n".join(lines)
    for expected in (
        "http://10.77.3.2:4200 ",
        "PREFECT_PROFILE=prefect-host-demo .venv/bin/prefect flow-run ls",
        ".venv/bin/prefect profile use prefect-host-demo",
        "not activated",
        "/root/.prefect/profiles.toml",
        "s3://prefect-host-demo/results/0cdd  (150 bytes",
        str(tmp_path / "outputs.json"),
        "ssh -D",
        "make demo-down",
        "every 5 minutes",
    ):
        assert expected in text


# --- process bookkeeping ------------------------------------------------------------------------


def test_a_second_demo_is_told_another_one_is_running(tmp_path: Path):
    paths = demo.DemoPaths(tmp_path)
    with (
        demo.one_demo_at_a_time(paths),
        pytest.raises(demo.DemoError, match="Another `make demo` or `make demo-down` is running"),
        demo.one_demo_at_a_time(paths),
    ):
        pass
    with demo.one_demo_at_a_time(paths):  # released
        pass


def test_down_with_nothing_started_is_a_no_op(tmp_path: Path):
    said = []
    demo.down(demo.DemoPaths(tmp_path / ".demo"), say=said.append)
    assert said == [f"demo: nothing to stop (no demo state in {tmp_path / '.demo'})."]
    assert not (tmp_path / ".demo").exists()


def test_a_state_file_of_another_version_is_refused_clearly(tmp_path: Path):
    paths = demo.DemoPaths(tmp_path)
    paths.state.write_text(json.dumps({"version": 99, "pid": 1}))
    with pytest.raises(demo.DemoError, match=r"another version of the demo \(version 99, expected 1\).*demo-down"):
        demo.read_state(paths)


def test_down_clears_state_left_by_processes_that_are_gone(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    paths = demo.DemoPaths(tmp_path / ".demo")
    paths.root.mkdir()
    # PIDs above Linux's largest pid_max (2**22): certainly no process.
    paths.state.write_text(json.dumps({"version": 1, "pid": 2**22 + 1, "start": 1, "s3_pid": None, "s3_start": None}))
    for path in (paths.services, paths.outputs, paths.services_log):
        path.write_text("{}")
    said = []
    demo.down(paths, say=said.append)
    assert said == [
        "demo: no profile prefect-host-demo to remove",
        f"demo: down; nothing of it is left running, and its state files in {paths.root} are gone.",
    ]
    assert not [p for p in paths.state_files() if p.exists()]


# --- end to end ---------------------------------------------------------------------------------


def _run(action: str, state_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), action, "--state-dir", str(state_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.e2e
def test_demo_up_converges_and_down_removes_everything(tmp_path: Path):
    state_dir = tmp_path / ".demo"
    prefect_home = tmp_path / "prefect-home"  # the demo writes the user's real home; the test's own here
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(prefect_home)
    paths = demo.DemoPaths(state_dir)
    try:
        first = _run("up", state_dir, env)
        printed = first.stdout + first.stderr
        assert first.returncode == 0, printed[-6000:]
        assert "Traceback" not in printed

        data = json.loads(paths.outputs.read_text())
        assert stat.S_IMODE(paths.outputs.stat().st_mode) == 0o600
        secrets = [
            data["prefectAuthString"].split(":", 1)[1],
            data["awsSecretAccessKey"],
            *[line for line in data["sshPrivateKey"].splitlines()[1:-1] if len(line) > 20],
        ]
        assert not [s for s in secrets if s in printed]
        assert StackOutputs.from_file(paths.outputs).cloud == "local"

        api, auth = data["apiUrl"], tuple(data["prefectAuthString"].split(":", 1))
        assert data["tlsMode"] == "internal" and api.startswith("https://")
        profiles = tomllib.loads((prefect_home / "profiles.toml").read_text())
        assert profiles["profiles"][demo.DEMO_PROFILE]["PREFECT_API_URL"] == api
        # HTTPS, verified against exactly the CA the bootstrap pinned beside the profile.
        ca = profiles["profiles"][demo.DEMO_PROFILE]["PREFECT_API_SSL_CERT_FILE"]
        client = httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=5)
        assert client.get(f"{api}/health").json() is True
        assert client.get(f"{api}/admin/version", auth=auth).json() == "3.9.1"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{api}/health", timeout=5)  # the system trust store does not know the demo's CA
        assert f"Prefect UI    {data['uiUrl']}" in first.stdout
        assert profiles.get("active") != demo.DEMO_PROFILE  # never activated behind the user's back

        report = json.loads(paths.flow_report.read_text())
        run = client.get(f"{api}/flow_runs/{report['flow_run_id']}", auth=auth).json()
        assert run["state_type"] == "COMPLETED"
        deployments = client.post(f"{api}/deployments/filter", json={}, auth=auth).json()
        [schedule] = [s for d in deployments for s in d["schedules"]]
        assert schedule["schedule"]["interval"] == demo.SCHEDULE_SECONDS
        assert first.stdout.count("(moto: kept in memory)") == 1
        assert "the deployed flow, run by the worker on the host" in first.stdout

        state = json.loads(paths.state.read_text())
        host = demo.load_host(paths)
        assert host.is_running and process_start_time(state["pid"]) == state["start"]
        server_pid = host.guest_exec(["systemctl", "show", "-p", "MainPID", "--value", "prefect-server"]).stdout

        again = _run("up", state_dir, env)
        assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
        assert f"reusing the demo host {host.name}" in again.stdout and "reusing the package index" in again.stdout
        assert "[changed]" not in again.stdout
        assert json.loads(paths.outputs.read_text())["prefectAuthString"] == data["prefectAuthString"]
        assert host.guest_exec(["systemctl", "show", "-p", "MainPID", "--value", "prefect-server"]).stdout == server_pid

        tag = released.mark(host)
        gone = _run("down", state_dir, env)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert f"removed the demo host {host.name}" in gone.stdout
        assert not host.is_running and released.leftovers(host, tag) == []
        assert process_start_time(state["pid"]) is None and process_start_time(state["s3_pid"]) is None
        assert not [p for p in paths.state_files() if p.exists()]
        assert demo.DEMO_PROFILE not in tomllib.loads((prefect_home / "profiles.toml").read_text()).get("profiles", {})

        twice = _run("down", state_dir, env)
        assert twice.returncode == 0 and "nothing to stop" in twice.stdout
    finally:
        if paths.host_state.exists() or paths.state.exists():
            _run("down", state_dir, env)
