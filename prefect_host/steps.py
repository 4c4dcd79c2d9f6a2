"""From (facts, desired state) to the steps still needed: pure functions, pyinfra-style.

A converged host yields no steps, so a second run changes nothing and restarts nothing. Each step
is data (a name and shell commands, run as root through `sudo -n`), so tests can inspect exactly
what would run; secrets only ever travel in a command's stdin.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect_host import server_files as sf
from prefect_host.ssh import write_file_script

if TYPE_CHECKING:  # facts.py imports prefect_host.tls, which builds on the Step and Command here
    from prefect_host.facts import HostFacts

UV_VERSION = "0.13.8"
# prefect-aws, for the workers (they pull flow code from S3) and the storage blocks. Pinned here, not
# a stack output: it must match the laptop's (requirements.txt), because the laptop saves the blocks
# and the workers load them, and each prefect-aws version registers its own block schemas. 0.7.12
# requires prefect >= 3.8.4 and is the release current with Prefect 3.9.1, the default prefectVersion.
PREFECT_AWS_VERSION = "0.7.12"
PREFECT_AWS_MIN_PREFECT = "3.8.4"
_GET_UV_SOURCE = Path(__file__).with_name("get_uv.py")
# cloud-init has nothing left to do in these states (bootstrap reports "error" as a warning).
_CLOUD_INIT_SETTLED = {"done", "disabled", "error", "degraded done"}


@dataclass(frozen=True)
class PackageSource:
    """Where the host gets uv and Prefect: a simple index (default PyPI) or a find-links page."""
    index_url: str | None = None
    find_links: str | None = None

    def uv_args(self) -> str:
        if self.find_links:
            return f"--no-index --find-links {shlex.quote(self.find_links)}"
        if self.index_url:
            return f"--index-url {shlex.quote(self.index_url)}"
        return ""

    def get_uv_args(self) -> str:
        if self.find_links:
            return f"--find-links {shlex.quote(self.find_links)}"
        if self.index_url:
            return f"--index-url {shlex.quote(self.index_url)}"
        return ""


@dataclass(frozen=True)
class DesiredWorkers:
    """Worker instances 1..count of the template unit, all with one env file."""
    count: int
    env_text: str = field(repr=False)  # holds the auth string
    unit_text: str

    @property
    def units(self) -> list[str]:
        return [sf.worker_unit_name(i) for i in range(1, self.count + 1)]


@dataclass(frozen=True)
class Desired:
    prefect_version: str
    env_text: str = field(repr=False)  # holds the auth string
    unit_text: str
    workers: DesiredWorkers
    packages: PackageSource = PackageSource()
    uv_version: str = UV_VERSION
    prefect_aws_version: str = PREFECT_AWS_VERSION
    cloud_init_timeout: float = 300.0

    @property
    def worker_digest(self) -> str:
        """Identifies what the workers must run with: a change in any part means a restart."""
        return sf.sha256_text("\0".join((self.prefect_version, self.prefect_aws_version,
                                          self.workers.unit_text, self.workers.env_text)))

    @property
    def digest(self) -> str:
        """Identifies what the server must run with: a change in any part means a restart."""
        return sf.sha256_text("\0".join((self.prefect_version, self.unit_text, self.env_text)))


@dataclass(frozen=True)
class Command:
    script: str
    label: str
    stdin: bytes | None = field(default=None, repr=False)
    timeout: float = 120.0


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[Command, ...]
    # A step after which the server is (re)started: bootstrap watches the start.
    starts_server: bool = False
    # A step after which worker instances are (re)started: bootstrap waits for them to check in.
    starts_workers: bool = False
    # Worker instances ("2", "3") this step stops for good: bootstrap removes them from the pool.
    stops_workers: tuple[str, ...] = ()


def plan(facts: HostFacts, desired: Desired) -> list[Step]:
    """The steps that take the host from `facts` to `desired`, in order; [] when converged."""
    steps: list[Step] = []
    if facts.cloud_init_status is not None and facts.cloud_init_status not in _CLOUD_INIT_SETTLED:
        steps.append(Step("wait for cloud-init to finish", (Command(
            # 0 = done, 2 = done with recoverable errors; only 1 (a fatal error) fails the step.
            "cloud-init status --wait >/dev/null; rc=$?; [ $rc -eq 0 ] || [ $rc -eq 2 ]",
            "cloud-init status --wait", timeout=desired.cloud_init_timeout),)))
    if facts.service_user_home is None or not facts.state_dir_exists:
        steps.append(_create_user())
    if facts.uv_version != desired.uv_version:
        steps.append(_install_uv(desired))
    venv_missing = facts.venv_python is None
    if venv_missing:
        steps.append(_create_venv())
    install_prefect = venv_missing or facts.venv_prefect_version != desired.prefect_version
    install_aws = venv_missing or facts.venv_prefect_aws_version != desired.prefect_aws_version
    if install_prefect or install_aws:
        steps.append(_install_packages(desired, prefect=install_prefect, prefect_aws=install_aws))
    if facts.env_sha256 != sf.sha256_text(desired.env_text):
        steps.append(Step(f"write {sf.ENV_FILE}", (_write(sf.ENV_FILE, desired.env_text, 0o600),)))
    if facts.unit_sha256 != sf.sha256_text(desired.unit_text) or facts.need_daemon_reload:
        steps.append(Step(f"install {sf.UNIT_NAME}", (
            _write(sf.UNIT_PATH, desired.unit_text, 0o644),
            Command("systemctl daemon-reload", "systemctl daemon-reload"))))
    if facts.unit_enabled != "enabled":
        steps.append(Step(f"enable {sf.UNIT_NAME}", (Command(
            f"systemctl enable --quiet {sf.UNIT_NAME}", f"systemctl enable {sf.UNIT_NAME}"),)))
    if facts.applied_digest != desired.digest or facts.unit_active_state != "active":
        verb = "restart" if facts.unit_active_state == "active" else "start"
        steps.append(Step(f"{verb} the Prefect server", (Command(
            # The digest is recorded only once systemd has accepted the (re)start.
            f"systemctl restart {sf.UNIT_NAME} && printf '%s\\n' {desired.digest} > "
            f"{sf.APPLIED_DIGEST_FILE}", f"systemctl restart {sf.UNIT_NAME}"),), starts_server=True))
    compiled = not (install_prefect or install_aws) and facts.bytecode_version == desired.prefect_version
    if not compiled and facts.bytecode_job not in ("active", "activating"):
        steps.append(_compile_bytecode(desired))
    return steps


def plan_workers(facts: HostFacts, desired: Desired) -> list[Step]:
    """The steps that leave exactly workers 1..N enabled and running with the desired config; []
    when converged. Run after the server's steps (and its work pool) are in place."""
    workers = desired.workers
    steps: list[Step] = []
    if facts.worker_env_sha256 != sf.sha256_text(workers.env_text):
        steps.append(Step(f"write {sf.WORKER_ENV_FILE}", (_write(sf.WORKER_ENV_FILE, workers.env_text, 0o600),)))
    if (facts.worker_unit_sha256 != sf.sha256_text(workers.unit_text)
            or any(unit.need_daemon_reload for unit in facts.workers)):
        steps.append(Step(f"install {sf.WORKER_UNIT_TEMPLATE}", (
            _write(sf.WORKER_UNIT_PATH, workers.unit_text, 0o644),
            Command("systemctl daemon-reload", "systemctl daemon-reload"))))
    wanted = workers.units
    known = {unit.name: unit for unit in facts.workers}
    # Only numbered instances are ours to stop (an operator may run `prefect-worker@gpu` by hand).
    extra = [unit for unit in facts.workers if unit.name not in wanted and unit.instance.isdigit()
             and (unit.enabled == "enabled" or unit.running)]
    if extra:
        names = [unit.name for unit in extra]
        steps.append(Step(f"stop and disable {_instances(names)}", (Command(
            f"systemctl disable --quiet --now {' '.join(names)}", f"systemctl disable --now {' '.join(names)}"),),
            stops_workers=tuple(unit.instance for unit in extra)))
    not_enabled = [name for name in wanted if name not in known or known[name].enabled != "enabled"]
    if not_enabled:
        steps.append(Step(f"enable {_instances(not_enabled)}", (Command(
            f"systemctl enable --quiet {' '.join(not_enabled)}", f"systemctl enable {' '.join(not_enabled)}"),)))
    if wanted and facts.worker_applied_digest != desired.worker_digest:
        verb = "restart" if any(name in known and known[name].running for name in wanted) else "start"
        steps.append(Step(f"{verb} {_instances(wanted)}", (Command(
            # The digest is recorded only once systemd has accepted the (re)starts.
            f"systemctl restart {' '.join(wanted)} && printf '%s\\n' {desired.worker_digest} > "
            f"{sf.WORKER_APPLIED_DIGEST_FILE}", f"systemctl restart {' '.join(wanted)}"),), starts_workers=True))
    else:
        stopped = [name for name in wanted if name not in known or not known[name].running]
        if stopped:
            steps.append(Step(f"start {_instances(stopped)}", (Command(
                f"systemctl start {' '.join(stopped)}", f"systemctl start {' '.join(stopped)}"),),
                starts_workers=True))
    return steps


