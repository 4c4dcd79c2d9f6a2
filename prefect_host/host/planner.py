"""From (facts, declarations) to the steps still needed: one pure function, pyinfra-style.

Each service gets a lane of steps: first what it needs in place (users, packages, the venv,
files, enabled units), then what runs it ((re)start, reload, start of stopped units). Lanes run
concurrently where the services allow (apply.py): a lane waits for the lanes in its service's
`after` before its first step, and for those in `start_after` before it (re)starts anything. A
converged host yields lanes without steps, so a re-run changes nothing and restarts nothing.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect_host.host.facts import HostFacts, UnitState
from prefect_host.host.model import Command, File, Service, Step, display_units, sha256_text
from prefect_host.host.packages import bytecode_compile_steps, create_user, install_apt, venv_install_steps
from prefect_host.ssh import write_file_script


@dataclass(frozen=True)
class Lane:
    service: Service
    prepare: tuple[Step, ...]
    start: tuple[Step, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.prepare + self.start


def plan(facts: HostFacts, services: Sequence[Service]) -> list[Lane]:
    """One lane per service, in declaration order; a converged host's lanes have no steps."""
    lanes = []
    planned_venvs: set[str] = set()
    planned_users: set[str] = set()
    for service in services:
        if service.absent:
            # Its units stop first, then the files it leaves behind go (only those declared absent).
            removals = _file_steps(facts, dataclasses.replace(service, files=_absent_files(service)))
            lanes.append(Lane(service, (), tuple(_remove(facts, service) + removals)))
            continue
        # A user two services share (the server and Litestream) is planned by the first that declares it.
        prepare = [
            create_user(user)
            for user in service.users
            if user.name not in planned_users
            and (facts.user_home(user.name) is None or not (user.state_directory or facts.dir_exists(user.home)))
        ]
        planned_users.update(user.name for user in service.users)
        prepare += [install_apt(package) for package in service.packages if facts.apt_version(package.name) is None]
        # A venv two services share (server and workers) is planned by the first that declares it.
        owns_venv = service.venv is not None and service.venv.path not in planned_venvs
        venv_steps, venv_refilled = venv_install_steps(facts, service.venv) if owns_venv else ([], False)
        if owns_venv:
            planned_venvs.add(service.venv.path)
        prepare += venv_steps + _file_steps(facts, service)
        if service.seed is not None and facts.get(f"exists:{service.seed.path}") is None:
            prepare += service.seed.steps
        start = _unit_steps(facts, service)
        if owns_venv:
            start += bytecode_compile_steps(facts, service.venv, venv_refilled)
        lanes.append(Lane(service, tuple(prepare), tuple(start)))
    return lanes


def _absent_files(service: Service) -> tuple[File, ...]:
    return tuple(file for file in service.files if file.text is None)


def all_steps(lanes: Sequence[Lane]) -> list[Step]:
    return [step for lane in lanes for step in lane.steps]


# --- files -----------------------------------------------------------------------------------------
def _file_steps(facts: HostFacts, service: Service) -> list[Step]:
    """Changed files, plain ones first (units refer to them), then units and drop-ins, with one
    daemon-reload per step that writes a unit (or when systemd has pending changes)."""
    steps = []
    pending_reload = any(state.need_daemon_reload for state in _known_units(facts, service))
    for file in sorted(service.files, key=lambda f: f.systemd):
        wanted = None if file.text is None else sha256_text(file.text)
        if facts.file_sha256(file.path) == wanted and not (file.systemd and pending_reload):
            continue
        if file.text is None:
            commands = (Command(f"rm -f {shlex.quote(file.path)}", f"rm {file.path}"),)
        else:
            commands = (write_file(file),)
        if file.systemd:
            commands += (Command("systemctl daemon-reload", "systemctl daemon-reload"),)
            pending_reload = False
        steps.append(Step(file.step_name, commands))
    return steps


