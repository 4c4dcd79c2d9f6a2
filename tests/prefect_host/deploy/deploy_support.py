"""What the deploy tests share: scripts/deploy.py run as a subprocess in a copy of examples/flows with the
laptop's profile only, and reading back what it wrote (the deployment, its code block, the uploaded objects,
and the code a worker's pull step gets)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from pathlib import Path

from fixtures_server import REPO
from prefect_host.storage import prefect_api

FLOW = "train-duration-model"
ENTRYPOINT = "duration_model.py:train_duration_model"
STEP_LINE = re.compile(r"^[a-z ]+: +\S.* \(\d+\.\d s\)$")
MANIFEST = ".prefect-host-manifest.json"
PULL_STEP = "prefect.deployments.steps.pull_with_block"


def run_deploy(
    laptop, project: Path, *args: str, entrypoint: str = ENTRYPOINT, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy.py"), entrypoint, *args],
        cwd=project,
        env=laptop.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def read_deployment(outputs, name: str, flow: str = FLOW):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"{flow}/{name}")
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


def code_location(outputs, name: str, flow: str = FLOW) -> tuple[str, str]:
    """The code block the deployment's pull step names, and that block's folder (as saved, with its slash)."""
    [pull_step] = read_deployment(outputs, name, flow).pull_steps
    block_name = pull_step[PULL_STEP]["block_document_name"]
    return block_name, read_block(outputs, block_name).data["bucket_folder"]


def code_objects(s3_server, outputs, folder: str) -> dict[str, tuple[str, object]]:
    """Path in the folder -> (ETag, LastModified) of every object under folder/ (manifest included)."""
    prefix = folder.rstrip("/") + "/"
    listing = s3_server.client("s3").list_objects_v2(Bucket=outputs.bucket_name, Prefix=prefix)
    return {o["Key"].removeprefix(prefix): (o["ETag"], o["LastModified"]) for o in listing.get("Contents", [])}


def bucket_state(s3_server, outputs) -> dict[str, tuple[str, object]]:
    """Every object of the bucket's flows/ with what shows a write."""
    return code_objects(s3_server, outputs, "flows")


def server_state(outputs) -> tuple[dict, dict]:
    """Every block and every deployment, with what shows a write."""
    from prefect.client.orchestration import get_client

    with prefect_api(outputs.api_url, outputs.prefect_auth_string), get_client(sync_client=True) as client:
        blocks = {(b.name, b.block_type_id): (b.id, b.data) for b in client.read_block_documents(include_secrets=False)}
        deployments = {d.id: (d.name, d.updated, d.version, d.pull_steps) for d in client.read_deployments()}
    return blocks, deployments


def pulled_code(outputs, workdir: Path, name: str, flow: str = FLOW) -> dict[str, bytes]:
    """Runs the deployment's pull step in workdir, as the worker does; path -> content of what it got.
    Asserts the pull wrote nothing outside the directory it reports."""
    from prefect.deployments.steps.pull import pull_with_block

    [pull_step] = read_deployment(outputs, name, flow).pull_steps
    workdir.mkdir(parents=True)
    with prefect_api(outputs.api_url, outputs.prefect_auth_string), contextlib.chdir(workdir):
        directory = workdir / asyncio.run(pull_with_block(**pull_step[PULL_STEP]))["directory"]
    assert list(workdir.iterdir()) == [directory]
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def project_code(project: Path, names) -> dict[str, bytes]:
    return {name: (project / name).read_bytes() for name in names}


def snapshot(outputs, s3_server, name: str):
    """Everything a deploy may write, with the timestamps that show a write."""
    deployment = read_deployment(outputs, name)
    block_name, folder = code_location(outputs, name)
    block = read_block(outputs, block_name)
    return {
        "deployment": (
            deployment.id,
            deployment.version,
            deployment.updated,
            deployment.parameters,
            [(s.id, s.updated) for s in deployment.schedules],
        ),
        "code block": (block.id, block.updated),
        "objects": code_objects(s3_server, outputs, folder),
    }
