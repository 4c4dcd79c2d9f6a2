"""The bootstrap: inputs -> connect -> facts -> plan -> apply -> verify -> laptop.

Inputs come from flags, then `--outputs FILE`, then `--stack NAME` (inputs.py), validated before
the first connection; the bucket is probed before the first change (converge.py), so bad input
changes nothing. The laptop's part (storage blocks, the profile with the server's CA pinned) runs
in a child process started before the host work (profile_process.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect_host.console import Console, url_password
from prefect_host.errors import PrefectHostError
from prefect_host.internal_ca import constrained_to
from prefect_host.profile import ProfileResult, store_ca, write_and_check
from prefect_host.tls import CaCertificate, TlsError

from .inputs import DEFAULT_WORKERS, WORK_POOL_NAME, BootstrapInputs, resolve_inputs
from .profile_process import ProfileProcess
from .worker_host_inputs import MAX_WORKERS, summary_lines

__all__ = [
    "DEFAULT_WORKERS",
    "MAX_WORKERS",
    "WORK_POOL_NAME",
    "BootstrapInputs",
    "ProfileProcess",
    "Summary",
    "resolve_inputs",
    "run",
]


@dataclass
class Summary:
    seconds: float
    ui_url: str
    api_url: str
    profile_name: str
    profile_path: Path
    profile_active: bool
    server_version: str
    workers: int | None  # None: --client-only, the host was not touched
    results_block: str | None
    results_url: str | None  # s3://bucket/results/
    tls_mode: str = "off"
    ca: CaCertificate | None = None  # the CA the profile pins (PREFECT_API_SSL_CERT_FILE)
    ca_path: Path | None = None
    worker_hosts: list[str] = field(default_factory=list)  # one line per worker host: its result
    failed_hosts: list[str] = field(default_factory=list)  # the worker hosts that failed (exit status 1)


def run(inputs: BootstrapInputs, console: Console) -> Summary:
    started = time.monotonic()
    console.add_secret(inputs.auth_string)
    console.add_secret(inputs.identity_text)
    if inputs.storage is not None:
        console.add_secret(inputs.storage.aws_secret_access_key)
    if inputs.database is not None:  # the database's password and Redis's (derived from the auth string)
        from prefect_host.services import redis

        console.add_secret(url_password(inputs.database.url))
        console.add_secret(redis.password(inputs.auth_string))
    if inputs.tls.mode == "off":
        console.warn(
            "tlsMode is off (allowPlaintext): every request carries the API's auth string over the "
            "network in clear text. Set tls to auto, internal or acme in the stack config."
        )
    run_laptop = _client_only if inputs.client_only else _host_and_laptop
    fleet_results: list = []
    ca, ca_path, result = run_laptop(inputs, console, fleet_results)
    for warning in result.warnings:
        console.warn(warning)
    bucket = inputs.storage.bucket_name if inputs.storage is not None else None
    return Summary(
        seconds=time.monotonic() - started,
        ui_url=inputs.ui_url,
        api_url=inputs.api_url,
        profile_name=result.name,
        profile_path=Path(result.path),
        profile_active=result.active,
        server_version=result.server_version,
        workers=None if inputs.client_only else inputs.workers,
        results_block=result.results_block,
        results_url=f"s3://{bucket}/results/" if bucket and result.results_block else None,
        tls_mode=inputs.tls.mode,
        ca=ca,
        ca_path=Path(ca_path) if ca_path else None,
        worker_hosts=summary_lines(fleet_results, lambda name: _host_workers(inputs, name)),
        failed_hosts=[r.name for r in fleet_results if r.error is not None],
    )


def _host_workers(inputs: BootstrapInputs, name: str) -> int:
    return next(host.workers for host in inputs.worker_hosts if host.name == name)


def _profile_request(inputs: BootstrapInputs) -> dict:
    return {
        "name": inputs.profile_name,
        "api_url": inputs.api_url,
        "auth_string": inputs.auth_string,
        "activate": inputs.activate,
        "results_block": inputs.results_block,
    }


def _profile_step(inputs: BootstrapInputs) -> str:
    return f"profile {inputs.profile_name}: write it, reach the server through it"


def _ca_step(inputs: BootstrapInputs) -> str:
    return f"CA certificate for profile {inputs.profile_name}"


def _client_only(
    inputs: BootstrapInputs, console: Console, _fleet_results: list
) -> tuple[CaCertificate | None, str | None, ProfileResult]:
    """A teammate's laptop: the profile only (the blocks exist on the server already: find them)."""
    ca, ca_path = _client_trust(inputs, console), None
    if ca is not None:
        with console.step(_ca_step(inputs)) as status:
            stored = store_ca(inputs.profile_name, ca.pem)
            status.changed, ca_path = stored["changed"], stored["path"]
    with console.step(_profile_step(inputs)) as status:
        result = write_and_check(
            **_profile_request(inputs),
            ssl_cert_file=ca_path,
            find_results_in_bucket=(inputs.storage.bucket_name if inputs.storage is not None else None),
        )
        status.changed = result.changed
    return ca, ca_path, result


