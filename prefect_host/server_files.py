"""Where things live on the host, and the text of the files that configure the server and its workers.

The env files hold the auth string, so they are root-owned 0600 and read by systemd
(EnvironmentFile=) before it drops to the service user; the units hold no secret.
"""

from __future__ import annotations

import hashlib

SERVICE_USER = "prefect"
STATE_DIR = "/var/lib/prefect"  # PREFECT_HOME and the service user's home: SQLite database, UI copy
UI_STATIC_DIR = f"{STATE_DIR}/ui-build"  # Prefect copies the UI here at start; must be writable
INSTALL_DIR = "/opt/prefect-host"
UV_PATH = f"{INSTALL_DIR}/bin/uv"
VENV_DIR = f"{INSTALL_DIR}/venv"
PREFECT_BIN = f"{VENV_DIR}/bin/prefect"
UV_CACHE_DIR = "/var/cache/prefect-host/uv"
CONFIG_DIR = "/etc/prefect-host"
ENV_FILE = f"{CONFIG_DIR}/server.env"
# The digest of (unit, env file, version) the running server was last (re)started with.
APPLIED_DIGEST_FILE = f"{CONFIG_DIR}/server.applied"
# Written by the background bytecode job when it has compiled the venv for that Prefect version.
BYTECODE_MARKER = f"{VENV_DIR}/.bytecode-compiled"
BYTECODE_UNIT = "prefect-host-bytecode.service"
UNIT_NAME = "prefect-server.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
API_PORT = 4200
# Prefect's port on loopback behind Caddy (prefect_host.tls).
LOOPBACK_PORT = 4201
UI_API_PATH = "/api"

# The workers: a template unit, one instance per worker process (prefect-worker@1 ... @N).
WORKER_UNIT_TEMPLATE = "prefect-worker@.service"
WORKER_UNIT_PATH = f"/etc/systemd/system/{WORKER_UNIT_TEMPLATE}"
WORKER_ENV_FILE = f"{CONFIG_DIR}/worker.env"
# The digest of (unit, env file, versions) the running workers were last (re)started with.
WORKER_APPLIED_DIGEST_FILE = f"{CONFIG_DIR}/worker.applied"
# PREFECT_HOME and HOME of the workers and their flow runs; the server's STATE_DIR is hidden from them.
WORKER_STATE_DIR = "/var/lib/prefect-worker"  # StateDirectory=prefect-worker
# How often a worker asks the server for runs (Prefect 3.9's default is 10 s). Measured on a local
# host, from a `deploy --run-now` to the run's Completed state (a 4 s flow, median of 5): 11.1 s at
# 15 s, 6.1 s at 5 s, 5.1 s at 2 s. 5 s takes most of the gain; a poll is one small request to the
# server on loopback. Scheduled runs do not wait for it: workers fetch them 10 s ahead
# (PREFECT_WORKER_PREFETCH_SECONDS), longer than this interval.
WORKER_QUERY_SECONDS = 5


def worker_unit_name(instance: int | str) -> str:
    return f"prefect-worker@{instance}.service"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def env_value(value: str) -> str:
    """Quote a value for a systemd EnvironmentFile.

    Inside single quotes systemd takes every character literally; a value that itself holds a
    single quote goes in double quotes, where systemd honours backslash escapes for \\ " ` $.
    """
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("environment values cannot contain line breaks or NUL")
    if "'" not in value:
        return f"'{value}'"
    escaped = "".join("\\" + c if c in '\\"`$' else c for c in value)
    return f'"{escaped}"'


def server_port(*, tls: bool) -> int:
    """Where Prefect listens: 127.0.0.1:4201 behind Caddy (which owns 4200 on every interface),
    or 0.0.0.0:4200 itself when the stack's tlsMode is off."""
    return LOOPBACK_PORT if tls else API_PORT