def _instances(units: list[str]) -> str:
    """prefect-worker@1.service, @2, @3 -> "prefect-worker@{1,2,3}" (short, and still a name to type)."""
    numbers = [name.split("@", 1)[1].removesuffix(".service") for name in units]
    return f"prefect-worker@{numbers[0]}" if len(numbers) == 1 else f"prefect-worker@{{{','.join(numbers)}}}"


def _create_user() -> Step:
    q = shlex.quote
    return Step(f"create service user {sf.SERVICE_USER}", (Command(
        f"(getent passwd {q(sf.SERVICE_USER)} >/dev/null || useradd --system --user-group "
        f"--home-dir {q(sf.STATE_DIR)} --no-create-home --shell /usr/sbin/nologin "
        f"--comment 'Prefect server' {q(sf.SERVICE_USER)}) && "
        f"install -d -o {q(sf.SERVICE_USER)} -g {q(sf.SERVICE_USER)} -m 0750 {q(sf.STATE_DIR)}",
        f"create user {sf.SERVICE_USER}"),))


def _install_uv(desired: Desired) -> Step:
    # The fetcher runs on the host with its own python3 (its source is the stdin): it picks the
    # wheel for the host's platform, whatever the laptop is.
    return Step(f"install uv {desired.uv_version}", (Command(
        f"install -d -m 0755 {shlex.quote(sf.UV_PATH.rsplit('/', 1)[0])} && python3 - "
        f"--version {shlex.quote(desired.uv_version)} --dest {shlex.quote(sf.UV_PATH)} "
        f"{desired.packages.get_uv_args()}",
        f"fetch uv {desired.uv_version} for this host", stdin=_GET_UV_SOURCE.read_bytes(), timeout=300),))


