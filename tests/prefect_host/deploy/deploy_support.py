"""What the deploy tests share: scripts/deploy.py run as a subprocess in a copy of examples/flows with the
laptop's profile only, and reading back what it wrote (the deployment, its code block, the uploaded objects)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fixtures_server import REPO
from prefect_host.storage import prefect_api

FLOW = "train-duration-model"
ENTRYPOINT = "duration_model.py:train_duration_model"
STEP_LINE = re.compile(r"^[a-z ]+: +\S.* \(\d+\.\d s\)$")


def run_deploy(laptop, project: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy.py"), ENTRYPOINT, *args],
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
    return {
        o["Key"].removeprefix(f"flows/{name}/"): (o["ETag"], o["LastModified"]) for o in listing.get("Contents", [])
    }


def snapshot(outputs, s3_server, name: str):
    """Everything a deploy may write, with the timestamps that show a write."""
    deployment = read_deployment(outputs, name)
    block = read_block(outputs, f"laptop-test-flows-{name}")
    return {
        "deployment": (
            deployment.id,
            deployment.version,
            deployment.updated,
            deployment.parameters,
            [(s.id, s.updated) for s in deployment.schedules],
        ),
        "code block": (block.id, block.updated),
        "objects": code_objects(s3_server, outputs, name),
    }
