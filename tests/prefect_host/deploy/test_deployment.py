"""prefect_host.deploy.deployment through scripts/deploy.py: the deployment created once, left alone when
nothing changed, its schedule and parameters as given, and --run-now's run on a process worker."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from deploy_support import (
    ENTRYPOINT,
    FLOW,
    MANIFEST,
    PULL_STEP,
    assert_no_secrets,
    assert_ok,
    code_location,
    code_objects,
    read_deployment,
    run_deploy,
    snapshot,
)

from fixtures_server import UPLOADED, copy_example


@pytest.fixture(scope="module")
def deployed(work_pool, laptop, stack_outputs, tmp_path_factory):
    """The example deployed once with defaults (what the README tells a user to do)."""
    project = copy_example(tmp_path_factory.mktemp("deployed") / "flows")
    result = run_deploy(laptop, project)
    return project, result


def test_deploy_uploads_the_project_and_schedules_it_every_300_s(deployed, stack_outputs, s3_server):
    project, result = deployed
    lines = assert_ok(result)
    assert [line.split(":")[0] for line in lines] == [
        "profile",
        "flow",
        "storage",
        "upload",
        "code block",
        "deployment",
    ]
    assert "created" in lines[-1]
    assert_no_secrets(stack_outputs, result.stdout, result.stderr)

    deployment = read_deployment(stack_outputs, FLOW)
    assert deployment.work_pool_name == "default" and deployment.entrypoint == ENTRYPOINT
    [schedule] = deployment.schedules
    assert schedule.active and schedule.schedule.interval.total_seconds() == 300
    # One folder and one block per flow and deployment name: slugs for people, a hash of both names.
    block_name, folder = code_location(stack_outputs, FLOW)
    key = re.fullmatch(rf"laptop-test-flows-({FLOW}-{FLOW}-[0-9a-f]{{10}})", block_name).group(1)
    assert folder == f"flows/{key}/"  # the slash: the pull lists by prefix
    assert deployment.pull_steps == [{PULL_STEP: {"block_type_slug": "s3-bucket", "block_document_name": block_name}}]
    assert f"s3://{stack_outputs.bucket_name}/{folder}: 2 uploaded" in lines[3]

    objects = code_objects(s3_server, stack_outputs, folder)
    assert sorted(objects) == sorted([*UPLOADED, MANIFEST])  # no .venv, __pycache__, .env, .git, nor .prefectignore'd
    for name in UPLOADED:
        assert objects[name][0].strip('"') == hashlib.md5((project / name).read_bytes()).hexdigest()
    manifest = s3_server.client("s3").get_object(Bucket=stack_outputs.bucket_name, Key=f"{folder}{MANIFEST}")
    assert json.loads(manifest["Body"].read()) == {
        "format": 1,
        "flow": FLOW,
        "deployment": FLOW,
        "files": sorted(UPLOADED),
    }


def test_redeploy_with_nothing_changed_changes_nothing(deployed, laptop, stack_outputs, s3_server):
    project, _ = deployed
    before = snapshot(stack_outputs, s3_server, FLOW)
    lines = assert_ok(run_deploy(laptop, project))
    assert "0 uploaded, 2 unchanged, 0 removed" in lines[3]
    block_name, _ = code_location(stack_outputs, FLOW)
    assert lines[4].endswith(f"s3-bucket/{block_name} unchanged ({lines[4].rsplit('(', 1)[1]}")
    assert f"{FLOW}/{FLOW} unchanged" in lines[5]
    assert snapshot(stack_outputs, s3_server, FLOW) == before


def test_cron_and_typed_parameters_are_deployed(work_pool, laptop, project, stack_outputs):
    lines = assert_ok(
        run_deploy(
            laptop,
            project,
            "--name",
            "cron-check",
            "--cron",
            "0 6 * * *",
            "--param",
            "n_rows=42",
            "--param",
            "run_date=2024-05-01",
        )
    )
    assert "cron '0 6 * * *'" in lines[-1]
    deployment = read_deployment(stack_outputs, "cron-check")
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 6 * * *"
    assert deployment.parameters == {"n_rows": 42, "run_date": "2024-05-01"}


def test_run_now_is_run_by_the_worker_and_its_result_lands_in_the_bucket(
    process_worker, deployed, laptop, stack_outputs, s3_server
):
    from prefect.serializers import PickleSerializer

    project, _ = deployed
    result = run_deploy(laptop, project, "--run-now", "--timeout", "180")
    lines = assert_ok(result)
    assert lines[-1].startswith("run:"), (result.stdout, process_worker.read_text()[-3000:])
    match = re.search(
        rf"Completed after (\d+\.\d) s; result at s3://{stack_outputs.bucket_name}/(results/\w+) ", lines[-1]
    )
    assert match, lines[-1]
    body = s3_server.client("s3").get_object(Bucket=stack_outputs.bucket_name, Key=match.group(2))["Body"].read()
    summary = PickleSerializer().loads(body)
    assert summary["n_rows"] == 500 and summary["rmse_min"] > 0
    assert_no_secrets(stack_outputs, result.stdout, result.stderr)
