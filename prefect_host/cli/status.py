"""`prefect-host status` (scripts/status.py): the host on one screen: server version and health,
workers and their last heartbeat, replication lag, TLS certificate expiry, the database's size.

Exit status: 0 = all is well; 1 = something is wrong (a red row, or the host cannot be read);
2 = invalid command line.
"""

from __future__ import annotations

import datetime as dt

from prefect_host.cli._parser import ArgumentParser
from prefect_host.console import Console
from prefect_host.errors import PrefectHostError
from prefect_host.operate.host_access import add_host_flags, host_inputs, host_session
from prefect_host.operate.status import Row, assess, certificate_expiry, read_host, render


def main(argv: list[str] | None = None, prog: str = "status.py") -> int:
    parser = ArgumentParser(
        prog=prog, description="Show the stack's host on one screen; exit 1 when something is wrong."
    )
    add_host_flags(parser)
    args = parser.parse_args(argv)
    console = Console()
    try:
        inputs = host_inputs(args)
        with host_session(inputs, console) as session:
            report = read_host(session, inputs)
        try:
            expiry = certificate_expiry(inputs.api_url)
        except OSError as exc:
            expiry, rows_extra = None, [Row("TLS certificate", "bad", f"cannot read it from {inputs.api_url}: {exc}")]
        else:
            rows_extra = []
    except PrefectHostError as exc:
        console.error(str(exc))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted.")
        return 130
    rows = assess(report, inputs, expiry, dt.datetime.now(dt.UTC)) + rows_extra
    console.line(render(rows, f"prefect-host status: {inputs.user}@{inputs.host}"))
    bad = [row.what for row in rows if row.state == "bad"]
    if bad:
        console.error(f"{len(bad)} problem(s): {', '.join(bad)}")
        return 1
    return 0
