"""The deployment: its schedule, the code block its pull step names, creating or updating it only
when something differs, and --run-now's one run."""

from __future__ import annotations

import time
from datetime import timedelta

from prefect_host.deploy.location import code_block_name
from prefect_host.deploy.request import DeployError, DeployRequest
from prefect_host.deploy.server import quiet
from prefect_host.storage import ensure_block

PULL_STEP = "prefect.deployments.steps.pull_with_block"


def schedule_of(request: DeployRequest):
    """The request's --cron or --interval as a Prefect schedule; refuses a bad cron expression."""
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if request.cron:
        try:
            return CronSchedule(cron=request.cron)
        except ValueError:
            raise DeployError(
                f"--cron {request.cron!r}: not a valid cron expression (five fields, e.g. '*/5 * * * *')."
            ) from None
    return IntervalSchedule(interval=timedelta(seconds=request.interval))


def describe_schedule(schedule) -> str:
    cron = getattr(schedule, "cron", None)
    return f"cron {cron!r}" if cron else f"every {int(schedule.interval.total_seconds())} s"


def ensure_code_block(results_block, flow_name: str, name: str, code_prefix: str):
    """The S3Bucket block the deployment's pull step names: same bucket and credentials as results, its
    folder with a trailing slash (the pull lists by prefix: flows/a/ never reaches flows/a-b/)."""
    from prefect_aws import S3Bucket

    block_name = code_block_name(results_block.credentials._block_document_name, flow_name, name)
    block = S3Bucket(
        bucket_name=results_block.bucket_name, bucket_folder=f"{code_prefix}/", credentials=results_block.credentials
    )
    with quiet():
        return ensure_block(block, block_name)


def apply_deployment(flow, code_block, request: DeployRequest, name: str, version: str, schedule):
    """Creates or updates deployment flow/name. Returns its id, "created", "updated" or "unchanged", and
    where its code was before when that was another block (a deployment of the old layout), else None."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(f"{flow.name}/{name}")
        except ObjectNotFound:
            existing = None
        wanted_pull_steps = [
            {PULL_STEP: {"block_type_slug": "s3-bucket", "block_document_name": code_block._block_document_name}}
        ]
        if existing is not None and _is_current(existing, request, version, wanted_pull_steps, schedule):
            return str(existing.id), "unchanged", None
        previous = _previous_code(client, existing, code_block._block_document_name)
    from prefect import Flow

    try:
        with quiet():
            remote_flow = Flow.from_source(code_block, request.entrypoint)
            deployment_id = remote_flow.deploy(
                name=name,
                work_pool_name=request.pool,
                work_queue_name=request.queue,
                parameters=request.parameters,
                version=version,
                schedule=schedule,
                build=False,
                push=False,
                print_next_steps=False,
                ignore_warnings=True,
            )
    except Exception as exc:  # noqa: BLE001  whatever Prefect raises, said as this step's error
        raise DeployError(f"deployment {flow.name}/{name}: {type(exc).__name__}: {exc}") from None
    return str(deployment_id), "updated" if existing is not None else "created", previous


def _previous_code(client, existing, block_name: str) -> str | None:
    """The block (and its folder) the deployment's pull step named, when not block_name: left as is, since
    under the old layout (flows/<deployment name>/) other flows' deployments of that name may use it."""
    from prefect.exceptions import ObjectNotFound

    steps = (existing.pull_steps or []) if existing is not None else []
    names = [step[PULL_STEP].get("block_document_name") for step in steps if PULL_STEP in step]
    if not names or names[0] == block_name:
        return None
    try:
        data = client.read_block_document_by_name(names[0], "s3-bucket").data
    except ObjectNotFound:
        return f"s3-bucket/{names[0]} (no longer saved)"
    folder = (data.get("bucket_folder") or "").strip("/")
    return f"s3-bucket/{names[0]} (s3://{data.get('bucket_name')}/{folder + '/' if folder else ''})"


def _is_current(existing, request: DeployRequest, version: str, pull_steps: list, schedule) -> bool:
    """The deployment on the server is the one asked for: re-applying it would only recreate its
    schedule and scheduled runs."""
    return (
        existing.version == version
        and existing.entrypoint == request.entrypoint
        and existing.work_pool_name == request.pool
        and existing.work_queue_name == (request.queue or "default")
        and existing.pull_steps == pull_steps
        and existing.parameters == request.parameters
        and existing.enforce_parameter_schema
        and len(existing.schedules) == 1
        and existing.schedules[0].active
        and _same_schedule(existing.schedules[0].schedule, schedule)
    )


def _same_schedule(existing, wanted) -> bool:
    """Equal when it fires the same way (an interval's anchor is set at deploy time, so ignored)."""
    if type(existing) is not type(wanted):
        return False
    if hasattr(wanted, "cron"):
        return (existing.cron, existing.timezone, existing.day_or) == (wanted.cron, wanted.timezone, wanted.day_or)
    return (existing.interval, existing.timezone) == (wanted.interval, wanted.timezone)


def run_and_wait(deployment_id: str, timeout: float) -> str:
    """--run-now: one flow run of the deployment, waited for; the run line's detail when it completed."""
    from prefect.client.orchestration import get_client

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        while not (run.state and run.state.is_final()):
            if time.monotonic() - started > timeout:
                state = run.state.name if run.state else "unknown"
                raise DeployError(
                    f"--run-now: flow run {run.name!r} ({run.id}) is still {state} after {timeout:.0f} s "
                    "(--timeout); the deployment stays as deployed. Is a worker polling its pool? On the "
                    "host: `systemctl status 'prefect-worker@*'`."
                )
            time.sleep(1.0)
            run = client.read_flow_run(run.id)
        elapsed = time.monotonic() - started
        if not run.state.is_completed():
            message = " ".join((run.state.message or "").split())
            raise DeployError(
                f"--run-now: flow run {run.name!r} ({run.id}) ended {run.state.name} after "
                f"{elapsed:.1f} s: {message[:400]}"
            )
        return f"flow run {run.name!r} Completed after {elapsed:.1f} s; {_result_location(client, run.state.data)}"


def _result_location(client, metadata) -> str:
    """Where the persisted result is: the Completed state carries its storage block and key."""
    storage_key = getattr(metadata, "storage_key", None)
    block_id = getattr(metadata, "storage_block_id", None)
    if not storage_key:
        return "its result was not persisted"
    if block_id is None:
        return (
            f"result on the worker's disk ({storage_key}): the worker's environment lacks "
            "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"
        )
    document = client.read_block_document(block_id)
    if document.block_type and document.block_type.slug == "s3-bucket":
        folder = (document.data.get("bucket_folder") or "").strip("/")
        key = f"{folder}/{storage_key}" if folder else storage_key
        return f"result at s3://{document.data['bucket_name']}/{key}"
    return f"result in block {document.name!r} under key {storage_key}"
