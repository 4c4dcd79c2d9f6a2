"""scripts/deploy.py end to end: a real Prefect server, moto with IAM auth, a process worker.

The command runs as a subprocess in a copy of examples/flows with the laptop's profile only.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_server import REPO, UPLOADED, copy_example
from prefect_host.storage import prefect_api

FLOW = "train-duration-model"
ENTRYPOINT = "duration_model.py:train_duration_model"
STEP_LINE = re.compile(r"^[a-z ]+: +\S.* \(\d+\.\d s\)$")


def run_deploy(laptop, project: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "deploy.py"), ENTRYPOINT, *args],
                          cwd=project, env=laptop.env, capture_output=True, text=True, timeout=timeout)


def assert_ok(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(STEP_LINE.match(line) for line in lines), result.stdout
    return lines


def assert_refused(result: subprocess.CompletedProcess) -> str:
    """Exit 1 with one paragraph on stderr and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("deploy failed: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def assert_no_secrets(outputs, *texts: str) -> None:
    secrets = {"AWS secret": outputs.aws_secret_access_key, "auth password": outputs.prefect_auth_string.split(":")[1]}
    assert [name for name, value in secrets.items() if any(value in text for text in texts)] == []


def read_deployment(outputs, name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"{FLOW}/{name}")
        except ObjectNotFound:
            return None


def read_block(outputs, name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        try:
            return client.read_block_document_by_name(name, "s3-bucket")
        except ObjectNotFound:
            return None


def code_objects(s3_server, outputs, name: str) -> dict[str, tuple[str, object]]:
    listing = s3_server.client("s3").list_objects_v2(Bucket=outputs.bucket_name, Prefix=f"flows/{name}/")
    return {o["Key"].removeprefix(f"flows/{name}/"): (o["ETag"], o["LastModified"])
            for o in listing.get("Contents", [])}


def snapshot(outputs, s3_server, name: str):
    """Everything a deploy may write, with the timestamps that show a write."""
    deployment = read_deployment(outputs, name)
    block = read_block(outputs, f"laptop-test-flows-{name}")
    return {
        "deployment": (deployment.id, deployment.version, deployment.updated, deployment.parameters,
                       [(s.id, s.updated) for s in deployment.schedules]),
        "code block": (block.id, block.updated),
        "objects": code_objects(s3_server, outputs, name),
    }


@pytest.fixture(scope="module")
def deployed(work_pool, laptop, stack_outputs, tmp_path_factory):
    """The example deployed once with defaults (what the README tells a user to do)."""
    project = copy_example(tmp_path_factory.mktemp("deployed") / "flows")
    result = run_deploy(laptop, project)
    return project, result


def test_deploy_uploads_the_project_and_schedules_it_every_300_s(deployed, stack_outputs, s3_server):
    project, result = deployed
    lines = assert_ok(result)
    assert [line.split(":")[0] for line in lines] == ["profile", "flow", "storage", "upload", "code block",
                                                      "deployment"]
    assert "created" in lines[-1]
    assert_no_secrets(stack_outputs, result.stdout, result.stderr)

    deployment = read_deployment(stack_outputs, FLOW)
    assert deployment.work_pool_name == "default" and deployment.entrypoint == ENTRYPOINT
    [schedule] = deployment.schedules
    assert schedule.active and schedule.schedule.interval.total_seconds() == 300
    assert deployment.pull_steps == [{"prefect.deployments.steps.pull_with_block": {
        "block_type_slug": "s3-bucket", "block_document_name": f"laptop-test-flows-{FLOW}"}}]
    assert read_block(stack_outputs, f"laptop-test-flows-{FLOW}").data["bucket_folder"] == f"flows/{FLOW}"

    objects = code_objects(s3_server, stack_outputs, FLOW)
    assert sorted(objects) == sorted(UPLOADED)  # no .venv, __pycache__, .env, .git, nor .prefectignore'd
    for name, (etag, _) in objects.items():
        assert etag.strip('"') == hashlib.md5((project / name).read_bytes()).hexdigest()


def test_redeploy_with_nothing_changed_changes_nothing(deployed, laptop, stack_outputs, s3_server):
    project, _ = deployed
    before = snapshot(stack_outputs, s3_server, FLOW)
    lines = assert_ok(run_deploy(laptop, project))
    assert "0 uploaded, 2 unchanged, 0 removed" in lines[3]
    assert lines[4].endswith(f"laptop-test-flows-{FLOW} unchanged ({lines[4].rsplit('(', 1)[1]}")
    assert f"{FLOW}/{FLOW} unchanged" in lines[5]
    assert snapshot(stack_outputs, s3_server, FLOW) == before


@pytest.mark.parametrize("param, named", [
    ("rows=5", "--param rows: flow 'train-duration-model' has no such parameter"),
    ("n_rows=many", "n_rows: Input should be a valid integer"),
    ("run_date=2024-02-30", "run_date: Input should be a valid date"),
])
def test_a_bad_parameter_is_refused_and_nothing_is_created(param, named, laptop, project, stack_outputs, s3_server):
    name = "refused-" + param.split("=")[0].replace("_", "-")
    message = assert_refused(run_deploy(laptop, project, "--name", name, "--param", param))
    assert named in message and "run_date: date | None = None, n_rows: int = 500" in message
    assert "Nothing was uploaded or deployed" in message
    assert read_deployment(stack_outputs, name) is None
    assert read_block(stack_outputs, f"laptop-test-flows-{name}") is None
    assert code_objects(s3_server, stack_outputs, name) == {}


def test_an_unknown_pool_is_refused_before_the_upload(work_pool, laptop, project, stack_outputs, s3_server):
    message = assert_refused(run_deploy(laptop, project, "--name", "no-pool", "--pool", "nosuch"))
    assert "--pool 'nosuch': no such work pool" in message and "existing: default" in message
    assert code_objects(s3_server, stack_outputs, "no-pool") == {}
    assert read_deployment(stack_outputs, "no-pool") is None


def test_cron_and_typed_parameters_are_deployed(work_pool, laptop, project, stack_outputs):
    lines = assert_ok(run_deploy(laptop, project, "--name", "cron-check", "--cron", "0 6 * * *",
                                 "--param", "n_rows=42", "--param", "run_date=2024-05-01"))
    assert "cron '0 6 * * *'" in lines[-1]
    deployment = read_deployment(stack_outputs, "cron-check")
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 6 * * *"
    assert deployment.parameters == {"n_rows": 42, "run_date": "2024-05-01"}


def test_changed_code_updates_the_same_deployment(work_pool, laptop, project, stack_outputs, s3_server):
    name = "changing"
    assert_ok(run_deploy(laptop, project, "--name", name))
    first = read_deployment(stack_outputs, name)

    with open(project / "trips.py", "a") as source:
        source.write("\n# a changed line\n")
    (project / "extra.py").write_text("VALUE = 1\n")
    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert "2 uploaded, 1 unchanged, 0 removed" in lines[3] and f"{FLOW}/{name} updated" in lines[5]
    second = read_deployment(stack_outputs, name)
    assert second.id == first.id and second.version != first.version

    (project / "extra.py").unlink()
    lines = assert_ok(run_deploy(laptop, project, "--name", name))
    assert "0 uploaded, 2 unchanged, 1 removed" in lines[3]
    assert sorted(code_objects(s3_server, stack_outputs, name)) == sorted(UPLOADED)


def test_run_now_is_run_by_the_worker_and_its_result_lands_in_the_bucket(
        process_worker, deployed, laptop, stack_outputs, s3_server):
    from prefect.serializers import PickleSerializer

    project, _ = deployed
    result = run_deploy(laptop, project, "--run-now", "--timeout", "180")
    lines = assert_ok(result)
    assert lines[-1].startswith("run:"), (result.stdout, process_worker.read_text()[-3000:])
    match = re.search(rf"Completed after (\d+\.\d) s; result at s3://{stack_outputs.bucket_name}/(results/\w+) ",
                      lines[-1])
    assert match, lines[-1]
    body = s3_server.client("s3").get_object(Bucket=stack_outputs.bucket_name, Key=match.group(2))["Body"].read()
    summary = PickleSerializer().loads(body)
    assert summary["n_rows"] == 500 and summary["rmse_min"] > 0
    assert_no_secrets(stack_outputs, result.stdout, result.stderr)
