"""Worker hosts (output workerHosts): VMs that run the flows while the server VM serves the API.

Each worker host is converged in a thread of its own with its own SSH session (its own pinned key),
at the same time as the server: first what needs nothing from the server (the venv with Prefect and
prefect-aws, the flow user, the metadata guard), then, once the server is up and verified, the
workers (their env file with the API URL, the auth string and result storage, the server's CA in
internal mode) and the wait until they poll the pool. A worker host holds no Prefect server and no
Caddy. A host that fails does not stop the others; each one's steps are printed as one group when it
is done, and its result at the end.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from dataclasses import dataclass

import httpx

from prefect_host.console import Console
from prefect_host.errors import PrefectHostError
from prefect_host.host.apply import Hooks, apply
from prefect_host.host.facts import gather_facts
from prefect_host.host.model import File, PackageSource, Service, Venv
from prefect_host.host.planner import plan
from prefect_host.services import metadata_guard, workers
from prefect_host.services.python_env import prefect_venv
from prefect_host.tls import CaCertificate, server_ssl_context

from . import checks
from .host_services import worker_service
from .inputs import BootstrapInputs
from .worker_host_inputs import WorkerHostInputs

# Where a worker host keeps the server's CA (internal mode, or --ca-file): readable by the flow user,
# outside /etc/prefect-host, which the worker unit hides (and in a directory that exists: the file
# writer makes missing ones 0700).
CA_PATH = "/etc/prefect-host-server-ca.pem"


@dataclass
class HostResult:
    name: str
    address: str
    hostname: str | None = None
    error: str | None = None
    seconds: float = 0.0
    output: str = ""


@dataclass
class ServerState:
    """What the worker hosts wait for: the server up and verified (its CA, if pinned), or its failure."""

    checked: threading.Event = dataclasses.field(default_factory=threading.Event)  # its refusals are behind it
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    ca: CaCertificate | None = None
    failure: str | None = None


def host_inputs(inputs: BootstrapInputs, host: WorkerHostInputs) -> BootstrapInputs:
    """The bootstrap's inputs as they apply to one worker host (its address and key; the same SSH user)."""
    return dataclasses.replace(inputs, host=host.address, host_key=host.host_key, workers=host.workers)


def base_services(venv: Venv) -> list[Service]:
    """What a worker host needs before the server is up: the metadata guard and the venv (and flow user)."""
    guard = Service("metadata-guard", packages=(metadata_guard.PACKAGE,), files=(metadata_guard.script_file(),))
    return [guard, Service("prefect-venv", users=(workers.flow_user(),), venv=venv)]


def workers_on(inputs: BootstrapInputs, host: WorkerHostInputs, venv: Venv, ca: CaCertificate | None) -> Service:
    """The host's workers, reaching the server at its API URL, verified against `ca` when it is pinned."""
    return worker_service(
        inputs,
        venv,
        count=host.workers,
        queue=host.queue,
        api_url=inputs.api_url,
        ca_file=CA_PATH if ca is not None else None,
        extra=(File(CA_PATH, ca.pem, mode=0o644),) if ca is not None else (),
    )


class WorkerFleet:
    """The worker hosts' threads; `server_ready` / `server_failed` release them, `join` collects them."""

    def __init__(self, inputs: BootstrapInputs, console: Console):
        self.inputs, self.console = inputs, console
        self.server = ServerState()
        self.results = [HostResult(host.name, host.address) for host in inputs.worker_hosts]
        self._threads = [
            threading.Thread(target=self._converge, args=(host, result), name=f"worker-host-{host.name}", daemon=True)
            for host, result in zip(inputs.worker_hosts, self.results, strict=True)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def server_checked(self) -> None:
        self.server.checked.set()

    def server_ready(self, ca: CaCertificate | None) -> None:
        self.server.ca = ca
        self.server.checked.set()
        self.server.done.set()

    def server_failed(self, reason: str) -> None:
        self.server.failure = reason
        self.server.checked.set()
        self.server.done.set()

    def join(self) -> list[HostResult]:
        for thread, result in zip(self._threads, self.results, strict=True):
            thread.join()
            self.console.line(f"worker host {result.name} ({result.address}):")
            for line in result.output.rstrip("\n").splitlines():
                self.console.line(f"  {line}")
        return self.results

    # --- one host, in its thread ----------------------------------------------------------------
    def _converge(self, host: WorkerHostInputs, result: HostResult) -> None:
        started = time.monotonic()
        buffer = io.StringIO()
        console = Console(buffer, buffer, progress_interval=3600.0)
        for secret in self.console.secrets:
            console.add_secret(secret)
        try:
            self._converge_host(host, result, console)
        except PrefectHostError as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 (one host's failure is reported, the others go on)
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.seconds = time.monotonic() - started
            result.output = buffer.getvalue()
            if result.error is not None:
                result.error = console.redact(result.error)

    def _converge_host(self, host: WorkerHostInputs, result: HostResult, console: Console) -> None:
        from .converge import _forget, _wait_for_workers, ready_facts, ssh_session  # converge imports this module

        inputs = host_inputs(self.inputs, host)
        venv = prefect_venv(inputs.prefect_version, PackageSource(inputs.index_url, inputs.find_links))
        base = base_services(venv)
        with ssh_session(inputs, console) as session:
            facts = ready_facts(session, inputs, tuple(base), console, probe=False)
            result.hostname = facts.hostname
            # Nothing changes here before the server's run has passed its refusals (a downgrade, a
            # database switch): a refused run leaves every host as it was.
            self.server.checked.wait()
            if self.server.failure is not None:
                raise PrefectHostError(f"not started: the server's run stopped first ({self.server.failure}).")
            apply(plan(facts, base), session, console)
            # No timeout: the main thread always reports the server's end (server_ready or server_failed).
            self.server.done.wait()
            if self.server.failure is not None:
                raise PrefectHostError(f"not finished: the server did not come up ({self.server.failure}).")
            ca = self.server.ca
            services = [*base, workers_on(inputs, host, venv, ca)]
            with console.step("read the host's state again"):
                facts = gather_facts(session, services)
            with httpx.Client(timeout=10.0, verify=server_ssl_context(ca.pem if ca else None)) as client:
                # Workers this host no longer runs (a lower --workers) leave the pool, as the server's do.
                stopped = Hooks(stopped=lambda units: _forget(client, inputs, facts, units))
                apply(plan(facts, services), session, console, stopped)
                if host.workers:
                    skew = checks.REMOTE_CLOCK_SKEW_S
                    _wait_for_workers(session, client, inputs, facts, services[-1], console, clock_skew=skew)
                    checks.verify_metadata_guard(session, inputs, console)
