"""Converge the host: connect -> facts -> plan -> apply -> verify, then the work pool and the workers.

The services (prefect_host.services) declare what the host must hold; the planner yields only the
steps still needed and one apply loop runs them, so a converged host sees no change and no restart.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import paramiko

from prefect_host.console import Console
from prefect_host.errors import ConnectError, HostUnsupported, SudoError
from prefect_host.host.apply import Hooks, apply, journal_on_failure, run_step
from prefect_host.host.facts import HostFacts, gather_facts
from prefect_host.host.model import Command, Service, Step
from prefect_host.host.planner import plan
from prefect_host.outputs import StackOutputs
from prefect_host.services import prefect_server
from prefect_host.ssh import HostSession, PinnedHostKey, load_private_key, load_private_key_file, sudo_refused_message
from prefect_host.storage import probe_bucket
from prefect_host.tls import CaCertificate
from prefect_host.verify import check_server, ensure_work_pool

from . import checks, upgrade
from .backup_checks import check_restore_request, verify_replication, warn_before_an_empty_start
from .checks import http
from .database_switch import check_database_switch, transfer_due, transfer_objects
from .host_services import host_services
from .inputs import WORK_POOL_NAME, WORK_POOL_TYPE, BootstrapInputs

# On GCP, sshd serves the guest agent's own host keys from first boot until the startup script installs
# the pinned key (a few seconds later): a mismatch is retried this long there (nothing is sent meanwhile).
GCP_HOST_KEY_GRACE_S = 120.0
# cloud-init has nothing left to do in these states (the bootstrap reports "error" as a warning).
_CLOUD_INIT_SETTLED = {"done", "disabled", "error", "degraded done"}


def converge_host(
    inputs: BootstrapInputs, console: Console, on_checked: Callable[[], None] | None = None
) -> CaCertificate | None:
    """Returns the CA the laptop pins (None: the system trust store, or plain HTTP). `on_checked`: called
    once the run's refusals are behind it (worker hosts change nothing before that)."""
    try:
        with ssh_session(inputs, console) as session, contextlib.ExitStack() as closing:
            services = host_services(inputs)
            backup, server, worker_set = services.backup, services.server, services.workers
            facts = ready_facts(session, inputs, tuple(services.all), console)
            check_restore_request(inputs, facts)
            check_database_switch(inputs, facts)
            warn_before_an_empty_start(inputs, facts, console)
            change = upgrade.plan_upgrade(
                facts,
                server.venv,
                allow_downgrade=inputs.allow_downgrade,
                replicated=not backup.absent,
                database=inputs.database,
            )
            lanes = plan(facts, services.all)
            if on_checked is not None:
                on_checked()
            serving = len(services.serving)
            if any(step.starts for step in next(lane for lane in lanes if lane.service is server).steps):
                # A (re)start is when the work pool may need creating, with the process worker's job
                # template (~1.5 s to import): import it while this process mostly waits on the host.
                warm = threading.Thread(target=_import_quietly, args=("prefect.workers.process",), daemon=True)
                warm.start()
                # Never leave while it imports: a daemon thread mid-import when the interpreter exits (a
                # step that fails within a second) aborts the process (SIGABRT) instead of exit status 1.
                closing.callback(warm.join, 60)
            client = None if inputs.tls_on else closing.enter_context(httpx.Client(timeout=10.0))
            if change is not None:
                upgrade.prepare(change, session, console)

            def on_start() -> None:
                checks.wait_for_start(session, client, inputs)
                if change is not None:
                    upgrade.started(change)

            hooks = Hooks(started={server.name: on_start})
            if change is not None:
                hooks.starting = {server.name: lambda: upgrade.switch(change, session, console)}
            with upgrade.guarded(change, session, console, lambda: checks.wait_for_start(session, None, inputs)):
                apply(lanes[:serving], session, console, hooks)
                ca = None
                if inputs.tls_on:
                    ca = checks.server_ca(inputs, facts, session, console)
                    context = checks.verify_context(inputs, ca, session, console)
                    client = closing.enter_context(httpx.Client(timeout=10.0, verify=context))
                _verify_server(session, client, inputs, console)
            if transfer_due(inputs, facts):
                transfer_objects(inputs, session, console)
            apply(lanes[serving:], session, console, Hooks(stopped=lambda units: _forget(client, inputs, facts, units)))
            _wait_for_workers(session, client, inputs, facts, worker_set, console)
            checks.verify_metadata_guard(session, inputs, console)
            verify_replication(session, inputs, console)
            return ca if ca is not None else inputs.ca
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectError(
            f"The SSH session to {inputs.user}@{inputs.host} broke ({exc or type(exc).__name__}); "
            "run the bootstrap again: it continues where it stopped."
        ) from None


