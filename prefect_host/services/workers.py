"""The workers on a host: instances 1..N of a template unit, one env file (0600) for all.

A flow run inherits the worker's environment, so result storage settings go here too (the
laptop profile's settings do not reach a run that a worker starts).

Workers, and so the flow code they run, are a user of their own (FLOW_USER), not the server's: a
flow can neither signal the server or Caddy nor read their files, even through /proc/<pid>/root.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from prefect_host.caddy import CADDY_HOME
from prefect_host.host.model import File, Service, Units, User, Venv, display_units
from prefect_host.services import metadata_guard
from prefect_host.services.prefect_server import CONFIG_DIR, STATE_DIR, UNIT_NAME, server_port
from prefect_host.services.python_env import PREFECT_BIN, venv_version
from prefect_host.services.systemd import HEADER, env_file_text, sandbox_block
from prefect_host.ssh import HostSession

NAME = "workers"
UNIT_TEMPLATE = "prefect-worker@.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE}"
ENV_FILE = f"{CONFIG_DIR}/worker.env"
# The digest of (versions, unit, env file) the running workers were last (re)started with.
APPLIED_FILE = f"{CONFIG_DIR}/worker.applied"
# PREFECT_HOME and HOME of the workers and their flow runs; the server's STATE_DIR is hidden from them.
STATE_DIR_WORKERS = "/var/lib/prefect-worker"  # StateDirectory=prefect-worker
# The user workers and flow runs are. A system user, not DynamicUser=: its files keep their owner
# across restarts, and DynamicUser= implies RemoveIPC= (see the unit). Hosts converged before it
# existed ran workers as the server's user: the restart that switches them has systemd chown the
# state directory (StateDirectory=) over to this user.
FLOW_USER = "prefect-flow"
# What flow code must not read, even where file modes would let it: the server's database, every
# env file (root 0600 in a root 0700 directory), Caddy's CA key.
HIDDEN_PATHS = (STATE_DIR, CONFIG_DIR, CADDY_HOME)
# How often a worker asks the server for runs (Prefect 3.9's default is 10 s). Measured on a local
# host, from a `deploy --run-now` to the run's Completed state (a 4 s flow, median of 5): 11.1 s at
# 15 s, 6.1 s at 5 s, 5.1 s at 2 s. 5 s takes most of the gain; a poll is one small request to the
# server on loopback. Scheduled runs do not wait for it: workers fetch them 10 s ahead
# (PREFECT_WORKER_PREFETCH_SECONDS), longer than this interval.
QUERY_SECONDS = 5


def running_units(session: HostSession) -> list[str]:
    """The worker instances running now (to stop them around a database swap and start them again)."""
    listed = session.run(
        f"systemctl list-units --state=active --plain --no-legend {shlex.quote(unit_name('*'))}",
        sudo=True,
        timeout=30,
        label="systemctl list-units",
    )
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def flow_user() -> User:
    return User(FLOW_USER, STATE_DIR_WORKERS, "Prefect workers and flow runs", state_directory=True)


def unit_name(instance: int | str) -> str:
    return f"prefect-worker@{instance}.service"


def env_text(
    *,
    auth_string: str,
    ui_url: str,
    result_settings: Mapping[str, str],
    tls: bool,
    api_url: str | None = None,
    ca_file: str | None = None,
) -> str:
    """`api_url` (and `ca_file`, the CA it is verified against; None: the system trust store): a worker
    host's, which reaches the server over the network."""
    remote = {} if ca_file is None else {"PREFECT_API_SSL_CERT_FILE": ca_file}
    return env_file_text(
        {
            "PREFECT_HOME": STATE_DIR_WORKERS,
            # The server on this host: loopback, never leaves the machine (so no TLS needed).
            "PREFECT_API_URL": api_url or f"http://127.0.0.1:{server_port(tls=tls)}/api",
            **remote,
            "PREFECT_API_AUTH_STRING": auth_string,
            # Links in flow-run logs ("View at ...") point at the UI users open, not at loopback.
            "PREFECT_UI_URL": ui_url,
            "PREFECT_WORKER_QUERY_SECONDS": str(QUERY_SECONDS),
            **result_settings,
        }
    )


def unit_text(*, pool: str, queue: str | None = None) -> str:
    """The template unit: instance %i is worker `<hostname>-%i` on `pool`.

    The worker runs users' flow code, so its sandbox differs from the server's where code needs
    it: a writable HOME and /tmp of its own, the full /proc (psutil, numpy read /proc/meminfo),
    netlink sockets (interface lookups) and the @resources system calls (nice, CPU affinity).
    It runs as FLOW_USER, and the server's and Caddy's state and every env file are hidden from it.
    """
    queue_option = f" --work-queue {queue}" if queue else ""
    sandbox = sandbox_block(
        inaccessible=HIDDEN_PATHS,
        proc_subset=False,
        remove_ipc=False,
        address_families="AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        denied_calls="@privileged",
    )
    return f"""\
{HEADER}
[Unit]
Description=Prefect worker %i (work pool {pool})
Documentation=https://docs.prefect.io/v3/advanced/daemonize-processes
Wants=network-online.target
# Started after the local server at boot; until the server answers, the worker keeps retrying.
After=network-online.target {UNIT_NAME}

[Service]
Type=simple
User={FLOW_USER}
Group={FLOW_USER}
EnvironmentFile={ENV_FILE}
# Flow code may write to ~ (caches, config): its own state directory, the user's home.
Environment=HOME={STATE_DIR_WORKERS}
WorkingDirectory={STATE_DIR_WORKERS}
# As root, first: the cloud's metadata service rejects this user (no worker, no flow run without it).
{metadata_guard.EXEC_START_PRE}
ExecStart={PREFECT_BIN} worker start --pool {pool} --type process --name %H-%i{queue_option}
# always: back after a crash, an OOM kill or `systemctl kill` alike; `systemctl stop` stops it.
Restart=always
RestartSec=5
TimeoutStopSec=30
StateDirectory=prefect-worker
StateDirectoryMode=0750
UMask=0077

# Sandbox: `systemd-analyze security prefect-worker@1.service` rates this unit about 1.x ("OK").
{sandbox}\
# Left off on purpose: MemoryDenyWriteExecute (JITs and ctypes callbacks in flow code),
# ProcSubset=pid (hides /proc/meminfo and /proc/cpuinfo), and RemoveIPC (it removes every IPC
# object of the user: stopping one worker would pull them from under the other workers' runs).

[Install]
WantedBy=multi-user.target
"""


def workers_service(
    *, count: int, pool: str, venv: Venv, env: str, queue: str | None = None, extra: tuple[File, ...] = ()
) -> Service:
    """Worker instances 1..count (others numbered ones are stopped). Files in digest order (unit,
    env) after the versions: the digest earlier releases recorded; then `extra` (a worker host's
    server CA), whose change restarts them too."""
    names = tuple(unit_name(i) for i in range(1, count + 1))
    return Service(
        NAME,
        # Without workers, no flow user (a server whose flows run on worker hosts): a user that no unit
        # runs as would also have no metadata-guard rule until the next start of a guarded unit.
        users=(flow_user(),) if count else (),
        venv=venv,
        files=(
            File(UNIT_PATH, unit_text(pool=pool, queue=queue), systemd=True, describe=f"install {UNIT_TEMPLATE}"),
            File(ENV_FILE, env, mode=0o600),
            *extra,
        ),
        units=Units(names, applied=APPLIED_FILE, display=display_units(names), template=UNIT_TEMPLATE),
        version=venv_version(venv),
    )
