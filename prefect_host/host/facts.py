"""What the host looks like now, read in ONE SSH round trip and parsed by a pure function.

The script is assembled from the services' declarations: every declared user, package, venv, file
and unit adds the lines that read its state, and a service may add a fact piece of its own. It
runs as the SSH user, checks `sudo -n`, and reads the rest as root (env files are 0600 root). It
prints `key=value` lines, which `parse_facts` turns into a HostFacts.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prefect_host.errors import HostUnsupported
from prefect_host.host.model import BYTECODE_UNIT, Service, Units, Venv
from prefect_host.ssh import HostSession

_END = "facts_end=1"

_BASE_SCRIPT = """\
cd /
sha() { [ -f "$1" ] && sha256sum "$1" | cut -d' ' -f1; }
. /etc/os-release 2>/dev/null
echo "os_id=$ID"
echo "os_version_id=$VERSION_ID"
echo "os_pretty_name=$PRETTY_NAME"
echo "arch=$(uname -m)"
py=$(command -v python3)
echo "python3=$py"
[ -n "$py" ] && echo "python3_version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
command -v cloud-init >/dev/null 2>&1 &&
  echo "cloud_init_status=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"
# What systemd puts for %H in unit names.
echo "hostname=$(uname -n)"
"""
# Units a template may have: loaded, or enabled but not loaded. One `unit=` line each:
# Id,UnitFileState,ActiveState,NeedDaemonReload,MainPID,NRestarts,ActiveEnterTimestamp (epoch s).
_UNIT_FIELDS = (
    "Id",
    "UnitFileState",
    "ActiveState",
    "NeedDaemonReload",
    "MainPID",
    "NRestarts",
    "ActiveEnterTimestamp",
)
_AWK_RECORD = 'print "unit=" ' + ' "," '.join(f'v["{p}"]' for p in _UNIT_FIELDS)


def _show_units(units: str) -> str:
    """Shell lines printing one `unit=` line per unit in `units` (a shell word list)."""
    return (
        "systemctl show --timestamp=unix "
        + " ".join(f"-p {p}" for p in _UNIT_FIELDS)
        + f" {units} 2>/dev/null | awk -F= '\n"
        f'  /^$/ {{ if (v["Id"] != "") {_AWK_RECORD}; delete v; next }}\n'
        "  { v[$1] = substr($0, length($1) + 2) }\n"
        f'  END {{ if (v["Id"] != "") {_AWK_RECORD} }}\'\n'
    )


@dataclass(frozen=True)
class UnitState:
    """One unit as systemd sees it."""

    name: str
    enabled: str = ""  # UnitFileState: enabled, disabled, static, ... ("" when unknown to systemd)
    active_state: str = ""
    need_daemon_reload: bool = False
    main_pid: int = 0
    restarts: int = 0
    since: float = float("inf")  # when it last became active (epoch s); inf: never

    @property
    def running(self) -> bool:
        """Running or about to (activating covers a pending automatic restart)."""
        return self.active_state in ("active", "activating", "reloading")

    @property
    def instance(self) -> str:
        """prefect-worker@2.service -> "2"."""
        return self.name.split("@", 1)[1].removesuffix(".service") if "@" in self.name else ""


@dataclass(frozen=True)
class HostFacts:
    login_user: str
    sudo_ok: bool
    values: Mapping[str, str] = field(default_factory=dict, repr=False)
    units: Mapping[str, UnitState] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.values.get(key) or None

    # --- the host itself -----------------------------------------------------------------------
    @property
    def sudo_error(self) -> str | None:
        return self.get("sudo_error")

    @property
    def python3(self) -> str | None:
        return self.get("python3")

    @property
    def os_pretty_name(self) -> str | None:
        return self.get("os_pretty_name")

    @property
    def hostname(self) -> str | None:
        return self.get("hostname")

    @property
    def cloud_init_status(self) -> str | None:
        """None: no cloud-init on this host."""
        return (self.values["cloud_init_status"] or "unknown") if "cloud_init_status" in self.values else None

    # --- declared resources --------------------------------------------------------------------
    def file_sha256(self, path: str) -> str | None:
        return self.get(f"file:{path}")

    def applied(self, path: str) -> str | None:
        return self.get(f"applied:{path}")

    def user_home(self, name: str) -> str | None:
        return self.get(f"user:{name}")

    def dir_exists(self, path: str) -> bool:
        return self.values.get(f"dir:{path}") == "1"

    def apt_version(self, name: str) -> str | None:
        status, _, version = self.values.get(f"apt:{name}", "").partition(" ")
        return (version or None) if status == "installed" else None

    def unit(self, name: str) -> UnitState:
        return self.units.get(name) or UnitState(name)

    def venv_version(self, venv: Venv, distribution: str) -> str | None:
        return self.get(f"venv:{venv.path}:{_dist_dir_name(distribution)}")


def _dist_dir_name(distribution: str) -> str:
    """A distribution's *.dist-info prefix: prefect-aws -> prefect_aws (PEP 427 escaping)."""
    return distribution.replace("-", "_")


