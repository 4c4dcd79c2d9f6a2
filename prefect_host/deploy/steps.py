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
from prefect_host.deploy.files import Selection, select_files
from prefect_host.deploy.location import code_prefix
from prefect_host.deploy.parameters import check_parameters
from prefect_host.deploy.request import DEPLOYMENT_NAME, DeployError, DeployRequest
from prefect_host.deploy.server import check_pool, check_profile, load_results_block
from prefect_host.deploy.upload import SyncPlan, apply_sync, plan_sync, tree_version


@contextlib.contextmanager
def step(label: str) -> Iterator[list[str]]:
    """Prints `label: detail (duration)` when the block ends without an error."""
    started = time.monotonic()
    detail: list[str] = []
    yield detail
    print(f"{label + ':':<12} {' '.join(detail)} ({time.monotonic() - started:.1f} s)", flush=True)


def deploy(request: DeployRequest, *, expected_profile: str | None = None) -> str | None:
    """Runs the steps; returns the deployment id (None after --dry-run, which writes nothing)."""
    with step("profile") as detail:
        settings, profile_name = check_profile(expected_profile)
        detail.append(f"{profile_name!r}: {settings.api.url}")
    with step("flow") as detail:
        flow = load_flow(request)
        name = request.name or flow.name
        if not DEPLOYMENT_NAME.fullmatch(name):
            raise DeployError(
                f"the flow's name {flow.name!r} is not a usable deployment name "
                "(letters, digits, '.', '_', '-'); pass --name."
            )
        check_parameters(flow, request.parameters)
        schedule = schedule_of(request)
        detail.append(f"{flow.name!r} from {request.entrypoint}; parameters ok")
    with step("storage") as detail:
        results_block, s3, selection, plan, version = check_storage(settings, request, flow.name, name, detail)
    if request.dry_run:
        print_dry_run(selection, plan, f"{flow.name}/{name}")
        return None
    with step("upload") as detail:
        apply_sync(s3, plan)
        detail.append(
            f"{plan.where()}: {len(plan.changed)} uploaded, {len(plan.unchanged)} unchanged, {len(plan.stale)} removed"
        )
    with step("code block") as detail:
        code_block, saved = ensure_code_block(results_block, flow.name, name, plan.prefix)
        detail.append(f"s3-bucket/{code_block._block_document_name} {'saved' if saved else 'unchanged'}")
    with step("deployment") as detail:
        deployment_id, action, previous = apply_deployment(flow, code_block, request, name, version, schedule)
        moved = f"; its code was in {previous} before, left as is: delete it once no deployment uses it"
        detail.append(
            f"{flow.name}/{name} {action} (id {deployment_id}, {describe_schedule(schedule)}, pool {request.pool!r})"
            + (moved if previous else "")
        )
    if request.run_now:
        with step("run") as detail:
            detail.append(run_and_wait(deployment_id, request.timeout))
    return deployment_id


def check_storage(settings, request: DeployRequest, flow_name: str, name: str, detail: list[str]):
    """The bucket, the pool, the files and what the sync would do: all read, nothing written."""
    results_slug, results_block = load_results_block(settings)
    bucket = results_block.bucket_name
    check_pool(request.pool)
    selection = select_files(request.project_dir, request.includes)
    for warning in selection.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if request.entrypoint.split(":")[0] not in selection.files:
        raise DeployError(
            f"entrypoint {request.entrypoint!r}: the file is left out of the upload (built-in or secret-looking "
            "excludes, .prefectignore, or a symlink), so the worker would not get it; --dry-run says why."
        )
    version = tree_version(selection.files)
    s3 = results_block.credentials.get_s3_client()
    plan = plan_sync(s3, bucket, code_prefix(flow_name, name), (flow_name, name), selection.files)
    secrets = f"; {selection.secret_count} secret-looking left out" if selection.secret_count else ""
    detail.append(
        f"bucket {bucket!r} from {results_slug}; pool {request.pool!r}; {len(selection.files)} file(s), "
        f"version {version}{secrets}"
    )
    return results_block, s3, selection, plan, version


def print_dry_run(selection: Selection, plan: SyncPlan, deployment: str) -> None:
    """--dry-run's report: every file with what would happen to it, and what is left out and why."""
    print(
        f"dry run: {plan.where()} would get {len(plan.changed)} upload(s) ({len(plan.unchanged)} unchanged) and "
        f"{len(plan.stale)} removal(s), then the code block and deployment {deployment}; nothing was written.",
        flush=True,
    )
    changed = set(plan.changed)
    for relative in selection.files:
        print(f"  upload   {relative}{'' if relative in changed else ' (unchanged)'}")
    for relative in plan.stale:
        print(f"  remove   {relative} (uploaded by the last deploy, no longer in the project)")
    for relative, why in selection.left_out:
        print(f"  exclude  {relative}: {why}")
    sys.stdout.flush()


def load_flow(request: DeployRequest):
    from prefect.flows import load_flow_from_entrypoint

    sys.dont_write_bytecode = True  # keep __pycache__ out of the user's project
    try:
        return load_flow_from_entrypoint(str(request.project_dir / request.entrypoint))
    except Exception as exc:  # noqa: BLE001  the flow file's own error (any), said as the entrypoint's
        raise DeployError(
            f"entrypoint {request.entrypoint!r}: cannot load the flow ({type(exc).__name__}: {exc})."
        ) from None
