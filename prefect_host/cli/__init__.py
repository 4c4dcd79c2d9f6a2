"""`prefect-host COMMAND [ARGS...]`: the project's one command-line program, one module per command.

    prefect-host bootstrap --outputs outputs.json --activate
    prefect-host deploy duration_model.py:train_duration_model --run-now
    prefect-host plan examples/stack-aws.yaml
    prefect-host demo [up | down]
    prefect-host bench --repeat 3
    prefect-host status --outputs outputs.json
    prefect-host backup list --outputs outputs.json

The first word names the command; everything after it goes to that command's own parser
(`prefect_host.cli.<command>.main(argv, prog=...)`), so `prefect-host bootstrap ...` and
`scripts/bootstrap.py ...` run the same code with the same flags and exit statuses. A command's
module is imported only when it runs: deploy must set PREFECT_PROFILE before anything imports
Prefect, and `prefect-host --help` need not load every command.

A new command: a module here with `main(argv, prog) -> int`, and a line in COMMANDS. Every parser is a
`prefect_host.cli._parser.ArgumentParser` (no command): its errors quote no overlong value.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from prefect_host.cli._parser import ArgumentParser

PROG = "prefect-host"

# name -> one line for `prefect-host --help`; the module prefect_host.cli.<name> runs it.
COMMANDS: dict[str, str] = {
    "bootstrap": "install Prefect on the stack's VM, verify it, write this machine's profile",
    "deploy": "upload a flow's project and create or update its deployment",
    "plan": "what `pulumi up` would create for a stack config, without a cloud account",
    "demo": "a Prefect host on this machine, no cloud: `up` (default) or `down` (root)",
    "bench": "time our bootstrap against the tutorial's path on local hosts (root)",
    "status": "the host on one screen: server, workers, backup lag, TLS expiry, database size",
    "backup": "the database's replica in the bucket: `now`, `list`, `restore [--at TIME]`",
}


def build_parser() -> ArgumentParser:
    """The parser of the command name alone: it lists the commands and refuses unknown ones."""
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items())
    parser = ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Your own Prefect server in the cloud: `pulumi up`, then `prefect-host bootstrap`.",
        # A listing of our own: argparse's subcommand help wraps the longer names onto lines of their own.
        epilog=f"commands:\n{listing}\n\n`{PROG} COMMAND --help` shows a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, help="one of the commands below")
    for name in COMMANDS:
        # No arguments and no -h of their own: the command's module parses the rest of the line.
        commands.add_parser(name, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only the first word: `-h` gives the list of commands, anything but a command name is a usage error (exit 2).
    command = build_parser().parse_args(argv[:1]).command
    module = importlib.import_module(f"{__name__}.{command}")
    return module.main(argv[1:], prog=f"{PROG} {command}")
