"""The Prefect server: its user, its env file (0600, holds the auth string), its hardened unit.

Behind Caddy (tlsMode internal or acme) Prefect listens on 127.0.0.1:4201 only; with tlsMode off it
is the front door itself on 0.0.0.0:4200.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect_host.host.model import File, Seed, Service, Units, User, Venv
from prefect_host.services import metadata_guard
from prefect_host.services.python_env import PREFECT_BIN
from prefect_host.services.systemd import HEADER, env_file_text, sandbox_block
from prefect_host.tls import UPSTREAM_PORT

NAME = "prefect-server"
SERVICE_USER = "prefect"
STATE_DIR = "/var/lib/prefect"  # PREFECT_HOME and the service user's home: SQLite database, UI copy
UI_STATIC_DIR = f"{STATE_DIR}/ui-build"  # Prefect copies the UI here at start; must be writable
CONFIG_DIR = "/etc/prefect-host"
ENV_FILE = f"{CONFIG_DIR}/server.env"
# The digest of (version, unit, env file) the running server was last (re)started with.
APPLIED_FILE = f"{CONFIG_DIR}/server.applied"
UNIT_NAME = "prefect-server.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
API_PORT = 4200
# Prefect's port on loopback behind Caddy (which owns 4200 on every interface).
LOOPBACK_PORT = UPSTREAM_PORT
UI_API_PATH = "/api"


@dataclass(frozen=True)
class ScaleOut:
    """What the server runs with in the scale-out mode (prefect_host.services.scale_out builds it)."""

    env: dict[str, str] = field(repr=False)
    exec_start: str
    needs: str
    migrations: Seed


def server_port(*, tls: bool) -> int:
    """Where Prefect listens: 127.0.0.1:4201 behind Caddy, or 0.0.0.0:4200 itself with tls off."""
    return LOOPBACK_PORT if tls else API_PORT


def service_user() -> User:
    return User(SERVICE_USER, STATE_DIR, "Prefect server")


def env_text(*, auth_string: str, tls: bool, extra: dict[str, str] | None = None) -> str:
    """`extra`: the scale-out mode's settings (database, Redis), after the ones every mode has."""
    return env_file_text(
        {
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
            **(extra or {}),
        }
    )


def unit_text(*, exec_start: str = f"{PREFECT_BIN} server start", needs: str = "") -> str:
    """`exec_start`, `needs` (a unit it wants and starts after): the scale-out mode's API; the
    defaults give the text earlier releases wrote (its digest is on their hosts)."""
    wanted = f"network-online.target {needs}".rstrip()
    return f"""\
{HEADER}
[Unit]
Description=Prefect server (API and UI)
Documentation=https://docs.prefect.io/v3/manage/self-host
Wants={wanted}
After={wanted}

[Service]
Type=simple
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ENV_FILE}
# Prefect reads .env from its working directory: give it one the service owns.
WorkingDirectory={STATE_DIR}
# As root, first: the cloud's metadata service rejects this user (and the workers', Caddy's).
{metadata_guard.EXEC_START_PRE_OPTIONAL}
ExecStart={exec_start}
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
{sandbox_block()}\
# Left off on purpose: MemoryDenyWriteExecute (breaks Python C extensions that use JIT/ctypes
# callbacks) and IPAddressDeny (the server must accept connections from anywhere allowed; the
# metadata service is denied by the guard above, which can spare DNS).

[Install]
WantedBy=multi-user.target
"""


def server_service(
    *,
    venv: Venv,
    auth_string: str,
    tls: bool,
    start_after: tuple[str, ...] = (),
    after: tuple[str, ...] = (),
    fact_script: str = "",
    scale_out: ScaleOut | None = None,
) -> Service:
    """The server's declaration. Files in digest order (unit, env, then the metadata guard its start
    runs): the digest earlier releases recorded, then what this one added. `scale_out`: the API on
    PostgreSQL (its env settings, its command, the unit it needs, its migrations)."""
    unit = unit_text() if scale_out is None else unit_text(exec_start=scale_out.exec_start, needs=scale_out.needs)
    env = env_text(auth_string=auth_string, tls=tls, extra=None if scale_out is None else scale_out.env)
    return Service(
        NAME,
        users=(service_user(),),
        packages=(metadata_guard.PACKAGE,),
        venv=venv,
        files=(
            File(UNIT_PATH, unit, systemd=True, describe=f"install {UNIT_NAME}"),
            File(ENV_FILE, env, mode=0o600),
            metadata_guard.script_file(),
        ),
        units=Units((UNIT_NAME,), applied=APPLIED_FILE, display="the Prefect server"),
        version=venv.pins[0][1],
        start_after=start_after,
        after=after,
        fact_script=fact_script,
        seed=None if scale_out is None else scale_out.migrations,
    )
