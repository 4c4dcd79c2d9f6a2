"""The services one host runs for these inputs, in lane order: Litestream, Redis, the server, the
background services, Caddy (converged and verified first), then the workers."""

from __future__ import annotations

from dataclasses import dataclass

from prefect_host.host.model import File, PackageSource, Service, Venv
from prefect_host.profile import results_settings
from prefect_host.services import caddy, litestream, prefect_server, redis, scale_out, workers
from prefect_host.services.python_env import prefect_venv

from . import database_switch, upgrade
from .inputs import WORK_POOL_NAME, BootstrapInputs
from .worker_host_inputs import DEFAULT_QUEUE


@dataclass(frozen=True)
class HostServices:
    backup: Service
    redis: Service
    server: Service
    services: Service
    front: Service
    workers: Service

    @property
    def serving(self) -> list[Service]:
        """What must run (and be verified) before the workers start."""
        return [self.backup, self.redis, self.server, self.services, self.front]

    @property
    def all(self) -> list[Service]:
        return [*self.serving, self.workers]


def host_services(inputs: BootstrapInputs) -> HostServices:
    replica, database = inputs.backup.replica, inputs.database
    extra = ((litestream.DISTRIBUTION, litestream.LITESTREAM_VERSION),) if replica else ()
    if database is not None:
        extra += ((scale_out.PREFECT_REDIS_DISTRIBUTION, scale_out.PREFECT_REDIS_VERSION),)
    venv = prefect_venv(inputs.prefect_version, PackageSource(inputs.index_url, inputs.find_links), extra_pins=extra)
    # The database is restored (when the host has none) before Prefect first starts: the server's
    # lane waits for Litestream's, which installs the venv, restores, then replicates.
    backup = litestream.litestream_service(
        venv=venv,
        replica=replica,
        restore=inputs.backup.restore,
        restore_at=inputs.backup.restore_at,
        absent=inputs.backup.off_reason,
    )
    sqlite = "database sqlite"
    absent = sqlite if database is None else ""
    cache = redis.redis_service(inputs.auth_string, apt_source=inputs.tls.apt_source, absent=absent)
    # Port 4200 changes hands: with TLS, Prefect moves to loopback before Caddy (re)starts and binds
    # 4200; with tls off, Caddy lets go of it before Prefect binds it. Redis is up before the API is.
    server = prefect_server.server_service(
        venv=venv,
        auth_string=inputs.auth_string,
        tls=inputs.tls_on,
        start_after=(() if inputs.tls_on else (caddy.NAME,)) + ((redis.NAME,) if database is not None else ()),
        after=(litestream.NAME,),
        fact_script=upgrade.DB_FACT_SCRIPT + database_switch.FACT_SCRIPT,
        scale_out=None
        if database is None
        else scale_out.server_scale_out(database, auth_string=inputs.auth_string, version=inputs.prefect_version),
    )
    services = scale_out.services_service(server=server, absent=absent)
    front = caddy.caddy_service(inputs.tls, start_after=(prefect_server.NAME,) if inputs.tls_on else ())
    # With worker hosts, the server's own workers (--server-workers) poll the default queue only (see
    # worker_host_inputs): runs pinned to a worker host's queue stay there.
    queue = DEFAULT_QUEUE if inputs.worker_hosts else None
    worker_set = worker_service(inputs, venv, count=inputs.workers, queue=queue)
    return HostServices(backup, cache, server, services, front, worker_set)


def worker_service(
    inputs: BootstrapInputs,
    venv: Venv,
    *,
    count: int,
    queue: str | None,
    api_url: str | None = None,
    ca_file: str | None = None,
    extra: tuple[File, ...] = (),
) -> Service:
    """The worker units polling the stack's pool, with the auth string and the result storage in their env
    file; `api_url` (and `ca_file`) for a worker host, which reaches the server over the network."""
    results = results_settings(inputs.results_block) if inputs.results_block else {}
    env = workers.env_text(
        auth_string=inputs.auth_string,
        ui_url=inputs.ui_url,
        tls=inputs.tls_on,
        result_settings=results,
        api_url=api_url,
        ca_file=ca_file,
    )
    return workers.workers_service(count=count, pool=WORK_POOL_NAME, venv=venv, env=env, queue=queue, extra=extra)
