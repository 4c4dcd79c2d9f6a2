"""`prefect-host bench` (scripts/bench_bootstrap.py): our bootstrap against the tutorial's path, side by
side on fresh local hosts (run as root); prints a markdown table and writes it to --output. See
prefect_host/local/bench.py for the rows and how each is measured.

Exit status: 0 = measured and written; 1 = an error (one paragraph on stderr); 2 = invalid command
line; 130 = interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from prefect_host.cli._parser import ArgumentParser
from prefect_host.errors import PrefectHostError

SCRIPT_PROG = "bench_bootstrap.py"


def parse_args(argv: list[str] | None, prog: str, *, default_output: Path, repo: Path) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog,
        description="Time our bootstrap against the tutorial's path on fresh local hosts (run as root); prints "
        "a markdown table and writes it to --output.",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="runs per row (the table gives medians); default 3"
    )
    parser.add_argument(
        "--deploy-repeat",
        type=int,
        default=5,
        metavar="N",
        help="deploy --run-now runs (row e), 0 to leave the row out; default 5",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=default_output,
        help=f"where to write the table (default {default_output.relative_to(repo)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = SCRIPT_PROG) -> int:
    # Imported here: prefect_host.local (the local-guest harness) is for the command line and the tests only.
    from prefect_host.local.bench import DEFAULT_OUTPUT, machine_description, report, run_bench
    from prefect_host.local.product import REPO

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, prog, default_output=DEFAULT_OUTPUT, repo=REPO)
    # The report names the command it measured with, as it would be typed again from the repository.
    command = " ".join([f"scripts/{SCRIPT_PROG}" if prog == SCRIPT_PROG else prog, *argv])
    load_before = os.getloadavg()[0]
    try:
        results = run_bench(
            repeat=args.repeat, deploy_repeat=args.deploy_repeat, say=lambda text: print(text, flush=True)
        )
    except PrefectHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the hosts it started are removed.", file=sys.stderr)
        return 130
    text = report(
        results, command=command, when=datetime.now(UTC), machine=machine_description(load_before, os.getloadavg()[0])
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text, end="")
    print(f"\n(written to {args.output})")
    return 0
