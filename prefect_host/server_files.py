"""Where things live on the host, and the text of the two files that configure the server.

The env file holds the auth string, so it is root-owned 0600 and read by systemd
(EnvironmentFile=) before it drops to the service user; the unit holds no secret.
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


def env_file_text(*, api_url: str, auth_string: str) -> str:
    settings = {
        "PREFECT_HOME": STATE_DIR,
        "PREFECT_SERVER_API_HOST": "0.0.0.0",
        "PREFECT_SERVER_API_PORT": str(API_PORT),
        # What the browser UI calls; unset, it would be told http://0.0.0.0:4200/api.
        "PREFECT_SERVER_UI_API_URL": api_url,
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        "PREFECT_SERVER_UI_STATIC_DIRECTORY": UI_STATIC_DIR,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    lines = ["# Written by prefect-host's bootstrap; a change here is overwritten by the next run."]
    lines += [f"{name}={env_value(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def unit_text() -> str:
    return f"""\
# Written by prefect-host's bootstrap; a change here is overwritten by the next run.
[Unit]
Description=Prefect server (API and UI on port {API_PORT})
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
