"""Deploy a flow from the laptop: upload its project to the stack's bucket, create or update the
deployment on the server's work pool, optionally run it once and wait.

How it finds the bucket (nothing but the Prefect profile is needed):
  profile PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK = "s3-bucket/<slug>-results"   (set by the bootstrap)
    -> that S3Bucket block: bucket_name, and its AwsCredentials block "<slug>" (key, region, endpoint)
    -> code goes to s3://<bucket>/flows/<deployment>/ through an S3Bucket block
       "<slug>-flows-<deployment>" (bucket_folder flows/<deployment>), which the deployment's pull step
       names, so a worker downloads the code with the same credentials.

Order: everything that can be checked is checked (profile, flow, parameters, schedule, pool, blocks)
before the first write; then upload, code block, deployment. Each write happens only when
something differs: files are compared by MD5 with the objects' ETags, blocks field by field, the
deployment by version (a hash of the uploaded files), entrypoint, pool, pull step, parameters and
schedule. A re-run with nothing changed writes nothing and the deployment keeps its id, version
and schedule (re-applying would recreate the schedule and its scheduled runs).

Prefect is imported inside the functions: `--profile` must be in PREFECT_PROFILE before Prefect's
first import, which reads it once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect_host.errors import PrefectHostError
from prefect_host.storage import FLOWS_FOLDER, ensure_block

DEFAULT_POOL = "default"
DEFAULT_INTERVAL_S = 300
DEFAULT_TIMEOUT_S = 300.0
# Always left out of the upload; a project's .prefectignore adds to these (gitignore syntax).
DEFAULT_EXCLUDES = (".git/", ".hg/", ".venv/", "venv/", "__pycache__/", "*.py[cod]", ".env",
                    ".prefectignore", ".mypy_cache/", ".pytest_cache/", ".ipynb_checkpoints/", ".DS_Store")
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PULL_STEP = "prefect.deployments.steps.pull_with_block"


class DeployError(PrefectHostError):
    """The flow could not be deployed; nothing after the failed step was changed."""


@dataclass(frozen=True)
class DeployRequest:
    entrypoint: str          # FILE.py:function, FILE relative to project_dir
    project_dir: Path
    name: str | None
    pool: str
    interval: int | None
    cron: str | None
    parameters: dict[str, Any]
    run_now: bool
    timeout: float


# --- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy.py",
        description="Upload a flow's project directory to the stack's bucket and create or update its "
                    "deployment (run it in the project directory).",
    )
    parser.add_argument("entrypoint", metavar="FILE.py:flow_function")
    parser.add_argument("--profile", help="Prefect profile to use (default: the active one)")
    parser.add_argument("--name", help="deployment name (default: the flow's name)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL!r})")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--interval", type=int, metavar="SECONDS",
                      help=f"run every SECONDS (default {DEFAULT_INTERVAL_S})")
    when.add_argument("--cron", help="run on this cron schedule instead, e.g. '0 6 * * *'")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a default parameter; VALUE is parsed as JSON when it parses, else taken "
                             "as a string (quote JSON strings: KEY='\"123\"'); repeatable")
    parser.add_argument("--run-now", action="store_true", help="trigger one run and wait for its final state")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long --run-now waits (default {DEFAULT_TIMEOUT_S:.0f})")
    return parser


def parse_request(argv: list[str], *, cwd: Path | None = None) -> tuple[DeployRequest, str | None]:
    """The request and the profile name; bad input raises DeployError naming the option."""
    args = build_parser().parse_args(argv)
    project_dir = (cwd or Path.cwd()).resolve()
    file_part, sep, function = args.entrypoint.rpartition(":")
    if not sep or not file_part.endswith(".py") or not function.isidentifier():
        raise DeployError(f"entrypoint {args.entrypoint!r}: expected FILE.py:flow_function, e.g. "
                          "duration_model.py:train_duration_model.")
    flow_file = (project_dir / file_part).resolve()
    if not flow_file.is_file():
        raise DeployError(f"entrypoint {args.entrypoint!r}: {flow_file} is not a file.")
    if not flow_file.is_relative_to(project_dir):
        raise DeployError(f"entrypoint {args.entrypoint!r}: {flow_file} is outside the current directory "
                          f"{project_dir}; run deploy.py in the flow's project directory.")
    if args.name is not None and not DEPLOYMENT_NAME.match(args.name):
        raise DeployError(f"--name {args.name!r}: use 1-63 letters, digits, '.', '_' or '-', starting "
                          "with a letter or digit (it is part of the S3 path and a block name).")
    if args.interval is not None and args.interval < 1:
        raise DeployError(f"--interval {args.interval}: must be a whole number of seconds >= 1.")
    if args.timeout <= 0:
        raise DeployError(f"--timeout {args.timeout:g}: must be > 0 seconds.")
    parameters: dict[str, Any] = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise DeployError(f"--param {item!r}: expected KEY=VALUE with KEY a parameter name.")
        if key in parameters:
            raise DeployError(f"--param {key}: given twice.")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    request = DeployRequest(
        entrypoint=f"{flow_file.relative_to(project_dir).as_posix()}:{function}",
        project_dir=project_dir, name=args.name, pool=args.pool,
        interval=None if args.cron else (args.interval or DEFAULT_INTERVAL_S), cron=args.cron,
        parameters=parameters, run_now=args.run_now, timeout=args.timeout,
    )
    return request, args.profile


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        request, profile = parse_request(argv)
        if profile:
            if "prefect" in sys.modules:
                raise DeployError("--profile must be applied before Prefect is imported; run deploy.py "
                                  "as a program (python scripts/deploy.py ...).")
            os.environ["PREFECT_PROFILE"] = profile
        # Prefect's console shows any library's warnings (its event queue draining at exit, a .env
        # it cannot parse): this command prints one line per step and failures as one paragraph.
        os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "ERROR")
        deploy(request, expected_profile=profile)
    except PrefectHostError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deploy interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # the command's boundary: one paragraph, never a traceback
        print(f"deploy failed: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


# --- the steps ------------------------------------------------------------------------------------

@contextlib.contextmanager
def step(label: str) -> Iterator[list[str]]:
    """Prints `label: detail (duration)` when the block ends without an error."""
    started = time.monotonic()
    detail: list[str] = []
    yield detail
    print(f"{label + ':':<12} {' '.join(detail)} ({time.monotonic() - started:.1f} s)", flush=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Prefect's deploy prints tables and hints; this command prints one line per step instead."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def deploy(request: DeployRequest, *, expected_profile: str | None = None) -> str:
    """Runs the steps; returns the deployment id."""
    with step("profile") as detail:
        settings, profile_name = _check_profile(expected_profile)
        detail.append(f"{profile_name!r}: {settings.api.url}")
    with step("flow") as detail:
        flow = _load_flow(request)
        name = request.name or flow.name
        if not DEPLOYMENT_NAME.match(name):
            raise DeployError(f"the flow's name {flow.name!r} is not a usable deployment name "
                              "(letters, digits, '.', '_', '-'); pass --name.")
        _check_parameters(flow, request.parameters)
        schedule = _schedule(request)
        detail.append(f"{flow.name!r} from {request.entrypoint}; parameters ok")
    with step("storage") as detail:
        results_slug, results_block = _results_block(settings)
        bucket = results_block.bucket_name
        _check_pool(request.pool)
        code_prefix = f"{FLOWS_FOLDER}/{name}"
        files = _project_files(request.project_dir)
        if request.entrypoint.split(":")[0] not in files:
            raise DeployError(f"entrypoint {request.entrypoint!r}: the file is excluded by the default "
                              f"excludes or .prefectignore, so the worker would not get it.")
        version = _tree_version(request.project_dir, files)
        detail.append(f"bucket {bucket!r} from {results_slug}; pool {request.pool!r}; "
                      f"{len(files)} file(s), version {version}")
    with step("upload") as detail:
        counts = _sync_directory(results_block.credentials.get_s3_client(), bucket, code_prefix,
                                 request.project_dir, files)
        detail.append(f"s3://{bucket}/{code_prefix}/: {counts['uploaded']} uploaded, "
                      f"{counts['unchanged']} unchanged, {counts['removed']} removed")
    with step("code block") as detail:
        code_block, saved = _code_block(results_block, name, code_prefix)
        detail.append(f"s3-bucket/{code_block._block_document_name} {'saved' if saved else 'unchanged'}")
    with step("deployment") as detail:
        deployment_id, action = _apply_deployment(flow, code_block, request, name, version, schedule)
        detail.append(f"{flow.name}/{name} {action} (id {deployment_id}, {_describe(schedule)}, "
                      f"pool {request.pool!r})")
    if request.run_now:
        with step("run") as detail:
            detail.append(_run_and_wait(deployment_id, request.timeout))
    return deployment_id


def _check_profile(expected: str | None):
    # Prefect's first import warns on an unknown PREFECT_PROFILE and falls back to another profile;
    # the check below turns that into this command's error instead.
    with contextlib.redirect_stderr(io.StringIO()):
        from prefect.context import get_settings_context

    context = get_settings_context()
    if expected and context.profile.name != expected:
        from prefect.settings import load_profiles

        raise DeployError(f"--profile {expected!r}: no such Prefect profile; known: "
                          f"{', '.join(sorted(load_profiles().names))}.")
    settings = context.settings
    if not settings.api.url:
        raise DeployError(f"profile {context.profile.name!r} has no PREFECT_API_URL: run the bootstrap "
                          "(it writes the profile) or pass --profile NAME.")
    return settings, context.profile.name


def _load_flow(request: DeployRequest):
    from prefect.flows import load_flow_from_entrypoint

    sys.dont_write_bytecode = True  # keep __pycache__ out of the user's project
    try:
        return load_flow_from_entrypoint(str(request.project_dir / request.entrypoint))
    except Exception as exc:
        raise DeployError(f"entrypoint {request.entrypoint!r}: cannot load the flow "
                          f"({type(exc).__name__}: {exc}).") from None


def _check_parameters(flow, parameters: dict[str, Any]) -> None:
    """Prefect's own validation (pydantic against the annotations), before anything is written."""
    import inspect

    from prefect.exceptions import ParameterTypeError

    signature = inspect.signature(flow.fn)
    known = ", ".join(f"{p.name}: {_annotation(p)}" for p in signature.parameters.values()) or "none"
    unknown = sorted(set(parameters) - set(signature.parameters))
    if unknown:
        raise DeployError(f"--param {', '.join(unknown)}: flow {flow.name!r} has no such parameter; "
                          f"its parameters are {known}. Nothing was uploaded or deployed.")
    flow_logger = logging.getLogger("prefect.flows")
    flow_logger.disabled = True  # Prefect logs the failure too; the error below says it once
    try:
        flow.validate_parameters(parameters)
    except ParameterTypeError as exc:
        problems = "; ".join(line.strip(" -") for line in str(exc).splitlines()[1:]) or str(exc)
        raise DeployError(f"--param: flow {flow.name!r} refuses these parameters: {problems} (given "
                          f"{json.dumps(parameters)}; its parameters are {known}). Nothing was uploaded "
                          "or deployed.") from None
    finally:
        flow_logger.disabled = False


