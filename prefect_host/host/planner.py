"""From (facts, declarations) to the steps still needed: one pure function, pyinfra-style.

Each service gets a lane of steps: first what it needs in place (users, packages, the venv,
files, enabled units), then what runs it ((re)start, reload, start of stopped units). Lanes run
concurrently where the services allow (apply.py): a lane waits for the lanes in its service's
`after` before its first step, and for those in `start_after` before it (re)starts anything. A
converged host yields lanes without steps, so a re-run changes nothing and restarts nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect_host.host.facts import HostFacts, UnitState
from prefect_host.host.model import BYTECODE_UNIT, AptPackage, Command, File, Service, Step, User, Venv, display_units, sha256_text
from prefect_host.ssh import write_file_script

APT_LOCK_TIMEOUT = 300
APT_ATTEMPTS = 3
_GET_UV_SOURCE = Path(__file__).resolve().parents[1] / "get_uv.py"


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
    for service in services:
        if service.absent:
            lanes.append(Lane(service, (), tuple(_remove(facts, service))))
            continue
        prepare = [_create_user(user) for user in service.users
                   if facts.user_home(user.name) is None or not facts.dir_exists(user.home)]
        prepare += [_install_apt(package) for package in service.packages if facts.apt_version(package.name) is None]
        # A venv two services share (server and workers) is planned by the first that declares it.
        owns_venv = service.venv is not None and service.venv.path not in planned_venvs
        venv_steps, venv_refilled = _venv_steps(facts, service.venv) if owns_venv else ([], False)
        if owns_venv:
            planned_venvs.add(service.venv.path)
        prepare += venv_steps + _file_steps(facts, service)
        start = _unit_steps(facts, service)
        if owns_venv:
            start += _bytecode_steps(facts, service.venv, venv_refilled)
        lanes.append(Lane(service, tuple(prepare), tuple(start)))
    return lanes


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
    return Command(write_file_script(file.path, mode=file.mode, owner=file.owner), f"write {file.path}",
                   stdin=(file.text or "").encode())


# --- units -------------------------------------------------------------------------------------
def _unit_steps(facts: HostFacts, service: Service) -> list[Step]:
    units = service.units
    if units is None:
        return []
    states = {name: facts.unit(name) for name in units.names}
    steps = _prune_instances(facts, service)
    not_enabled = [name for name, state in states.items() if state.enabled != "enabled"]
    if not_enabled:
        words = " ".join(not_enabled)
        steps.append(Step(f"enable {display_units(not_enabled)}",
                          (Command(f"systemctl enable --quiet {words}", f"systemctl enable {words}"),)))
    if not units.names:
        return steps
    recorded = (facts.applied(units.applied) or "").split(" ")
    wanted = service.applied_record().split(" ")
    # A template's instance that systemd is about to restart counts as running; a single unit must be active.
    up = [name for name, state in states.items()
          if (state.running if units.template else state.active_state == "active")]
    record = (f"mkdir -p {shlex.quote(str(Path(units.applied).parent))} && printf '%s\\n' "
              f"{shlex.quote(service.applied_record())} > {shlex.quote(units.applied)}")
    words = " ".join(units.names)
    # The record is written only once systemd has accepted the command, so an interrupted run redoes it.
    if recorded[0] != wanted[0] or (not units.template and len(up) < len(states)):
        steps.append(Step(f"{'restart' if up else 'start'} {units.display}", (Command(
            f"systemctl restart {words} && {record}", f"systemctl restart {words}"),), starts=service.name))
        return steps
    if units.reload and recorded[1:] != wanted[1:]:
        steps.append(Step(f"reload {units.display}", (Command(
            f"systemctl reload {words} && {record}", f"systemctl reload {words}"),)))
    stopped = [name for name in states if name not in up]
    if stopped:
        stopped_words = " ".join(stopped)
        steps.append(Step(f"start {display_units(stopped)}", (Command(
            f"systemctl start {stopped_words}", f"systemctl start {stopped_words}"),), starts=service.name))
    return steps


def _prune_instances(facts: HostFacts, service: Service) -> list[Step]:
    """Numbered instances of the template beyond the wanted ones, still enabled or running: stop
    and disable them (an operator's hand-made `prefect-worker@gpu` is not ours to stop)."""
    units = service.units
    if units is None or units.template is None:
        return []
    extra = sorted({state.name for state in _known_units(facts, service)
                    if state.name not in units.names and state.instance.isdigit()
                    and (state.enabled == "enabled" or state.running)})
    if not extra:
        return []
    words = " ".join(extra)
    return [Step(f"stop and disable {display_units(extra)}", (Command(
        f"systemctl disable --quiet --now {words}", f"systemctl disable --now {words}"),), stops=tuple(extra))]


def _remove(facts: HostFacts, service: Service) -> list[Step]:
    units = service.units
    if units is None:
        return []
    states = [facts.unit(name) for name in units.names]
    if not any(state.running or state.enabled == "enabled" for state in states):
        return []
    words = " ".join(units.names)
    return [Step(f"stop and disable {words} ({service.absent})", (Command(
        f"systemctl disable --now --quiet {words} && rm -f {shlex.quote(units.applied)}",
        f"systemctl disable --now {words}"),))]


# --- users and packages -----------------------------------------------------------------------------
def _create_user(user: User) -> Step:
    q = shlex.quote
    return Step(f"create service user {user.name}", (Command(
        f"(getent passwd {q(user.name)} >/dev/null || useradd --system --user-group "
        f"--home-dir {q(user.home)} --no-create-home --shell /usr/sbin/nologin "
        f"--comment {q(user.comment)} {q(user.name)}) && "
        f"install -d -o {q(user.name)} -g {q(user.name)} -m {user.home_mode:04o} {q(user.home)}",
        f"create user {user.name}"),))


def _install_apt(package: AptPackage) -> Step:
    """apt-get, non-interactive, waiting for the dpkg lock (cloud-init or unattended-upgrades may
    hold it at first boot) and retrying downloads; the whole update+install is retried too (a
    mirror mid-sync, the lists lock). With a source line, apt reads only that source, with package
    lists of its own: the host's sources and lists are neither used nor changed."""
    q = shlex.quote
    options = (f"-q -o DPkg::Lock::Timeout={APT_LOCK_TIMEOUT} -o Acquire::Retries=3 "
               "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold")
    prepare = ""
    if package.source is not None:
        prepare = ("apt_dir=$(mktemp -d) && trap 'rm -rf \"$apt_dir\"' EXIT && "
                   "mkdir -p \"$apt_dir/parts\" \"$apt_dir/lists/partial\" && "
                   f"printf '%s\\n' {q(package.source)} > \"$apt_dir/sources.list\" && ")
        options += (" -o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=$apt_dir/parts"
                    " -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=")
    script = (
        f"export DEBIAN_FRONTEND=noninteractive && {prepare}"
        f"for attempt in $(seq 1 {APT_ATTEMPTS}); do "
        f"apt-get {options} update && "
        f"apt-get {options} -y --no-install-recommends install {q(package.name)} && exit 0; "
        f"[ \"$attempt\" -lt {APT_ATTEMPTS} ] && sleep $((attempt * 10)); "
        "done; exit 1")
    label = f"apt-get install {package.name}" + (" (from --apt-source)" if package.source else "")
    return Step(f"install {package.name} (apt)", (Command(script, label, timeout=1200),))


# --- the venv ----------------------------------------------------------------------------------------
def _venv_steps(facts: HostFacts, venv: Venv) -> tuple[list[Step], bool]:
    """The steps, and whether they (re)install packages (then the bytecode is stale)."""
    steps = []
    q = shlex.quote
    if facts.get(f"uv:{venv.uv_path}") != venv.uv_version:
        # The fetcher runs on the host with its own python3 (its source is the stdin): it picks the
        # wheel for the host's platform, whatever the laptop is.
        steps.append(Step(f"install uv {venv.uv_version}", (Command(
            f"install -d -m 0755 {q(str(Path(venv.uv_path).parent))} && python3 - "
            f"--version {q(venv.uv_version)} --dest {q(venv.uv_path)} {_source_args(venv, get_uv=True)}",
            f"fetch uv {venv.uv_version} for this host", stdin=_GET_UV_SOURCE.read_bytes(), timeout=300),)))
    missing = facts.get(f"venv:{venv.path}:python") is None
    if missing:
        steps.append(Step("create the virtualenv", (Command(
            f"rm -rf {q(venv.path)} && UV_PYTHON_DOWNLOADS=never {q(venv.uv_path)} venv --quiet "
            f"--python /usr/bin/python3 {q(venv.path)}", f"uv venv {venv.path}"),)))
    outdated = [(name, version) for name, version in venv.pins
                if missing or facts.venv_version(venv, name) != version]
    if outdated:
        # Every pin on every install, so uv keeps the set consistent whichever of them changed. No
        # --compile-bytecode: compiling takes ~5 s, and a first start without bytecode is only ~2 s
        # slower, so the bytecode is compiled after the start, off the critical path.
        steps.append(Step(f"install {' and '.join(f'{n} {v}' for n, v in outdated)}", (Command(
            f"rm -f {q(venv.bytecode_marker)} && UV_CACHE_DIR={q(venv.cache_dir)} UV_PYTHON_DOWNLOADS=never "
            f"{q(venv.uv_path)} pip install --quiet --python {q(venv.python)} {_source_args(venv)} "
            + " ".join(q(f"{name}=={version}") for name, version in venv.pins),
            f"uv pip install {venv.pins_text}", timeout=900),)))
    return steps, bool(outdated)


def _source_args(venv: Venv, *, get_uv: bool = False) -> str:
    source = venv.source
    if source.find_links:
        return ("" if get_uv else "--no-index ") + f"--find-links {shlex.quote(source.find_links)}"
    if source.index_url:
        return f"--index-url {shlex.quote(source.index_url)}"
    return ""


def _bytecode_steps(facts: HostFacts, venv: Venv, venv_changed: bool) -> list[Step]:
    """The service user cannot write __pycache__ into the root-owned venv, so without compiled
    bytecode every later start would compile everything in memory again (5.7 s vs 9.2 s). A
    transient systemd job does it in the background after the start; the marker records that it
    finished for these pins."""
    compiled = not venv_changed and facts.get(f"venv:{venv.path}:bytecode") == venv.bytecode_tag
    if compiled or facts.unit(BYTECODE_UNIT).active_state in ("active", "activating"):
        return []
    q = shlex.quote
    job = (f"{q(venv.python)} -m compileall -q -j 0 {q(venv.path + '/lib')} && "
           f"echo {q(venv.bytecode_tag)} > {q(venv.bytecode_marker)}")
    return [Step("compile bytecode (in the background)", (Command(
        f"systemd-run --quiet --no-block --collect --unit={q(BYTECODE_UNIT)} --property=Nice=10 "
        f"sh -c {q(job)}", "systemd-run compileall"),))]