def ready_facts(
    session: HostSession,
    inputs: BootstrapInputs,
    services: tuple[Service, ...],
    console: Console,
    *,
    probe: bool = True,
) -> HostFacts:
    """The host's facts once it can be converged: sudo works, python3 is there, cloud-init is done,
    and (`probe`) the bucket takes the key (checked before the first change: a key the bucket refuses is
    bad input, like a wrong host key)."""
    with console.step("read the host's state"):
        facts = gather_facts(session, services)
    if not facts.sudo_ok:
        raise SudoError(sudo_refused_message(session.user, session.host, facts.sudo_error or ""))
    if not facts.python3:
        raise HostUnsupported(
            f"{session.host} ({facts.os_pretty_name or 'unknown OS'}) has no python3; "
            "the bootstrap needs the distribution's python3 (Debian 12/13 and Ubuntu "
            "24.04 cloud images have it)."
        )
    if facts.cloud_init_status == "error":
        console.warn(
            "cloud-init on the host reports an error (`cloud-init status --long` there "
            "says more); continuing, since SSH with the pinned key works."
        )
    if inputs.storage is not None and probe:
        _probe_bucket(inputs.storage, console)
    if facts.cloud_init_status is not None and facts.cloud_init_status not in _CLOUD_INIT_SETTLED:
        # 0 = done, 2 = done with recoverable errors; only 1 (a fatal error) fails the step.
        wait = Command(
            "cloud-init status --wait >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ]",
            "cloud-init status --wait",
            timeout=inputs.connect_timeout,
        )
        run_step(Step("wait for cloud-init to finish", (wait,)), session, console)
    return facts


def _probe_bucket(storage: StackOutputs, console: Console) -> None:
    with console.step(f"S3 bucket {storage.bucket_name}: put, get, delete"):
        probe_bucket(storage)


def _verify_server(session: HostSession, client: httpx.Client, inputs: BootstrapInputs, console: Console) -> None:
    with (
        journal_on_failure(True, session, console, [prefect_server.UNIT_NAME]),
        console.step("verify the server (health, auth, version, UI)"),
    ):
        checks.wait_for_start(session, client, inputs)
        http(
            lambda: check_server(
                client, api_url=inputs.api_url, auth_string=inputs.auth_string, prefect_version=inputs.prefect_version
            )
        )
    with console.step(f"{WORK_POOL_TYPE} work pool {WORK_POOL_NAME!r}") as status:
        status.changed = http(
            lambda: ensure_work_pool(
                client,
                api_url=inputs.api_url,
                auth_string=inputs.auth_string,
                name=WORK_POOL_NAME,
                pool_type=WORK_POOL_TYPE,
                base_job_template=checks.process_job_template,
            )
        )


def _worker_name(facts: HostFacts, unit: str) -> str:
    """What the unit's `--name %H-%i` makes of it: <hostname>-<instance>."""
    return f"{facts.hostname}-{unit.split('@', 1)[1].removesuffix('.service')}"


def _forget(client: httpx.Client, inputs: BootstrapInputs, facts: HostFacts, units: tuple[str, ...]) -> None:
    for unit in units:
        checks.forget_worker(client, inputs, _worker_name(facts, unit))


def _wait_for_workers(
    session: HostSession,
    client: httpx.Client,
    inputs: BootstrapInputs,
    facts: HostFacts,
    worker_set: Service,
    console: Console,
    *,
    clock_skew: float = 0.0,
) -> None:
    """Wait for the workers of `worker_set` to check in (on a worker host, allowing `clock_skew`
    seconds between its clock and the server's)."""
    units = worker_set.units.names if worker_set.units is not None else ()
    if not units:
        return
    names = {unit: _worker_name(facts, unit) for unit in units}
    described = f"worker {names[units[0]]}" if len(units) == 1 else f"workers {names[units[0]]} ... {names[units[-1]]}"
    with (
        journal_on_failure(True, session, console, units),
        console.step(f"{described} polling pool {WORK_POOL_NAME!r}"),
    ):
        checks.wait_for_workers(session, client, inputs, names, clock_skew=clock_skew)


@contextmanager
def ssh_session(inputs: BootstrapInputs, console: Console) -> Iterator[HostSession]:
    """The SSH session to the host, its key pinned (no trust on first use)."""
    pinned = PinnedHostKey.parse(inputs.host_key, setting="--host-key / hostPublicKey")
    if inputs.identity_file is not None:
        identity = load_private_key_file(inputs.identity_file, setting="--identity")
    else:
        identity = load_private_key(inputs.identity_text or "", source="output sshPrivateKey")
    console.line(f"  host key pinned: {pinned.key_type} {pinned.fingerprint}")
    with console.step(f"connect to {inputs.user}@{inputs.host}"):
        session = HostSession.connect(
            inputs.host,
            user=inputs.user,
            identity=identity,
            host_key=pinned,
            port=inputs.port,
            connect_timeout=inputs.connect_timeout,
            key_grace=GCP_HOST_KEY_GRACE_S if inputs.cloud == "gcp" else 0.0,
        )
    with session:
        yield session


def _import_quietly(module: str) -> None:
    # Any failure is reported by the import where the module is needed.
    with contextlib.suppress(Exception):
        importlib.import_module(module)