def _annotation(parameter) -> str:
    import inspect

    if parameter.annotation is inspect.Parameter.empty:
        return "any"
    text = getattr(parameter.annotation, "__name__", None) or str(parameter.annotation)
    return text if parameter.default is inspect.Parameter.empty else f"{text} = {parameter.default!r}"


def _schedule(request: DeployRequest):
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if request.cron:
        try:
            return CronSchedule(cron=request.cron)
        except ValueError:
            raise DeployError(f"--cron {request.cron!r}: not a valid cron expression "
                              "(five fields, e.g. '*/5 * * * *').") from None
    return IntervalSchedule(interval=timedelta(seconds=request.interval))


def _describe(schedule) -> str:
    cron = getattr(schedule, "cron", None)
    return f"cron {cron!r}" if cron else f"every {int(schedule.interval.total_seconds())} s"


def _results_block(settings):
    from prefect_aws import S3Bucket

    slug = settings.results.default_storage_block
    if not slug:
        raise DeployError("the profile has no PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: the bootstrap sets it "
                          "to the results block (s3-bucket/<profile>-results) when the stack has a bucket.")
    block_type, _, block_name = slug.partition("/")
    if block_type != "s3-bucket" or not block_name:
        raise DeployError(f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r}: expected s3-bucket/NAME "
                          "(the results block the bootstrap registers).")
    try:
        with quiet():
            block = S3Bucket.load(block_name)
    except ValueError:
        raise DeployError(f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r}: no such block on "
                          f"{settings.api.url}; re-run the bootstrap to register it.") from None
    except Exception as exc:
        raise _api_error(settings.api.url, exc) from None
    if getattr(block.credentials, "_block_document_name", None) is None:
        raise DeployError(f"block {slug}: its credentials are not a saved AwsCredentials block; re-run the "
                          "bootstrap to register the storage blocks.")
    return slug, block