def env_file_text(*, auth_string: str, tls: bool) -> str:
    settings = {
        "PREFECT_HOME": STATE_DIR,
        "PREFECT_SERVER_API_HOST": "127.0.0.1" if tls else "0.0.0.0",
        "PREFECT_SERVER_API_PORT": str(server_port(tls=tls)),
        # What the browser UI calls, resolved against the page's own origin: the UI opened at
        # https://<ip or domain>[:4200] calls the API there (checked in Chromium with both UIs), so a
        # new domain or TLS mode needs no restart. Unset, it would be http://0.0.0.0:4200/api.
        "PREFECT_SERVER_UI_API_URL": UI_API_PATH,
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        "PREFECT_SERVER_UI_STATIC_DIRECTORY": UI_STATIC_DIR,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    lines = ["# Written by prefect-host's bootstrap; a change here is overwritten by the next run."]
    lines += [f"{name}={env_value(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def worker_env_file_text(*, auth_string: str, ui_url: str, result_settings: dict[str, str], tls: bool) -> str:
    """The workers' settings; a flow run inherits them, so result storage goes here too (the
    laptop profile's settings do not reach a run that a worker starts)."""
    settings = {
        "PREFECT_HOME": WORKER_STATE_DIR,
        # The server on this host: loopback, never leaves the machine (so no TLS needed).
        "PREFECT_API_URL": f"http://127.0.0.1:{server_port(tls=tls)}/api",
        "PREFECT_API_AUTH_STRING": auth_string,
        # Links in flow-run logs ("View at ...") point at the UI users open, not at loopback.
        "PREFECT_UI_URL": ui_url,
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        **result_settings,
    }
    lines = ["# Written by prefect-host's bootstrap; a change here is overwritten by the next run."]
    lines += [f"{name}={env_value(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def unit_text() -> str:
    return f"""\
# Written by prefect-host's bootstrap; a change here is overwritten by the next run.
[Unit]
Description=Prefect server (API and UI)
Documentation=https://docs.prefect.io/v3/manage/self-host
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ENV_FILE}
# Prefect reads .env from its working directory: give it one the service owns.
WorkingDirectory={STATE_DIR}
ExecStart={PREFECT_BIN} server start
# always, not on-failure: `systemctl kill` sends SIGTERM, on which the server shuts down cleanly,
# and on-failure counts that as a clean exit and leaves the server down (checked on Debian 13).
# `systemctl stop` still stops it for good.
Restart=always
RestartSec=2
TimeoutStopSec=30
StateDirectory=prefect
StateDirectoryMode=0750
UMask=0077

# Sandbox: `systemd-analyze security {UNIT_NAME}` rates this unit about 1.x ("OK").
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
DevicePolicy=closed
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# Left off on purpose: MemoryDenyWriteExecute (breaks Python C extensions that use JIT/ctypes
# callbacks) and IPAddressDeny (the server must accept connections from anywhere allowed).

[Install]
WantedBy=multi-user.target
"""


def worker_unit_text(*, pool: str) -> str:
    """The template unit: instance %i is worker `<hostname>-%i` on `pool`.

    The worker runs users' flow code, so its sandbox differs from the server's where code needs
    it: a writable HOME and /tmp of its own, the full /proc (psutil, numpy read /proc/meminfo),
    netlink sockets (interface lookups) and the @resources system calls (nice, CPU affinity).
    The server's database and state are out of reach (InaccessiblePaths), though it is the same user.
    """
    return f"""\
# Written by prefect-host's bootstrap; a change here is overwritten by the next run.
[Unit]
Description=Prefect worker %i (work pool {pool})
Documentation=https://docs.prefect.io/v3/advanced/daemonize-processes
Wants=network-online.target
# Started after the local server at boot; until the server answers, the worker keeps retrying.
After=network-online.target {UNIT_NAME}

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={WORKER_ENV_FILE}
# Flow code may write to ~ (caches, config): not the service user's home, which is the server's state.
Environment=HOME={WORKER_STATE_DIR}
WorkingDirectory={WORKER_STATE_DIR}
ExecStart={PREFECT_BIN} worker start --pool {pool} --type process --name %H-%i
# always: back after a crash, an OOM kill or `systemctl kill` alike; `systemctl stop` stops it.
Restart=always
RestartSec=5
TimeoutStopSec=30
StateDirectory=prefect-worker
StateDirectoryMode=0750
UMask=0077

# Sandbox: `systemd-analyze security prefect-worker@1.service` rates this unit about 1.x ("OK").
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
InaccessiblePaths=-{STATE_DIR}
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
DevicePolicy=closed
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# Left off on purpose: MemoryDenyWriteExecute (JITs and ctypes callbacks in flow code),
# ProcSubset=pid (hides /proc/meminfo and /proc/cpuinfo), and RemoveIPC (it removes every IPC
# object of the user: stopping one worker would pull them from under the other workers' runs).

[Install]
WantedBy=multi-user.target
"""
