"""Workers of worker hosts that left the stack: out of the pool, instead of listed offline forever.

The server keeps the worker hosts' host names of the last run in a Prefect variable; a host name that
was there and is not any more (the VM was removed from the stack) has its workers (`<hostname>-<n>`)
deleted from the pool. Workers of other names (a laptop's, an operator's) are never touched.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

import httpx

from prefect_host.console import Console
from prefect_host.errors import VerifyError
from prefect_host.tls import CaCertificate, server_ssl_context
from prefect_host.verify import basic_auth

from . import checks
from .inputs import BootstrapInputs
from .worker_host_inputs import MAX_WORKERS

VARIABLE = "prefect_host_worker_hosts"


def forget_removed_hosts(
    inputs: BootstrapInputs, ca: CaCertificate | None, results: Sequence, console: Console
) -> None:
    current = sorted({r.hostname for r in results if r.hostname})
    if len(current) < len(inputs.worker_hosts):
        return  # a host that failed before it was read: its name is unknown, so nothing can be told apart
    auth = basic_auth(inputs.auth_string)
    with httpx.Client(timeout=10.0, verify=server_ssl_context(ca.pem if ca else None), auth=auth) as client:
        answer = checks.http(lambda: client.get(f"{inputs.api_url}/variables/name/{VARIABLE}"))
        if answer.status_code not in (200, 404):
            raise VerifyError(f"GET the variable {VARIABLE} answered HTTP {answer.status_code}: {answer.text[:300]}")
        found = answer.json() if answer.status_code == 200 else {}
        previous = found.get("value", []) if isinstance(found, dict) else []
        previous = [name for name in previous if isinstance(name, str)] if isinstance(previous, list) else []
        removed = sorted(set(previous) - set(current))
        if not removed and previous == current:
            return
        with console.step(f"forget the workers of removed worker hosts ({', '.join(removed) or 'none'})") as status:
            # By name (a 404 is fine): a listing answers one page, which a large pool's oldest workers are past.
            for hostname in removed:
                for number in range(1, MAX_WORKERS + 1):
                    checks.forget_worker(client, inputs, f"{hostname}-{number}")
            body = {"name": VARIABLE, "value": current}
            if answer.status_code == 200:
                quoted = urllib.parse.quote(VARIABLE)
                saved = checks.http(lambda: client.patch(f"{inputs.api_url}/variables/name/{quoted}", json=body))
            else:
                saved = checks.http(lambda: client.post(f"{inputs.api_url}/variables/", json=body))
            if saved.status_code not in (200, 201, 204):
                raise VerifyError(
                    f"saving the variable {VARIABLE} answered HTTP {saved.status_code}: {saved.text[:300]}"
                )
            status.changed = True
