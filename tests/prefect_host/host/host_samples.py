"""Samples for the tests that plan and apply: a made-up service, the facts-script output of hosts
(rendered from the services' own declarations, as the facts script prints it), and a session that
records what would run on the host."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prefect_host.host.facts import HostFacts, parse_facts
from prefect_host.host.model import BYTECODE_UNIT, AptPackage, File, Service, Step, Units, User, Venv, sha256_text
from prefect_host.host.planner import Lane, all_steps, plan
from prefect_host.ssh import CommandResult

HOST = """\
login_user=admin
sudo=yes
os_id=debian
os_version_id=13
os_pretty_name=Debian GNU/Linux 13 (trixie)
arch=x86_64
python3=/usr/bin/python3
python3_version=3.13.5
hostname=ph-7
"""
END = "facts_end=1\n"
PACKAGE_VERSION = "2.6.2-13+b1"
VENV_PYTHON = "/usr/bin/python3.13"
STARTED = "@1767225600"  # ActiveEnterTimestamp as `systemctl show --timestamp=unix` prints it

# --- a made-up service: one of each thing a declaration can hold -------------------------------------
WEB_UNIT = "web.service"
WEB_UNIT_PATH = f"/etc/systemd/system/{WEB_UNIT}"
WEB_CONFIG = "/etc/web/web.conf"  # a change restarts
WEB_SITE = "/etc/web/site.conf"  # a change reloads
WEB_NOTES = "/etc/web/notes.txt"  # a change triggers nothing
WEB_RETIRED = "/etc/web/retired.conf"  # must not exist
WEB_APPLIED = "/etc/web/web.applied"
WEB_VENV = Venv(
    path="/opt/web/venv",
    uv_path="/opt/web/bin/uv",
    uv_version="0.13.8",
    pins=(("web-app", "2.0"), ("web-plugins", "1.1")),
    cache_dir="/var/cache/web/uv",
)


def web_service(
    *,
    config: str | None = "port=8080\n",
    site: str | None = "site A\n",
    notes: str = "notes\n",
    unit: str = "[Service]\nExecStart=/opt/web/venv/bin/web\n",
    version: str = "1.0",
    **changes,
) -> Service:
    return Service(
        "web",
        users=(User("web", "/var/lib/web", "Web server"),),
        packages=(AptPackage("nginx-light"),),
        files=(
            File(WEB_UNIT_PATH, unit, systemd=True),
            File(WEB_CONFIG, config, mode=0o600),
            File(WEB_SITE, site, on_change="reload"),
            File(WEB_NOTES, notes, on_change="none"),
            File(WEB_RETIRED, None),
        ),
        units=Units((WEB_UNIT,), applied=WEB_APPLIED, display="the web server", reload=True),
        version=version,
        **changes,
    )


def replace_file(service: Service, path: str, text: str | None) -> Service:
    """The service with the text of its file at `path` replaced."""
    assert any(file.path == path for file in service.files), f"{service.name} declares no {path}"
    return dataclasses.replace(
        service,
        files=tuple(dataclasses.replace(file, text=text) if file.path == path else file for file in service.files),
    )


# --- facts-script output --------------------------------------------------------------------------
def unit_line(name: str, enabled: str = "enabled", state: str = "active", need_reload: str = "no") -> str:
    """One `unit=` line; a unit systemd does not know prints an empty UnitFileState."""
    running = state in ("active", "activating", "reloading")
    return f"unit={name},{enabled},{state},{need_reload},{4242 if running else 0},0,{STARTED if running else ''}\n"


def fresh_output(*services: Service) -> str:
    """What the facts script prints on a host where nothing declared exists yet."""
    lines = []
    for service in services:
        lines += [f"user:{user.name}=\n" for user in service.users]
        lines += [f"apt:{package.name}=\n" for package in service.packages]
        if service.venv is not None:
            lines += [f"venv:{service.venv.path}:python=\n", unit_line(BYTECODE_UNIT, "", "inactive")]
        lines += [f"file:{file.path}=\n" for file in service.files]
        if service.units is not None:
            lines += [unit_line(name, "", "inactive") for name in service.units.names]
    return HOST + "".join(lines) + END


def converged_output(*services: Service, extra: str = "") -> str:
    """What the facts script prints on a host these services were converged on (`extra`: more lines,
    e.g. units the declarations do not name)."""
    lines = []
    for service in services:
        if service.absent:
            lines += [unit_line(name, "disabled", "inactive") for name in service.units.names]
            continue
        for user in service.users:
            lines += [f"user:{user.name}={user.home}\n", f"dir:{user.home}=1\n"]
        lines += [f"apt:{package.name}=installed {PACKAGE_VERSION}\n" for package in service.packages]
        if service.venv is not None:
            lines += venv_lines(service.venv)
        lines += [f"file:{file.path}={'' if file.text is None else sha256_text(file.text)}\n" for file in service.files]
        if service.units is not None:
            lines.append(f"applied:{service.units.applied}={service.applied_record()}\n")
            lines += [unit_line(name) for name in service.units.names]
    return HOST + "".join(lines) + extra + END


def venv_lines(venv: Venv) -> list[str]:
    """A venv with uv, every pin installed and its bytecode compiled."""
    return [
        f"uv:{venv.uv_path}={venv.uv_version}\n",
        f"venv:{venv.path}:python={VENV_PYTHON}\n",
        f"venv:{venv.path}:bytecode={venv.bytecode_tag}\n",
        unit_line(BYTECODE_UNIT, "", "inactive"),
        *(f"venv:{venv.path}:{name.replace('-', '_')}={version}\n" for name, version in venv.pins),
    ]


# --- the facts script, run on this machine ---------------------------------------------------------
# The facts script runs as the SSH user and reads as root through `sudo -n`; the tests run as they are.
STAND_IN_SUDO = '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n'


def put_on_path(bin_dir: Path, commands: Mapping[str, str]) -> dict[str, str]:
    """Stand-in commands (name -> shell script) in `bin_dir`; the environment that finds them first."""
    bin_dir.mkdir(exist_ok=True)
    for name, text in commands.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_facts_here(script: str, bin_dir: Path, commands: Mapping[str, str] | None = None) -> HostFacts:
    """The facts script run by `sh -s` on this machine, as the bootstrap runs it on a host, parsed."""
    env = put_on_path(bin_dir, {"sudo": STAND_IN_SUDO, **(commands or {})})
    result = subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return parse_facts(result.stdout)


# --- planning ----------------------------------------------------------------------------------------
def lanes_for(output: str, *services: Service) -> list[Lane]:
    return plan(parse_facts(output), services)


def steps_for(output: str, *services: Service) -> list[Step]:
    return all_steps(lanes_for(output, *services))


def names(steps: Iterable[Step]) -> list[str]:
    return [step.name for step in steps]


def scripts(steps: Iterable[Step]) -> str:
    return "\n".join(command.script for step in steps for command in step.commands)


def assert_shell_parses(steps: Iterable[Step]) -> None:
    """Every command's shell is valid for dash, the /bin/sh of Debian and Ubuntu."""
    shell = shutil.which("dash") or "sh"
    for step in steps:
        for command in step.commands:
            assert subprocess.run([shell, "-n", "-c", command.script]).returncode == 0, command.script


