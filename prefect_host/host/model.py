"""What a service declares the host must hold, and the steps that get it there.

A service is data: system users, apt packages, the Prefect virtualenv, files (path, text, mode,
owner) and systemd units, each file saying what a change to it triggers (restart, reload, or
nothing). The planner compares these declarations with the host's facts and yields only the
steps still needed; a step is data too (a name and shell commands run as root), so tests can read
exactly what would run. Secrets only ever travel in a command's stdin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

Trigger = Literal["restart", "reload", "none"]
# The transient unit that compiles a venv's bytecode in the background.
BYTECODE_UNIT = "prefect-host-bytecode.service"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def display_units(names: tuple[str, ...] | list[str]) -> str:
    """How step names call units: template instances read short, prefect-worker@1, @2, @3 ->
    "prefect-worker@{1,2,3}"; other units by their names."""
    if not names:
        return ""
    if "@" not in names[0]:
        return " ".join(names)
    prefix = names[0].split("@", 1)[0]
    numbers = [name.split("@", 1)[1].removesuffix(".service") for name in names]
    return f"{prefix}@{numbers[0]}" if len(numbers) == 1 else f"{prefix}@{{{','.join(numbers)}}}"


@dataclass(frozen=True)
class Command:
    script: str
    label: str
    stdin: bytes | None = field(default=None, repr=False)
    timeout: float = 120.0
    # What the command prints is for the user (e.g. what a restore brought back): shown after the step.
    reports: bool = False


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[Command, ...]
    # The service whose units this step (re)starts: the bootstrap watches them come up.
    starts: str | None = None
    # Units this step stops for good (worker instances): the bootstrap forgets them on the server.
    stops: tuple[str, ...] = ()

    @classmethod
    def shell(
        cls,
        name: str,
        script: str,
        label: str,
        *,
        stdin: bytes | None = None,
        timeout: float = 120.0,
        starts: str | None = None,
        stops: tuple[str, ...] = (),
    ) -> Step:
        """A step of one shell command (most are)."""
        return cls(name, (Command(script, label, stdin=stdin, timeout=timeout),), starts=starts, stops=stops)


@dataclass(frozen=True)
class User:
    """A system user without a login, and the directory it owns (its home).

    `state_directory`: the home is a unit's StateDirectory=, which systemd creates at start and
    chowns (recursively, when its owner is another user: a home inherited from an earlier user), so
    the user's step creates no directory (chowning only the top would stop systemd's recursive fix).
    """

    name: str
    home: str
    comment: str
    home_mode: int = 0o750
    state_directory: bool = False


@dataclass(frozen=True)
class AptPackage:
    name: str
    # One apt source line to install from instead of the host's own sources (a mirror, a test repo).
    source: str | None = None


@dataclass(frozen=True)
class PackageSource:
    """Where the host gets uv and Python packages: a simple index (default PyPI) or a find-links page."""

    index_url: str | None = None
    find_links: str | None = None


@dataclass(frozen=True)
class Venv:
    """A root-owned virtualenv made by uv with the system python3, holding exact pins."""

    path: str
    uv_path: str
    uv_version: str
    pins: tuple[tuple[str, str], ...]  # (distribution, version), e.g. ("prefect", "3.9.1")
    source: PackageSource = PackageSource()
    cache_dir: str = "/var/cache/prefect-host/uv"

    @property
    def python(self) -> str:
        return f"{self.path}/bin/python"

    @property
    def bytecode_marker(self) -> str:
        return f"{self.path}/.bytecode-compiled"

    @property
    def bytecode_tag(self) -> str:
        """What the bytecode marker holds once compiled: the main (first) pin's version."""
        return self.pins[0][1]

    @property
    def pins_text(self) -> str:
        return " ".join(f"{name}=={version}" for name, version in self.pins)


@dataclass(frozen=True)
class File:
    """A file the service needs: `text` None means it must not exist. `systemd`: a unit or drop-in,
    so systemd must reload its configuration after a change."""

    path: str
    text: str | None = field(repr=False)
    mode: int = 0o644
    owner: str = "root"
    on_change: Trigger = "restart"
    systemd: bool = False
    # The step's name when the file changes (default "write <path>").
    describe: str | None = None

    @property
    def step_name(self) -> str:
        return self.describe or (f"remove {self.path}" if self.text is None else f"write {self.path}")


@dataclass(frozen=True)
class Units:
    """The systemd units a service runs, enabled and running.

    `applied` is a file recording what the running units were (re)started with: the digest of the
    restart-triggering files and `version` (and, for reloadable services, of the reload-triggering
    files). A digest that differs from the recorded one means a restart (or a reload); recording it
    only after systemd accepted the command makes an interrupted run redo it.
    """

    names: tuple[str, ...]
    applied: str
    display: str  # "the Prefect server", "Caddy", "prefect-worker@{1,2}": what step names call them
    reload: bool = False  # a change to an on_change="reload" file reloads instead of restarting
    # Numbered instances of a template beyond `names` are stopped and disabled (fewer workers).
    template: str | None = None  # "prefect-worker@.service"


@dataclass(frozen=True)
class Seed:
    """What fills a service's state before its units first start, while `path` does not exist yet
    (a database restored from its replica). The steps run after the service's files; a host that
    has `path` never runs them, so they can never overwrite it."""

    path: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Service:
    """Everything the host must hold for one service. `absent`: the service must not run (its
    units are stopped and disabled, its applied record removed), e.g. Caddy with tls off.
    `after`: services whose steps must all be done before this one's first step; `start_after`:
    before this one (re)starts its units (e.g. a port changes hands)."""

    name: str
    users: tuple[User, ...] = ()
    packages: tuple[AptPackage, ...] = ()
    venv: Venv | None = None
    files: tuple[File, ...] = ()
    units: Units | None = None
    # Anything else the units run with that no file shows (e.g. the installed package versions).
    version: str = ""
    # Why the service must not run ("tls off"); empty: it must.
    absent: str = ""
    # Extra lines for the facts script (run as root), printing `key=value`; read back by the service.
    fact_script: str = ""
    after: tuple[str, ...] = ()
    start_after: tuple[str, ...] = ()
    seed: Seed | None = None

    def restart_digest(self) -> str:
        """What the units must run with: a change means a restart. Version first, then the
        restart-triggering files in declared order (the digest earlier releases recorded)."""
        parts = [self.version] if self.version else []
        parts += [f.text or "" for f in self.files if f.on_change == "restart"]
        return sha256_text("\0".join(parts))

    def reload_digest(self) -> str:
        return sha256_text("\0".join(f.text or "" for f in self.files if f.on_change == "reload"))

    def applied_record(self) -> str:
        """The applied file's content: "<restart digest>", or "<restart> <reload>" when reloadable."""
        if self.units is not None and self.units.reload:
            return f"{self.restart_digest()} {self.reload_digest()}"
        return self.restart_digest()