def _api_error(api_url: str, exc: Exception) -> DeployError:
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code == 401:
        return DeployError(f"Prefect API {api_url} refused the profile's PREFECT_API_AUTH_STRING (HTTP 401).")
    if isinstance(exc, httpx.HTTPError):
        return DeployError(f"Prefect API {api_url}: cannot reach it ({type(exc).__name__}: {exc}).")
    return DeployError(f"Prefect API {api_url}: {type(exc).__name__}: {exc}")


def _check_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            pools = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
            raise DeployError(f"--pool {pool!r}: no such work pool on the server; existing: {pools}.") from None


def _project_files(project_dir: Path) -> list[str]:
    """Files to upload (relative POSIX paths, sorted): all but the default excludes and .prefectignore."""
    from prefect.utilities.filesystem import filter_files

    patterns = list(DEFAULT_EXCLUDES)
    ignore_file = project_dir / ".prefectignore"
    if ignore_file.is_file():
        patterns += ignore_file.read_text().splitlines()
    return sorted(filter_files(str(project_dir), patterns, include_dirs=False, as_posix=True))


def _tree_version(project_dir: Path, files: list[str]) -> str:
    """A short hash of the uploaded tree (paths and contents): the deployment's version."""
    digest = hashlib.sha256()
    for relative in files:
        digest.update(relative.encode() + b"\0" + hashlib.sha256((project_dir / relative).read_bytes()).digest())
    return digest.hexdigest()[:12]


