"""`prefect-host deploy` (scripts/deploy.py): upload a flow's project directory to the stack's bucket and
create or update its deployment; see prefect_host/deploy/. Here: the options, their checks, and the
exit status.

Exit status: 0 = deployed (and, with --run-now, the run completed; with --dry-run, the checks passed);
1 = an error (one paragraph on stderr); 2 = invalid command line; 130 = interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import timedelta
from pathlib import Path

from prefect_host.bootstrap.worker_host_inputs import QUEUE_NAME
from prefect_host.cli._parser import ArgumentParser
from prefect_host.console import mention, shown
from prefect_host.deploy import DEPLOYMENT_NAME, DeployError, DeployRequest, deploy
from prefect_host.deploy.parameters import parse_params
from prefect_host.errors import PrefectHostError

DEFAULT_POOL = "default"
DEFAULT_INTERVAL_S = 300
DEFAULT_TIMEOUT_S = 300.0
# The longest interval a schedule can hold (Python's timedelta); beyond it the deployment would fail.
_MAX_INTERVAL_S = int(timedelta.max.total_seconds())


def build_parser(prog: str = "deploy.py") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="Upload a flow's project directory to the stack's bucket and create or update its "
        "deployment (run it in the project directory).",
    )
    parser.add_argument("entrypoint", metavar="FILE.py:flow_function")
    parser.add_argument("--profile", help="Prefect profile to use (default: the active one)")
    parser.add_argument("--name", help="deployment name (default: the flow's name)")
    parser.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL!r})")
    parser.add_argument(
        "--queue",
        help="work queue of the pool (default: the pool's 'default'); the workers the bootstrap started with "
        "--queue QUEUE (worker hosts) run the deployment's runs",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--interval", type=int, metavar="SECONDS", help=f"run every SECONDS (default {DEFAULT_INTERVAL_S})"
    )
    when.add_argument("--cron", help="run on this cron schedule instead, e.g. '0 6 * * *'")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a default parameter; VALUE is parsed as JSON when it parses, else taken "
        "as a string (quote JSON strings: KEY='\"123\"'); repeatable",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="upload the secret-looking files this gitignore-style pattern matches all the same (they are left "
        "out by default: outputs.json, *.pem, .env*, id_rsa*, ...; see README); repeatable",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run the checks, list the files that would be uploaded and those left out (and why); write nothing",
    )
    parser.add_argument("--run-now", action="store_true", help="trigger one run and wait for its final state")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long --run-now waits (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    return parser


def parse_request(
    argv: list[str], *, cwd: Path | None = None, prog: str = "deploy.py"
) -> tuple[DeployRequest, str | None]:
    """The request and the profile name; bad input raises DeployError naming the option, a command line
    argparse refuses exits with status 2 and a usage line naming `prog`."""
    args = build_parser(prog).parse_args(argv)
    project_dir = (cwd or Path.cwd()).resolve()
    flow_file, function = _flow_file(args.entrypoint, project_dir)
    # fullmatch: DEPLOYMENT_NAME ends in `$`, which a trailing newline would pass.
    if args.name is not None and not DEPLOYMENT_NAME.fullmatch(args.name):
        raise DeployError(
            f"--name {shown(args.name)}: use 1-63 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it is part of the S3 path and a block name)."
        )
    if args.queue is not None and not QUEUE_NAME.fullmatch(args.queue):
        raise DeployError(
            f"--queue {shown(args.queue)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    if args.interval is not None and not 1 <= args.interval <= _MAX_INTERVAL_S:
        raise DeployError(
            f"--interval {shown(args.interval, 40)}: must be a whole number of seconds >= 1 (and <= {_MAX_INTERVAL_S})."
        )
    for pattern in args.include:
        if not pattern.strip() or pattern.startswith(("!", "#")):
            raise DeployError(
                f"--include {shown(pattern, 60)}: expected a gitignore-style pattern naming files, e.g. '*.pem'."
            )
    if args.dry_run and args.run_now:
        raise DeployError("--dry-run and --run-now: a dry run deploys nothing to run; pass one of them.")
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # nan and inf would wait forever
        raise DeployError(f"--timeout {args.timeout:g}: must be > 0 seconds, and finite.")
    parameters = parse_params(args.param)
    request = DeployRequest(
        entrypoint=f"{flow_file.relative_to(project_dir).as_posix()}:{function}",
        project_dir=project_dir,
        name=args.name,
        pool=args.pool,
        queue=args.queue,
        interval=None if args.cron else (args.interval or DEFAULT_INTERVAL_S),
        cron=args.cron,
        parameters=parameters,
        run_now=args.run_now,
        timeout=args.timeout,
        includes=tuple(args.include),
        dry_run=args.dry_run,
    )
    return request, args.profile


def _flow_file(entrypoint: str, project_dir: Path) -> tuple[Path, str]:
    """The flow's file (inside `project_dir`) and function that FILE.py:flow_function names."""
    file_part, sep, function = entrypoint.rpartition(":")
    if not sep or not file_part.endswith(".py") or not function.isidentifier() or not file_part.isprintable():
        raise DeployError(
            f"entrypoint {shown(entrypoint)}: expected FILE.py:flow_function, e.g. "
            "duration_model.py:train_duration_model."
        )
    try:
        flow_file = (project_dir / file_part).resolve()
        is_file = flow_file.is_file()
    except (OSError, ValueError):  # a name longer than the system takes, for one
        flow_file, is_file = project_dir / file_part, False
    if not is_file:
        raise DeployError(f"entrypoint {shown(entrypoint)}: {mention(str(flow_file))} is not a file.")
    if not flow_file.is_relative_to(project_dir):
        raise DeployError(
            f"entrypoint {shown(entrypoint)}: {mention(str(flow_file))} is outside the current directory "
            f"{project_dir}; run deploy.py in the flow's project directory."
        )
    return flow_file, function


def main(argv: list[str] | None = None, prog: str = "deploy.py") -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        request, profile = parse_request(argv, prog=prog)
        if profile:
            if "prefect" in sys.modules:
                raise DeployError(
                    "--profile must be applied before Prefect is imported; run deploy.py "
                    "as a program (python scripts/deploy.py ...)."
                )
            os.environ["PREFECT_PROFILE"] = profile
        # Prefect's console shows any library's warnings (its event queue draining at exit, a .env
        # it cannot parse): this command prints one line per step and failures as one paragraph.
        os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", "ERROR")
        deploy(request, expected_profile=profile)
    except KeyboardInterrupt:
        print("deploy interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  the command's boundary: one paragraph, never a traceback
        print(f"deploy failed: {_failure(exc)}", file=sys.stderr)
        return 1
    return 0


def _failure(exc: Exception) -> str:
    """Our errors as written; anything else with its type, on one line."""
    if isinstance(exc, PrefectHostError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