def assert_secret_only_on_stdin(steps: Iterable[Step], secret: str) -> None:
    for step in steps:
        for command in step.commands:
            assert secret not in command.script and secret not in command.label and secret not in step.name


# --- a session that records -------------------------------------------------------------------------
@dataclass(frozen=True)
class Ran:
    """One command the session was asked to run, and the thread (apply's lane) that asked."""

    script: str
    label: str
    sudo: bool
    stdin: bytes | str | None
    timeout: float
    thread: str


class RecordingSession:
    """Stands in for HostSession: records each command and answers the facts script (`sh -s`) with
    `facts_output`. A command whose label is in `on_run` runs that first (to fail it, to hold it until
    another lane got somewhere, or to return its output)."""

    host = "203.0.113.7"
    user = "admin"

    def __init__(self, facts_output: str = "", on_run: Mapping[str, Callable[[], str | None]] | None = None):
        self.facts_output = facts_output
        self.on_run = dict(on_run or {})
        self.ran: list[Ran] = []
        self._lock = threading.Lock()

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        stdin: bytes | str | None = None,
        timeout: float = 600.0,
        label: str | None = None,
        check: bool = True,
    ) -> CommandResult:
        label = label or command
        with self._lock:
            self.ran.append(Ran(command, label, sudo, stdin, timeout, threading.current_thread().name))
        output = self.on_run[label]() if label in self.on_run else None
        return CommandResult(output or (self.facts_output if command == "sh -s" else ""), "", 0)

    @property
    def labels(self) -> list[str]:
        with self._lock:
            return [ran.label for ran in self.ran]
