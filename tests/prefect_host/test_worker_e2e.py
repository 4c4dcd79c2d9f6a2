"""Issue 5 end to end on a real booted Debian 13 host of this module's own, nothing mocked: the
bootstrap with S3 result storage (moto with IAM auth, on the host side of the guest's veth) and a
worker service, then scripts/deploy.py from this process, the run on the host's worker, its result
in the bucket.

In this order: fresh bootstrap (probe, blocks, worker) -> hardened worker unit -> deploy on a 300 s
schedule and `--run-now`, run by the worker on the host, result object in the bucket -> a bad
parameter creates nothing -> a wrong secret key fails the probe and changes nothing -> the worker
comes back after `systemctl kill` and after a reboot -> re-running bootstrap and deploy changes
nothing -> --workers scales up and down -> a teammate's --client-only profile keeps results in S3
-> no secret in any output or in the host's journal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap.py"
DEPLOY = REPO / "scripts" / "deploy.py"
PROFILE = "prefect-host-worker-e2e"
SLUG = PROFILE  # the block names: the profile name is already a valid block slug
RESULTS_BLOCK = f"s3-bucket/{SLUG}-results"
AUTH = "admin:Worker-E2e-'q' $x\\y-51d2"
BUCKET = "prefect-host-worker-e2e"
FLOW = "train-duration-model"
ENTRYPOINT = "duration_model.py:train_duration_model"
WRONG_SECRET = "Wrong/Secret+Key-never-printed-0042"


@dataclass
class Stack:
    host: object
    s3: object
    outputs: dict
    outputs_path: Path
    laptop_home: Path
    project: Path
    find_links: str
    secrets: list[str]
    runs: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.outputs["apiUrl"]

    @property
    def auth(self) -> tuple[str, str]:
        user, password = self.outputs["prefectAuthString"].split(":", 1)
        return user, password


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def changed_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.lstrip().startswith("[changed]")]

    def step(self, name: str) -> str:
        """The tag of the step called `name` (ok, changed, failed)."""
        for line in self.stdout.splitlines():
            match = re.match(r"\s+\[(\w+)\]\s+(.*?)\s+\d+\.\d s$", line)
            if match and match.group(2) == name:
                return match.group(1)
        raise AssertionError(f"no step {name!r} in:\n{self.stdout}")


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory) -> Stack:
    work = tmp_path_factory.mktemp("worker-e2e")
    creds = module_s3_server.provision(BUCKET, user="prefect-host-worker-e2e")
    address = module_host.address
    private_key = module_host.identity_file.read_text()
    outputs = {
        "cloud": "local", "publicIp": address, "sshUser": module_host.ssh_user,
        "hostPublicKey": module_host.host_public_key, "sshPrivateKey": private_key,
        "apiUrl": f"http://{address}:4200/api", "uiUrl": f"http://{address}:4200",
        "prefectVersion": "3.9.1", "prefectAuthString": AUTH, "bucketName": BUCKET,
        "bucketRegion": creds.region, "iamGroupName": "S3-FullAccess", "iamUserName": "prefect-host-worker-e2e",
        "awsAccessKeyId": creds.access_key_id, "awsSecretAccessKey": creds.secret_access_key,
        # Nothing listens there: every bootstrap below passes --s3-endpoint-url, which must win.
        "s3EndpointUrl": "http://127.0.0.1:9",
    }
    outputs_path = work / "outputs.json"
    outputs_path.write_text(json.dumps(outputs))
    outputs_path.chmod(0o600)
    project = Path(shutil.copytree(REPO / "examples" / "flows", work / "flows"))
    secrets = [AUTH.split(":", 1)[1], creds.secret_access_key, WRONG_SECRET,
               *[line for line in private_key.splitlines()[1:-1] if len(line) > 20]]
    return Stack(host=module_host, s3=module_s3_server, outputs=outputs, outputs_path=outputs_path,
                 laptop_home=work / "laptop-prefect", project=project, find_links=module_package_index.url,
                 secrets=secrets)


def laptop_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env["PREFECT_HOME"] = str(home)
    return env


def _finish(stack: Stack, command: list[str], *, env: dict[str, str], cwd: Path | None = None,
            timeout: float = 900) -> Run:
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    run = Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    printed = run.stdout + run.stderr
    stack.runs.append(printed)
    assert "Traceback" not in printed, printed
    assert not [s for s in stack.secrets if s in printed], "a secret in the output"
    return run


def bootstrap(stack: Stack, *args: str, outputs: dict | None = None, home: Path | None = None) -> Run:
    path = stack.outputs_path
    if outputs is not None:
        path = stack.outputs_path.with_name("other-outputs.json")
        path.write_text(json.dumps(outputs))
        path.chmod(0o600)
    command = [sys.executable, str(BOOTSTRAP), "--outputs", str(path), "--find-links", stack.find_links,
               "--s3-endpoint-url", stack.s3.endpoint_url, *args]
    if "--profile" not in args:
        command += ["--profile", PROFILE]
    return _finish(stack, command, env=laptop_env(home or stack.laptop_home))


def deploy(stack: Stack, *args: str) -> Run:
    return _finish(stack, [sys.executable, str(DEPLOY), ENTRYPOINT, *args], env=laptop_env(stack.laptop_home),
                   cwd=stack.project, timeout=400)


def api(stack: Stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", auth=stack.auth, timeout=30, **kwargs)


def block(stack: Stack, block_type: str, name: str) -> dict | None:
    response = api(stack, "GET", f"/block_types/slug/{block_type}/block_documents/name/{name}")
    return response.json() if response.status_code == 200 else None


def deployment(stack: Stack, name: str) -> dict | None:
    response = api(stack, "GET", f"/deployments/name/{FLOW}/{name}")
    return response.json() if response.status_code == 200 else None


def guest(stack: Stack, script: str, check: bool = True) -> str:
    return stack.host.guest_exec(["sh", "-c", script], check=check).stdout


def unit_pid(stack: Stack, unit: str) -> int:
    return int(guest(stack, f"systemctl show -p MainPID --value {unit}"))


def workers_in_pool(stack: Stack) -> dict[str, dict]:
    return {w["name"]: w for w in api(stack, "POST", "/work_pools/default/workers/filter", json={}).json()}


def bucket_keys(stack: Stack, prefix: str) -> list[str]:
    listing = stack.s3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def host_snapshot(stack: Stack) -> dict:
    """What a converged or refused run must leave as it was."""
    files = ["/etc/prefect-host/server.env", "/etc/prefect-host/worker.env", "/etc/prefect-host/worker.applied",
             "/etc/systemd/system/prefect-worker@.service", "/etc/systemd/system/prefect-server.service"]
    return {"files": guest(stack, "stat -c '%n %Y %a %U' " + " ".join(files) + " && sha256sum " + " ".join(files)),
            "server": unit_pid(stack, "prefect-server.service"),
            "worker": unit_pid(stack, "prefect-worker@1.service"),
            "blocks": [(b["id"], b["updated"]) for b in (block(stack, "aws-credentials", SLUG),
                                                         block(stack, "s3-bucket", f"{SLUG}-results"))]}


def run_line(run: Run) -> re.Match:
    """deploy --run-now's last line: `run: flow run 'NAME' Completed after S s; result at s3://...`."""
    match = re.search(rf"^run: +flow run '([\w-]+)' Completed after (\d+\.\d) s; "
                      rf"result at s3://{BUCKET}/(results/\w+) ", run.stdout, re.MULTILINE)
    assert match, run.stdout + run.stderr
    return match


