"""What the bootstrap checks on a converged host: the server came up, Caddy serves a certificate
the laptop trusts, the server answers as it must, the workers checked in, the metadata guard is in force."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ssl
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import httpx

from prefect_host.console import Console
from prefect_host.errors import VerifyError
from prefect_host.host.apply import journal_on_failure
from prefect_host.host.facts import HostFacts, unit_states
from prefect_host.internal_ca import constrained_to, permitted_names
from prefect_host.services import caddy, metadata_guard, prefect_server
from prefect_host.ssh import HostSession
from prefect_host.tls import (
    ACME_CERTIFICATE_TIMEOUT,
    INTERNAL_CA_ROOT_TIMEOUT,
    CaCertificate,
    TlsError,
    certificate_timeout_error,
    load_ca_certificate,
    server_ssl_context,
    wait_for_certificate,
)
from prefect_host.verify import HEALTH_TIMEOUT, HealthTimeout, basic_auth, wait_until_healthy

from .inputs import WORK_POOL_NAME, BootstrapInputs

# Workers check in seconds after they start; the margin covers a slow host, and a server that is
# itself still starting (after a reboot) while a worker retries.
WORKERS_TIMEOUT = 120.0
# How far a worker host's clock may be from the server's (both NTP-synced on a cloud) when its
# workers' first heartbeat (server time) is compared with their units' start (host time).
REMOTE_CLOCK_SKEW_S = 30.0
_WATCH_EVERY = 5.0
T = TypeVar("T")


def http(call: Callable[[], T]) -> T:
    try:
        return call()
    except httpx.HTTPError as exc:
        raise VerifyError(f"HTTP request to the server failed: {type(exc).__name__}: {exc}") from None


def wait_for_start(session: HostSession, client: httpx.Client | None, inputs: BootstrapInputs) -> None:
    """Wait until /api/health answers true; stop early if the service dies on the host. Without a
    client (TLS, before Caddy is converged) the health check runs on the host, on loopback."""
    unit = prefect_server.UNIT_NAME
    first_restarts = unit_states(session, [unit])[unit].restarts

    def watch() -> None:
        state = unit_states(session, [unit])[unit]
        if state.active_state == "failed" or state.restarts > first_restarts:
            raise VerifyError(
                f"The Prefect server on {inputs.host} exited while starting "
                f"(state {state.active_state}, {state.restarts - first_restarts} restart(s) since the "
                "start); its journal is printed above."
            )

    if client is None:
        _poll(
            lambda: healthy_on_host(session, inputs),
            watch,
            timeout=HEALTH_TIMEOUT,
            failure=lambda: HealthTimeout(
                f"The Prefect server on {inputs.host} did not answer on loopback within {HEALTH_TIMEOUT:g} s."
            ),
        )
        return
    try:
        wait_until_healthy(client, inputs.api_url, watch=watch, ready=inputs.database is not None)
    except HealthTimeout:
        if healthy_on_host(session, inputs):
            ports = "443 and 4200" if inputs.tls_on else "4200"
            raise VerifyError(
                f"The server is healthy on the host, but {inputs.api_url} does not answer "
                f"from this machine: check that TCP ports {ports} are open to it "
                "(allowedCidrs, firewalls) and that apiUrl has the host's public address."
            ) from None
        raise


def _poll(
    done: Callable[[], bool], watch: Callable[[], None], *, timeout: float, failure: Callable[[], Exception]
) -> None:
    """Until `done()`, every 0.5 s; `watch()` every few seconds raises when waiting is pointless."""
    deadline = time.monotonic() + timeout
    next_watch = time.monotonic() + _WATCH_EVERY
    while not done():
        now = time.monotonic()
        if now >= deadline:
            raise failure()
        if now >= next_watch:
            watch()
            next_watch = now + _WATCH_EVERY
        time.sleep(0.5)


def healthy_on_host(session: HostSession, inputs: BootstrapInputs) -> bool:
    """/api/health answers true on loopback; on PostgreSQL /api/ready answers 200 (the database is reachable)."""
    path = "ready" if inputs.database is not None else "health"
    url = f"http://127.0.0.1:{prefect_server.server_port(tls=inputs.tls_on)}/api/{path}"
    probe = f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}', timeout=3).read().decode())\""
    result = session.run(probe, timeout=15, check=False, label="health check on the host")
    return result.exit_status == 0 and (path == "ready" or result.stdout.strip() == "true")


def host_ca(encoded: str, host: str) -> CaCertificate:
    try:
        pem = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TlsError(f"The CA certificate read from {host} is not base64 of a PEM file.") from None
    return load_ca_certificate(pem, source=f"Caddy's CA on {host}")


def server_ca(
    inputs: BootstrapInputs, facts: HostFacts, session: HostSession, console: Console
) -> CaCertificate | None:
    """internal: the host's internal CA, constrained to its IP, read over the pinned SSH session (in
    the facts on a re-run; made before Caddy's start or reload otherwise); --ca-file must be that
    same CA. acme: None (the system trust store), or --ca-file (a private ACME CA's root, as in the
    tests)."""
    if inputs.tls.mode != "internal":
        return None
    pem = caddy.internal_ca_root_pem(facts)
    if pem is not None and constrained_to(pem, inputs.tls.address):
        ca = load_ca_certificate(pem, source=f"Caddy's CA on {inputs.host}")
    else:
        with journal_on_failure(True, session, console, [caddy.UNIT]), console.step("read Caddy's CA certificate"):
            command = caddy.read_internal_ca_root()
            ca = host_ca(
                session.run(command.script, sudo=True, timeout=command.timeout, label=command.label).stdout, inputs.host
            )
            if not constrained_to(ca.pem, inputs.tls.address):
                raise TlsError(
                    f"The internal CA on {inputs.host} ({ca.fingerprint}) is not the one for "
                    f"{inputs.tls.address}: Caddy has not made it again. Restart Caddy there "
                    "(sudo systemctl restart caddy) and run the bootstrap again."
                )
        _say_replaced(inputs, facts, ca, console)
    if inputs.ca is not None and inputs.ca.fingerprint != ca.fingerprint:
        raise TlsError(
            f"--ca-file holds the CA {inputs.ca.fingerprint}, but the host's Caddy certifies with "
            f"{ca.fingerprint}: the file is not this server's CA (from an older host?). Leave "
            "--ca-file out: the bootstrap reads the CA from the host."
        )
    return ca


def _say_replaced(inputs: BootstrapInputs, facts: HostFacts, ca: CaCertificate, console: Console) -> None:
    """A CA the host had before this run, now replaced: say which, and that trust in it must go."""
    earlier = []
    caddys_own = caddy.caddy_own_ca_root_pem(facts)
    if caddys_own is not None:
        what = "Caddy's own CA, which could vouch for any HTTPS site (its key is now deleted from the host)"
        earlier.append((caddys_own, what))
    previous = caddy.internal_ca_root_pem(facts)
    if previous is not None:
        earlier.append((previous, f"the internal CA made for {', '.join(permitted_names(previous) or ['any name'])}"))
    for pem, what in earlier:
        try:
            old = load_ca_certificate(pem, source="the host's earlier CA")
        except TlsError:
            continue
        if old.fingerprint != ca.fingerprint:
            console.warn(
                f"The CA on {inputs.host} changed: {what} ({old.fingerprint}) is replaced by one that can "
                f"vouch only for {inputs.tls.address} ({ca.fingerprint}); the profile now pins the new one. "
                "If you trusted the old one in a browser, a keychain or a system store, remove it there "
                "(find it by that fingerprint), and trust the new one as shown below, for your user only."
            )


def verify_context(
    inputs: BootstrapInputs, ca: CaCertificate | None, session: HostSession, console: Console
) -> ssl.SSLContext:
    """The laptop's TLS verification, once Caddy serves a certificate it trusts: the pinned CA
    (internal, or --ca-file) or the system trust store (acme). Waits for that certificate first:
    Caddy obtains an ACME certificate seconds to minutes after its start."""
    trusted = ca or inputs.ca
    context = server_ssl_context(trusted.pem if trusted else None)
    if inputs.tls.mode == "acme":
        timeout, issuer = ACME_CERTIFICATE_TIMEOUT, inputs.tls.acme_directory
    else:
        timeout, issuer = INTERNAL_CA_ROOT_TIMEOUT, "the host's own CA"
    with (
        journal_on_failure(True, session, console, [caddy.UNIT]),
        console.step(f"TLS certificate for {inputs.tls.address} from {issuer}"),
    ):
        last = wait_for_certificate(inputs.tls.address, 443, context, timeout=timeout)
        if last is not None:
            raise certificate_timeout_error(inputs.tls, public_ip=inputs.public_ip, waited=timeout, last=last)
    return context


def wait_for_workers(
    session: HostSession,
    client: httpx.Client,
    inputs: BootstrapInputs,
    workers: dict[str, str],
    *,
    clock_skew: float = 0.0,
) -> None:
    """Wait until every worker unit (unit -> worker name) has checked in since its unit started: its
    record in the pool is ONLINE with a heartbeat no older than the start. On the server's host the
    two share one clock; a worker host's may be `clock_skew` seconds off the server's. Stops early
    when a unit fails or restarts."""
    started = {
        unit: dataclasses.replace(state, since=state.since - clock_skew)
        for unit, state in unit_states(session, list(workers)).items()
    }
    url = f"{inputs.api_url}/work_pools/{WORK_POOL_NAME}/workers/filter"
    waiting = list(workers.values())

    def all_checked_in() -> bool:
        response = http(lambda: client.post(url, json={}, auth=basic_auth(inputs.auth_string)))
        if response.status_code != 200:
            raise VerifyError(f"POST {url} answered HTTP {response.status_code}: {response.text[:300]}")
        records = {record["name"]: record for record in response.json()}
        waiting[:] = [
            name for unit, name in workers.items() if not _checked_in(records.get(name) or {}, started[unit].since)
        ]
        return not waiting

    def watch() -> None:
        for unit, state in unit_states(session, list(workers)).items():
            if state.active_state == "failed" or state.restarts > started[unit].restarts:
                raise VerifyError(
                    f"{unit} on {inputs.host} exited while starting (state {state.active_state}, "
                    f"{state.restarts - started[unit].restarts} restart(s)); its journal is printed "
                    "above."
                )

    _poll(
        all_checked_in,
        watch,
        timeout=WORKERS_TIMEOUT,
        failure=lambda: VerifyError(
            f"Worker(s) {', '.join(waiting)} did not check in with the server within {WORKERS_TIMEOUT:g} s "
            "(their journal is printed above)."
        ),
    )


def _checked_in(record: dict[str, Any], since: float) -> bool:
    heartbeat = record.get("last_heartbeat_time")
    return (
        record.get("status") == "ONLINE"
        and heartbeat is not None
        and datetime.fromisoformat(heartbeat).timestamp() >= since
    )


def verify_metadata_guard(session: HostSession, inputs: BootstrapInputs, console: Console) -> None:
    """The guard's rules are in force now that the server, Caddy and the workers started (each unit
    applies them as root before it starts, but the server and Caddy start without them on failure)."""
    with console.step("metadata service guard in force (iptables)"):
        result = session.run(
            metadata_guard.read_rules_script(), sudo=True, timeout=30, label="read the metadata guard's rules"
        )
        missing = metadata_guard.missing_rules(result.stdout)
        if missing:
            raise VerifyError(
                f"The metadata guard is not in force on {inputs.host}: {'; '.join(missing)}. Flow runs, the "
                "server or Caddy could read the instance's user data (with the SSH host key) from the cloud's "
                f"metadata service. Apply its rules there with `sudo {metadata_guard.PATH}` (it says why, if it fails; "
                "`sudo systemctl restart prefect-server` applies them too) and run the bootstrap again."
            )


def forget_worker(client: httpx.Client, inputs: BootstrapInputs, name: str) -> None:
    """A worker stopped for good: out of the pool's list of workers, instead of shown offline there."""
    url = f"{inputs.api_url}/work_pools/{WORK_POOL_NAME}/workers/{urllib.parse.quote(name, safe='')}"
    response = http(lambda: client.delete(url, auth=basic_auth(inputs.auth_string)))
    if response.status_code not in (204, 404):  # 404: it never checked in
        raise VerifyError(f"DELETE {url} answered HTTP {response.status_code}: {response.text[:300]}")


def process_job_template() -> dict[str, Any]:
    """The `process` worker's default job template, as `prefect work-pool create --type process`
    stores it (imported only when the pool must be created)."""
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()
