"""The deploy itself: its steps in order, each printed as one line when it has succeeded."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from prefect_host.deploy.deployment import (
    apply_deployment,
    describe_schedule,
    ensure_code_block,
    run_and_wait,
    schedule_of,
)
from prefect_host.deploy.parameters import check_parameters
from prefect_host.deploy.request import DEPLOYMENT_NAME, DeployError, DeployRequest
from prefect_host.deploy.server import check_pool, check_profile, load_results_block
from prefect_host.deploy.upload import project_files, sync_directory, tree_version
from prefect_host.storage import FLOWS_FOLDER


@contextlib.contextmanager
def step(label: str) -> Iterator[list[str]]:
    """Prints `label: detail (duration)` when the block ends without an error."""
    started = time.monotonic()
    detail: list[str] = []
    yield detail
    print(f"{label + ':':<12} {' '.join(detail)} ({time.monotonic() - started:.1f} s)", flush=True)


def deploy(request: DeployRequest, *, expected_profile: str | None = None) -> str:
    """Runs the steps; returns the deployment id."""
    with step("profile") as detail:
        settings, profile_name = check_profile(expected_profile)
        detail.append(f"{profile_name!r}: {settings.api.url}")
    with step("flow") as detail:
        flow = load_flow(request)
        name = request.name or flow.name
        if not DEPLOYMENT_NAME.match(name):
            raise DeployError(
                f"the flow's name {flow.name!r} is not a usable deployment name "
                "(letters, digits, '.', '_', '-'); pass --name."
            )
        check_parameters(flow, request.parameters)
        schedule = schedule_of(request)
        detail.append(f"{flow.name!r} from {request.entrypoint}; parameters ok")
    with step("storage") as detail:
        results_slug, results_block = load_results_block(settings)
        bucket = results_block.bucket_name
        check_pool(request.pool)
        code_prefix = f"{FLOWS_FOLDER}/{name}"
        files = project_files(request.project_dir)
        if request.entrypoint.split(":")[0] not in files:
            raise DeployError(
                f"entrypoint {request.entrypoint!r}: the file is excluded by the default "
                f"excludes or .prefectignore, so the worker would not get it."
            )
        version = tree_version(request.project_dir, files)
        detail.append(
            f"bucket {bucket!r} from {results_slug}; pool {request.pool!r}; {len(files)} file(s), version {version}"
        )
    with step("upload") as detail:
        counts = sync_directory(
            results_block.credentials.get_s3_client(), bucket, code_prefix, request.project_dir, files
        )
        detail.append(
            f"s3://{bucket}/{code_prefix}/: {counts['uploaded']} uploaded, "
            f"{counts['unchanged']} unchanged, {counts['removed']} removed"
        )
    with step("code block") as detail:
        code_block, saved = ensure_code_block(results_block, name, code_prefix)
        detail.append(f"s3-bucket/{code_block._block_document_name} {'saved' if saved else 'unchanged'}")
    with step("deployment") as detail:
        deployment_id, action = apply_deployment(flow, code_block, request, name, version, schedule)
        detail.append(
            f"{flow.name}/{name} {action} (id {deployment_id}, {describe_schedule(schedule)}, pool {request.pool!r})"
        )
    if request.run_now:
        with step("run") as detail:
            detail.append(run_and_wait(deployment_id, request.timeout))
    return deployment_id


def load_flow(request: DeployRequest):
    from prefect.flows import load_flow_from_entrypoint

    sys.dont_write_bytecode = True  # keep __pycache__ out of the user's project
    try:
        return load_flow_from_entrypoint(str(request.project_dir / request.entrypoint))
    except Exception as exc:  # noqa: BLE001  the flow file's own error (any), said as the entrypoint's
        raise DeployError(
            f"entrypoint {request.entrypoint!r}: cannot load the flow ({type(exc).__name__}: {exc})."
        ) from None