def _known_units(facts: HostFacts, service: Service) -> list[UnitState]:
    """The service's units as systemd knows them: the wanted ones and, for a template, every instance."""
    units = service.units
    if units is None:
        return []
    known = [facts.unit(name) for name in units.names]
    if units.template is not None:
        prefix = units.template.split("@", 1)[0] + "@"
        known += [state for state in facts.units.values() if state.name.startswith(prefix)]
    return known


def write_file(file: File) -> Command:
    return Command(
        write_file_script(file.path, mode=file.mode, owner=file.owner),
        f"write {file.path}",
        stdin=(file.text or "").encode(),
    )


# --- units -------------------------------------------------------------------------------------
def _systemctl(
    name: str,
    verb: str,
    units: list[str] | tuple[str, ...],
    *,
    quiet: bool = False,
    then: str = "",
    starts: str | None = None,
    stops: tuple[str, ...] = (),
) -> Step:
    """A step of one systemctl command on `units`; `then` runs only once systemd accepted it."""
    words = " ".join(units)
    script = f"systemctl {verb}{' --quiet' if quiet else ''} {words}" + (f" && {then}" if then else "")
    return Step.shell(name, script, f"systemctl {verb} {words}", starts=starts, stops=stops)


def _unit_steps(facts: HostFacts, service: Service) -> list[Step]:
    units = service.units
    if units is None:
        return []
    states = {name: facts.unit(name) for name in units.names}
    steps = _prune_instances(facts, service)
    not_enabled = [name for name, state in states.items() if state.enabled != "enabled"]
    if not_enabled:
        steps.append(_systemctl(f"enable {display_units(not_enabled)}", "enable", not_enabled, quiet=True))
    if not units.names:
        return steps
    recorded = (facts.applied(units.applied) or "").split(" ")
    wanted = service.applied_record().split(" ")
    # A template's instance that systemd is about to restart counts as running; a single unit must be active.
    up = [
        name for name, state in states.items() if (state.running if units.template else state.active_state == "active")
    ]
    # The record is written only once systemd has accepted the command, so an interrupted run redoes it.
    record = (
        f"mkdir -p {shlex.quote(str(Path(units.applied).parent))} && printf '%s\\n' "
        f"{shlex.quote(service.applied_record())} > {shlex.quote(units.applied)}"
    )
    if recorded[0] != wanted[0] or (not units.template and len(up) < len(states)):
        verb = "restart" if up else "start"
        steps.append(_systemctl(f"{verb} {units.display}", "restart", units.names, then=record, starts=service.name))
        return steps
    if units.reload and recorded[1:] != wanted[1:]:
        steps.append(_systemctl(f"reload {units.display}", "reload", units.names, then=record))
    stopped = [name for name in states if name not in up]
    if stopped:
        steps.append(_systemctl(f"start {display_units(stopped)}", "start", stopped, starts=service.name))
    return steps


def _prune_instances(facts: HostFacts, service: Service) -> list[Step]:
    """Numbered instances of the template beyond the wanted ones, still enabled or running: stop
    and disable them (an operator's hand-made `prefect-worker@gpu` is not ours to stop)."""
    units = service.units
    if units is None or units.template is None:
        return []
    extra = sorted(
        {
            state.name
            for state in _known_units(facts, service)
            if state.name not in units.names
            and state.instance.isdigit()
            and (state.enabled == "enabled" or state.running)
        }
    )
    if not extra:
        return []
    return [
        _systemctl(f"stop and disable {display_units(extra)}", "disable --now", extra, quiet=True, stops=tuple(extra))
    ]


def _remove(facts: HostFacts, service: Service) -> list[Step]:
    units = service.units
    if units is None:
        return []
    if not any(state.running or state.enabled == "enabled" for state in _known_units(facts, service)):
        return []
    return [
        _systemctl(
            f"stop and disable {' '.join(units.names)} ({service.absent})",
            "disable --now",
            units.names,
            quiet=True,
            then=f"rm -f {shlex.quote(units.applied)}",
        )
    ]
