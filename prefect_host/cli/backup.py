"""`prefect-host backup` (scripts/backup.py): the Prefect database's replica in the stack's bucket.

    prefect-host backup now --outputs outputs.json           # a full snapshot, now
    prefect-host backup list --outputs outputs.json          # what the bucket holds
    prefect-host backup restore --outputs outputs.json [--at 2026-12-06T05:25:45Z]
                                                             # replace the database (the old file is kept)

Exit status: 0 = done; 1 = an error (one paragraph on stderr); 2 = invalid command line.
"""

from __future__ import annotations

from prefect_host.bootstrap.backup_inputs import restore_timestamp
from prefect_host.cli._parser import ArgumentParser
from prefect_host.console import Console
from prefect_host.errors import PrefectHostError, UsageError
from prefect_host.operate.backup import render_levels, replica_levels, restore, snapshot_now
from prefect_host.operate.host_access import add_host_flags, host_inputs, host_session
from prefect_host.services.litestream import REPLICA_PATH


def main(argv: list[str] | None = None, prog: str = "backup.py") -> int:
    parser = ArgumentParser(prog=prog, description="Snapshot, list or restore the Prefect database's replica.")
    parser.add_argument("action", choices=("now", "list", "restore"), help="what to do")
    parser.add_argument("--at", metavar="TIME", help="restore: the database as it was at TIME (UTC, RFC 3339)")
    add_host_flags(parser)
    args = parser.parse_args(argv)
    if args.at is not None and args.action != "restore":
        parser.error(f"--at is for `restore`, not `{args.action}`.")
    console = Console()
    try:
        at = restore_timestamp(args.at, "--at") if args.at is not None else None
        inputs = host_inputs(args)
        if inputs.database is not None:
            raise UsageError(
                f"backup {args.action}: this stack's database is PostgreSQL ({inputs.database.where}); Litestream "
                "replicates SQLite only. Use the managed database's snapshots and point-in-time recovery."
            )
        with host_session(inputs, console) as session:
            if args.action == "now":
                snapshot_now(session, console)
            elif args.action == "list":
                console.line(
                    render_levels(replica_levels(session), f"s3://{inputs.storage.bucket_name}/{REPLICA_PATH}")
                )
            else:
                restore(session, console, inputs, at=at)
    except PrefectHostError as exc:
        console.error(str(exc))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted; run `prefect-host status` to see the host's state.")
        return 130
    return 0