def _host_and_laptop(
    inputs: BootstrapInputs, console: Console, fleet_results: list
) -> tuple[CaCertificate | None, str | None, ProfileResult]:
    # The child first: it imports Prefect on another core while this process imports the SSH and
    # HTTP side and works on the host (a re-run on a converged host is mostly these imports).
    child, ca_path = ProfileProcess(), None
    from .converge import converge_host
    from .worker_hosts import WorkerFleet
    from .worker_registry import forget_removed_hosts

    fleet = WorkerFleet(inputs, console)
    fleet.start()
    try:
        try:
            ca = converge_host(inputs, console, on_checked=fleet.server_checked)
        except BaseException as exc:
            fleet.server_failed(str(exc) or type(exc).__name__)
            fleet.join()
            raise
        fleet.server_ready(ca)
        fleet_results[:] = fleet.join()
        try:
            forget_removed_hosts(inputs, ca, fleet_results, console)
        except PrefectHostError as exc:  # the hosts are converged: the laptop's part still goes on
            console.warn(f"the workers of removed worker hosts stay listed in the pool: {exc}")
        if ca is not None:
            with console.step(_ca_step(inputs)) as status:
                stored = child.call("store_ca", name=inputs.profile_name, pem=ca.pem)
                status.changed, ca_path = stored["changed"], stored["path"]
        if inputs.storage is not None:
            with console.step(f"storage block {inputs.results_block}") as status:
                blocks = child.call(
                    "register_storage_blocks",
                    api_url=inputs.api_url,
                    auth_string=inputs.auth_string,
                    outputs=inputs.storage.to_mapping(),
                    profile_name=inputs.profile_name,
                    ssl_cert_file=ca_path,
                )
                status.changed = bool(blocks["changed"])
        with console.step(_profile_step(inputs)) as status:
            result = ProfileResult(**child.call("profile", **_profile_request(inputs), ssl_cert_file=ca_path))
            status.changed = result.changed
    except BaseException:
        child.cancel()
        raise
    child.close()
    return ca, ca_path, result


def _client_trust(inputs: BootstrapInputs, console: Console) -> CaCertificate | None:
    """The CA to pin on a teammate's laptop: --ca-file when given; in internal mode otherwise the
    CA read from the host over the pinned SSH session (read only, nothing changes). In internal
    mode it must be the host's constrained CA, not a CA that can vouch for any name."""
    if inputs.tls.mode != "internal":
        return inputs.ca
    if inputs.ca is not None:
        ca, source = inputs.ca, "--ca-file"
    else:
        from prefect_host.services.caddy import read_internal_ca_root

        from . import checks
        from .converge import ssh_session

        with ssh_session(inputs, console) as session, console.step(f"read the CA certificate from {inputs.host}"):
            command = read_internal_ca_root(timeout=5)
            result = session.run(command.script, sudo=True, timeout=command.timeout, label=command.label, check=False)
            if result.exit_status != 0:
                raise TlsError(
                    f"{inputs.host} has no internal CA constrained to its IP yet: run the bootstrap on the host "
                    "first (without --client-only; it replaces Caddy's own CA), then again here."
                )
            ca, source = checks.host_ca(result.stdout, inputs.host), f"the CA read from {inputs.host}"
    if not constrained_to(ca.pem, inputs.tls.address):
        raise TlsError(
            f"{source} ({ca.fingerprint}) is not the internal CA constrained to {inputs.tls.address} "
            "(from a host bootstrapped by an earlier release, whose CA could vouch for any name?). Run the "
            "bootstrap on the host first (without --client-only), then share the CA file it writes."
        )
    return ca