def _create_venv() -> Step:
    venv = shlex.quote(sf.VENV_DIR)
    return Step("create the virtualenv", (Command(
        f"rm -rf {venv} && UV_PYTHON_DOWNLOADS=never {shlex.quote(sf.UV_PATH)} venv --quiet "
        f"--python /usr/bin/python3 {venv}", f"uv venv {sf.VENV_DIR}"),))


def _install_packages(desired: Desired, *, prefect: bool, prefect_aws: bool) -> Step:
    # Both pins on every install, so uv keeps the pair consistent whichever of them changed.
    # No --compile-bytecode here: compiling takes ~5 s, and a first start without bytecode is only
    # ~2 s slower, so the bytecode is compiled after the start, off the critical path (below).
    wanted = []
    if prefect:
        wanted.append(f"prefect {desired.prefect_version}")
    if prefect_aws:
        wanted.append(f"prefect-aws {desired.prefect_aws_version}")
    requirements = f"prefect=={desired.prefect_version} prefect-aws=={desired.prefect_aws_version}"
    return Step(f"install {' and '.join(wanted)}", (Command(
        f"rm -f {shlex.quote(sf.BYTECODE_MARKER)} && "
        f"UV_CACHE_DIR={shlex.quote(sf.UV_CACHE_DIR)} UV_PYTHON_DOWNLOADS=never "
        f"{shlex.quote(sf.UV_PATH)} pip install --quiet "
        f"--python {shlex.quote(sf.VENV_DIR + '/bin/python')} {desired.packages.uv_args()} {requirements}",
        f"uv pip install {requirements}", timeout=900),))


def _compile_bytecode(desired: Desired) -> Step:
    """The service user cannot write __pycache__ into the root-owned venv, so without compiled
    bytecode every later start would compile everything in memory again (5.7 s vs 9.2 s). A
    transient systemd job does it in the background; the marker records that it finished."""
    q = shlex.quote
    job = (f"{q(sf.VENV_DIR + '/bin/python')} -m compileall -q -j 0 {q(sf.VENV_DIR + '/lib')} && "
           f"echo {q(desired.prefect_version)} > {q(sf.BYTECODE_MARKER)}")
    return Step("compile bytecode (in the background)", (Command(
        f"systemd-run --quiet --no-block --collect --unit={q(sf.BYTECODE_UNIT)} --property=Nice=10 "
        f"sh -c {q(job)}", "systemd-run compileall"),))


def _write(path: str, content: str, mode: int) -> Command:
    return Command(write_file_script(path, mode=mode), f"write {path}", stdin=content.encode())