def _unit_lines(units: Units) -> str:
    names = " ".join(shlex.quote(name) for name in units.names)
    if units.template is None:
        return _show_units(names)
    glob = units.template.replace("@.", "@*.")  # our own unit name: no quoting, so the shell globs it
    # Every instance systemd knows (loaded, or enabled but not loaded), and the wanted ones.
    return (
        f"units=$( {{ systemctl list-units --all --plain --no-legend '{glob}' 2>/dev/null | cut -d' ' -f1\n"
        f"  (cd /etc/systemd/system/multi-user.target.wants 2>/dev/null && ls -d {glob} 2>/dev/null)\n"
        f"  printf '%s\\n' {names}; }} | sort -u)\n"
        f'[ -n "$units" ] && {_show_units("$units")}'
    )


def _venv_lines(venv: Venv) -> str:
    q = shlex.quote
    lines = [
        f'[ -x {q(venv.uv_path)} ] && echo "uv:{venv.uv_path}=$({q(venv.uv_path)} --version 2>/dev/null | '
        "cut -d' ' -f2)\"",
        f'echo "venv:{venv.path}:python=$(readlink -e {q(venv.python)})"',
        f'[ -f {q(venv.bytecode_marker)} ] && echo "venv:{venv.path}:bytecode=$(cat {q(venv.bytecode_marker)})"',
        _show_units(BYTECODE_UNIT).rstrip("\n"),
    ]
    for name, _ in venv.pins:
        dist = _dist_dir_name(name)
        lines.append(
            f"for d in {q(venv.path)}/lib/python3*/site-packages/{dist}-*.dist-info; do\n"
            f'  [ -d "$d" ] && v="${{d##*/{dist}-}}" && echo "venv:{venv.path}:{dist}=${{v%.dist-info}}"\n'
            "done"
        )
    return "\n".join(lines) + "\n"


def facts_script(services: Iterable[Service]) -> str:
    """The whole facts script for these services: one round trip."""
    q = shlex.quote
    parts: list[str] = []
    venvs: set[str] = set()  # a venv two services share is read once
    for service in services:
        for user in service.users:
            parts.append(
                f'echo "user:{user.name}=$(getent passwd {q(user.name)} | cut -d: -f6)"\n'
                f'[ -d {q(user.home)} ] && echo "dir:{user.home}=1"\n'
            )
        for package in service.packages:
            parts.append(
                f"echo \"apt:{package.name}=$(dpkg-query -W -f='${{db:Status-Status}} ${{Version}}' "
                f'{q(package.name)} 2>/dev/null)"\n'
            )
        if service.venv is not None and service.venv.path not in venvs:
            venvs.add(service.venv.path)
            parts.append(_venv_lines(service.venv))
        for file in service.files:
            parts.append(f'echo "file:{file.path}=$(sha {q(file.path)})"\n')
        if service.units is not None:
            applied = q(service.units.applied)
            parts.append(f'[ -f {applied} ] && echo "applied:{service.units.applied}=$(cat {applied})"\n')
            parts.append(_unit_lines(service.units))
        if service.seed is not None:
            parts.append(f'[ -e {q(service.seed.path)} ] && echo "exists:{service.seed.path}=1"\n')
        parts.append(service.fact_script)
    root_script = _BASE_SCRIPT + "".join(parts) + f'echo "{_END}"\n'
    return (
        'echo "login_user=$(id -un)"\n'
        "if ! sudo -n true 2>/dev/null; then\n"
        f'  echo "sudo=no"; echo "sudo_error=$(sudo -n true 2>&1 | head -n 1)"; echo "{_END}"; exit 0\n'
        "fi\n"
        'echo "sudo=yes"\n'
        f"sudo -n sh <<'ROOT_FACTS'\n{root_script}ROOT_FACTS\n"
    )


def parse_facts(text: str) -> HostFacts:
    """Parse the facts script's output. Raises if it was cut short (no end marker)."""
    values: dict[str, str] = {}
    units: dict[str, UnitState] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "unit":
            unit = _parse_unit(value)
            units[unit.name] = unit
        else:
            values[key] = value
    if values.get("facts_end") != "1":
        raise HostUnsupported(
            f"Reading the host's state failed: the facts script stopped early (its output: {text.strip()[-300:]!r})."
        )
    return HostFacts(
        login_user=values.get("login_user", ""), sudo_ok=values.get("sudo") == "yes", values=values, units=units
    )


def _parse_unit(value: str) -> UnitState:
    name, enabled, active, reload, pid, restarts, since = (value.split(",") + [""] * 7)[:7]
    try:
        started = float(since.lstrip("@")) if since.strip() else float("inf")
    except ValueError:
        started = float("inf")
    return UnitState(name, enabled, active, reload == "yes", _as_int(pid), _as_int(restarts), started)


def _as_int(text: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def gather_facts(session: HostSession, services: Iterable[Service]) -> HostFacts:
    result = session.run("sh -s", stdin=facts_script(services), timeout=60, label="read the host's state")
    return parse_facts(result.stdout)


def unit_states(session: HostSession, names: Iterable[str]) -> dict[str, UnitState]:
    """The current state of some units (to watch a start), in one command."""
    script = _show_units(" ".join(shlex.quote(name) for name in names))
    out = session.run(script, timeout=30, label="systemctl show").stdout
    return {
        unit.name: unit
        for unit in (_parse_unit(line.partition("=")[2]) for line in out.splitlines() if line.startswith("unit="))
    }