def _sync_directory(client, bucket: str, prefix: str, project_dir: Path, files: list[str]) -> dict[str, int]:
    """Makes s3://bucket/prefix/ hold exactly `files`: uploads new or changed ones (by MD5 against
    the ETag; an ETag that is not a plain MD5, e.g. multipart or SSE-KMS, counts as changed) and
    deletes objects no longer in the project."""
    from botocore.exceptions import BotoCoreError, ClientError

    counts = {"uploaded": 0, "unchanged": 0, "removed": 0}
    try:
        remote: dict[str, str] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            for obj in page.get("Contents", []):
                remote[obj["Key"]] = obj["ETag"].strip('"')
        for relative in files:
            key = f"{prefix}/{relative}"
            body = (project_dir / relative).read_bytes()
            if remote.pop(key, None) == hashlib.md5(body).hexdigest():
                counts["unchanged"] += 1
                continue
            client.put_object(Bucket=bucket, Key=key, Body=body)
            counts["uploaded"] += 1
        for key in sorted(remote):
            client.delete_object(Bucket=bucket, Key=key)
            counts["removed"] += 1
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(f"upload to s3://{bucket}/{prefix}/: {exc.operation_name} refused with "
                          f"{error.get('Code')}: {error.get('Message')}.") from None
    except BotoCoreError as exc:
        raise DeployError(f"upload to s3://{bucket}/{prefix}/: {exc}.") from None
    return counts


