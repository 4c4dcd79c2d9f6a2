"""`prefect-host demo` (scripts/demo.py): a Prefect host on this machine, no cloud needed (run as root);
`up` (make demo, the default) starts or converges it, `down` (make demo-down) removes it. See
prefect_host/local/demo.py for what it does and where it keeps its state (.demo/).

Exit status: 0 = done; 1 = an error (one paragraph on stderr); 2 = invalid command line; 130 = interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect_host.cli._parser import ArgumentParser
from prefect_host.errors import PrefectHostError


def parse_args(argv: list[str] | None, prog: str, *, default_state_dir: Path) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=prog,
        description="A Prefect host on this machine, no cloud: `up` (make demo) starts it or "
        "converges it, `down` (make demo-down) removes it.",
    )
    parser.add_argument("action", nargs="?", choices=("up", "down"), default="up")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir,
        help=f"where the demo keeps its state (default {default_state_dir})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "demo.py") -> int:
    # Imported here: prefect_host.local (the local-guest harness) is for the command line and the tests only.
    from prefect_host.local.demo import DEFAULT_STATE_DIR, DemoPaths, down, up

    args = parse_args(argv, prog, default_state_dir=DEFAULT_STATE_DIR)
    paths = DemoPaths(args.state_dir.resolve())
    try:
        (up if args.action == "up" else down)(paths)
    except PrefectHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted. `make demo` continues where it stopped; `make demo-down` removes what was started.",
            file=sys.stderr,
        )
        return 130
    return 0