def assert_ran_on_the_host(stack: Stack, flow_run_name: str) -> None:
    """The worker on the host submitted it (its journal names the run), and it completed."""
    [flow_run] = api(stack, "POST", "/flow_runs/filter",
                     json={"flow_runs": {"name": {"any_": [flow_run_name]}}}).json()
    assert flow_run["state_type"] == "COMPLETED"
    hostname = guest(stack, "uname -n").strip()
    journal = guest(stack, "journalctl -u 'prefect-worker@*' --no-pager -o cat")
    assert f"Worker '{hostname}-1' submitting flow run '{flow_run['id']}'" in journal


def result_summary(stack: Stack, key: str) -> dict:
    from prefect.serializers import PickleSerializer

    body = stack.s3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return PickleSerializer().loads(body)


# --- the tests, in order ------------------------------------------------------------------------

def test_fresh_bootstrap_probes_the_bucket_registers_the_blocks_and_starts_a_worker(stack, record_property):
    run = bootstrap(stack, "--activate")
    assert run.returncode == 0, run.stdout + run.stderr
    record_property("fresh_bootstrap_with_storage_and_worker_seconds", round(run.seconds, 1))
    print(f"\nfresh bootstrap with storage and a worker: {run.seconds:.1f} s\n{run.stdout}")
    lines = run.stdout.splitlines()
    probe = next(i for i, line in enumerate(lines) if f"S3 bucket {BUCKET}: put, get, delete" in line)
    assert "[ok]" in lines[probe]
    assert probe < lines.index(run.changed_lines[0])  # proven before the first change
    steps = [line.split("]", 1)[1].rsplit(None, 2)[0].strip() for line in run.changed_lines]
    assert "install prefect 3.9.1 and prefect-aws 0.7.12" in steps
    assert steps[steps.index("process work pool 'default'"):] == [
        "process work pool 'default'", "write /etc/prefect-host/worker.env", "install prefect-worker@.service",
        "enable prefect-worker@1", "start prefect-worker@1", f"storage block {RESULTS_BLOCK}",
        f"profile {PROFILE}: write it, reach the server through it"]
    hostname = guest(stack, "uname -n").strip()
    assert run.step(f"worker {hostname}-1 polling pool 'default'") == "ok"
    assert f"results: s3://{BUCKET}/results/ (block {RESULTS_BLOCK})" in run.stdout
    assert "workers: 1 on the VM, polling work pool 'default'" in run.stdout

    # The blocks, with the flag's endpoint (not the outputs'); the secret stays a secret in Prefect.
    credentials = block(stack, "aws-credentials", SLUG)
    assert credentials["data"]["aws_access_key_id"] == stack.outputs["awsAccessKeyId"]
    assert credentials["data"]["aws_secret_access_key"] == "********"
    assert credentials["data"]["aws_client_parameters"]["endpoint_url"] == stack.s3.endpoint_url
    results = block(stack, "s3-bucket", f"{SLUG}-results")
    assert (results["data"]["bucket_name"], results["data"]["bucket_folder"]) == (BUCKET, "results")
    assert results["block_document_references"]["credentials"]["block_document"]["name"] == SLUG
    assert bucket_keys(stack, ".prefect-host-probe/") == []  # the probe cleaned up after itself

    profiles = stack.laptop_home / "profiles.toml"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    settings = tomllib.loads(profiles.read_text())["profiles"][PROFILE]
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULTS_BLOCK
    assert settings["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"


def test_the_worker_is_a_hardened_service_with_results_in_s3(stack, record_property):
    unit = "prefect-worker@1.service"
    assert guest(stack, f"systemctl is-enabled {unit}; systemctl is-active {unit}").split() == ["enabled", "active"]
    assert guest(stack, f"ps -o user= -p {unit_pid(stack, unit)}").strip() == "prefect"
    assert guest(stack, "stat -c '%a %U %G' /etc/prefect-host/worker.env").split() == ["600", "root", "root"]
    env = guest(stack, "cat /etc/prefect-host/worker.env")
    assert "PREFECT_API_URL='http://127.0.0.1:4200/api'" in env
    assert "PREFECT_WORKER_QUERY_SECONDS='5'" in env
    assert f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK='{RESULTS_BLOCK}'" in env
    assert "PREFECT_RESULTS_PERSIST_BY_DEFAULT='true'" in env
    analysis = guest(stack, f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", analysis).group(1))
    record_property("worker_unit_exposure", score)
    print(f"\nsystemd-analyze security {unit}: {score}")
    assert score <= 2.0
    hostname = guest(stack, "uname -n").strip()
    assert workers_in_pool(stack)[f"{hostname}-1"]["status"] == "ONLINE"


def test_deploy_schedules_every_300_s_and_the_run_now_completes_on_the_host(stack, record_property):
    run = deploy(stack, "--run-now", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{FLOW}/{FLOW} created" in run.stdout and "every 300 s" in run.stdout
    [schedule] = deployment(stack, FLOW)["schedules"]
    assert schedule["active"] and schedule["schedule"]["interval"] == 300.0
    match = run_line(run)
    record_property("deploy_run_now_to_completed_seconds", float(match.group(2)))
    print(f"\n--run-now to Completed with PREFECT_WORKER_QUERY_SECONDS=5: {match.group(2)} s")
    assert_ran_on_the_host(stack, match.group(1))
    summary = result_summary(stack, match.group(3))
    assert summary["n_rows"] == 500 and summary["rmse_min"] > 0


def test_a_bad_parameter_is_refused_and_nothing_is_created(stack):
    run = deploy(stack, "--name", "refused", "--param", "n_rows=many")
    assert run.returncode == 1
    assert run.stderr.startswith("deploy failed: ") and "n_rows: Input should be a valid integer" in run.stderr
    assert deployment(stack, "refused") is None
    assert block(stack, "s3-bucket", f"{SLUG}-flows-refused") is None
    assert bucket_keys(stack, "flows/refused/") == []


def test_a_wrong_secret_key_fails_the_probe_and_nothing_changes(stack):
    before = host_snapshot(stack)
    run = bootstrap(stack, outputs=dict(stack.outputs, awsSecretAccessKey=WRONG_SECRET))
    assert run.returncode == 1
    print(f"\nwrong secret key refused after {run.seconds:.1f} s:\n{run.stderr}")
    [error] = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert f"S3 probe: PutObject on bucket '{BUCKET}' at {stack.s3.endpoint_url} was refused with " \
           "SignatureDoesNotMatch" in error and "awsSecretAccessKey" in error
    assert run.step(f"S3 bucket {BUCKET}: put, get, delete") == "failed"
    assert run.changed_lines == []
    assert host_snapshot(stack) == before  # nothing on the host, no block saved


def _wait_for_new_worker(stack: Stack, old_pid: int, timeout: float = 120) -> int:
    """A new worker process that has checked in with the server since it started."""
    hostname = guest(stack, "uname -n").strip()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = unit_pid(stack, "prefect-worker@1.service")
        if pid not in (0, old_pid):
            started = float(guest(stack, "systemctl show --timestamp=unix -p ActiveEnterTimestamp --value "
                                         "prefect-worker@1.service").strip().lstrip("@") or "inf")
            try:
                record = workers_in_pool(stack).get(f"{hostname}-1") or {}
            except httpx.HTTPError:  # the server is still starting
                record = {}
            heartbeat = record.get("last_heartbeat_time")
            if heartbeat and datetime.fromisoformat(heartbeat).timestamp() >= started:
                return pid
        time.sleep(1)
    pytest.fail(f"the worker did not come back within {timeout:.0f} s")


def test_systemctl_kill_brings_the_worker_back(stack):
    pid = unit_pid(stack, "prefect-worker@1.service")
    guest(stack, "systemctl kill prefect-worker@1.service")  # SIGTERM, the default
    _wait_for_new_worker(stack, pid)
    log = guest(stack, "journalctl -u prefect-worker@1.service -n 80 -o cat --no-pager")
    assert f"Sent signal SIGTERM to main process {pid}" in log


def test_a_reboot_brings_the_worker_back_and_it_runs_flows(stack, record_property):
    pid = unit_pid(stack, "prefect-worker@1.service")
    stack.host.reboot()
    _wait_for_new_worker(stack, pid)
    run = deploy(stack, "--run-now", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{FLOW}/{FLOW} unchanged" in run.stdout
    match = run_line(run)
    record_property("deploy_run_now_after_reboot_seconds", float(match.group(2)))
    assert_ran_on_the_host(stack, match.group(1))
    assert result_summary(stack, match.group(3))["n_rows"] == 500


def test_rerunning_bootstrap_and_deploy_changes_nothing(stack, record_property):
    before = host_snapshot(stack)
    existing = deployment(stack, FLOW)
    code = bucket_keys(stack, f"flows/{FLOW}/")
    run = bootstrap(stack, "--activate")
    assert run.returncode == 0, run.stdout + run.stderr
    record_property("rerun_with_storage_seconds", round(run.seconds, 2))
    print(f"\nre-run on a converged host, storage and worker included: {run.seconds:.2f} s\n{run.stdout}")
    assert run.changed_lines == []
    assert host_snapshot(stack) == before

    again = deploy(stack)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 uploaded, 2 unchanged, 0 removed" in again.stdout
    assert f"s3-bucket/{SLUG}-flows-{FLOW} unchanged" in again.stdout and f"{FLOW}/{FLOW} unchanged" in again.stdout
    after = deployment(stack, FLOW)
    assert (after["id"], after["updated"], after["version"]) == (existing["id"], existing["updated"],
                                                                 existing["version"])
    assert [s["id"] for s in after["schedules"]] == [s["id"] for s in existing["schedules"]]
    assert bucket_keys(stack, f"flows/{FLOW}/") == code


def test_workers_scale_up_and_down(stack):
    hostname = guest(stack, "uname -n").strip()
    up = bootstrap(stack, "--workers", "3")
    assert up.returncode == 0, up.stdout + up.stderr
    assert [line.split("]", 1)[1].rsplit(None, 2)[0].strip() for line in up.changed_lines] == [
        "enable prefect-worker@{2,3}", "start prefect-worker@{2,3}"]
    assert up.step(f"workers {hostname}-1 ... {hostname}-3 polling pool 'default'") == "ok"
    assert {f"{hostname}-{i}" for i in (1, 2, 3)} <= set(workers_in_pool(stack))

    down = bootstrap(stack, "--workers", "1")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [line.split("]", 1)[1].rsplit(None, 2)[0].strip() for line in down.changed_lines] == [
        "stop and disable prefect-worker@{2,3}"]
    for i in (2, 3):
        unit = f"prefect-worker@{i}.service"
        assert guest(stack, f"systemctl is-enabled {unit}; systemctl is-active {unit}", check=False).split() == \
            ["disabled", "inactive"]
    assert {f"{hostname}-{i}" for i in (2, 3)}.isdisjoint(workers_in_pool(stack))  # gone, not "offline"
    assert bootstrap(stack).changed_lines == []


def test_a_teammates_client_only_profile_keeps_results_in_s3(stack, tmp_path):
    home = tmp_path / "teammate"
    run = bootstrap(stack, "--client-only", "--profile", "teammate", "--activate", home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    # The teammate's profile has another name: the operator's block is found through the bucket.
    settings = tomllib.loads((home / "profiles.toml").read_text())["profiles"]["teammate"]
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULTS_BLOCK
    assert block(stack, "s3-bucket", "teammate-results") is None  # client-only registers nothing

    before = set(bucket_keys(stack, "results/"))
    code = ("from prefect import flow\n"
            "@flow(persist_result=True)\n"
            "def on_the_laptop(x: int) -> int:\n"
            "    return x * 2\n"
            "print(on_the_laptop(21))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=laptop_env(home),
                          cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "42"
    new = set(bucket_keys(stack, "results/")) - before
    assert len(new) == 1 and result_summary(stack, new.pop()) == 42


def test_no_secret_in_any_output_nor_in_the_hosts_journal(stack):
    assert len(stack.runs) >= 10
    for printed in stack.runs:
        assert not [s for s in stack.secrets if s in printed]
    journal = guest(stack, "journalctl -q --no-pager -o cat")
    assert "COMMAND=" in journal  # sudo's command lines are there; the secrets travelled on stdin
    assert not [s for s in stack.secrets if s in journal]