def _code_block(results_block, name: str, code_prefix: str):
    """The S3Bucket block the deployment's pull step names: same bucket and credentials as results."""
    from prefect_aws import S3Bucket

    credentials_name = results_block.credentials._block_document_name
    block_name = f"{credentials_name}-flows-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
    block = S3Bucket(bucket_name=results_block.bucket_name, bucket_folder=code_prefix,
                     credentials=results_block.credentials)
    with quiet():
        return ensure_block(block, block_name)


def _apply_deployment(flow, code_block, request: DeployRequest, name: str, version: str, schedule):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(f"{flow.name}/{name}")
        except ObjectNotFound:
            existing = None
    wanted_pull_steps = [{PULL_STEP: {"block_type_slug": "s3-bucket",
                                      "block_document_name": code_block._block_document_name}}]
    if existing is not None and (
        existing.version == version
        and existing.entrypoint == request.entrypoint
        and existing.work_pool_name == request.pool
        and existing.pull_steps == wanted_pull_steps
        and existing.parameters == request.parameters
        and existing.enforce_parameter_schema
        and len(existing.schedules) == 1 and existing.schedules[0].active
        and _same_schedule(existing.schedules[0].schedule, schedule)
    ):
        return str(existing.id), "unchanged"
    from prefect import Flow

    try:
        with quiet():
            remote_flow = Flow.from_source(code_block, request.entrypoint)
            deployment_id = remote_flow.deploy(
                name=name, work_pool_name=request.pool, parameters=request.parameters, version=version,
                schedule=schedule, build=False, push=False, print_next_steps=False, ignore_warnings=True,
            )
    except Exception as exc:
        raise DeployError(f"deployment {flow.name}/{name}: {type(exc).__name__}: {exc}") from None
    return str(deployment_id), "updated" if existing is not None else "created"


def _same_schedule(existing, wanted) -> bool:
    """Equal when it fires the same way (an interval's anchor is set at deploy time, so ignored)."""
    if type(existing) is not type(wanted):
        return False
    if hasattr(wanted, "cron"):
        return (existing.cron, existing.timezone, existing.day_or) == (wanted.cron, wanted.timezone, wanted.day_or)
    return (existing.interval, existing.timezone) == (wanted.interval, wanted.timezone)


def _run_and_wait(deployment_id: str, timeout: float) -> str:
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
                    "host: `systemctl status 'prefect-worker@*'`.")
            time.sleep(1.0)
            run = client.read_flow_run(run.id)
        elapsed = time.monotonic() - started
        if not run.state.is_completed():
            message = " ".join((run.state.message or "").split())
            raise DeployError(f"--run-now: flow run {run.name!r} ({run.id}) ended {run.state.name} after "
                              f"{elapsed:.1f} s: {message[:400]}")
        return f"flow run {run.name!r} Completed after {elapsed:.1f} s; {_result_location(client, run.state.data)}"


def _result_location(client, metadata) -> str:
    """Where the persisted result is: the Completed state carries its storage block and key."""
    storage_key = getattr(metadata, "storage_key", None)
    block_id = getattr(metadata, "storage_block_id", None)
    if not storage_key:
        return "its result was not persisted"
    if block_id is None:
        return (f"result on the worker's disk ({storage_key}): the worker's environment lacks "
                "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK")
    document = client.read_block_document(block_id)
    if document.block_type and document.block_type.slug == "s3-bucket":
        folder = (document.data.get("bucket_folder") or "").strip("/")
        key = f"{folder}/{storage_key}" if folder else storage_key
        return f"result at s3://{document.data['bucket_name']}/{key}"
    return f"result in block {document.name!r} under key {storage_key}"
